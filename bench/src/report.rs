//! Report, the last of plan, run and report: the medians of the rounds,
//! the Markdown of either mode, the chart, and the one writer that puts a
//! section between its markers in `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::path::Path;

use crate::chart;
use crate::cpus;
use crate::host::{self, thousands};
use crate::plan::{Mode, Plan};
use crate::run::Outcome;
use crate::scenario::{Kind, Scenario};
use crate::server::Sample;
use crate::syscalls::{self, Syscalls};

/// One cell's rounds: a sample, or why the round failed.
pub type Rounds = Vec<Result<Sample, String>>;

/// Every round's samples: `samples[server][count][scenario]`, one per round.
pub struct Results {
    pub servers: Vec<String>,
    pub counts: Vec<usize>,
    /// The scenarios run (all four unless `--only` picked some).
    pub scenarios: Vec<&'static Scenario>,
    pub samples: Vec<Vec<Vec<Rounds>>>,
}

/// The medians of one cell (server, core count, scenario) over its rounds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub msgs_per_s: f64,
    pub cpu_us_per_msg: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Open loop: the rate asked for and the rate sent (see [`Sample`]).
    pub target_per_s: f64,
    pub offered_per_s: f64,
    pub lag_p99_us: f64,
    /// Open loop: lines never answered, over every round.
    pub unanswered: u64,
    pub syscalls: Option<Syscalls>,
    pub rss_kib: f64,
    /// (max − min) ÷ median of msgs/s over the rounds.
    pub spread: f64,
    pub rounds: usize,
    pub errors: u64,
}

pub fn median(xs: &mut [f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    Some(if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    })
}

/// Medians of the rounds that ran; `None` when none did.
pub fn summarize(rounds: &[Result<Sample, String>]) -> Option<Summary> {
    let good: Vec<&Sample> = rounds.iter().filter_map(|r| r.as_ref().ok()).collect();
    let pick = |f: &dyn Fn(&Sample) -> Option<f64>| {
        median(&mut good.iter().filter_map(|s| f(s)).collect::<Vec<_>>())
    };
    let msgs = pick(&|s| Some(s.msgs_per_s))?;
    let (lo, hi) = good.iter().fold((f64::MAX, 0.0f64), |(lo, hi), s| {
        (lo.min(s.msgs_per_s), hi.max(s.msgs_per_s))
    });
    let mut calls = [None; 5];
    for (i, c) in calls.iter_mut().enumerate() {
        *c = pick(&|s| Some(s.syscalls?.0[i]));
    }
    Some(Summary {
        msgs_per_s: msgs,
        cpu_us_per_msg: pick(&|s| Some(s.cpu_us_per_msg))?,
        p50_us: pick(&|s| Some(s.p50_us))?,
        p99_us: pick(&|s| Some(s.p99_us))?,
        p999_us: pick(&|s| Some(s.p999_us))?,
        max_us: pick(&|s| Some(s.max_us))?,
        target_per_s: pick(&|s| Some(s.target_per_s))?,
        offered_per_s: pick(&|s| Some(s.offered_per_s))?,
        lag_p99_us: pick(&|s| Some(s.lag_p99_us))?,
        unanswered: good.iter().map(|s| s.unanswered).sum(),
        syscalls: calls
            .iter()
            .copied()
            .collect::<Option<Vec<f64>>>()
            .map(|v| Syscalls(v.try_into().expect("five"))),
        rss_kib: pick(&|s| Some(s.rss_kib))?,
        spread: if msgs > 0.0 { (hi - lo) / msgs } else { 0.0 },
        rounds: good.len(),
        errors: good.iter().map(|s| s.errors).sum(),
    })
}

impl Results {
    pub fn summary(&self, server: usize, count: usize, scenario: usize) -> Option<Summary> {
        summarize(&self.samples[server][count][scenario])
    }

    /// Every failed round, as `server, N cores, scenario: what went wrong`.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (s, name) in self.servers.iter().enumerate() {
            for (c, n) in self.counts.iter().enumerate() {
                for (k, sc) in self.scenarios.iter().enumerate() {
                    for e in self.samples[s][c][k]
                        .iter()
                        .filter_map(|r| r.as_ref().err())
                    {
                        out.push(format!("{name}, {n} cores, {}: {e}", sc.key));
                    }
                }
            }
        }
        out
    }

    /// Echo errors (bytes that came back wrong) anywhere.
    pub fn echo_errors(&self) -> u64 {
        let all = self.samples.iter().flatten().flatten().flatten();
        all.filter_map(|r| r.as_ref().ok()).map(|s| s.errors).sum()
    }
}

/// How quiet the machine was: other work during the measurements kept,
/// and the measurements taken again because of it.
#[derive(Clone, Debug, Default)]
pub struct Quiet {
    /// Other work during each kept measurement, in CPUs.
    pub others: Vec<f64>,
    /// Measurements thrown away for other work.
    pub repeated: usize,
    /// Kept although above `--max-other` (every try was).
    pub busy_kept: usize,
}

fn cores(n: usize) -> String {
    if n == 1 {
        "1 core".into()
    } else {
        format!("{n} cores")
    }
}

fn cpu_words(cpus: &[usize]) -> String {
    let s = if cpus.len() == 1 { "" } else { "s" };
    format!("CPU{s} {}", cpus::format_list(cpus))
}

/// The core counts whose server CPUs include a load generator CPU.
pub fn shared_counts(plan: &Plan) -> Vec<(usize, Vec<usize>)> {
    let sets = plan.counts.iter().zip(&plan.server_sets);
    sets.filter_map(|(&n, set)| {
        let shared = cpus::shared(set, &plan.client_cpus);
        (!shared.is_empty()).then_some((n, shared))
    })
    .collect()
}

