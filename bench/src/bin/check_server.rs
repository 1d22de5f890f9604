//! Checks a line-echo server, in any language, against the edge-triggered
//! checklist of the tutorial (docs/tutorial/checklist.md).
//!
//! ```text
//! make check-server SERVER="./my-server --listen {addr}"
//! check_server [--no-drain] [--only NAME,NAME] [--stall SECS] [--latency SECS]
//!              [--patience SECS] [-v] [--list] -- COMMAND...
//! ```
//!
//! COMMAND is run with `/bin/sh -c 'exec COMMAND'`, once per check, in a
//! process group of its own. `{addr}` in it becomes 127.0.0.1:PORT of a free
//! port, `{port}` the port alone; with neither, the server must print a line
//! `listening on ADDR` (stdout or stderr). The checker waits until it
//! accepts, runs the check over loopback, and kills the group.
//!
//! One line per check: `PASS NAME (rule: ...)` or `FAIL NAME (rule: ...)`
//! with what went wrong and the rule it breaks; `SKIP` for the drain with
//! `--no-drain`. Exit status: 0 if nothing failed, 1 if a check failed, 2
//! for a bad command line.

#[path = "../check/mod.rs"]
mod check;

use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: check_server [--no-drain] [--only NAME,NAME] [--stall SECS] [--latency SECS] [--patience SECS] [-v] [--list] -- COMMAND...
  COMMAND: the server, with {addr} (127.0.0.1:PORT) or {port} where it takes its address,
  or printing `listening on ADDR`. Example: check_server -- ./my-server --listen {addr}";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut plan = check::Plan {
        ctx: check::Ctx {
            command: String::new(),
            patience: Duration::from_secs(20),
            stall: Duration::from_secs(5),
            latency: Duration::from_secs(2),
        },
        only: Vec::new(),
        no_drain: false,
        verbose: false,
    };
    let mut command = Vec::new();
    while let Some(arg) = args.next() {
        let mut secs = |what: &str| -> Result<Duration, String> {
            let v = args
                .next()
                .ok_or(format!("{what} needs a number of seconds"))?;
            v.parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0 && s.is_finite())
                .map(Duration::from_secs_f64)
                .ok_or(format!("{what}: not a number of seconds: {v}"))
        };
        let parsed = match arg.as_str() {
            "--no-drain" => {
                plan.no_drain = true;
                Ok(())
            }
            "-v" | "--verbose" => {
                plan.verbose = true;
                Ok(())
            }
            "--stall" => secs("--stall").map(|d| plan.ctx.stall = d),
            "--latency" => secs("--latency").map(|d| plan.ctx.latency = d),
            "--patience" => secs("--patience").map(|d| plan.ctx.patience = d),
            "--only" => match args.next() {
                Some(names) => {
                    plan.only = names.split(',').map(|n| n.trim().to_string()).collect();
                    match plan
                        .only
                        .iter()
                        .find(|n| !check::CHECKS.iter().any(|c| c.name == n.as_str()))
                    {
                        Some(bad) => Err(format!("--only: no check is called {bad}")),
                        None => Ok(()),
                    }
                }
                None => Err("--only needs check names".into()),
            },
            "--list" => {
                for c in check::CHECKS {
                    println!("{:<20} {}: {}", c.name, c.rule, c.why);
                }
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--" => {
                command.extend(args.by_ref());
                Ok(())
            }
            other if other.starts_with('-') && command.is_empty() => {
                Err(format!("unknown option {other}"))
            }
            other => {
                command.push(other.to_string());
                command.extend(args.by_ref());
                Ok(())
            }
        };
        if let Err(e) = parsed {
            eprintln!("check_server: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    plan.ctx.command = command.join(" ");
    if plan.ctx.command.trim().is_empty() {
        eprintln!("check_server: no server command\n{USAGE}");
        return ExitCode::from(2);
    }
    match check::run(&plan) {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
