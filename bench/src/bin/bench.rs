//! The benchmark tool: `make bench`, `make bench-compare` and `make perf`.
//!
//! ```text
//! bench [FLAGS]            # reactor-echo alone, with RSS, idle connections, syscalls by kind
//! bench compare [FLAGS]    # reactor-echo beside its peers, at each server core count
//! bench latency [FLAGS]    # open-loop latency at 25-90% of each server's maximum, beside the peers
//! bench perf               # CPU profile of reactor-echo under pipelined load
//! ```
//!
//! The three measuring modes are one tool on the `reactor_echo_bench` library:
//! plan (the flags, checked), run (the rounds), report (stdout, a section
//! of `docs/benchmarks.md` between its markers, a chart, every round's
//! figures in a TSV file beside this binary). `bench --help` lists the
//! flags; docs/benchmarks.md says what each figure means. It does not
//! build: `make bench`, `make bench-compare` and `make bench-latency` build
//! reactor-echo, `loadgen` and (but for `make bench`) the peers first. Exits 1 if a round failed
//! or an echo came back wrong, 2 on bad usage.

use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use reactor_echo_bench::plan::{self, Mode, Plan};
use reactor_echo_bench::server::{Load, Running};
use reactor_echo_bench::{cpus, host, report, run};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", plan::USAGE);
        return ExitCode::SUCCESS;
    }
    match argv.first().map(String::as_str) {
        Some("perf") => perf_profile(),
        Some("compare") => measure(Mode::Compare, &argv[1..]),
        Some("latency") => measure(Mode::Latency, &argv[1..]),
        _ => measure(Mode::Alone, &argv),
    }
}

/// Plan, run, report.
fn measure(mode: Mode, argv: &[String]) -> ExitCode {
    let plan = plan::parse_args(mode, argv).and_then(|args| Plan::new(mode, &args, argv));
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("bench: {e}\n{}", plan::USAGE);
            return ExitCode::from(2);
        }
    };
    let sets: Vec<String> = plan
        .counts
        .iter()
        .zip(&plan.server_sets)
        .map(|(n, s)| format!("{n} core(s) on CPU(s) {}", cpus::format_list(s)))
        .collect();
    let names: Vec<&str> = plan.servers.iter().map(|s| s.name.as_str()).collect();
    eprintln!(
        "bench: {} on {}; servers {}; load: {} loadgen process(es) on CPU(s) {}",
        sets.join(", "),
        host::machine(),
        names.join(", "),
        plan.load.clients,
        plan.load.client_cpus
    );
    for s in &plan.skipped {
        eprintln!("bench: not run: {s}");
    }
    for (n, shared) in report::shared_counts(&plan) {
        eprintln!(
            "bench: NOTE: with {n} server cores the server shares CPU(s) {} with the load \
             generators: those figures are server and load generator together, not the \
             server's own {n} cores",
            cpus::format_list(&shared)
        );
    }
    let outcome = run::run(&plan);
    if report::publish(&plan, &outcome) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Profiles reactor-echo under pipelined load and prints the top of the report.
fn perf_profile() -> ExitCode {
    let (server_cpus, client_cpus) = cpus::default_split(&cpus::allowed(), 1);
    let me = host::sibling("reactor-echo").display().to_string();
    let argv = [
        me,
        "--listen".into(),
        "{addr}".into(),
        "--log-level".into(),
        "warn".into(),
    ];
    let server = match Running::start(&argv, &server_cpus) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("bench perf: {e}");
            return ExitCode::FAILURE;
        }
    };
    let load = Load {
        loadgen: host::sibling("loadgen"),
        client_cpus: cpus::format_list(&client_cpus),
        clients: 1,
        secs: 6.0,
        warmup: 0.0,
        counter: None,
    };
    let data = host::sibling("perf.data");
    let mut loadgen = server.loadgen(&load);
    let loadgen = loadgen
        .args([
            "--conns", "50", "--depth", "16", "--size", "64", "--secs", "6", "--warmup", "0",
        ])
        .stdout(Stdio::null())
        .spawn();
    std::thread::sleep(Duration::from_secs(1));
    let recorded = Command::new("perf")
        .args(["record", "-g", "-o"])
        .arg(&data)
        .args(["-p", &server.pid().to_string(), "--", "sleep", "4"])
        .status();
    let _ = loadgen.map(|mut l| l.wait());
    server.stop();
    if !recorded.is_ok_and(|s| s.success()) {
        eprintln!("perf record failed: is perf installed? (apt-get install linux-perf)");
        return ExitCode::FAILURE;
    }
    for sort in ["dso", "dso,sym"] {
        let report = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "-g",
                "none",
                "--percent-limit",
                "0.7",
            ])
            .args(["--sort", sort, "-i"])
            .arg(&data)
            .output();
        if let Ok(r) = report {
            let text = String::from_utf8_lossy(&r.stdout);
            let lines = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty());
            for line in lines.take(40) {
                println!("{line}");
            }
            println!();
        }
    }
    println!("full report: perf report -i {}", data.display());
    ExitCode::SUCCESS
}
