//! Medians and the Markdown report of `compare` (`make bench-compare`):
//! the scaling table, reactor-echo's ratios to each peer, the run-to-run
//! noise, and the section of `docs/benchmarks.md` between its markers.

use std::fmt::Write as _;
use std::path::Path;

use super::run::{Counter, Sample, Scenario};

pub const BEGIN: &str =
    "<!-- compare:begin (written by `make bench-compare`; edit outside these markers) -->";
pub const END: &str = "<!-- compare:end -->";

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
    pub syscalls_per_msg: Option<f64>,
    pub epoll_ctl_per_msg: Option<f64>,
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
    Some(Summary {
        msgs_per_s: msgs,
        cpu_us_per_msg: pick(&|s| Some(s.cpu_us_per_msg))?,
        syscalls_per_msg: pick(&|s| s.syscalls_per_msg),
        epoll_ctl_per_msg: pick(&|s| s.epoll_ctl_per_msg),
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
                    for r in &self.samples[s][c][k] {
                        if let Err(e) = r {
                            out.push(format!("{name}, {n} cores, {}: {e}", sc.key));
                        }
                    }
                }
            }
        }
        out
    }

    /// Echo errors (bytes that came back wrong) anywhere.
    pub fn echo_errors(&self) -> u64 {
        let mut n = 0;
        for per_count in &self.samples {
            for per_scenario in per_count {
                for rounds in per_scenario {
                    n += rounds
                        .iter()
                        .filter_map(|r| r.as_ref().ok())
                        .map(|s| s.errors)
                        .sum::<u64>();
                }
            }
        }
        n
    }
}

/// How quiet the machine was: other work during the measurements kept,
/// and the measurements taken again because of it.
#[derive(Clone, Debug, Default)]
pub struct Quiet {
    /// Above this many CPUs of other work a measurement is taken again.
    pub max_other: f64,
    pub tries: usize,
    /// Other work during each kept measurement, in CPUs.
    pub others: Vec<f64>,
    /// Measurements thrown away for other work.
    pub repeated: usize,
    /// Kept although above `max_other` (every try was).
    pub busy_kept: usize,
}

/// How the run was set up, for the words around the tables.
pub struct Setup {
    pub date: String,
    pub machine: String,
    /// The `make bench-compare ...` line that repeats the run.
    pub command: String,
    pub rounds: usize,
    pub secs: f64,
    pub warmup: f64,
    pub clients: usize,
    pub client_cpus: Vec<usize>,
    /// The server's CPUs, one list per core count.
    pub server_cpus: Vec<Vec<usize>>,
    /// Servers left out, and why.
    pub skipped: Vec<String>,
    pub counter: Counter,
    pub quiet: Quiet,
}

pub fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && c.is_ascii_digit() && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn cores(n: usize) -> String {
    if n == 1 {
        "1 core".into()
    } else {
        format!("{n} cores")
    }
}

fn cpu_words(cpus: &[usize]) -> String {
    let list = super::cpus::format_list(cpus);
    if cpus.len() == 1 {
        format!("CPU {list}")
    } else {
        format!("CPUs {list}")
    }
}

/// The core counts whose server CPUs include a load generator CPU.
pub fn shared_counts(setup: &Setup, counts: &[usize]) -> Vec<(usize, Vec<usize>)> {
    counts
        .iter()
        .zip(&setup.server_cpus)
        .filter_map(|(&n, cpus)| {
            let shared = super::cpus::shared(cpus, &setup.client_cpus);
            (!shared.is_empty()).then_some((n, shared))
        })
        .collect()
}

