//! Plan, the first of plan, run and report: the command line read into
//! what to run (servers, core counts and their CPUs, scenarios, load, where
//! the report goes), checked before anything starts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::cpus;
use crate::host::sibling;
use crate::scenario::{self, SCENARIOS, Scenario};
use crate::server::{Load, program};
use crate::syscalls;

/// The tool's two modes, one section of `docs/benchmarks.md` each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `make bench`: reactor-echo alone at one core count, with its extras
    /// (latency percentiles, syscalls by kind, RSS, idle connections).
    Alone,
    /// `make bench-compare`: reactor-echo beside its peers, at each core
    /// count, in interleaved rounds.
    Compare,
    /// `make bench-latency`: reactor-echo beside its peers at one core
    /// count, each server's maximum measured closed-loop, then latency
    /// open-loop at fixed fractions of it.
    Latency,
}

impl Mode {
    /// The name of its markers and of its raw file.
    pub fn key(self) -> &'static str {
        match self {
            Mode::Alone => "bench",
            Mode::Compare => "compare",
            Mode::Latency => "latency",
        }
    }

    pub fn make_target(self) -> &'static str {
        match self {
            Mode::Alone => "bench",
            Mode::Compare => "bench-compare",
            Mode::Latency => "bench-latency",
        }
    }

    /// The heading a file without this mode's markers gets, above them.
    pub fn heading(self) -> &'static str {
        match self {
            Mode::Alone => "## reactor-echo alone (`make bench`)",
            Mode::Compare => "## Scaling, side by side (`make bench-compare`)",
            Mode::Latency => "## Latency at a fixed offered rate (`make bench-latency`)",
        }
    }
}

pub const USAGE: &str = "usage: bench [compare] [--cores \"1 2\"] [--server-cpus LIST] [--client-cpus LIST]
             [--clients K] [--rounds N] [--secs 4] [--warmup 0.5] [--quick] [--only SCENARIO]...
             [--max-other 0.3] [--tries 3] [--out FILE.md | --out -]... [--chart FILE.svg] [--raw FILE.tsv]
  bench [...]          reactor-echo alone (make bench): one core count, 1 round, syscalls
                       by kind where perf or strace is there, RSS, [--idle N] idle connections (10000)
  bench compare [...]  side by side (make bench-compare): 3 rounds; [--servers NAME,...]
                       [--server NAME=CMD]... [--peer-dir DIR] [--syscalls]
  bench latency [...]  open-loop latency (make bench-latency): each server's maximum
                       closed-loop (ping-pong), then 25, 50, 75, 90% of it offered open-loop,
                       latency from each line's intended send time; one core count, 3 rounds;
                       [--servers NAME,...] [--server NAME=CMD]... [--peer-dir DIR]
  bench perf           CPU profile of reactor-echo under pipelined load (make perf)
servers: reactor-echo, tokio-current, tokio-multi, thread-per-conn, go-tutorial, monoio
scenarios (--only): ping-pong, pipelined, c1000, bulk, churn";

/// The command line, read.
#[derive(Default)]
pub struct Args {
    pub cores: Option<Vec<usize>>,
    pub server_cpus: Option<Vec<usize>>,
    pub client_cpus: Option<Vec<usize>>,
    pub clients: Option<usize>,
    pub rounds: usize,
    pub secs: f64,
    pub warmup: f64,
    pub servers: Option<Vec<String>>,
    pub extra: Vec<(String, String)>,
    pub peer_dir: Option<PathBuf>,
    pub syscalls: bool,
    pub idle: usize,
    pub max_other: f64,
    pub tries: usize,
    pub only: Vec<String>,
    pub outs: Vec<String>,
    pub chart: Option<PathBuf>,
    pub raw: Option<PathBuf>,
}

