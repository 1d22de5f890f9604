//! Run, the middle of plan, run and report: every round, every core count,
//! every server (the order turned by one each round, so that no server
//! always runs first or last, and a drift of a shared machine hits every
//! server alike), every scenario. A measurement taken while other work
//! used more than `--max-other` CPUs is taken again, up to `--tries` times,
//! keeping the quietest.

use std::fmt::Write as _;
use std::time::Duration;

use crate::host::thousands;
use crate::plan::Plan;
use crate::report::{Quiet, Results};
use crate::server::{Idle, Running, Sample};

/// What a run gathered, for the report.
pub struct Outcome {
    pub results: Results,
    pub quiet: Quiet,
    /// Every round's figures, one line each (tab-separated).
    pub raw: String,
    /// `make bench`'s idle connections.
    pub idle: Option<Idle>,
}

const RAW_HEAD: &str = "round\tcores\tserver_cpus\tserver\tscenario\tmsgs_per_s\tcpu_us_per_msg\tp99_us\terrors\tsyscalls_per_msg\tepoll_ctl_per_msg\tother_cpus\tfailure\n";

pub fn run(plan: &Plan) -> Outcome {
    let mut out = Outcome {
        results: Results {
            servers: plan.servers.iter().map(|s| s.name.clone()).collect(),
            counts: plan.counts.clone(),
            samples: vec![
                vec![vec![Vec::new(); plan.scenarios.len()]; plan.counts.len()];
                plan.servers.len()
            ],
            scenarios: plan.scenarios.clone(),
        },
        quiet: Quiet::default(),
        raw: RAW_HEAD.to_string(),
        idle: None,
    };
    if plan.idle > 0 {
        out.idle = idle(plan);
    }
    for round in 0..plan.rounds {
        for c in 0..plan.counts.len() {
            for i in 0..plan.servers.len() {
                one_server(plan, round, c, (i + round) % plan.servers.len(), &mut out);
            }
        }
    }
    out
}

/// The first server's memory with `plan.idle` idle connections, on a
/// fresh server of the first core count.
fn idle(plan: &Plan) -> Option<Idle> {
    let started = Running::start(&plan.servers[0].argv, &plan.server_sets[0]);
    let idle = started.and_then(|server| {
        std::thread::sleep(Duration::from_millis(200));
        let idle = server.idle(plan.idle, &plan.load);
        server.stop();
        idle
    });
    match idle {
        Ok(idle) => {
            let mib = idle.rss_kib / 1024.0;
            eprintln!(
                "idle: {} connections, {} echoed, RSS {mib:.1} MiB",
                idle.conns, idle.echoed
            );
            Some(idle)
        }
        Err(e) => {
            eprintln!("idle: {e}");
            None
        }
    }
}

/// One server at one core count, through every scenario.
fn one_server(plan: &Plan, round: usize, c: usize, s: usize, out: &mut Outcome) {
    let (spec, n) = (&plan.servers[s], plan.counts[c]);
    let label = format!(
        "[round {}/{}] {n} core(s) {:<16}",
        round + 1,
        plan.rounds,
        spec.name
    );
    let mut server = match Running::start(&spec.argv, &plan.server_sets[c]) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("{label}: {e}");
            for cell in &mut out.results.samples[s][c] {
                cell.push(Err(e.clone()));
            }
            return;
        }
    };
    for (k, sc) in plan.scenarios.iter().enumerate() {
        let label = format!("{label} {:<10}", sc.key);
        let m = measure_quietly(plan, &mut server, k, &label, &mut out.quiet);
        let cpus = crate::cpus::format_list(&plan.server_sets[c]);
        let _ = write!(
            out.raw,
            "{}\t{n}\t{cpus}\t{}\t{}\t",
            round + 1,
            spec.name,
            sc.key
        );
        match &m {
            Ok(x) => {
                let calls = x
                    .syscalls
                    .map_or(String::new(), |c| format!(" {:.3} syscalls/msg", c.total()));
                let wrong = match x.errors {
                    0 => String::new(),
                    e => format!("  {e} ECHO ERRORS"),
                };
                eprintln!(
                    "{label} {:>10} msgs/s {:>6.2} µs/msg p99 {:>6.0} µs{calls}{wrong}",
                    thousands(x.msgs_per_s),
                    x.cpu_us_per_msg,
                    x.p99_us
                );
                let f = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
                let _ = writeln!(
                    out.raw,
                    "{:.0}\t{:.4}\t{:.0}\t{}\t{}\t{}\t{:.2}\t",
                    x.msgs_per_s,
                    x.cpu_us_per_msg,
                    x.p99_us,
                    x.errors,
                    f(x.syscalls.map(|c| c.total())),
                    f(x.syscalls.map(|c| c.epoll_ctl())),
                    x.other_cpus
                );
            }
            Err(e) => {
                eprintln!("{label}: {e}");
                let _ = writeln!(out.raw, "\t\t\t\t\t\t\t{}", e.replace(['\t', '\n'], " "));
            }
        }
        out.results.samples[s][c][k].push(m);
    }
    server.stop();
}

/// Measures scenario `k`, again while other work was above
/// `plan.max_other` CPUs, keeping the quietest.
fn measure_quietly(
    plan: &Plan,
    server: &mut Running,
    k: usize,
    label: &str,
    quiet: &mut Quiet,
) -> Result<Sample, String> {
    let sc = plan.scenarios[k];
    let mut m = server.measure(sc, &plan.load);
    for attempt in 2..=plan.tries {
        let busy = match &m {
            Ok(x) if x.other_cpus > plan.max_other => x.other_cpus,
            _ => break,
        };
        eprintln!(
            "{label}: other work used {busy:.2} CPUs meanwhile: measuring again ({attempt}/{})",
            plan.tries
        );
        quiet.repeated += 1;
        // A moment for a neighbour's burst (a test binary, a link) to pass.
        std::thread::sleep(Duration::from_secs(1));
        let again = server.measure(sc, &plan.load);
        // Keep the quieter of the two; a failure does not replace a sample.
        if again.as_ref().is_ok_and(|y| y.other_cpus < busy) {
            m = again;
        }
    }
    if let Ok(x) = &m {
        quiet.others.push(x.other_cpus);
        quiet.busy_kept += usize::from(x.other_cpus > plan.max_other);
    }
    m
}