/// The section between the markers. `chart` is the SVG's path as seen
/// from the Markdown file.
pub fn markdown(r: &Results, setup: &Setup, chart: Option<&str>) -> String {
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(
        w,
        "Measured {} on {}, with\n\n    {}\n",
        setup.date, setup.machine, setup.command
    );
    let placement: Vec<String> = r
        .counts
        .iter()
        .zip(&setup.server_cpus)
        .map(|(&n, cpus)| format!("{}: {}", cores(n), cpu_words(cpus)))
        .collect();
    let _ = writeln!(
        w,
        "{}; each scenario runs {} s after {} s of warm-up, \
         driven by {} load-generator process{} on {} (the connections split between them, \
         msgs/s summed). Server CPUs: {}. reactor-echo runs `--workers N` and tokio-multi \
         `--threads N`; the other peers are only pinned to the N CPUs. CPU µs/msg: the \
         server's user + system time, every thread, over the whole run (warm-up included) \
         per message echoed. Every echoed byte is checked.\n",
        if setup.rounds == 1 {
            "One round".to_string()
        } else {
            format!("Median of {} interleaved rounds", setup.rounds)
        },
        setup.secs,
        setup.warmup,
        setup.clients,
        if setup.clients == 1 { "" } else { "es" },
        cpu_words(&setup.client_cpus),
        placement.join("; "),
    );
    for (n, shared) in shared_counts(setup, &r.counts) {
        let _ = writeln!(
            w,
            "**{}: the server shares {} with the load generator.** The two compete for it, so \
             these columns measure server and load generator together on {} CPUs, not what \
             the server does with {} of its own (which needs a machine with more CPUs than \
             server cores). Ratios between servers in these columns still compare like with \
             like; scaling figures from them do not show what more cores give.\n",
            cores(n),
            cpu_words(&shared),
            setup.server_cpus[r.counts.iter().position(|&c| c == n).unwrap_or(0)].len(),
            cores(n),
        );
    }
    for s in &setup.skipped {
        let _ = writeln!(w, "Not run: {s}.\n");
    }

    // The scaling table: rows are scenario × server, two columns per core count.
    let scaling = r.counts.contains(&1) && r.counts.len() > 1;
    let _ = write!(w, "| scenario | server |");
    for &n in &r.counts {
        let _ = write!(w, " {} msgs/s | {} CPU µs/msg |", cores(n), cores(n));
    }
    if scaling {
        for &n in r.counts.iter().filter(|&&n| n > 1) {
            let _ = write!(w, " scaling at {n} |");
        }
    }
    let _ = write!(w, "\n|---|---|");
    for _ in &r.counts {
        let _ = write!(w, "---:|---:|");
    }
    if scaling {
        for _ in r.counts.iter().filter(|&&n| n > 1) {
            let _ = write!(w, "---:|");
        }
    }
    let _ = writeln!(w);
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
            let title = if s == 0 { sc.title } else { "" };
            let _ = write!(w, "| {title} | {name} |");
            for (c, best) in best.iter().enumerate() {
                match r.summary(s, c, k) {
                    Some(x) => {
                        let bold = |b: bool| if b { "**" } else { "" };
                        let m = bold(x.msgs_per_s >= best.0);
                        let u = bold(x.cpu_us_per_msg <= best.1);
                        let wrong = if x.errors > 0 {
                            format!(" ({} wrong echoes)", x.errors)
                        } else {
                            String::new()
                        };
                        let _ = write!(
                            w,
                            " {m}{}{m}{wrong} | {u}{:.2}{u} |",
                            thousands(x.msgs_per_s),
                            x.cpu_us_per_msg
                        );
                    }
                    None => {
                        let _ = write!(w, " failed | failed |");
                    }
                }
            }
            if scaling {
                let one = r.counts.iter().position(|&n| n == 1).unwrap_or(0);
                for (c, &n) in r.counts.iter().enumerate().filter(|(_, n)| **n > 1) {
                    match (r.summary(s, one, k), r.summary(s, c, k)) {
                        (Some(a), Some(b)) if a.msgs_per_s > 0.0 => {
                            let _ = write!(w, " {:.2} |", b.msgs_per_s / (n as f64 * a.msgs_per_s));
                        }
                        _ => {
                            let _ = write!(w, " - |");
                        }
                    }
                }
            }
            let _ = writeln!(w);
        }
    }
    let _ = writeln!(w);
    if scaling {
        let _ = writeln!(
            w,
            "Scaling at N: msgs/s with N cores ÷ (N × msgs/s with 1 core); 1.00 is perfect. \
             Bold: the most msgs/s and the least CPU per message of each column.\n"
        );
    } else {
        let _ = writeln!(
            w,
            "Bold: the most msgs/s and the least CPU per message of each column.\n"
        );
    }

    // The first server against each of the others.
    if r.servers.len() > 1 {
        let me = &r.servers[0];
        let _ = writeln!(
            w,
            "{me} ÷ each other server, msgs/s then CPU µs/msg (above 1× is more messages; \
             below 1× is less CPU per message):\n"
        );
        let _ = write!(w, "| scenario | cores |");
        for other in &r.servers[1..] {
            let _ = write!(w, " ÷ {other} |");
        }
        let _ = write!(w, "\n|---|---:|");
        for _ in &r.servers[1..] {
            let _ = write!(w, "---:|");
        }
        let _ = writeln!(w);
        for (k, sc) in r.scenarios.iter().enumerate() {
            for (c, &n) in r.counts.iter().enumerate() {
                let _ = write!(w, "| {} | {n} |", sc.key);
                let mine = r.summary(0, c, k);
                for s in 1..r.servers.len() {
                    match (&mine, r.summary(s, c, k)) {
                        (Some(a), Some(b)) if b.msgs_per_s > 0.0 && b.cpu_us_per_msg > 0.0 => {
                            let _ = write!(
                                w,
                                " {:.2}× / {:.2}× |",
                                a.msgs_per_s / b.msgs_per_s,
                                a.cpu_us_per_msg / b.cpu_us_per_msg
                            );
                        }
                        _ => {
                            let _ = write!(w, " - |");
                        }
                    }
                }
                let _ = writeln!(w);
            }
        }
        let _ = writeln!(w);
    }

    if setup.counter != Counter::None {
        let how = if setup.counter == Counter::Perf {
            "perf stat on the syscall tracepoints"
        } else {
            "strace -c -f"
        };
        let _ = writeln!(
            w,
            "Syscalls of the server per message ({how}; it slows the server, so these rounds' \
             msgs/s read low):\n"
        );
        let _ = writeln!(
            w,
            "| scenario | server | cores | syscalls/msg | epoll_ctl/msg |\n|---|---|---:|---:|---:|"
        );
        for (k, sc) in r.scenarios.iter().enumerate() {
            for (s, name) in r.servers.iter().enumerate() {
                for (c, &n) in r.counts.iter().enumerate() {
                    let x = r.summary(s, c, k).unwrap_or_default();
                    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
                    let _ = writeln!(
                        w,
                        "| {} | {name} | {n} | {} | {} |",
                        sc.key,
                        f(x.syscalls_per_msg),
                        f(x.epoll_ctl_per_msg)
                    );
                }
            }
        }
        let _ = writeln!(w);
    }

    // Noise: how far the rounds of one cell were apart.
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
    if !spreads.is_empty() {
        let mut all: Vec<f64> = spreads.iter().map(|s| s.0).collect();
        let mid = median(&mut all).unwrap_or(0.0);
        let worst = spreads
            .iter()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .expect("not empty");
        let _ = writeln!(
            w,
            "Noise: the rounds of one cell differ in msgs/s by {:.0}% (max − min ÷ median) \
             in the median cell, {:.0}% at most ({}).\n",
            mid * 100.0,
            worst.0 * 100.0,
            worst.1
        );
    }
    let q = &setup.quiet;
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
            q.max_other,
            if q.busy_kept > 0 {
                format!(
                    "; {} kept above it, every one of {} tries having been as busy",
                    q.busy_kept, q.tries
                )
            } else {
                String::new()
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
    if let Some(chart) = chart {
        let _ = writeln!(
            w,
            "![msgs/s and CPU µs/msg against server cores, every server side by side]({chart})"
        );
    }
    md
}