pub fn parse_args(mode: Mode, argv: &[String]) -> Result<Args, String> {
    let alone = mode == Mode::Alone;
    let mut a = Args {
        rounds: if alone { 1 } else { 3 },
        secs: 4.0,
        warmup: 0.5,
        syscalls: alone,
        idle: if alone { 10_000 } else { 0 },
        max_other: 0.3,
        tries: 3,
        ..Args::default()
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--quick" => {
                (a.secs, a.warmup) = (1.5, 0.3);
                a.idle = a.idle.min(2000);
                continue;
            }
            "--syscalls" => {
                a.syscalls = true;
                continue;
            }
            _ => {}
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = |what: &str| -> Result<f64, String> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0)
                .ok_or(format!("{flag} {value}: {what}"))
        };
        let words = || {
            value
                .split([',', ' '])
                .filter(|w| !w.is_empty())
                .map(String::from)
        };
        // An empty value (a Make variable left unset) means "the default".
        let set = !value.trim().is_empty();
        match flag.as_str() {
            "--servers" | "--server" | "--peer-dir" if alone => {
                return Err(format!("{flag} is for `bench compare`"));
            }
            "--cores" if set => a.cores = Some(cpus::parse_counts(value)?),
            "--server-cpus" if set => a.server_cpus = Some(cpus::parse_list(value)?),
            "--client-cpus" if set => a.client_cpus = Some(cpus::parse_list(value)?),
            "--clients" if set => a.clients = Some(number("a count of processes")? as usize),
            "--rounds" if set => a.rounds = number("a count of rounds")? as usize,
            "--secs" if set => a.secs = number("seconds")?,
            "--warmup" if set => a.warmup = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--servers" if set => a.servers = Some(words().collect()),
            "--server" => {
                let (name, cmd) = value
                    .split_once('=')
                    .ok_or(format!("--server {value}: expected NAME=CMD"))?;
                a.extra.push((name.to_string(), cmd.to_string()));
            }
            "--peer-dir" if set => a.peer_dir = Some(PathBuf::from(value)),
            "--idle" if set => a.idle = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--max-other" if set => {
                a.max_other = value.parse().map_err(|e| format!("{flag}: {e}"))?
            }
            "--tries" if set => a.tries = number("a count of tries")? as usize,
            "--only" if set => a.only.extend(words()),
            "--out" if set => a.outs.push(value.clone()),
            "--chart" if set => a.chart = Some(PathBuf::from(value)),
            "--raw" if set => a.raw = Some(PathBuf::from(value)),
            "--cores" | "--server-cpus" | "--client-cpus" | "--clients" | "--rounds" | "--secs"
            | "--warmup" | "--servers" | "--peer-dir" | "--idle" | "--max-other" | "--tries"
            | "--only" | "--out" | "--chart" | "--raw" => {}
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.rounds == 0 || a.tries == 0 {
        return Err("--rounds and --tries must be at least 1".into());
    }
    if mode != Mode::Compare && a.cores.as_ref().is_some_and(|c| c.len() > 1) {
        return Err(
            "`bench` and `bench latency` measure one core count; `bench compare` several".into(),
        );
    }
    if mode == Mode::Latency && (!a.only.is_empty() || a.syscalls) {
        return Err(format!(
            "`bench latency` runs its own load (`{}` closed-loop, then open-loop) and counts no syscalls",
            scenario::LATENCY_BASE
        ));
    }
    if let Some(w) = a
        .only
        .iter()
        .find(|w| scenario::matching(&[w.to_string()]).is_empty())
    {
        let keys: Vec<&str> = SCENARIOS.iter().map(|s| s.key).collect();
        return Err(format!(
            "--only {w}: no such scenario ({})",
            keys.join(", ")
        ));
    }
    Ok(a)
}

/// A server to measure: its name and command line (with `{addr}`, `{cpus}`).
pub struct Spec {
    pub name: String,
    pub argv: Vec<String>,
}

