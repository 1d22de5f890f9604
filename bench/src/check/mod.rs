//! `check_server`: the edge-triggered checklist (docs/tutorial/checklist.md)
//! as checks against any line-echo server, in any language, black-box:
//! real processes, real loopback sockets.

mod net;
mod queues;
mod rules;
mod server;

use std::time::{Duration, Instant};

pub use rules::CHECKS;
use rules::Check;
use server::Server;

/// What every check is told.
pub struct Ctx {
    /// The server's command line, with `{addr}` / `{port}` still in it.
    pub command: String,
    /// Starting, accepting, exiting: generous, the machine may be busy.
    pub patience: Duration,
    /// Nothing new for this long: the echo is not coming.
    pub stall: Duration,
    /// The read budget's bound: another client's line must come back
    /// within this while one client floods.
    pub latency: Duration,
}

/// The checks to run, and how.
pub struct Plan {
    pub ctx: Ctx,
    /// Names given with `--only` (empty: all).
    pub only: Vec<String>,
    /// `--no-drain`: the server does not claim a graceful drain.
    pub no_drain: bool,
    /// Print the server's last output lines under each failure.
    pub verbose: bool,
}

/// Runs the plan, printing one line per check; returns the number failed.
pub fn run(plan: &Plan) -> usize {
    let ctx = &plan.ctx;
    println!("check-server: {}", ctx.command);
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for check in CHECKS {
        if !plan.only.is_empty() && !plan.only.iter().any(|n| n == check.name) {
            continue;
        }
        if plan.no_drain && check.name == "drain" {
            println!(
                "SKIP {} [{}]: --no-drain, the server does not claim a graceful drain",
                check.name, check.rule
            );
            skipped += 1;
            continue;
        }
        let started = Instant::now();
        let (outcome, log) = run_one(check, ctx);
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(note) => {
                passed += 1;
                println!("PASS {} [{}]: {note} ({secs:.1} s)", check.name, check.rule);
            }
            Err(what) => {
                failed += 1;
                println!(
                    "FAIL {} [{}]: {what}. The rule: {} ({secs:.1} s)",
                    check.name, check.rule, check.why
                );
                if plan.verbose {
                    for line in log {
                        println!("    | {line}");
                    }
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    failed
}

/// One check against a fresh server; the server's last output with it.
fn run_one(check: &Check, ctx: &Ctx) -> (Result<String, String>, Vec<String>) {
    let mut srv = match Server::start(&ctx.command, ctx.patience) {
        Ok(srv) => srv,
        Err(e) => return (Err(format!("could not start the server: {e}")), Vec::new()),
    };
    let mut outcome = (check.run)(ctx, &mut srv);
    if let Err(what) = &mut outcome
        && !check.ends_server
        && !what.contains("the server exited")
        && let Some(died) = srv.died()
    {
        what.push_str(&format!("; {died}"));
    }
    let log = srv.log_tail();
    (outcome, log)
}