/// The section of `make bench`: reactor-echo alone, every figure of each
/// scenario, and the idle connections. `stamp` is "DATE on MACHINE";
/// `chart` is the SVG's path as seen from the Markdown file.
pub fn alone_markdown(plan: &Plan, out: &Outcome, stamp: &str, chart: Option<&str>) -> String {
    let mut md = String::new();
    let w = &mut md;
    let k = plan.load.clients;
    let how = match plan.load.counter {
        Some(c) if c == syscalls::Counter::Perf => syscalls::how(c).to_string(),
        Some(c) => format!("{} (perf was not available)", syscalls::how(c)),
        None => "not counted (neither perf nor strace installed)".into(),
    };
    let _ = writeln!(w, "Measured {stamp}.");
    let _ = writeln!(
        w,
        "{}Server pinned to {}, load generator{} to {}; {} s per scenario after {} s of warm-up. \
         Syscalls: {how}; per message, warm-up included.\n",
        match plan.rounds {
            1 => String::new(),
            n => format!("Median of {n} rounds. "),
        },
        cpu_words(&plan.server_sets[0]),
        if k == 1 {
            String::new()
        } else {
            format!("s ({k} processes)")
        },
        cpu_words(&plan.client_cpus),
        plan.load.secs,
        plan.load.warmup,
    );
    shared_note(w, plan);
    let names = syscalls::NAMES.map(|n| format!(" {n}/msg |")).concat();
    let _ = writeln!(
        w,
        "| scenario | msgs/s | p50 µs | p99 µs | p999 µs | CPU µs/msg |{names} RSS MiB | errors |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let r = &out.results;
    for (i, sc) in r.scenarios.iter().enumerate() {
        let Some(m) = r.summary(0, 0, i) else {
            let _ = writeln!(w, "| {} | failed |{}", sc.title, " |".repeat(11));
            continue;
        };
        let calls = match m.syscalls {
            Some(s) => s.0.map(|v| format!(" {v:.3} |")).concat(),
            None => " - |".repeat(5),
        };
        let _ = writeln!(
            w,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.2} |{calls} {:.1} | {} |",
            sc.title,
            thousands(m.msgs_per_s),
            m.p50_us,
            m.p99_us,
            m.p999_us,
            m.cpu_us_per_msg,
            m.rss_kib / 1024.0,
            m.errors
        );
    }
    if let Some(idle) = &out.idle {
        let _ = writeln!(
            w,
            "| {} idle connections (each echoed one line: {} ok) |{} {:.1} (at start: {:.1}) | |",
            thousands(idle.conns as f64),
            thousands(idle.echoed as f64),
            " |".repeat(10),
            idle.rss_kib / 1024.0,
            idle.baseline_kib / 1024.0
        );
    }
    let _ = writeln!(w);
    notes(w, plan, out);
    if let Some(chart) = chart {
        let _ = writeln!(w, "![benchmark chart]({chart})");
    }
    md
}

/// The paragraph for each core count whose server shares a CPU with the
/// load generators.
fn shared_note(w: &mut String, plan: &Plan) {
    for (n, shared) in shared_counts(plan) {
        let set = &plan.server_sets[plan.counts.iter().position(|&c| c == n).unwrap_or(0)];
        let _ = writeln!(
            w,
            "**{}: the server shares {} with the load generator.** The two compete for it, so \
             these columns measure server and load generator together on {} CPUs, not what \
             the server does with {} of its own (which needs a machine with more CPUs than \
             server cores). Ratios between servers in these columns still compare like with \
             like; scaling figures from them do not show what more cores give.\n",
            cores(n),
            cpu_words(&shared),
            set.len(),
            cores(n),
        );
    }
}