/// Everything a run needs, checked.
pub struct Plan {
    pub mode: Mode,
    pub servers: Vec<Spec>,
    /// Servers left out, and why.
    pub skipped: Vec<String>,
    pub counts: Vec<usize>,
    /// The server's CPUs, one list per core count.
    pub server_sets: Vec<Vec<usize>>,
    pub client_cpus: Vec<usize>,
    pub scenarios: Vec<&'static Scenario>,
    pub load: Load,
    pub rounds: usize,
    pub max_other: f64,
    pub tries: usize,
    /// Idle connections to hold on a fresh server first (0: none).
    pub idle: usize,
    /// The command that repeats the run, for the report.
    pub command: String,
    /// The Markdown files to write the section into, and the chart.
    pub outs: Vec<PathBuf>,
    pub chart: PathBuf,
    pub raw: PathBuf,
}

impl Plan {
    pub fn new(mode: Mode, args: &Args, argv: &[String]) -> Result<Plan, String> {
        let allowed = cpus::allowed();
        let counts = match &args.cores {
            Some(c) => c.clone(),
            None if mode != Mode::Compare => vec![1],
            None => cpus::default_counts(allowed.len()),
        };
        let max_n = counts.iter().copied().max().unwrap_or(1);
        let (server_cpus, client_cpus) = split(&allowed, max_n, args)?;
        if max_n > server_cpus.len() {
            return Err(format!(
                "{max_n} server cores asked for, but the server CPU list ({}) has {}",
                cpus::format_list(&server_cpus),
                server_cpus.len()
            ));
        }
        if !cpus::have_taskset() {
            return Err(
                "taskset (util-linux) is needed to pin the server and the load generators".into(),
            );
        }
        let loadgen = sibling("loadgen");
        if !loadgen.exists() {
            return Err(format!(
                "{} is missing: run `make {}` (it builds first)",
                loadgen.display(),
                mode.make_target()
            ));
        }
        let (servers, skipped) = servers(mode, args)?;
        let counter = match syscalls::pick() {
            _ if !args.syscalls => None,
            None if mode == Mode::Compare => {
                return Err(
                    "--syscalls needs perf or strace (apt-get install linux-perf strace)".into(),
                );
            }
            None => {
                eprintln!(
                    "bench: neither perf nor strace works here; syscalls will not be counted (apt-get install linux-perf strace)"
                );
                None
            }
            some => some,
        };
        let clients = args.clients.unwrap_or(client_cpus.len()).max(1);
        let command = command(
            mode,
            args,
            argv,
            &counts,
            &server_cpus[..max_n],
            &client_cpus,
            clients,
        );
        let outs: Vec<PathBuf> = match args.outs.is_empty() {
            true => vec!["docs/benchmarks.md".into()],
            false => args
                .outs
                .iter()
                .filter(|o| *o != "-")
                .map(PathBuf::from)
                .collect(),
        };
        let chart_name = match mode {
            Mode::Alone => "benchmarks.svg",
            Mode::Compare => "benchmarks-scaling.svg",
            Mode::Latency => "benchmarks-latency.svg",
        };
        let first = outs
            .first()
            .map_or(Path::new("docs/benchmarks.md"), PathBuf::as_path);
        Ok(Plan {
            mode,
            servers,
            skipped,
            server_sets: counts.iter().map(|&n| server_cpus[..n].to_vec()).collect(),
            counts,
            scenarios: match mode {
                Mode::Latency => vec![scenario::latency_base()],
                _ => scenario::matching(&args.only),
            },
            load: Load {
                loadgen,
                client_cpus: cpus::format_list(&client_cpus),
                clients,
                secs: args.secs,
                warmup: args.warmup,
                counter,
            },
            client_cpus,
            rounds: args.rounds,
            max_other: args.max_other,
            tries: args.tries,
            idle: args.idle,
            command,
            chart: args
                .chart
                .clone()
                .unwrap_or_else(|| first.with_file_name(chart_name)),
            outs,
            raw: args
                .raw
                .clone()
                .unwrap_or_else(|| sibling(&format!("{}-rounds.tsv", mode.key()))),
        })
    }
}

