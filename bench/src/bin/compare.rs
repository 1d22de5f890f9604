//! `make bench-compare`: reactor-echo side by side with its peers (tokio
//! current-thread and multi-thread, thread-per-connection, the Go
//! tutorial's server), at each server core count, in interleaved rounds.
//!
//! ```text
//! make bench-compare                                  # defaults: see below
//! make bench-compare CORES="1 2 4 8" SERVER_CPUS=8-15 CLIENT_CPUS=0-7 CLIENTS=8
//! compare [--cores "1 2"] [--server-cpus LIST] [--client-cpus LIST] [--clients K]
//!         [--rounds 3] [--secs 4] [--warmup 0.5] [--quick]
//!         [--servers NAME,...] [--server NAME=CMD]... [--peer-dir DIR]
//!         [--syscalls] [--only SCENARIO]... [--max-other 0.3] [--tries 3]
//!         [--out FILE.md | --out -]... [--chart FILE.svg] [--raw FILE.tsv]
//! ```
//!
//! For each round, each core count N and each server (the order turned by
//! one every round, so no server always runs first or last), the server is
//! started under `taskset` on the first N CPUs of the server list and
//! measured in the four scenarios of issue 11 (ping-pong c50, pipelined
//! c50×16, c1000, bulk 16 KiB) by K `loadgen` processes on the client CPUs,
//! the connections split between them and their msgs/s summed. Per server
//! and N it reports the medians of msgs/s and of server CPU µs per message
//! (user + system time from `/proc/PID/stat` over the run, as `make bench`
//! counts it), the scaling (msgs/s at N ÷ N × msgs/s at 1), the first
//! server's ratio to each other one, and how far the rounds were apart.
//!
//! reactor-echo runs `--workers N`, tokio multi-thread `--threads N`; the
//! others use what they are pinned to. `--server NAME=CMD` adds a server
//! (`{addr}`: where it must listen; `{cpus}`: N), e.g. an older build:
//! `--servers reactor-echo --server "old=/tmp/old/reactor-echo --listen {addr}"`.
//!
//! Defaults, from the CPUs this process may use: server core counts are
//! powers of two up to half of them (1 and 2 on a 2-CPU machine); the
//! server takes the highest CPUs, highest first, and the load generators
//! the rest, one process per CPU. On 2 CPUs that is the server on CPU 1 and
//! the load generator on CPU 0, and with 2 server cores the server's second
//! CPU is the load generator's: the report says so wherever it happens.
//!
//! A shared machine runs other people's builds and tests: each measurement
//! also reads how much CPU time every other process used meanwhile (from
//! `/proc/*/stat`; kernel threads left out), and one taken while that was
//! above `--max-other` CPUs (0.3) is taken again, up to `--tries` times (3)
//! a second apart, keeping the quietest. The report counts them.
//!
//! The tables go to stdout and between the markers of `docs/benchmarks.md`
//! (`--out`; `--out -` writes no file), the chart to
//! `docs/benchmarks-scaling.svg` (`--chart`), every round's figures to
//! `compare-rounds.tsv` beside this binary (`--raw`). It does not build:
//! `make bench-compare` builds reactor-echo, loadgen and the peers
//! (`bench/peers/`, the Go one only where `go` is installed) first.
//! Exits 1 if a round failed or an echo came back wrong, 2 on bad usage.

#[path = "../compare/chart.rs"]
mod chart;
#[path = "../compare/cpus.rs"]
mod cpus;
#[path = "../host.rs"]
mod host;
#[path = "../compare/report.rs"]
mod report;
#[path = "../compare/run.rs"]
mod run;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use report::{Results, Setup};
use run::{Counter, Load, Running, SCENARIOS};

struct Args {
    cores: Option<Vec<usize>>,
    server_cpus: Option<Vec<usize>>,
    client_cpus: Option<Vec<usize>>,
    clients: Option<usize>,
    rounds: usize,
    secs: f64,
    warmup: f64,
    servers: Option<Vec<String>>,
    extra: Vec<(String, String)>,
    peer_dir: Option<PathBuf>,
    syscalls: bool,
    max_other: f64,
    tries: usize,
    only: Vec<String>,
    outs: Vec<String>,
    chart: Option<PathBuf>,
    raw: Option<PathBuf>,
}

const USAGE: &str =
    "usage: compare [--cores \"1 2\"] [--server-cpus LIST] [--client-cpus LIST] [--clients K]
               [--rounds 3] [--secs 4] [--warmup 0.5] [--quick]
               [--servers NAME,...] [--server NAME=CMD]... [--peer-dir DIR]
               [--syscalls] [--only SCENARIO]... [--max-other 0.3] [--tries 3]
               [--out FILE.md | --out -]... [--chart FILE.svg] [--raw FILE.tsv]