/// The section of `make bench-compare`: the scaling table, the first
/// server's ratios to each other one, syscalls where counted.
pub fn compare_markdown(plan: &Plan, out: &Outcome, stamp: &str, chart: Option<&str>) -> String {
    let mut md = String::new();
    let w = &mut md;
    let r = &out.results;
    let _ = writeln!(w, "Measured {stamp}, with\n\n    {}\n", plan.command);
    let placement: Vec<String> = r
        .counts
        .iter()
        .zip(&plan.server_sets)
        .map(|(&n, cpus)| format!("{}: {}", cores(n), cpu_words(cpus)))
        .collect();
    let k = plan.load.clients;
    let _ = writeln!(
        w,
        "{}; each scenario runs {} s after {} s of warm-up, \
         driven by {k} load-generator process{} on {} (the connections split between them, \
         msgs/s summed). Server CPUs: {}. reactor-echo runs `--workers N`, tokio-multi and monoio \
         `--threads N`; the other peers are only pinned to the N CPUs. CPU µs/msg: the \
         server's user + system time, every thread, over the whole run (warm-up included) \
         per message echoed. Every echoed byte is checked.\n",
        match plan.rounds {
            1 => "One round".to_string(),
            n => format!("Median of {n} interleaved rounds"),
        },
        plan.load.secs,
        plan.load.warmup,
        if k == 1 { "" } else { "es" },
        cpu_words(&plan.client_cpus),
        placement.join("; "),
    );
    shared_note(w, plan);
    for s in &plan.skipped {
        let _ = writeln!(w, "Not run: {s}.\n");
    }

    // The scaling table: rows are scenario × server, two columns per core count.
    let scaling = r.counts.contains(&1) && r.counts.len() > 1;
    let more: Vec<(usize, usize)> = r
        .counts
        .iter()
        .copied()
        .enumerate()
        .filter(|c| c.1 > 1)
        .collect();
    let _ = write!(w, "| scenario | server |");
    for &n in &r.counts {
        let _ = write!(w, " {} msgs/s | {} CPU µs/msg |", cores(n), cores(n));
    }
    for (_, n) in more.iter().filter(|_| scaling) {
        let _ = write!(w, " scaling at {n} |");
    }
    let rule =
        "---:|---:|".repeat(r.counts.len()) + &"---:|".repeat(if scaling { more.len() } else { 0 });
    let _ = writeln!(w, "\n|---|---|{rule}");
    let one = r.counts.iter().position(|&n| n == 1).unwrap_or(0);
    for (k, sc) in r.scenarios.iter().enumerate() {
        // The best of each column, for bold.
        let best: Vec<(f64, f64)> = (0..r.counts.len())
            .map(|c| {
                (0..r.servers.len())
                    .filter_map(|s| r.summary(s, c, k))
                    .fold((0.0f64, f64::MAX), |(m, u), x| {
                        (m.max(x.msgs_per_s), u.min(x.cpu_us_per_msg))
                    })
            })
            .collect();
        for (s, name) in r.servers.iter().enumerate() {
            let _ = write!(w, "| {} | {name} |", if s == 0 { sc.title } else { "" });
            for (c, best) in best.iter().enumerate() {
                let Some(x) = r.summary(s, c, k) else {
                    let _ = write!(w, " failed | failed |");
                    continue;
                };
                let bold = |b: bool| if b { "**" } else { "" };
                let (m, u) = (
                    bold(x.msgs_per_s >= best.0),
                    bold(x.cpu_us_per_msg <= best.1),
                );
                let wrong = match x.errors {
                    0 => String::new(),
                    n => format!(" ({n} wrong echoes)"),
                };
                let _ = write!(
                    w,
                    " {m}{}{m}{wrong} | {u}{:.2}{u} |",
                    thousands(x.msgs_per_s),
                    x.cpu_us_per_msg
                );
            }
            for (c, n) in more.iter().filter(|_| scaling) {
                match (r.summary(s, one, k), r.summary(s, *c, k)) {
                    (Some(a), Some(b)) if a.msgs_per_s > 0.0 => {
                        let _ = write!(w, " {:.2} |", b.msgs_per_s / (*n as f64 * a.msgs_per_s));
                    }
                    _ => w.push_str(" - |"),
                }
            }
            let _ = writeln!(w);
        }
    }
    let _ = writeln!(w);
    if scaling {
        let _ = write!(
            w,
            "Scaling at N: msgs/s with N cores ÷ (N × msgs/s with 1 core); 1.00 is perfect. "
        );
    }
    let _ = writeln!(
        w,
        "Bold: the most msgs/s and the least CPU per message of each column.\n"
    );

    // The first server against each of the others.
    if r.servers.len() > 1 {
        let _ = writeln!(
            w,
            "{} ÷ each other server, msgs/s then CPU µs/msg (above 1× is more messages; \
             below 1× is less CPU per message):\n",
            r.servers[0]
        );
        let others = &r.servers[1..];
        let heads: String = others.iter().map(|o| format!(" ÷ {o} |")).collect();
        let _ = writeln!(
            w,
            "| scenario | cores |{heads}\n|---|---:|{}",
            "---:|".repeat(others.len())
        );
        for (k, sc) in r.scenarios.iter().enumerate() {
            for (c, &n) in r.counts.iter().enumerate() {
                let _ = write!(w, "| {} | {n} |", sc.key);
                let mine = r.summary(0, c, k);
                for s in 1..r.servers.len() {
                    match (&mine, r.summary(s, c, k)) {
                        (Some(a), Some(b)) if b.msgs_per_s > 0.0 && b.cpu_us_per_msg > 0.0 => {
                            let (m, u) = (
                                a.msgs_per_s / b.msgs_per_s,
                                a.cpu_us_per_msg / b.cpu_us_per_msg,
                            );
                            let _ = write!(w, " {m:.2}× / {u:.2}× |");
                        }
                        _ => w.push_str(" - |"),
                    }
                }
                let _ = writeln!(w);
            }
        }
        let _ = writeln!(w);
    }

    churn_table(w, r);

    if let Some(counter) = plan.load.counter {
        let _ = writeln!(
            w,
            "Syscalls of the server per message ({}; it slows the server, so these rounds' \
             msgs/s read low):\n\n\
             | scenario | server | cores | syscalls/msg | epoll_ctl/msg |\n|---|---|---:|---:|---:|",
            syscalls::how(counter)
        );
        for (k, sc) in r.scenarios.iter().enumerate() {
            for (s, name) in r.servers.iter().enumerate() {
                for (c, &n) in r.counts.iter().enumerate() {
                    let calls = r.summary(s, c, k).and_then(|x| x.syscalls);
                    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
                    let (all, ctl) = (f(calls.map(|c| c.total())), f(calls.map(|c| c.epoll_ctl())));
                    let _ = writeln!(w, "| {} | {name} | {n} | {all} | {ctl} |", sc.key);
                }
            }
        }
        let _ = writeln!(w);
    }
    notes(w, plan, out);
    if let Some(chart) = chart {
        let _ = writeln!(
            w,
            "![msgs/s and CPU µs/msg against server cores, every server side by side]({chart})"
        );
    }
    md
}