/// The server's CPU list and the load generators', from the flags or by
/// default (see [`cpus::default_split`]).
fn split(allowed: &[usize], max_n: usize, args: &Args) -> Result<(Vec<usize>, Vec<usize>), String> {
    let (default_server, default_client) = cpus::default_split(allowed, max_n);
    let server_cpus = match (&args.server_cpus, &args.client_cpus) {
        (Some(s), _) => s.clone(),
        (None, None) => default_server,
        // Only the load generators' CPUs given: the server takes the others
        // (highest first), and theirs too if it needs more.
        (None, Some(client)) => {
            let own = allowed.iter().rev().filter(|c| !client.contains(c));
            own.chain(client.iter().rev()).copied().collect()
        }
    };
    let client_cpus = match &args.client_cpus {
        Some(c) => c.clone(),
        None if args.server_cpus.is_some() => {
            let rest: Vec<usize> = allowed
                .iter()
                .filter(|c| !server_cpus.contains(c))
                .copied()
                .collect();
            if rest.is_empty() {
                allowed.iter().take(1).copied().collect()
            } else {
                rest
            }
        }
        None => default_client,
    };
    if let Some(cpu) = server_cpus
        .iter()
        .chain(&client_cpus)
        .find(|c| !allowed.contains(c))
    {
        return Err(format!(
            "CPU {cpu} is not one this process may run on ({})",
            cpus::format_list(allowed)
        ));
    }
    Ok((server_cpus, client_cpus))
}

fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The servers to measure, and the ones left out because they were not built.
fn servers(mode: Mode, args: &Args) -> Result<(Vec<Spec>, Vec<String>), String> {
    let peer_dir = args
        .peer_dir
        .clone()
        .unwrap_or_else(|| sibling("../peers/release"));
    let me = sibling("reactor-echo").display().to_string();
    let p = |bin: &str| peer_dir.join(bin).display().to_string();
    let peers = "make bench-compare builds bench/peers";
    let go = if have("go") {
        "make bench-compare builds it with go"
    } else {
        "`go` is not installed (apt-get install golang-go)"
    };
    let table = [
        (
            "reactor-echo",
            format!("{me} --listen {{addr}} --log-level warn --workers {{cpus}}"),
            "make bench builds it",
        ),
        (
            "tokio-current",
            format!("{} {{addr}} current", p("tokio-echo")),
            peers,
        ),
        (
            "tokio-multi",
            format!("{} {{addr}} multi --threads {{cpus}}", p("tokio-echo")),
            peers,
        ),
        (
            "thread-per-conn",
            format!("{} {{addr}}", p("threaded-echo")),
            peers,
        ),
        ("go-tutorial", format!("{} {{addr}}", p("go-echo")), go),
        (
            "monoio",
            format!("{} {{addr}} --threads {{cpus}}", p("monoio-echo")),
            peers,
        ),
    ];
    let asked = match (mode, &args.servers) {
        (Mode::Alone, _) => vec!["reactor-echo".to_string()],
        (_, Some(names)) => names.clone(),
        (_, None) => table.iter().map(|t| t.0.to_string()).collect(),
    };
    if let Some(name) = asked.iter().find(|n| !table.iter().any(|t| t.0 == *n)) {
        return Err(format!("no server named {name}\n{USAGE}"));
    }
    let mut specs = Vec::new();
    let mut skipped = Vec::new();
    // In the table's order: reactor-echo first, the one the ratios divide.
    for (name, cmd, why) in table.iter().filter(|t| asked.iter().any(|n| n == t.0)) {
        let argv: Vec<String> = cmd.split_whitespace().map(String::from).collect();
        let missing = format!("{name}: {} is not built; {why}", program(&argv).display());
        let refused = match *name {
            "monoio" if program(&argv).exists() => probe_io_uring(program(&argv)).err(),
            _ => None,
        };
        match program(&argv).exists() {
            // The kernel refuses io_uring: left out, even when asked for by
            // name (a container's policy never fails a run).
            true if refused.is_some() => {
                skipped.push(format!("{name}: {}", refused.unwrap_or_default()))
            }
            true => specs.push(Spec {
                name: name.to_string(),
                argv,
            }),
            // Asked for by name, or reactor-echo itself: no run without it.
            false if args.servers.is_some() || *name == "reactor-echo" => return Err(missing),
            false => skipped.push(missing),
        }
    }
    for (name, cmd) in &args.extra {
        let argv: Vec<String> = cmd.split_whitespace().map(String::from).collect();
        if !program(&argv).exists() {
            return Err(format!(
                "{name}: {} does not exist",
                program(&argv).display()
            ));
        }
        specs.push(Spec {
            name: name.clone(),
            argv,
        });
    }
    if specs.is_empty() {
        return Err("no server to measure".into());
    }
    Ok((specs, skipped))
}

