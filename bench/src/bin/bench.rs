//! `make bench` and `make perf`: measure reactor-echo under the project's
//! own load generator.
//!
//! ```text
//! bench [--quick] [--idle N] [--out docs/benchmarks.md]   # scenarios → table + chart
//! bench perf                                               # CPU profile under load
//! ```
//!
//! For each scenario the server (pinned to CPU 1) is driven by `loadgen`
//! (pinned to CPU 0), and the driver reads, from outside the server:
//! messages/s and round-trip percentiles (from loadgen), CPU µs per message
//! (`/proc/PID/stat`), syscalls per message by type (`perf stat` on the
//! syscall tracepoints, or `strace -c -f` where perf is missing), and RSS
//! (`/proc/PID/status`). The table and an SVG chart go to `docs/`, between
//! markers in `benchmarks.md`, so the hand-written analysis around them stays.

#[path = "../host.rs"]
mod host;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

const BEGIN: &str = "<!-- bench:begin (written by `make bench`; edit outside these markers) -->";
const END: &str = "<!-- bench:end -->";

struct Scenario {
    name: &'static str,
    conns: usize,
    depth: usize,
    size: usize,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "ping-pong 50 conns × 1 line of 64 B",
        conns: 50,
        depth: 1,
        size: 64,
    },
    Scenario {
        name: "pipelined 50 conns × 16 lines of 64 B",
        conns: 50,
        depth: 16,
        size: 64,
    },
    Scenario {
        name: "1,000 conns × 1 line of 64 B",
        conns: 1000,
        depth: 1,
        size: 64,
    },
    Scenario {
        name: "bulk 10 conns × 4 lines of 16 KiB",
        conns: 10,
        depth: 4,
        size: 16384,
    },
];

/// Syscalls the server made, by kind.
#[derive(Clone, Copy, Debug, Default)]
struct Syscalls {
    total: u64,
    reads: u64,
    writes: u64,
    epoll_wait: u64,
    epoll_ctl: u64,
}

struct Measured {
    msgs_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    errors: u64,
    total_msgs: u64,
    cpu_us_per_msg: f64,
    syscalls: Option<Syscalls>,
    rss_kib: u64,
}

struct Idle {
    conns: usize,
    echoed: usize,
    rss_kib: u64,
    baseline_kib: u64,
}

/// How syscalls are counted on this machine.
#[derive(Clone, Copy, PartialEq)]
enum Counter {
    Perf,
    Strace,
    None,
}

const PERF_EVENTS: &[&str] = &[
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_epoll_pwait",
    "syscalls:sys_enter_epoll_ctl",
];

fn pick_counter() -> Counter {
    let works = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(Command::new("perf").args(["stat", "-e", &PERF_EVENTS.join(","), "true"])) {
        Counter::Perf
    } else if works(Command::new("strace").args(["-c", "-o", "/dev/null", "true"])) {
        Counter::Strace
    } else {
        Counter::None
    }
}