/// Puts `section` between the markers of `path`, keeping the rest; a file
/// without the markers gets them, with a heading, at its end.
pub fn write_section(path: &Path, section: &str) -> std::io::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{BEGIN}\n{section}{}", &old[..b], &old[e..]),
        _ => {
            let sep = if old.is_empty() || old.ends_with("\n\n") {
                ""
            } else if old.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!(
                "{old}{sep}## Scaling, side by side (`make bench-compare`)\n\n{BEGIN}\n{section}{END}\n"
            )
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
    use super::super::run::SCENARIOS;
    use super::*;

    fn sample(msgs: f64, cpu: f64) -> Result<Sample, String> {
        Ok(Sample {
            msgs_per_s: msgs,
            cpu_us_per_msg: cpu,
            ..Sample::default()
        })
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
        assert!(summarize(&[Err("x".into())]).is_none());
        assert_eq!(median(&mut [1.0, 2.0, 3.0, 4.0]), Some(2.5));
    }

    #[test]
    fn table_names_every_server_and_the_shared_cpu() {
        let r = Results {
            servers: vec!["reactor-echo".into(), "tokio-multi".into()],
            counts: vec![1, 2],
            scenarios: SCENARIOS.iter().collect(),
            samples: vec![
                vec![
                    vec![vec![sample(100.0, 5.0)]; 4],
                    vec![vec![sample(180.0, 5.0)]; 4],
                ],
                vec![
                    vec![vec![sample(50.0, 10.0)]; 4],
                    vec![vec![sample(90.0, 9.0)]; 4],
                ],
            ],
        };
        let setup = Setup {
            date: "today".into(),
            machine: "a box".into(),
            command: "make bench-compare".into(),
            rounds: 1,
            secs: 1.0,
            warmup: 0.5,
            clients: 1,
            client_cpus: vec![0],
            server_cpus: vec![vec![1], vec![1, 0]],
            skipped: vec!["go-tutorial (no go)".into()],
            counter: Counter::None,
            quiet: Quiet {
                max_other: 0.3,
                tries: 3,
                others: vec![0.1, 0.5],
                repeated: 4,
                busy_kept: 1,
            },
        };
        let md = markdown(&r, &setup, Some("chart.svg"));
        assert!(md.contains("| ping-pong, 50 conns × 1 line of 64 B | reactor-echo | **100** | **5.00** | **180** | **5.00** | 0.90 |"), "{md}");
        assert!(md.contains("| ping-pong | 2 | 2.00× / 0.56× |"), "{md}");
        assert!(md.contains("**2 cores: the server shares CPU 0 with the load generator.**"));
        assert!(md.contains("Not run: go-tutorial (no go)."));
        assert!(md.contains("(chart.svg)"));
        assert!(
            md.contains(
                "4 measurements were taken again because other work was above 0.3 CPUs; 1 kept above it"
            ),
            "{md}"
        );
    }

    #[test]
    fn section_replaced_or_appended() {
        let dir = std::env::temp_dir().join(format!("compare-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.md");
        std::fs::write(&path, format!("intro\n{BEGIN}\nold\n{END}\nafter\n")).unwrap();
        write_section(&path, "new\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("intro\n{BEGIN}\nnew\n{END}\nafter\n")
        );
        std::fs::write(&path, "intro\n").unwrap();
        write_section(&path, "new\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("intro\n\n## Scaling")
                && text.ends_with(&format!("{BEGIN}\nnew\n{END}\n"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_and_numbers() {
        assert_eq!(
            relative(Path::new("docs"), Path::new("docs/a.svg")),
            "a.svg"
        );
        assert_eq!(
            relative(Path::new("docs/zh"), Path::new("docs/a.svg")),
            "../a.svg"
        );
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