/// The status `monoio-echo` exits with where the kernel refuses io_uring
/// (EX_TEMPFAIL), after a line that starts `io_uring unavailable:`.
pub const URING_UNAVAILABLE: i32 = 75;

/// Asks `monoio-echo --probe` whether this kernel gives it a ring:
/// `Err(why)` where it does not, and the peer is left out.
fn probe_io_uring(peer: &Path) -> Result<(), String> {
    match std::process::Command::new(peer).arg("--probe").output() {
        Ok(out) => uring_verdict(out.status.code(), &String::from_utf8_lossy(&out.stderr)),
        Err(e) => Err(format!("{} --probe: {e}", peer.display())),
    }
}

/// What `monoio-echo --probe` said, as a verdict: its exit status (`None`:
/// killed by a signal) and its standard error.
fn uring_verdict(status: Option<i32>, stderr: &str) -> Result<(), String> {
    let said = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    match status {
        Some(0) => Ok(()),
        Some(URING_UNAVAILABLE) => Err(format!(
            "this kernel refuses io_uring ({}; a seccomp filter, sysctl kernel.io_uring_disabled, or a kernel without io_uring)",
            match said {
                "" => "io_uring unavailable",
                s => s,
            }
        )),
        Some(code) => Err(format!("its io_uring probe failed (exit {code}: {said})")),
        None => Err(format!(
            "its io_uring probe was killed by a signal ({said})"
        )),
    }
}