/// The churn scenario's figures per connection, where it ran: connections
/// per second, the server's CPU and syscalls per connection.
fn churn_table(w: &mut String, r: &Results) {
    let Some(k) = r.scenarios.iter().position(|sc| sc.kind == Kind::Churn) else {
        return;
    };
    let _ = writeln!(
        w,
        "{}: per connection, where a message above is a connection (the server's CPU \
         and syscalls over the whole run, warm-up included, ÷ every connection):\n\n\
         | server | cores | connections/s | server CPU µs/connection | syscalls/connection | connect to echo p99 µs |\n\
         |---|---:|---:|---:|---:|---:|",
        r.scenarios[k].title
    );
    for (s, name) in r.servers.iter().enumerate() {
        for (c, &n) in r.counts.iter().enumerate() {
            match r.summary(s, c, k) {
                Some(x) => {
                    let calls = x
                        .syscalls
                        .map_or("-".into(), |c| format!("{:.2}", c.total()));
                    let _ = writeln!(
                        w,
                        "| {name} | {n} | {} | {:.2} | {calls} | {} |",
                        thousands(x.msgs_per_s),
                        x.cpu_us_per_msg,
                        thousands(x.p99_us)
                    );
                }
                None => {
                    let _ = writeln!(w, "| {name} | {n} | failed | | | |");
                }
            }
        }
    }
    let _ = writeln!(w);
}

/// Every failed open-loop round of `make bench-latency`.
fn open_failures(out: &Outcome) -> Vec<String> {
    let Some(lat) = &out.latency else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for (s, name) in out.results.servers.iter().enumerate() {
        for (j, level) in lat.levels.iter().enumerate() {
            for e in lat.open[s][j].iter().filter_map(|r| r.as_ref().err()) {
                v.push(format!("{name}, {:.0}% load: {e}", level * 100.0));
            }
        }
    }
    v
}