servers: reactor-echo, tokio-current, tokio-multi, thread-per-conn, go-tutorial
scenarios (--only): ping-pong, pipelined, c1000, bulk";

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        cores: None,
        server_cpus: None,
        client_cpus: None,
        clients: None,
        rounds: 3,
        secs: 4.0,
        warmup: 0.5,
        servers: None,
        extra: Vec::new(),
        peer_dir: None,
        syscalls: false,
        max_other: 0.3,
        tries: 3,
        only: Vec::new(),
        outs: Vec::new(),
        chart: None,
        raw: None,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--quick" => {
                a.secs = 1.5;
                a.warmup = 0.3;
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
        // An empty value (a Make variable left unset) means "the default".
        let set = !value.trim().is_empty();
        match flag.as_str() {
            "--cores" if set => a.cores = Some(cpus::parse_counts(value)?),
            "--server-cpus" if set => a.server_cpus = Some(cpus::parse_list(value)?),
            "--client-cpus" if set => a.client_cpus = Some(cpus::parse_list(value)?),
            "--clients" if set => a.clients = Some(number("a count of processes")? as usize),
            "--rounds" if set => a.rounds = number("a count of rounds")? as usize,
            "--secs" if set => a.secs = number("seconds")?,
            "--warmup" if set => a.warmup = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--servers" if set => {
                a.servers = Some(
                    value
                        .split([',', ' '])
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                )
            }
            "--server" => {
                let (name, cmd) = value
                    .split_once('=')
                    .ok_or(format!("--server {value}: expected NAME=CMD"))?;
                a.extra.push((name.to_string(), cmd.to_string()));
            }
            "--peer-dir" if set => a.peer_dir = Some(PathBuf::from(value)),
            "--max-other" if set => {
                a.max_other = value.parse().map_err(|e| format!("{flag}: {e}"))?
            }
            "--tries" if set => a.tries = number("a count of tries")? as usize,
            "--only" if set => a.only.extend(
                value
                    .split([',', ' '])
                    .filter(|w| !w.is_empty())
                    .map(String::from),
            ),
            "--out" if set => a.outs.push(value.clone()),
            "--chart" if set => a.chart = Some(PathBuf::from(value)),
            "--raw" if set => a.raw = Some(PathBuf::from(value)),
            "--cores" | "--server-cpus" | "--client-cpus" | "--clients" | "--rounds" | "--secs"
            | "--warmup" | "--servers" | "--peer-dir" | "--max-other" | "--tries" | "--only"
            | "--out" | "--chart" | "--raw" => {}
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.rounds == 0 || a.tries == 0 {
        return Err("--rounds and --tries must be at least 1".into());
    }
    if let Some(w) = a
        .only
        .iter()
        .find(|w| !SCENARIOS.iter().any(|s| s.key.contains(w.as_str())))
    {
        return Err(format!(
            "--only {w}: no such scenario ({})",
            SCENARIOS
                .iter()
                .map(|s| s.key)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(a)
}

/// A server to measure: its name and command line (with `{addr}`, `{cpus}`).
struct Spec {
    name: String,
    argv: Vec<String>,
}

/// Where the built binaries are: beside this one.
fn sibling(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("own path");
    me.parent().expect("a directory").join(name)
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The built-in servers, and the ones left out because they were not built.
fn builtin(peer_dir: &Path) -> (Vec<Spec>, Vec<(String, String)>) {
    let me = sibling("reactor-echo");
    let p = |bin: &str| peer_dir.join(bin).display().to_string();
    let table: [(&str, String, &str); 5] = [
        (
            "reactor-echo",
            format!(
                "{} --listen {{addr}} --log-level warn --workers {{cpus}}",
                me.display()
            ),
            "make bench-compare builds it",
        ),
        (
            "tokio-current",
            format!("{} {{addr}} current", p("tokio-echo")),
            "make bench-compare builds bench/peers",
        ),
        (
            "tokio-multi",
            format!("{} {{addr}} multi --threads {{cpus}}", p("tokio-echo")),
            "make bench-compare builds bench/peers",
        ),
        (
            "thread-per-conn",
            format!("{} {{addr}}", p("threaded-echo")),
            "make bench-compare builds bench/peers",
        ),
        (
            "go-tutorial",
            format!("{} {{addr}}", p("go-echo")),
            if have("go") {
                "make bench-compare builds it with go"
            } else {
                "`go` is not installed (apt-get install golang-go)"
            },
        ),
    ];
    let mut specs = Vec::new();
    let mut missing = Vec::new();
    for (name, cmd, why) in table {
        let argv: Vec<String> = cmd.split_whitespace().map(String::from).collect();
        if run::program(&argv).exists() {
            specs.push(Spec {
                name: name.into(),
                argv,
            });
        } else {
            missing.push((
                name.to_string(),
                format!(
                    "{name}: {} is not built; {why}",
                    run::program(&argv).display()
                ),
            ));
        }
    }
    (specs, missing)
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

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("compare: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match compare(&args, &argv) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the comparison; `Ok(false)` when a round failed or an echo was wrong.
fn compare(args: &Args, argv: &[String]) -> Result<bool, String> {
    let allowed = cpus::allowed();
    let counts = args
        .cores
        .clone()
        .unwrap_or_else(|| cpus::default_counts(allowed.len()));
    let max_n = counts.iter().copied().max().unwrap_or(1);
    let (default_server, default_client) = cpus::default_split(&allowed, max_n);
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
    for cpu in server_cpus.iter().chain(&client_cpus) {
        if !allowed.contains(cpu) {
            return Err(format!(
                "CPU {cpu} is not one this process may run on ({})",
                cpus::format_list(&allowed)
            ));
        }
    }
    if max_n > server_cpus.len() {
        return Err(format!(
            "{max_n} server cores asked for, but the server CPU list ({}) has {}",
            cpus::format_list(&server_cpus),
            server_cpus.len()
        ));
    }
    let clients = args.clients.unwrap_or(client_cpus.len()).max(1);
    if !run::have_taskset() {
        return Err(
            "taskset (util-linux) is needed to pin the server and the load generators".into(),
        );
    }
    let loadgen = sibling("loadgen");
    if !loadgen.exists() {
        return Err(format!(
            "{} is missing: run `make bench-compare` (it builds first)",
            loadgen.display()
        ));
    }

    // The servers: the built-ins asked for (all by default), then extras.
    let peer_dir = args
        .peer_dir
        .clone()
        .unwrap_or_else(|| sibling("../peers/release"));
    let (mut specs, missing) = builtin(&peer_dir);
    let mut skipped: Vec<String> = Vec::new();
    match &args.servers {
        Some(names) => {
            for n in names {
                let known = specs.iter().any(|s| &s.name == n);
                match missing.iter().find(|m| &m.0 == n) {
                    Some(m) if !known => return Err(m.1.clone()),
                    None if !known => return Err(format!("no server named {n}\n{USAGE}")),
                    _ => {}
                }
            }
            specs.retain(|s| names.contains(&s.name));
        }
        None => {
            if specs.first().is_none_or(|s| s.name != "reactor-echo") {
                return Err(missing[0].1.clone());
            }
            skipped.extend(missing.into_iter().map(|m| m.1));
        }
    }
    for (name, cmd) in &args.extra {
        let argv: Vec<String> = cmd.split_whitespace().map(String::from).collect();
        if !run::program(&argv).exists() {
            return Err(format!(
                "{name}: {} does not exist",
                run::program(&argv).display()
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

    let counter = if args.syscalls {
        match run::pick_counter() {
            Counter::None => {
                return Err(
                    "--syscalls needs perf or strace (apt-get install linux-perf strace)".into(),
                );
            }
            c => c,
        }
    } else {
        Counter::None
    };
    let load = Load {
        loadgen,
        client_cpus: cpus::format_list(&client_cpus),
        clients,
        secs: args.secs,
        warmup: args.warmup,
        counter,
    };
    let server_sets: Vec<Vec<usize>> = counts.iter().map(|&n| server_cpus[..n].to_vec()).collect();

    eprintln!(
        "compare: {} on {}; servers {}; load: {clients} loadgen process(es) on CPU(s) {}",
        counts
            .iter()
            .zip(&server_sets)
            .map(|(n, s)| format!("{n} core(s) on CPU(s) {}", cpus::format_list(s)))
            .collect::<Vec<_>>()
            .join(", "),
        host::machine(),
        specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        load.client_cpus
    );
    for s in &skipped {
        eprintln!("compare: not run: {s}");
    }
    for (n, set) in counts.iter().zip(&server_sets) {
        let shared = cpus::shared(set, &client_cpus);
        if !shared.is_empty() {
            eprintln!(
                "compare: NOTE: with {n} server cores the server shares CPU(s) {} with the load \
                 generators: those figures are server and load generator together, not the \
                 server's own {n} cores",
                cpus::format_list(&shared)
            );
        }
    }

    let scenarios: Vec<&'static run::Scenario> = SCENARIOS
        .iter()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|w| s.key.contains(w.as_str())))
        .collect();
    let mut results = Results {
        servers: specs.iter().map(|s| s.name.clone()).collect(),
        counts: counts.clone(),
        samples: vec![vec![vec![Vec::new(); scenarios.len()]; counts.len()]; specs.len()],
        scenarios,
    };
    let mut raw = String::from(
        "round\tcores\tserver_cpus\tserver\tscenario\tmsgs_per_s\tcpu_us_per_msg\tp99_us\terrors\tsyscalls_per_msg\tepoll_ctl_per_msg\tother_cpus\tfailure\n",
    );
    let mut quiet = report::Quiet {
        max_other: args.max_other,
        tries: args.tries,
        ..report::Quiet::default()
    };
    for round in 0..args.rounds {
        for (c, &n) in counts.iter().enumerate() {
            // Turn the order by one each round: drifts of a shared machine
            // (someone's build starting) then hit every server alike.
            for i in 0..specs.len() {
                let s = (i + round) % specs.len();
                let spec = &specs[s];
                let cpu_list = cpus::format_list(&server_sets[c]);
                let mut server = match Running::start(&spec.argv, &server_sets[c]) {
                    Ok(server) => Some(server),
                    Err(e) => {
                        eprintln!("[round {}] {} cores {}: {e}", round + 1, n, spec.name);
                        for k in 0..results.scenarios.len() {
                            results.samples[s][c][k].push(Err(e.clone()));
                        }
                        None
                    }
                };
                let Some(running) = server.as_mut() else {
                    continue;
                };
                for k in 0..results.scenarios.len() {
                    let sc = results.scenarios[k];
                    let mut m = running.measure(sc, &load);
                    for attempt in 2..=args.tries {
                        let busy = match &m {
                            Ok(x) if x.other_cpus > args.max_other => x.other_cpus,
                            _ => break,
                        };
                        eprintln!(
                            "[round {}/{}] {n} core(s) {} {}: other work used {busy:.2} CPUs meanwhile: measuring again ({attempt}/{})",
                            round + 1,
                            args.rounds,
                            spec.name,
                            sc.key,
                            args.tries
                        );
                        quiet.repeated += 1;
                        // A moment for a neighbour's burst (a test binary, a link) to pass.
                        std::thread::sleep(std::time::Duration::from_secs(1));
                        let again = running.measure(sc, &load);
                        // Keep the quieter of the two; a failure does not replace a sample.
                        if let Ok(y) = &again
                            && y.other_cpus < busy
                        {
                            m = again;
                        }
                    }
                    if let Ok(x) = &m {
                        quiet.others.push(x.other_cpus);
                        if x.other_cpus > args.max_other {
                            quiet.busy_kept += 1;
                        }
                    }
                    let _ = write!(
                        raw,
                        "{}\t{n}\t{cpu_list}\t{}\t{}\t",
                        round + 1,
                        spec.name,
                        sc.key
                    );
                    match &m {
                        Ok(x) => {
                            eprintln!(
                                "[round {}/{}] {n} core(s) {:<16} {:<10} {:>10} msgs/s {:>6.2} µs/msg{}",
                                round + 1,
                                args.rounds,
                                spec.name,
                                sc.key,
                                report::thousands(x.msgs_per_s),
                                x.cpu_us_per_msg,
                                if x.errors > 0 {
                                    format!("  {} ECHO ERRORS", x.errors)
                                } else {
                                    String::new()
                                }
                            );
                            let f = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
                            let _ = writeln!(
                                raw,
                                "{:.0}\t{:.4}\t{:.0}\t{}\t{}\t{}\t{:.2}\t",
                                x.msgs_per_s,
                                x.cpu_us_per_msg,
                                x.p99_us,
                                x.errors,
                                f(x.syscalls_per_msg),
                                f(x.epoll_ctl_per_msg),
                                x.other_cpus
                            );
                        }
                        Err(e) => {
                            eprintln!(
                                "[round {}] {n} core(s) {} {}: {e}",
                                round + 1,
                                spec.name,
                                sc.key
                            );
                            let _ = writeln!(raw, "\t\t\t\t\t\t\t{}", e.replace(['\t', '\n'], " "));
                        }
                    }
                    results.samples[s][c][k].push(m);
                }
                if let Some(running) = server {
                    running.stop();
                }
            }
        }
    }

    // The report.
    let date = host::now_utc();
    let machine = host::machine();
    let command = if args.extra.is_empty() {
        let mut cmd = format!(
            "make bench-compare CORES=\"{}\" SERVER_CPUS={} CLIENT_CPUS={} CLIENTS={clients} ROUNDS={} BENCH_SECS={}",
            counts
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            cpus::format_list(&server_cpus[..max_n]),
            load.client_cpus,
            args.rounds,
            args.secs
        );
        if let Some(names) = &args.servers {
            let _ = write!(cmd, " SERVERS={}", names.join(","));
        }
        if args.syscalls {
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
    } else {
        let mut cmd = String::from("target/release/compare");
        for a in argv {
            cmd.push(' ');
            cmd.push_str(&quote(a));
        }
        cmd
    };
    let setup = Setup {
        date: date.clone(),
        machine: machine.clone(),
        command,
        rounds: args.rounds,
        secs: args.secs,
        warmup: args.warmup,
        clients,
        client_cpus: client_cpus.clone(),
        server_cpus: server_sets.clone(),
        skipped,
        counter,
        quiet,
    };
    let outs: Vec<&String> = args.outs.iter().filter(|o| o.as_str() != "-").collect();
    let default_out = "docs/benchmarks.md".to_string();
    let outs: Vec<&String> = if args.outs.is_empty() {
        vec![&default_out]
    } else {
        outs
    };
    let chart_path = args.chart.clone().unwrap_or_else(|| {
        Path::new(outs.first().map_or("docs/benchmarks.md", |o| o.as_str()))
            .with_file_name("benchmarks-scaling.svg")
    });
    let shared: Vec<usize> = report::shared_counts(&setup, &counts)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    println!("{}", report::markdown(&results, &setup, None));
    let mut ok = true;
    if !outs.is_empty() {
        match chart::svg(&results, &shared, &chart::title(&machine, &date)) {
            Ok(svg) => {
                if let Err(e) = std::fs::write(&chart_path, svg) {
                    eprintln!("compare: cannot write {}: {e}", chart_path.display());
                    ok = false;
                }
            }
            Err(e) => {
                eprintln!("compare: {e}");
                ok = false;
            }
        }
        for out in &outs {
            let out = Path::new(out);
            let link = report::relative(out.parent().unwrap_or(Path::new("")), &chart_path);
            let md = report::markdown(&results, &setup, Some(&link));
            match report::write_section(out, &md) {
                Ok(()) => eprintln!("compare: wrote {}", out.display()),
                Err(e) => {
                    eprintln!("compare: cannot write {}: {e}", out.display());
                    ok = false;
                }
            }
        }
        eprintln!("compare: wrote {}", chart_path.display());
    }
    let raw_path = args
        .raw
        .clone()
        .unwrap_or_else(|| sibling("compare-rounds.tsv"));
    match std::fs::write(&raw_path, raw) {
        Ok(()) => eprintln!("compare: every round's figures: {}", raw_path.display()),
        Err(e) => eprintln!("compare: cannot write {}: {e}", raw_path.display()),
    }
    let failures = results.failures();
    if !failures.is_empty() {
        eprintln!("compare: {} round(s) failed", failures.len());
        ok = false;
    }
    if results.echo_errors() > 0 {
        eprintln!(
            "compare: {} echoed lines came back wrong",
            results.echo_errors()
        );
        ok = false;
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Result<Args, String> {
        parse_args(&s.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags() {
        let a = args(&[
            "--cores",
            "1 2",
            "--server-cpus",
            "1,0",
            "--quick",
            "--out",
            "-",
        ])
        .unwrap();
        assert_eq!(a.cores, Some(vec![1, 2]));
        assert_eq!(a.server_cpus, Some(vec![1, 0]));
        assert_eq!(a.secs, 1.5);
        assert_eq!(a.outs, vec!["-"]);
        // Empty values, as an unset Make variable passes them: the defaults.
        let a = args(&[
            "--cores",
            "",
            "--client-cpus",
            "",
            "--clients",
            "",
            "--only",
            "",
        ])
        .unwrap();
        assert!(a.cores.is_none() && a.client_cpus.is_none() && a.clients.is_none());
        assert!(a.only.is_empty());
        let a = args(&["--server", "old=/bin/old --listen {addr}"]).unwrap();
        assert_eq!(a.extra[0].0, "old");
        assert!(args(&["--rounds", "0"]).is_err());
        assert!(args(&["--bogus", "1"]).is_err());
        assert!(args(&["--server", "nameonly"]).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("--cores"), "--cores");
        assert_eq!(quote("1 2"), "'1 2'");
        assert_eq!(quote("a'b"), r"'a'\''b'");
    }
}