/// Quotes `s` for a shell if it needs it.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./,=:".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command that repeats the run: a `make` line where one can say it,
/// else the tool's own command line.
fn command(
    mode: Mode,
    args: &Args,
    argv: &[String],
    counts: &[usize],
    server_cpus: &[usize],
    client_cpus: &[usize],
    clients: usize,
) -> String {
    if !args.extra.is_empty() {
        let mut cmd = String::from("target/release/bench");
        let sub = match mode {
            Mode::Alone => None,
            Mode::Compare => Some("compare"),
            Mode::Latency => Some("latency"),
        };
        for a in sub.into_iter().chain(argv.iter().map(String::as_str)) {
            cmd.push(' ');
            cmd.push_str(&quote(a));
        }
        return cmd;
    }
    let counts: Vec<String> = counts.iter().map(usize::to_string).collect();
    let mut cmd = format!(
        "make {} CORES=\"{}\" SERVER_CPUS={} CLIENT_CPUS={} CLIENTS={clients} ROUNDS={} BENCH_SECS={}",
        mode.make_target(),
        counts.join(" "),
        cpus::format_list(server_cpus),
        cpus::format_list(client_cpus),
        args.rounds,
        args.secs
    );
    if let Some(names) = &args.servers {
        let _ = write!(cmd, " SERVERS={}", names.join(","));
    }
    if args.syscalls && mode == Mode::Compare {
        cmd.push_str(" SYSCALLS=1");
    }
    if !args.only.is_empty() {
        let _ = write!(cmd, " ONLY={}", args.only.join(","));
    }
    if args.tries != 3 {
        let _ = write!(cmd, " TRIES={}", args.tries);
    }
    if args.max_other != 0.3 {
        let _ = write!(cmd, " MAX_OTHER={}", args.max_other);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `words` split at `|`, so that an empty value can be written.
    fn args(mode: Mode, words: &str) -> Result<Args, String> {
        let argv: Vec<String> = words
            .split('|')
            .filter(|w| !words.is_empty() || !w.is_empty())
            .map(String::from)
            .collect();
        parse_args(mode, &argv)
    }

    #[test]
    fn flags() {
        let a = args(
            Mode::Compare,
            "--cores|1 2|--server-cpus|1,0|--quick|--out|-",
        )
        .unwrap();
        assert_eq!(a.cores, Some(vec![1, 2]));
        assert_eq!(a.server_cpus, Some(vec![1, 0]));
        assert_eq!((a.secs, a.rounds, a.idle, a.syscalls), (1.5, 3, 0, false));
        assert_eq!(a.outs, vec!["-"]);
        // Empty values, as an unset Make variable passes them: the defaults.
        let a = args(Mode::Compare, "--cores||--client-cpus||--clients||--only|").unwrap();
        assert!(a.cores.is_none() && a.client_cpus.is_none() && a.clients.is_none());
        assert!(a.only.is_empty());
        let a = args(Mode::Compare, "--server|old=/bin/old --listen {addr}").unwrap();
        assert_eq!(a.extra[0].0, "old");
        for bad in [
            "--rounds|0",
            "--bogus|1",
            "--server|nameonly",
            "--only|nope",
        ] {
            assert!(args(Mode::Compare, bad).is_err(), "{bad}");
        }
        assert!(args(Mode::Compare, "--only|pong,bulk").is_ok());
    }

    #[test]
    fn alone_defaults() {
        let a = args(Mode::Alone, "").unwrap();
        assert_eq!(
            (a.rounds, a.idle, a.syscalls, a.secs),
            (1, 10_000, true, 4.0)
        );
        assert_eq!(args(Mode::Alone, "--quick").unwrap().idle, 2000);
        assert!(args(Mode::Alone, "--servers|tokio-multi").is_err());
        assert!(args(Mode::Alone, "--cores|1 2").is_err());
        assert!(args(Mode::Alone, "--cores|2").is_ok());
    }

    #[test]
    fn latency_flags() {
        let a = args(Mode::Latency, "--servers|reactor-echo,tokio-multi").unwrap();
        assert_eq!((a.rounds, a.syscalls, a.idle), (3, false, 0));
        assert!(
            args(Mode::Latency, "--cores|1 2").is_err(),
            "one core count"
        );
        assert!(args(Mode::Latency, "--only|bulk").is_err(), "its own load");
        assert!(args(Mode::Latency, "--syscalls").is_err());
        assert_eq!(Mode::Latency.key(), "latency");
        assert_eq!(Mode::Latency.make_target(), "bench-latency");
    }

    #[test]
    fn a_refused_ring_leaves_monoio_out() {
        assert_eq!(uring_verdict(Some(0), ""), Ok(()));
        let why = uring_verdict(
            Some(URING_UNAVAILABLE),
            "io_uring unavailable: io_uring_setup: Operation not permitted (os error 1)\n",
        )
        .unwrap_err();
        assert!(why.starts_with("this kernel refuses io_uring (io_uring unavailable: io_uring_setup: Operation not permitted"), "{why}");
        // Any other failure of the probe leaves it out too, saying so.
        let why = uring_verdict(Some(101), "thread 'main' panicked\n").unwrap_err();
        assert!(why.contains("probe failed (exit 101"), "{why}");
        assert!(uring_verdict(None, "").unwrap_err().contains("signal"));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("--cores"), "--cores");
        assert_eq!(quote("1 2"), "'1 2'");
        assert_eq!(quote("a'b"), r"'a'\''b'");
    }
}
