//! Run, the middle of plan, run and report: every round, every core count,
//! every server (the order turned by one each round, so that no server
//! always runs first or last, and a drift of a shared machine hits every
//! server alike), every scenario. A measurement taken while other work
//! used more than `--max-other` CPUs is taken again, up to `--tries` times,
//! keeping the quietest.

use std::fmt::Write as _;
use std::time::Duration;

use crate::host::thousands;
use crate::plan::{Mode, Plan};
use crate::report::{Quiet, Results, Rounds};
use crate::scenario::LEVELS;
use crate::server::{Idle, Running, Sample};

/// What a run gathered, for the report.
pub struct Outcome {
    pub results: Results,
    pub quiet: Quiet,
    /// Every round's figures, one line each (tab-separated).
    pub raw: String,
    /// `make bench`'s idle connections.
    pub idle: Option<Idle>,
    /// `make bench-latency`'s open-loop rounds (its closed-loop maxima are
    /// `results`, the one scenario at the one core count).
    pub latency: Option<Latency>,
}

/// The open-loop rounds of `make bench-latency`.
pub struct Latency {
    /// The offered loads, as fractions of each server's maximum.
    pub levels: Vec<f64>,
    /// `open[server][level]`, one sample per round.
    pub open: Vec<Vec<Rounds>>,
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
        latency: None,
    };
    if plan.mode == Mode::Latency {
        latency(plan, &mut out);
        return out;
    }
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
        let m = measure_quietly(plan, &mut server, &label, &mut out.quiet, |s| {
            s.measure(sc, &plan.load)
        });
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

/// Measures with `measure`, again while other work was above
/// `plan.max_other` CPUs, keeping the quietest.
fn measure_quietly(
    plan: &Plan,
    server: &mut Running,
    label: &str,
    quiet: &mut Quiet,
    mut measure: impl FnMut(&mut Running) -> Result<Sample, String>,
) -> Result<Sample, String> {
    let mut m = measure(server);
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
        let again = measure(server);
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

const LATENCY_HEAD: &str = "round\tserver\tload\ttarget_per_s\toffered_per_s\tmsgs_per_s\tp50_us\tp99_us\tp999_us\tmax_us\tlag_p99_us\tunanswered\terrors\tcpu_us_per_msg\tother_cpus\tfailure\n";

/// `make bench-latency`: every round, every server (the order turned by one
/// each round): its maximum, closed-loop, then each of [`LEVELS`] of that
/// maximum offered open-loop on the same server.
fn latency(plan: &Plan, out: &mut Outcome) {
    let n = plan.servers.len();
    let mut lat = Latency {
        levels: LEVELS.to_vec(),
        open: vec![vec![Vec::new(); LEVELS.len()]; n],
    };
    out.raw = LATENCY_HEAD.to_string();
    let base = plan.scenarios[0];
    for round in 0..plan.rounds {
        for i in 0..n {
            let s = (i + round) % n;
            let spec = &plan.servers[s];
            let label = format!("[round {}/{}] {:<16}", round + 1, plan.rounds, spec.name);
            let mut server = match Running::start(&spec.argv, &plan.server_sets[0]) {
                Ok(server) => server,
                Err(e) => {
                    eprintln!("{label}: {e}");
                    out.results.samples[s][0][0].push(Err(e.clone()));
                    for cell in &mut lat.open[s] {
                        cell.push(Err(e.clone()));
                    }
                    continue;
                }
            };
            let max = measure_quietly(
                plan,
                &mut server,
                &format!("{label} max"),
                &mut out.quiet,
                |x| x.measure(base, &plan.load),
            );
            raw_latency(&mut out.raw, round, &spec.name, "max", &max);
            match &max {
                Ok(m) => eprintln!(
                    "{label} max  {:>10} msgs/s closed-loop ({}), p99 {:.0} µs",
                    thousands(m.msgs_per_s),
                    base.key,
                    m.p99_us
                ),
                Err(e) => eprintln!("{label} max: {e}"),
            }
            for (j, level) in LEVELS.iter().enumerate() {
                let m = match &max {
                    Ok(m) if m.msgs_per_s > 0.0 => {
                        let rate = level * m.msgs_per_s;
                        let l = format!("{label} {:>3.0}%", level * 100.0);
                        let m = measure_quietly(plan, &mut server, &l, &mut out.quiet, |x| {
                            x.measure_open(base, rate, &plan.load)
                        });
                        match &m {
                            Ok(x) => eprintln!(
                                "{l} {:>10} offered {:>10} echoed/s p50 {:>7.0} p99 {:>7.0} p99.9 {:>7.0} max {:>7.0} µs, lag p99 {:.0} µs{}",
                                thousands(x.offered_per_s),
                                thousands(x.msgs_per_s),
                                x.p50_us,
                                x.p99_us,
                                x.p999_us,
                                x.max_us,
                                x.lag_p99_us,
                                match x.unanswered {
                                    0 => String::new(),
                                    u => format!(", {u} UNANSWERED"),
                                }
                            ),
                            Err(e) => eprintln!("{l}: {e}"),
                        }
                        m
                    }
                    Ok(_) => Err("no maximum: 0 msgs/s closed-loop".to_string()),
                    Err(e) => Err(format!("no maximum: {e}")),
                };
                raw_latency(
                    &mut out.raw,
                    round,
                    &spec.name,
                    &format!("{:.0}%", level * 100.0),
                    &m,
                );
                lat.open[s][j].push(m);
            }
            out.results.samples[s][0][0].push(max);
            server.stop();
        }
    }
    out.latency = Some(lat);
}

fn raw_latency(
    raw: &mut String,
    round: usize,
    server: &str,
    load: &str,
    m: &Result<Sample, String>,
) {
    let _ = write!(raw, "{}\t{server}\t{load}\t", round + 1);
    let _ = match m {
        Ok(x) => writeln!(
            raw,
            "{:.0}\t{:.0}\t{:.0}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{}\t{}\t{:.4}\t{:.2}\t",
            x.target_per_s,
            x.offered_per_s,
            x.msgs_per_s,
            x.p50_us,
            x.p99_us,
            x.p999_us,
            x.max_us,
            x.lag_p99_us,
            x.unanswered,
            x.errors,
            x.cpu_us_per_msg,
            x.other_cpus
        ),
        Err(e) => writeln!(raw, "{}{}", "\t".repeat(12), e.replace(['\t', '\n'], " ")),
    };
}