/// The best (lowest) of `f` over the servers but the first, at `level`,
/// and whose it is.
fn best_peer(out: &Outcome, level: usize, f: impl Fn(&Summary) -> f64) -> Option<(f64, String)> {
    let lat = out.latency.as_ref()?;
    (1..out.results.servers.len())
        .filter_map(|s| {
            Some((
                f(&summarize(&lat.open[s][level])?),
                out.results.servers[s].clone(),
            ))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

/// The section of `make bench-latency`: each server's maximum, then the
/// latency percentiles at each offered load, and the target of issue 18.
pub fn latency_markdown(plan: &Plan, out: &Outcome, stamp: &str, chart: Option<&str>) -> String {
    let mut md = String::new();
    let w = &mut md;
    let r = &out.results;
    let Some(lat) = &out.latency else {
        return md;
    };
    let base = r.scenarios[0];
    let k = plan.load.clients;
    let levels: Vec<String> = lat
        .levels
        .iter()
        .map(|l| format!("{:.0}", l * 100.0))
        .collect();
    let _ = writeln!(w, "Measured {stamp}, with\n\n    {}\n", plan.command);
    let _ = writeln!(
        w,
        "{}. Each round, each server in turn (the order turned by one each round), pinned to \
         {}, with {k} load-generator process{} on {}: first its maximum, `{}` ({}) closed-loop \
         for {} s after {} s of warm-up; then, on the same server, {}% of that maximum offered \
         open-loop over the same {} connections: lines of {} B sent on a fixed schedule, spread \
         round-robin over the connections, whatever comes back, each latency counted from the \
         line's intended send time (so that a server which falls behind shows it as latency, \
         not as fewer requests: no coordinated omission) into an HdrHistogram; {} s after {} s \
         of warm-up, the echoes still out waited for up to 2 s. Figures: medians of the rounds, \
         each percentile on its own.\n",
        match plan.rounds {
            1 => "One round".to_string(),
            n => format!("Median of {n} interleaved rounds"),
        },
        cpu_words(&plan.server_sets[0]),
        if k == 1 { "" } else { "es" },
        cpu_words(&plan.client_cpus),
        base.key,
        base.title,
        plan.load.secs,
        plan.load.warmup,
        levels.join(", "),
        base.conns,
        base.size,
        plan.load.secs,
        plan.load.warmup,
    );
    shared_note(w, plan);
    for s in &plan.skipped {
        let _ = writeln!(w, "Not run: {s}.\n");
    }
    let _ = writeln!(
        w,
        "| server | max msgs/s (closed loop) | load | offered msgs/s | echoed msgs/s | p50 µs | p99 µs | p99.9 µs | max µs | sender lag p99 µs |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (s, name) in r.servers.iter().enumerate() {
        let max = r.summary(s, 0, 0);
        for (j, level) in lat.levels.iter().enumerate() {
            let (who, top) = match j {
                0 => (
                    name.as_str(),
                    max.as_ref()
                        .map_or("failed".into(), |m| thousands(m.msgs_per_s)),
                ),
                _ => ("", String::new()),
            };
            let _ = write!(w, "| {who} | {top} | {:.0}% |", level * 100.0);
            let Some(x) = summarize(&lat.open[s][j]) else {
                let _ = writeln!(w, " failed | | | | | | |");
                continue;
            };
            // Bold: the lowest of the column at this load.
            let lowest = |f: &dyn Fn(&Summary) -> f64| {
                (0..r.servers.len())
                    .filter_map(|o| summarize(&lat.open[o][j]))
                    .map(|o| f(&o))
                    .fold(f64::MAX, f64::min)
            };
            let cell = |v: f64, f: &dyn Fn(&Summary) -> f64| {
                let b = if v <= lowest(f) { "**" } else { "" };
                format!("{b}{}{b}", thousands(v))
            };
            let lost = match x.unanswered {
                0 => String::new(),
                n => format!(" ({n} never answered)"),
            };
            let _ = writeln!(
                w,
                " {} | {}{lost} | {} | {} | {} | {} | {} |",
                thousands(x.offered_per_s),
                thousands(x.msgs_per_s),
                cell(x.p50_us, &|o| o.p50_us),
                cell(x.p99_us, &|o| o.p99_us),
                cell(x.p999_us, &|o| o.p999_us),
                cell(x.max_us, &|o| o.max_us),
                thousands(x.lag_p99_us),
            );
        }
    }
    let _ = writeln!(
        w,
        "\nLoad: the offered rate as a share of the server's own maximum, measured in the same \
         round. Bold: the lowest latency of each load. Sender lag: how late the load generator \
         sent its lines behind the schedule (p99); where it is more than a few µs the load \
         generator itself fell behind, and the latencies include that delay (they count from \
         the intended time either way), for every server alike.\n"
    );
    // Issue 18's target: reactor-echo's p99 and p99.9 at 90% no worse than the best peer's.
    if let Some(j) = lat.levels.iter().position(|l| (*l - 0.9).abs() < 1e-9) {
        let mine = summarize(&lat.open[0][j]);
        let p99 = best_peer(out, j, |x| x.p99_us);
        let p999 = best_peer(out, j, |x| x.p999_us);
        if let (Some(m), Some(p99), Some(p999)) = (mine, p99, p999) {
            let verdict = |a: f64, b: f64| if a <= b { "**met**" } else { "**missed**" };
            let _ = writeln!(
                w,
                "Target (issue 18), {}'s p99 and p99.9 at 90% load no worse than the best peer's: \
                 p99 {} µs against {} µs ({}), {} ({:.2}×); p99.9 {} µs against {} µs ({}), {} ({:.2}×).\n",
                r.servers[0],
                thousands(m.p99_us),
                thousands(p99.0),
                p99.1,
                verdict(m.p99_us, p99.0),
                m.p99_us / p99.0,
                thousands(m.p999_us),
                thousands(p999.0),
                p999.1,
                verdict(m.p999_us, p999.0),
                m.p999_us / p999.0,
            );
        }
    }
    // The rounds themselves at the highest load: how far apart they are.
    if let Some(j) = lat.levels.len().checked_sub(1) {
        let per: Vec<String> = r
            .servers
            .iter()
            .enumerate()
            .map(|(s, name)| {
                let rounds: Vec<String> = lat.open[s][j]
                    .iter()
                    .map(|x| x.as_ref().map_or("failed".into(), |x| thousands(x.p99_us)))
                    .collect();
                format!("{name} {}", rounds.join(", "))
            })
            .collect();
        let _ = writeln!(
            w,
            "p99 at {:.0}% load, round by round (µs): {}.\n",
            lat.levels[j] * 100.0,
            per.join("; ")
        );
    }
    notes(w, plan, out);
    let failures = open_failures(out);
    if !failures.is_empty() {
        let _ = writeln!(
            w,
            "Open-loop rounds that failed (left out of the medians):\n"
        );
        for f in failures {
            let _ = writeln!(w, "- {f}");
        }
        let _ = writeln!(w);
    }
    if let Some(chart) = chart {
        let _ = writeln!(
            w,
            "![p50, p99, p99.9 and max latency against offered load, every server side by side]({chart})"
        );
    }
    md
}

/// The paragraphs both modes end with: the noise between rounds, the other
/// work on the machine, the rounds that failed.
fn notes(w: &mut String, plan: &Plan, out: &Outcome) {
    let r = &out.results;
    let mut spreads: Vec<(f64, String)> = Vec::new();
    for (s, name) in r.servers.iter().enumerate() {
        for (c, &n) in r.counts.iter().enumerate() {
            for (k, sc) in r.scenarios.iter().enumerate() {
                if let Some(x) = r.summary(s, c, k).filter(|x| x.rounds > 1) {
                    spreads.push((x.spread, format!("{name}, {}, {}", sc.key, cores(n))));
                }
            }
        }
    }
    if let Some(worst) = spreads.iter().max_by(|a, b| a.0.total_cmp(&b.0)) {
        let mid = median(&mut spreads.iter().map(|s| s.0).collect::<Vec<_>>()).unwrap_or(0.0);
        let _ = writeln!(
            w,
            "Noise: the rounds of one cell differ in msgs/s by {:.0}% (max − min ÷ median) \
             in the median cell, {:.0}% at most ({}).\n",
            mid * 100.0,
            worst.0 * 100.0,
            worst.1
        );
    }
    let q = &out.quiet;
    if !q.others.is_empty() {
        let mut others = q.others.clone();
        let mid = median(&mut others).unwrap_or(0.0);
        let top = others.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            w,
            "Other work on the machine while measuring (CPU time of every process but the \
             server, this driver and its load generators, kernel threads left out, in CPUs): \
             median {mid:.2} over the measurements kept, at most {top:.2}. {} measurement{} \
             taken again because other work was above {} CPUs{}.\n",
            q.repeated,
            if q.repeated == 1 { " was" } else { "s were" },
            plan.max_other,
            match q.busy_kept {
                0 => String::new(),
                n => format!(
                    "; {n} kept above it, every one of {} tries having been as busy",
                    plan.tries
                ),
            }
        );
    }
    let failures = r.failures();
    if !failures.is_empty() {
        let _ = writeln!(w, "Rounds that failed (left out of the medians):\n");
        for f in failures {
            let _ = writeln!(w, "- {f}");
        }
        let _ = writeln!(w);
    }
}

/// Prints the section, writes it into every `--out` file with the chart,
/// and the raw rounds; false when a round failed or an echo was wrong.
pub fn publish(plan: &Plan, out: &Outcome) -> bool {
    let (date, machine) = (host::now_utc(), host::machine());
    let stamp = format!("{date} on {machine}");
    let markdown = |chart: Option<&str>| match plan.mode {
        Mode::Alone => alone_markdown(plan, out, &stamp, chart),
        Mode::Compare => compare_markdown(plan, out, &stamp, chart),
        Mode::Latency => latency_markdown(plan, out, &stamp, chart),
    };
    println!("{}", markdown(None));
    let mut ok = true;
    let mut fail = |e: String| {
        eprintln!("bench: {e}");
        ok = false;
    };
    if !plan.outs.is_empty() {
        let svg = match plan.mode {
            Mode::Alone => chart::bars(out),
            Mode::Compare => {
                let shared: Vec<usize> = shared_counts(plan).into_iter().map(|s| s.0).collect();
                let title = format!(
                    "make bench-compare: every server against its core count ({machine}, {date})"
                );
                chart::scaling(&out.results, &shared, &title)
            }
            Mode::Latency => {
                let title = format!(
                    "make bench-latency: latency against offered load, open loop ({machine}, {date})"
                );
                chart::latency(out, &title)
            }
        };
        let written = svg.and_then(|svg| {
            std::fs::write(&plan.chart, svg)
                .map_err(|e| format!("cannot write {}: {e}", plan.chart.display()))
        });
        match written {
            Ok(()) => eprintln!("bench: wrote {}", plan.chart.display()),
            Err(e) => fail(e),
        }
        for path in &plan.outs {
            let link = relative(path.parent().unwrap_or(Path::new("")), &plan.chart);
            match write_section(path, plan.mode, &markdown(Some(&link))) {
                Ok(()) => eprintln!("bench: wrote {}", path.display()),
                Err(e) => fail(format!("cannot write {}: {e}", path.display())),
            }
        }
    }
    match std::fs::write(&plan.raw, &out.raw) {
        Ok(()) => eprintln!("bench: every round's figures: {}", plan.raw.display()),
        Err(e) => eprintln!("bench: cannot write {}: {e}", plan.raw.display()),
    }
    let failures = out.results.failures().len() + open_failures(out).len();
    if failures > 0 {
        fail(format!("{failures} round(s) failed"));
    }
    if out.results.echo_errors() > 0 {
        fail(format!(
            "{} echoed lines came back wrong",
            out.results.echo_errors()
        ));
    }
    if let Some(idle) = out.idle.as_ref().filter(|i| i.echoed != i.conns) {
        fail(format!(
            "{} of {} idle connections echoed",
            idle.echoed, idle.conns
        ));
    }
    ok
}

/// The markers of `mode`'s section.
pub fn markers(mode: Mode) -> (String, String) {
    let key = mode.key();
    (
        format!(
            "<!-- {key}:begin (written by `make {}`; edit outside these markers) -->",
            mode.make_target()
        ),
        format!("<!-- {key}:end -->"),
    )
}

/// Puts `section` between the markers of `mode` in `path`, keeping the
/// rest; a file without the markers gets them, under the mode's heading,
/// at its end.
pub fn write_section(path: &Path, mode: Mode, section: &str) -> std::io::Result<()> {
    let (begin, end) = markers(mode);
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{begin}\n{section}{}", &old[..b], &old[e..]),
        _ => {
            let sep = match () {
                _ if old.is_empty() || old.ends_with("\n\n") => "",
                _ if old.ends_with('\n') => "\n",
                _ => "\n\n",
            };
            format!("{old}{sep}{}\n\n{begin}\n{section}{end}\n", mode.heading())
        }
    };
    std::fs::write(path, new)
}

/// `to` as a link from a file in `from_dir` (both relative to the same
/// directory, or both absolute).
pub fn relative(from_dir: &Path, to: &Path) -> String {
    let from: Vec<_> = from_dir.components().collect();
    let dest: Vec<_> = to.components().collect();
    let common = from.iter().zip(&dest).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); from.len() - common];
    parts.extend(
        dest[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Spec;
    use crate::scenario::SCENARIOS;
    use crate::server::{Idle, Load};

    fn sample(msgs: f64, cpu: f64) -> Result<Sample, String> {
        Ok(Sample {
            msgs_per_s: msgs,
            cpu_us_per_msg: cpu,
            ..Sample::default()
        })
    }

    fn plan(mode: Mode, servers: &[&str], counts: Vec<usize>, sets: Vec<Vec<usize>>) -> Plan {
        Plan {
            mode,
            servers: servers
                .iter()
                .map(|s| Spec {
                    name: s.to_string(),
                    argv: vec![],
                })
                .collect(),
            skipped: vec!["go-tutorial (no go)".into()],
            counts,
            server_sets: sets,
            client_cpus: vec![0],
            scenarios: SCENARIOS.iter().collect(),
            load: Load {
                loadgen: "loadgen".into(),
                client_cpus: "0".into(),
                clients: 1,
                secs: 1.0,
                warmup: 0.5,
                counter: None,
            },
            rounds: 1,
            max_other: 0.3,
            tries: 3,
            idle: 0,
            command: "make bench-compare".into(),
            outs: vec![],
            chart: "chart.svg".into(),
            raw: "raw.tsv".into(),
        }
    }

    fn outcome(servers: &[&str], counts: Vec<usize>, samples: Vec<Vec<Vec<Rounds>>>) -> Outcome {
        Outcome {
            results: Results {
                servers: servers.iter().map(|s| s.to_string()).collect(),
                counts,
                scenarios: SCENARIOS.iter().collect(),
                samples,
            },
            quiet: Quiet {
                others: vec![0.1, 0.5],
                repeated: 4,
                busy_kept: 1,
            },
            raw: String::new(),
            idle: None,
            latency: None,
        }
    }

    #[test]
    fn medians_skip_failed_rounds() {
        let rounds = vec![
            sample(100.0, 5.0),
            Err("boom".into()),
            sample(300.0, 3.0),
            sample(200.0, 4.0),
        ];
        let s = summarize(&rounds).unwrap();
        assert_eq!(s.msgs_per_s, 200.0);
        assert_eq!(s.cpu_us_per_msg, 4.0);
        assert_eq!(s.rounds, 3);
        assert!((s.spread - 1.0).abs() < 1e-9);
        assert!(s.syscalls.is_none(), "none counted, none reported");
        assert!(summarize(&[Err("x".into())]).is_none());
        assert_eq!(median(&mut [1.0, 2.0, 3.0, 4.0]), Some(2.5));
    }

    #[test]
    fn table_names_every_server_and_the_shared_cpu() {
        let servers = ["reactor-echo", "tokio-multi"];
        let out = outcome(
            &servers,
            vec![1, 2],
            vec![
                vec![
                    vec![vec![sample(100.0, 5.0)]; 5],
                    vec![vec![sample(180.0, 5.0)]; 5],
                ],
                vec![
                    vec![vec![sample(50.0, 10.0)]; 5],
                    vec![vec![sample(90.0, 9.0)]; 5],
                ],
            ],
        );
        let plan = plan(
            Mode::Compare,
            &servers,
            vec![1, 2],
            vec![vec![1], vec![1, 0]],
        );
        let md = compare_markdown(&plan, &out, "today on a box", Some("chart.svg"));
        assert!(md.contains("| ping-pong, 50 conns × 1 line of 64 B | reactor-echo | **100** | **5.00** | **180** | **5.00** | 0.90 |"), "{md}");
        assert!(md.contains("| ping-pong | 2 | 2.00× / 0.56× |"), "{md}");
        assert!(md.contains("**2 cores: the server shares CPU 0 with the load generator.**"));
        assert!(md.contains("Not run: go-tutorial (no go)."));
        assert!(md.contains("(chart.svg)"));
        assert!(
            md.contains("4 measurements were taken again because other work was above 0.3 CPUs; 1 kept above it"),
            "{md}"
        );
    }

    #[test]
    fn alone_table_keeps_every_figure() {
        let calls = Syscalls([2.071, 1.0, 1.0, 0.071, 0.0]);
        let m = Sample {
            msgs_per_s: 145_964.0,
            cpu_us_per_msg: 6.49,
            p50_us: 323.0,
            p99_us: 673.0,
            p999_us: 2217.0,
            syscalls: Some(calls),
            rss_kib: 2662.4,
            ..Sample::default()
        };
        let mut out = outcome(&["reactor-echo"], vec![1], vec![vec![vec![vec![Ok(m)]; 5]]]);
        out.idle = Some(Idle {
            conns: 10_000,
            echoed: 10_000,
            rss_kib: 4198.4,
            baseline_kib: 2662.4,
        });
        let mut plan = plan(Mode::Alone, &["reactor-echo"], vec![1], vec![vec![1]]);
        plan.load.counter = Some(syscalls::Counter::Perf);
        let md = alone_markdown(&plan, &out, "today on a box", Some("benchmarks.svg"));
        assert!(md.contains("Server pinned to CPU 1, load generator to CPU 0; 1 s per scenario after 0.5 s of warm-up. Syscalls: perf stat on the syscall tracepoints; per message, warm-up included."), "{md}");
        assert!(md.contains("| scenario | msgs/s | p50 µs | p99 µs | p999 µs | CPU µs/msg | syscalls/msg | reads/msg | writes/msg | epoll_wait/msg | epoll_ctl/msg | RSS MiB | errors |"), "{md}");
        assert!(md.contains("| ping-pong, 50 conns × 1 line of 64 B | 145,964 | 323 | 673 | 2217 | 6.49 | 2.071 | 1.000 | 1.000 | 0.071 | 0.000 | 2.6 | 0 |"), "{md}");
        assert!(md.contains("| 10,000 idle connections (each echoed one line: 10,000 ok) | | | | | | | | | | | 4.1 (at start: 2.6) | |"), "{md}");
        assert!(md.ends_with("![benchmark chart](benchmarks.svg)\n"));
    }

    /// An open-loop sample at `rate` with these percentiles.
    fn open(rate: f64, p50: f64, p99: f64, p999: f64) -> Result<Sample, String> {
        Ok(Sample {
            msgs_per_s: rate,
            target_per_s: rate,
            offered_per_s: rate,
            p50_us: p50,
            p99_us: p99,
            p999_us: p999,
            max_us: p999 * 2.0,
            lag_p99_us: 4.0,
            ..Sample::default()
        })
    }

    /// `make bench-latency`'s outcome for two servers, three rounds each.
    pub(crate) fn latency_outcome(mine_p99_at_90: f64) -> Outcome {
        let servers = ["reactor-echo", "tokio-multi"];
        let base = crate::scenario::latency_base();
        let mut out = outcome(
            &servers,
            vec![1],
            vec![
                vec![vec![vec![sample(300_000.0, 3.0); 3]]],
                vec![vec![vec![sample(200_000.0, 4.0); 3]]],
            ],
        );
        out.results.scenarios = vec![base];
        let levels = crate::scenario::LEVELS.to_vec();
        let mine: Vec<Rounds> = levels
            .iter()
            .map(|l| {
                let p99 = if *l > 0.8 { mine_p99_at_90 } else { 100.0 * l };
                vec![open(300_000.0 * l, 40.0, p99, 900.0); 3]
            })
            .collect();
        let theirs: Vec<Rounds> = levels
            .iter()
            .map(|l| {
                let mut r = vec![open(200_000.0 * l, 50.0, 200.0 * l, 1000.0); 3];
                r[1] = Err("boom".into());
                r
            })
            .collect();
        out.latency = Some(crate::run::Latency {
            levels,
            open: vec![mine, theirs],
        });
        out
    }

    #[test]
    fn latency_table_and_target() {
        let mut plan = plan(
            Mode::Latency,
            &["reactor-echo", "tokio-multi"],
            vec![1],
            vec![vec![1]],
        );
        plan.scenarios = vec![crate::scenario::latency_base()];
        plan.rounds = 3;
        let md = latency_markdown(
            &plan,
            &latency_outcome(150.0),
            "today on a box",
            Some("l.svg"),
        );
        assert!(md.contains("| server | max msgs/s (closed loop) | load | offered msgs/s | echoed msgs/s | p50 µs | p99 µs | p99.9 µs | max µs | sender lag p99 µs |"), "{md}");
        assert!(md.contains("| reactor-echo | 300,000 | 25% | 75,000 | 75,000 | **40** | **25** | **900** | **1,800** | 4 |"), "{md}");
        assert!(
            md.contains(
                "| tokio-multi | 200,000 | 25% | 50,000 | 50,000 | 50 | 50 | 1,000 | 2,000 | 4 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("|  |  | 90% | 270,000 | 270,000 | **40** | **150** |"),
            "{md}"
        );
        assert!(md.contains("p99 150 µs against 180 µs (tokio-multi), **met** (0.83×); p99.9 900 µs against 1,000 µs (tokio-multi), **met** (0.90×)."), "{md}");
        assert!(md.contains("- tokio-multi, 90% load: boom"), "{md}");
        assert!(md.contains("p99 at 90% load, round by round (µs): reactor-echo 150, 150, 150; tokio-multi 180, failed, 180."), "{md}");
        assert!(md.ends_with("(l.svg)\n"));
        let md = latency_markdown(&plan, &latency_outcome(181.0), "today", None);
        assert!(
            md.contains("p99 181 µs against 180 µs (tokio-multi), **missed** (1.01×)"),
            "{md}"
        );
        let svg = chart::latency(&latency_outcome(150.0), "t").unwrap();
        assert!(
            svg.contains("p99.9 latency") && svg.contains("90%") && svg.contains("tokio-multi")
        );
    }

    #[test]
    fn churn_is_told_per_connection() {
        let servers = ["reactor-echo", "tokio-current"];
        let mut churn = Sample {
            msgs_per_s: 13_000.0,
            cpu_us_per_msg: 43.3,
            p99_us: 900.0,
            syscalls: Some(Syscalls([10.1, 2.0, 1.0, 1.0, 1.0])),
            ..Sample::default()
        };
        let mut cells = |cpu: f64| {
            churn.cpu_us_per_msg = cpu;
            let mut row = vec![vec![sample(1.0, 1.0)]; 5];
            row[4] = vec![Ok(churn.clone())];
            vec![row]
        };
        let out = outcome(&servers, vec![1], vec![cells(43.3), cells(45.5)]);
        let plan = plan(Mode::Compare, &servers, vec![1], vec![vec![1]]);
        let md = compare_markdown(&plan, &out, "today", None);
        assert!(md.contains("| server | cores | connections/s | server CPU µs/connection | syscalls/connection | connect to echo p99 µs |"), "{md}");
        assert!(
            md.contains("| reactor-echo | 1 | 13,000 | 43.30 | 10.10 | 900 |"),
            "{md}"
        );
        assert!(
            md.contains("| tokio-current | 1 | 13,000 | 45.50 | 10.10 | 900 |"),
            "{md}"
        );
    }

    #[test]
    fn section_replaced_or_appended() {
        let dir = std::env::temp_dir().join(format!("bench-report-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.md");
        let (begin, end) = markers(Mode::Compare);
        assert_eq!(
            begin,
            "<!-- compare:begin (written by `make bench-compare`; edit outside these markers) -->"
        );
        let (b, e) = markers(Mode::Alone);
        assert_eq!(
            (b.as_str(), e.as_str()),
            (
                "<!-- bench:begin (written by `make bench`; edit outside these markers) -->",
                "<!-- bench:end -->"
            )
        );
        // Both sections in one file: each mode writes only its own.
        std::fs::write(
            &path,
            format!("intro\n{b}\nold\n{e}\nmid\n{begin}\nold\n{end}\nafter\n"),
        )
        .unwrap();
        write_section(&path, Mode::Compare, "new\n").unwrap();
        write_section(&path, Mode::Alone, "alone\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("intro\n{b}\nalone\n{e}\nmid\n{begin}\nnew\n{end}\nafter\n")
        );
        std::fs::write(&path, "intro\n").unwrap();
        write_section(&path, Mode::Compare, "new\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("intro\n\n## Scaling")
                && text.ends_with(&format!("{begin}\nnew\n{end}\n"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links() {
        assert_eq!(
            relative(Path::new("docs"), Path::new("docs/a.svg")),
            "a.svg"
        );
        assert_eq!(
            relative(Path::new("docs/zh"), Path::new("docs/a.svg")),
            "../a.svg"
        );
    }
}