/// Where the built binaries are: next to this one.
fn sibling(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("own path");
    me.parent().expect("a directory").join(name)
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// `taskset -c CPU` when there are CPUs to pin to, so server and load
/// generator do not compete for one core.
fn pinned(cpu: usize, program: &Path) -> Command {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let have_taskset = Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if cpus >= 2 && have_taskset {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &cpu.to_string()]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| {
            v.trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    proc_field(pid, "status", "VmRSS")
}

fn interrupt(child: &Child) {
    if let Some(pid) = Pid::from_raw(child.id() as i32) {
        let _ = kill_process(pid, Signal::INT);
    }
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(binary: &Path) -> Server {
        let addr = free_addr();
        let child = pinned(1, binary)
            .args(["--listen", &addr.to_string(), "--log-level", "warn"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let give_up = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < give_up, "server did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, addr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let _ = self.child.wait();
    }
}

/// Counts the server's syscalls while `work` runs.
fn count_syscalls(counter: Counter, pid: u32, work: impl FnOnce()) -> Option<Syscalls> {
    let mut child = match counter {
        Counter::Perf => Command::new("perf")
            .args([
                "stat",
                "-x,",
                "-e",
                &PERF_EVENTS.join(","),
                "-p",
                &pid.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?,
        Counter::Strace => Command::new("strace")
            .args(["-c", "-f", "-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?,
        Counter::None => {
            work();
            return None;
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    work();
    interrupt(&child);
    let out = std::mem::take(&mut child.stderr)
        .map(|e| std::io::read_to_string(e).unwrap_or_default())?;
    let _ = child.wait();
    let by_name = match counter {
        Counter::Perf => parse_perf(&out),
        _ => parse_strace(&out),
    };
    let sum = |names: &[&str]| {
        names
            .iter()
            .map(|n| by_name.get(*n).copied().unwrap_or(0))
            .sum::<u64>()
    };
    Some(Syscalls {
        total: by_name
            .get("total")
            .copied()
            .unwrap_or_else(|| by_name.values().sum()),
        reads: sum(&["read", "recvfrom", "readv", "recvmsg"]),
        writes: sum(&["write", "sendto", "writev", "sendmsg"]),
        epoll_wait: sum(&["epoll_wait", "epoll_pwait", "epoll_pwait2"]),
        epoll_ctl: sum(&["epoll_ctl"]),
    })
}

/// `perf stat -x,` lines: `count,,event,...`.
fn parse_perf(out: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split(',').collect();
        if let (Some(count), Some(event)) = (f.first().and_then(|c| c.parse().ok()), f.get(2)) {
            let name = match event.strip_prefix("syscalls:sys_enter_") {
                Some(name) => name.to_string(),
                None if *event == "raw_syscalls:sys_enter" => "total".to_string(),
                None => continue,
            };
            m.insert(name, count);
        }
    }
    m
}

/// `strace -c` table rows: `% time  seconds  usecs/call  calls  [errors]  syscall`.
fn parse_strace(out: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 5
            && f[0].parse::<f64>().is_ok()
            && let (Some(name), Ok(calls)) = (f.last(), f[3].parse::<u64>())
            && *name != "total"
        {
            m.insert(name.to_string(), calls);
        }
    }
    m
}

fn parse_kv(line: &str) -> BTreeMap<String, f64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

fn run_scenario(
    server: &Server,
    loadgen: &Path,
    sc: &Scenario,
    secs: f64,
    counter: Counter,
) -> Measured {
    let pid = server.pid();
    let mut output = None;
    let mut cpu = 0.0;
    let syscalls = count_syscalls(counter, pid, || {
        let before = host::cpu_seconds(pid);
        let out = pinned(0, loadgen)
            .arg(server.addr.to_string())
            .args([
                "--conns",
                &sc.conns.to_string(),
                "--depth",
                &sc.depth.to_string(),
            ])
            .args([
                "--size",
                &sc.size.to_string(),
                "--secs",
                &secs.to_string(),
                "--warmup",
                "0.5",
            ])
            .output()
            .expect("run loadgen");
        cpu = host::cpu_seconds(pid) - before;
        if !out.status.success() {
            eprintln!("loadgen failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        output = Some(String::from_utf8_lossy(&out.stdout).to_string());
    });
    let kv = parse_kv(output.as_deref().unwrap_or(""));
    let get = |k: &str| kv.get(k).copied().unwrap_or(0.0);
    let total = get("total_msgs").max(1.0);
    Measured {
        msgs_per_s: get("msgs_per_s"),
        p50_us: get("p50_us"),
        p99_us: get("p99_us"),
        p999_us: get("p999_us"),
        errors: get("errors") as u64,
        total_msgs: total as u64,
        cpu_us_per_msg: cpu * 1e6 / total,
        syscalls,
        rss_kib: rss_kib(pid),
    }
}

fn run_idle(server: &Server, loadgen: &Path, n: usize) -> Idle {
    let baseline_kib = rss_kib(server.pid());
    let mut child = pinned(0, loadgen)
        .arg(server.addr.to_string())
        .args(["--idle", &n.to_string(), "--hold", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run loadgen");
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_kib(server.pid());
    let _ = child.wait();
    Idle {
        conns: n,
        echoed: parse_kv(&line).get("idle_ok").copied().unwrap_or(0.0) as usize,
        rss_kib: rss,
        baseline_kib,
    }
}

fn fmt_thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn markdown(results: &[(&Scenario, Measured)], idle: &Idle, counter: Counter, secs: f64) -> String {
    let mut md = String::new();
    let how = match counter {
        Counter::Perf => "perf stat on the syscall tracepoints",
        Counter::Strace => "strace -c -f (perf was not available)",
        Counter::None => "not counted (neither perf nor strace installed)",
    };
    writeln!(md, "Measured {} on {}.", host::now_utc(), host::machine()).unwrap();
    writeln!(md, "Server pinned to CPU 1, load generator to CPU 0; {secs} s per scenario after 0.5 s of warm-up. Syscalls: {how}; per message, warm-up included.\n").unwrap();
    md.push_str("| scenario | msgs/s | p50 µs | p99 µs | p999 µs | CPU µs/msg | syscalls/msg | reads/msg | writes/msg | epoll_wait/msg | epoll_ctl/msg | RSS MiB | errors |\n");
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (sc, m) in results {
        let per = |n: u64| format!("{:.3}", n as f64 / m.total_msgs as f64);
        let (total, reads, writes, waits, ctls) = match m.syscalls {
            Some(s) => (
                per(s.total),
                per(s.reads),
                per(s.writes),
                per(s.epoll_wait),
                per(s.epoll_ctl),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {total} | {reads} | {writes} | {waits} | {ctls} | {:.1} | {} |",
            sc.name,
            fmt_thousands(m.msgs_per_s),
            m.p50_us,
            m.p99_us,
            m.p999_us,
            m.cpu_us_per_msg,
            m.rss_kib as f64 / 1024.0,
            m.errors
        )
        .unwrap();
    }
    writeln!(
        md,
        "| {} idle connections (each echoed one line: {} ok) | | | | | | | | | | | {:.1} (at start: {:.1}) | |",
        fmt_thousands(idle.conns as f64),
        fmt_thousands(idle.echoed as f64),
        idle.rss_kib as f64 / 1024.0,
        idle.baseline_kib as f64 / 1024.0
    )
    .unwrap();
    md.push_str("\n![benchmark chart](benchmarks.svg)\n");
    md
}

/// One bar of the chart: label, value, value as text.
type Bar = (String, f64, String);

/// A dependency-free SVG: one panel per figure, one bar per scenario.
fn chart(results: &[(&Scenario, Measured)], idle: &Idle) -> String {
    let panels: Vec<(&str, Vec<Bar>)> = vec![
        (
            "messages per second",
            results
                .iter()
                .map(|(s, m)| {
                    (
                        s.name.to_string(),
                        m.msgs_per_s,
                        fmt_thousands(m.msgs_per_s),
                    )
                })
                .collect(),
        ),
        (
            "server CPU µs per message",
            results
                .iter()
                .map(|(s, m)| {
                    (
                        s.name.to_string(),
                        m.cpu_us_per_msg,
                        format!("{:.2}", m.cpu_us_per_msg),
                    )
                })
                .collect(),
        ),
        (
            "server syscalls per message",
            results
                .iter()
                .map(|(s, m)| {
                    let v = m
                        .syscalls
                        .map_or(0.0, |c| c.total as f64 / m.total_msgs as f64);
                    (s.name.to_string(), v, format!("{v:.3}"))
                })
                .collect(),
        ),
        (
            "server RSS MiB",
            vec![(
                format!("{} idle connections", fmt_thousands(idle.conns as f64)),
                idle.rss_kib as f64 / 1024.0,
                format!("{:.1}", idle.rss_kib as f64 / 1024.0),
            )],
        ),
    ];
    let (label_w, bar_w, row_h, panel_gap) = (300.0, 360.0, 22.0, 30.0);
    let width = label_w + bar_w + 90.0;
    let height: f64 = panels
        .iter()
        .map(|(_, rows)| 24.0 + rows.len() as f64 * row_h + panel_gap)
        .sum::<f64>()
        + 10.0;
    let mut svg = String::new();
    writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#).unwrap();
    writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#).unwrap();
    let mut y = 10.0;
    for (title, rows) in &panels {
        writeln!(
            svg,
            r#"<text x="10" y="{}" font-weight="bold">{title}</text>"#,
            y + 14.0
        )
        .unwrap();
        y += 24.0;
        let max = rows
            .iter()
            .map(|r| r.1)
            .fold(0.0, f64::max)
            .max(f64::MIN_POSITIVE);
        for (label, value, text) in rows {
            let w = value / max * bar_w;
            writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
                label_w - 8.0,
                y + 15.0,
                label.replace('&', "&amp;")
            )
            .unwrap();
            writeln!(
                svg,
                r##"<rect x="{label_w}" y="{}" width="{w:.1}" height="{}" fill="#4a7fb5"/>"##,
                y + 3.0,
                row_h - 6.0
            )
            .unwrap();
            writeln!(
                svg,
                r#"<text x="{:.1}" y="{}">{text}</text>"#,
                label_w + w + 6.0,
                y + 15.0
            )
            .unwrap();
            y += row_h;
        }
        y += panel_gap;
    }
    svg.push_str("</svg>\n");
    svg
}

/// Puts `section` between the markers of `path`, keeping the rest of the file.
fn write_section(path: &Path, section: &str) -> std::io::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{BEGIN}\n{section}{}", &old[..b], &old[e..]),
        _ => format!("# Benchmarks\n\n{BEGIN}\n{section}{END}\n{old}"),
    };
    std::fs::write(path, new)
}

fn bench(args: &[String]) -> ExitCode {
    let quick = args.iter().any(|a| a == "--quick");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let idle_n: usize = value("--idle")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2000 } else { 10_000 });
    let out = PathBuf::from(value("--out").map_or("docs/benchmarks.md", String::as_str));
    let secs = if quick { 1.5 } else { 4.0 };
    let server_bin = sibling("reactor-echo");
    let loadgen = sibling("loadgen");
    for bin in [&server_bin, &loadgen] {
        if !bin.exists() {
            eprintln!(
                "bench: {} is missing: run `make bench` (it builds release first)",
                bin.display()
            );
            return ExitCode::FAILURE;
        }
    }
    let counter = pick_counter();
    if counter == Counter::None {
        eprintln!(
            "bench: neither perf nor strace found; syscalls will not be counted (apt-get install linux-perf strace)"
        );
    }

    // Idle first, on a fresh server: the RSS of N idle connections.
    let idle = {
        let server = Server::start(&server_bin);
        std::thread::sleep(Duration::from_millis(200));
        run_idle(&server, &loadgen, idle_n)
    };
    eprintln!(
        "idle: {} connections, {} echoed, RSS {:.1} MiB",
        idle.conns,
        idle.echoed,
        idle.rss_kib as f64 / 1024.0
    );
    let server = Server::start(&server_bin);
    let mut results = Vec::new();
    for sc in &SCENARIOS {
        let m = run_scenario(&server, &loadgen, sc, secs, counter);
        eprintln!(
            "{}: {} msgs/s, p99 {:.0} µs, CPU {:.2} µs/msg, syscalls/msg {}",
            sc.name,
            fmt_thousands(m.msgs_per_s),
            m.p99_us,
            m.cpu_us_per_msg,
            m.syscalls.map_or("-".into(), |s| format!(
                "{:.3}",
                s.total as f64 / m.total_msgs as f64
            ))
        );
        results.push((sc, m));
    }
    drop(server);

    let md = markdown(&results, &idle, counter, secs);
    println!("{md}");
    let svg_path = out.with_extension("svg");
    if let Err(e) =
        write_section(&out, &md).and_then(|()| std::fs::write(&svg_path, chart(&results, &idle)))
    {
        eprintln!("bench: cannot write {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    eprintln!("wrote {} and {}", out.display(), svg_path.display());
    if results.iter().any(|(_, m)| m.errors > 0) || idle.echoed != idle.conns {
        eprintln!("bench: echo errors: see the table");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Profiles the server under pipelined load and prints the top of the report.
fn perf_profile() -> ExitCode {
    let server = Server::start(&sibling("reactor-echo"));
    let data = sibling("perf.data");
    let mut load = pinned(0, &sibling("loadgen"))
        .arg(server.addr.to_string())
        .args([
            "--conns", "50", "--depth", "16", "--size", "64", "--secs", "6", "--warmup", "0",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("run loadgen");
    std::thread::sleep(Duration::from_secs(1));
    let recorded = Command::new("perf")
        .args(["record", "-g", "-o"])
        .arg(&data)
        .args(["-p", &server.pid().to_string(), "--", "sleep", "4"])
        .status();
    let _ = load.wait();
    drop(server);
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
                "--sort",
                sort,
                "-i",
            ])
            .arg(&data)
            .output();
        if let Ok(r) = report {
            for line in String::from_utf8_lossy(&r.stdout)
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .take(40)
            {
                println!("{line}");
            }
            println!();
        }
    }
    println!("full report: perf report -i {}", data.display());
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("perf") => perf_profile(),
        Some("--help" | "-h") => {
            println!("usage: bench [--quick] [--idle N] [--out FILE.md] | bench perf");
            ExitCode::SUCCESS
        }
        _ => bench(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perf_and_strace_counts() {
        let perf = "735522,,raw_syscalls:sys_enter,3003,100.00,,\n348742,,syscalls:sys_enter_recvfrom,3003,100.00,,\n";
        let m = parse_perf(perf);
        assert_eq!(m["total"], 735522);
        assert_eq!(m["recvfrom"], 348742);
        let strace = "% time     seconds  usecs/call     calls    errors syscall\n------ ----------- ----------- --------- --------- ----------------\n 60.00    0.600000           2    300000           sendto\n 40.00    0.400000           1    300001        12 recvfrom\n100.00    1.000000           1    600001        12 total\n";
        let m = parse_strace(strace);
        assert_eq!(m["sendto"], 300000);
        assert_eq!(m["recvfrom"], 300001);
        assert!(!m.contains_key("total"));
    }

    #[test]
    fn section_is_replaced_between_markers_only() {
        let dir = std::env::temp_dir().join(format!("bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.md");
        std::fs::write(&path, format!("intro\n{BEGIN}\nold\n{END}\nanalysis\n")).unwrap();
        write_section(&path, "new\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("intro\n{BEGIN}\nnew\n{END}\nanalysis\n")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn thousands() {
        assert_eq!(fmt_thousands(1234567.0), "1,234,567");
        assert_eq!(fmt_thousands(999.0), "999");
    }
}
