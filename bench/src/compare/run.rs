//! Running one server and measuring it, for `compare` (`make bench-compare`).
//!
//! A server is started under `taskset` on its CPUs and measured scenario by
//! scenario: K load generator processes (`loadgen`, pinned to the load
//! generators' CPUs) share the scenario's connections, their messages/s are
//! summed, and the server's CPU time (user + system, every thread, from
//! `/proc/PID/stat`) over the whole run, warm-up included, is divided by
//! every message echoed in that time, as `make bench` and the shared
//! `compare.py` count it.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// One load: C connections, each with D lines of SIZE bytes in flight.
pub struct Scenario {
    /// Short name: the chart's and the raw file's.
    pub key: &'static str,
    /// The table's name.
    pub title: &'static str,
    pub conns: usize,
    pub depth: usize,
    pub size: usize,
}

/// The four scenarios of issue 11, the same as `make bench`'s and
/// `compare.py`'s.
pub const SCENARIOS: [Scenario; 4] = [
    Scenario {
        key: "ping-pong",
        title: "ping-pong, 50 conns × 1 line of 64 B",
        conns: 50,
        depth: 1,
        size: 64,
    },
    Scenario {
        key: "pipelined",
        title: "pipelined, 50 conns × 16 lines of 64 B",
        conns: 50,
        depth: 16,
        size: 64,
    },
    Scenario {
        key: "c1000",
        title: "1,000 conns × 1 line of 64 B",
        conns: 1000,
        depth: 1,
        size: 64,
    },
    Scenario {
        key: "bulk",
        title: "bulk, 10 conns × 4 lines of 16 KiB",
        conns: 10,
        depth: 4,
        size: 16384,
    },
];

/// What one scenario measured on one server, in one round.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub msgs_per_s: f64,
    pub cpu_us_per_msg: f64,
    /// The worst of the load generators' p99 round trips.
    pub p99_us: f64,
    /// Echoed lines that differed from what was sent.
    pub errors: u64,
    /// With `--syscalls`: the server's syscalls, and `epoll_ctl`s, per message.
    pub syscalls_per_msg: Option<f64>,
    pub epoll_ctl_per_msg: Option<f64>,
    /// Other work on the machine meanwhile, in CPUs: the CPU time of every
    /// process but the server, this driver and its load generators, over the
    /// wall time. On a machine shared with builds and tests this says which
    /// samples were taken while something else ran.
    pub other_cpus: f64,
}

/// How the server's syscalls are counted (`--syscalls`).
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Counter {
    Perf,
    Strace,
    None,
}

const PERF_EVENTS: &str = "raw_syscalls:sys_enter,syscalls:sys_enter_epoll_ctl";

/// perf where it may read the syscall tracepoints, else strace.
pub fn pick_counter() -> Counter {
    let works = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(Command::new("perf").args(["stat", "-e", PERF_EVENTS, "true"])) {
        Counter::Perf
    } else if works(Command::new("strace").args(["-c", "-o", "/dev/null", "true"])) {
        Counter::Strace
    } else {
        Counter::None
    }
}

/// How the load is driven: the same for every server.
pub struct Load {
    pub loadgen: PathBuf,
    pub client_cpus: String,
    /// Load generator processes (K); a scenario's connections are split
    /// between them.
    pub clients: usize,
    pub secs: f64,
    pub warmup: f64,
    pub counter: Counter,
}

/// A free port on loopback, for the next server.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
}

/// CPU time, in s, of every process on the machine but this one and
/// `ours` (the server, the syscall counter), by pid: `utime + stime + cutime + cstime`, so that the work of
/// children that came and went (a build's compilers) is counted in their
/// parent. Kernel threads are left out: on loopback much of their work
/// (`ksoftirqd`) is the benchmark's own TCP.
fn others_cpu(ours: &[u32]) -> HashMap<u32, f64> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let me = std::process::id();
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || ours.contains(&pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let flags: u64 = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(6)?.parse().ok())
            .unwrap_or(0);
        if flags & PF_KTHREAD == 0 {
            out.insert(pid, crate::host::stat_seconds(&stat, 11, 15));
        }
    }
    out
}

/// The CPU time other processes used between two `others_cpu` snapshots.
fn others_delta(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, t)| (t - before.get(pid).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = kill_process(pid, sig);
    }
}

/// A server under test, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Running {
    /// Starts `argv` (with `{addr}` and `{cpus}` filled in) on `cpus`, and
    /// waits until it accepts connections.
    pub fn start(argv: &[String], cpus: &[usize]) -> Result<Running, String> {
        let addr = free_addr();
        let argv: Vec<String> = argv
            .iter()
            .map(|a| {
                a.replace("{addr}", &addr.to_string())
                    .replace("{cpus}", &cpus.len().to_string())
            })
            .collect();
        let mut child = Command::new("taskset")
            .args(["-c", &super::cpus::format_list(cpus)])
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("start {}: {e}", argv.join(" ")))?;
        let give_up = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{} exited at start: {status}", argv.join(" ")));
            }
            if Instant::now() > give_up {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not listen within 10 s", argv.join(" ")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Running { child, addr })
    }

    /// Runs one scenario against the server and measures it.
    pub fn measure(&mut self, sc: &Scenario, load: &Load) -> Result<Sample, String> {
        let pid = self.child.id();
        let counting = start_counter(load.counter, pid);
        let before = crate::host::cpu_seconds(pid);
        // The counter is ours too: perf's own CPU time is not other work.
        let ours = [Some(pid), counting.as_ref().map(|c| c.child.id())];
        let ours: Vec<u32> = ours.into_iter().flatten().collect();
        let others_before = others_cpu(&ours);
        let started = Instant::now();
        let k = load.clients.clamp(1, sc.conns);
        let loadgens: Vec<Child> = (0..k)
            .map(|i| {
                // Connections split as evenly as they go: 1000 over 3 is 334, 333, 333.
                let conns = sc.conns / k + usize::from(i < sc.conns % k);
                Command::new("taskset")
                    .args(["-c", &load.client_cpus])
                    .arg(&load.loadgen)
                    .arg(self.addr.to_string())
                    .args(["--conns", &conns.to_string()])
                    .args(["--depth", &sc.depth.to_string()])
                    .args(["--size", &sc.size.to_string()])
                    .args(["--secs", &load.secs.to_string()])
                    .args(["--warmup", &load.warmup.to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("start {}: {e}", load.loadgen.display()))
            })
            .collect::<Result<_, _>>()?;
        let outputs: Vec<_> = loadgens.into_iter().map(Child::wait_with_output).collect();
        let cpu = crate::host::cpu_seconds(pid) - before;
        let wall = started.elapsed().as_secs_f64();
        let others = others_delta(&others_before, &others_cpu(&ours));
        let counts = counting.map(|c| c.finish());
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("server exited during the run: {status}"));
        }
        let mut sample = Sample::default();
        let mut total = 0.0;
        for out in outputs {
            let out = out.map_err(|e| format!("loadgen: {e}"))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let kv = parse_kv(stdout.lines().last().unwrap_or(""));
            if !out.status.success() || !kv.contains_key("msgs_per_s") {
                let err = String::from_utf8_lossy(&out.stderr);
                let tail: String = err.trim().chars().rev().take(200).collect();
                return Err(format!(
                    "loadgen failed ({}): {}",
                    out.status,
                    tail.chars().rev().collect::<String>()
                ));
            }
            let get = |k: &str| kv.get(k).copied().unwrap_or(0.0);
            sample.msgs_per_s += get("msgs_per_s");
            sample.p99_us = sample.p99_us.max(get("p99_us"));
            sample.errors += get("errors") as u64;
            total += get("total_msgs");
        }
        let total = total.max(1.0);
        sample.cpu_us_per_msg = cpu * 1e6 / total;
        sample.other_cpus = (others / wall).max(0.0);
        if let Some(Some((all, ctl))) = counts {
            sample.syscalls_per_msg = Some(all as f64 / total);
            sample.epoll_ctl_per_msg = Some(ctl as f64 / total);
        }
        Ok(sample)
    }

    /// Stops the server: SIGTERM (reactor-echo drains, the peers just
    /// exit), SIGKILL after 5 s.
    pub fn stop(mut self) {
        signal(self.child.id(), Signal::TERM);
        let give_up = Instant::now() + Duration::from_secs(5);
        while Instant::now() < give_up {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// perf or strace attached to the server while a scenario runs.
struct Counting {
    child: Child,
    counter: Counter,
}

fn start_counter(counter: Counter, pid: u32) -> Option<Counting> {
    let mut cmd = match counter {
        Counter::Perf => {
            let mut c = Command::new("perf");
            c.args(["stat", "-x,", "-e", PERF_EVENTS, "-p", &pid.to_string()]);
            c
        }
        Counter::Strace => {
            let mut c = Command::new("strace");
            c.args(["-c", "-f", "-p", &pid.to_string()]);
            c
        }
        Counter::None => return None,
    };
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    // Let it attach before the load starts.
    std::thread::sleep(Duration::from_millis(300));
    Some(Counting { child, counter })
}

impl Counting {
    /// Stops counting: (all syscalls, epoll_ctl calls), if it could tell.
    fn finish(self) -> Option<(u64, u64)> {
        signal(self.child.id(), Signal::INT);
        let out = self.child.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        match self.counter {
            Counter::Perf => parse_perf(&text),
            _ => parse_strace(&text),
        }
    }
}

/// `perf stat -x,` lines: `count,,event,...`.
fn parse_perf(out: &str) -> Option<(u64, u64)> {
    let count = |event: &str| {
        out.lines().find_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.get(2) == Some(&event))
                .then(|| f[0].parse::<u64>().ok())
                .flatten()
        })
    };
    Some((
        count("raw_syscalls:sys_enter")?,
        count("syscalls:sys_enter_epoll_ctl").unwrap_or(0),
    ))
}

/// `strace -c` table: `% time seconds usecs/call calls [errors] syscall`.
/// The total is summed from the rows: older straces leave a column out of
/// their own `total` row.
fn parse_strace(out: &str) -> Option<(u64, u64)> {
    let rows: Vec<(&str, u64)> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.last()?;
            (f.len() >= 5 && f[0].parse::<f64>().is_ok() && name != "total")
                .then(|| Some((name, f[3].parse().ok()?)))
                .flatten()
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let ctl = rows
        .iter()
        .filter(|r| r.0 == "epoll_ctl")
        .map(|r| r.1)
        .sum();
    Some((rows.iter().map(|r| r.1).sum(), ctl))
}

fn parse_kv(line: &str) -> std::collections::BTreeMap<String, f64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// Whether `taskset` can be run: without it nothing can be pinned, and a
/// comparison whose server and load generators fight over the same CPUs
/// measures the scheduler.
pub fn have_taskset() -> bool {
    Command::new("taskset")
        .args(["-c", "0", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The program a command line starts, for checking that it was built.
pub fn program(argv: &[String]) -> &Path {
    Path::new(argv.first().map_or("", String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters() {
        let perf = "735522,,raw_syscalls:sys_enter,3003,100.00,,\n12,,syscalls:sys_enter_epoll_ctl,3003,100.00,,\n";
        assert_eq!(parse_perf(perf), Some((735522, 12)));
        assert_eq!(parse_perf("garbage"), None);
        let strace = "% time     seconds  usecs/call     calls    errors syscall\n------ ----------- ----------- --------- --------- ----------------\n 60.00    0.600000           2    300000           sendto\n  0.01    0.000100           1         7           epoll_ctl\n100.00    1.000000           1    600001        12 total\n";
        assert_eq!(parse_strace(strace), Some((300007, 7)));
    }

    #[test]
    fn loadgen_line() {
        let kv = parse_kv("msgs_per_s=1500 p99_us=12.5 errors=0 total_msgs=6000");
        assert_eq!(kv["msgs_per_s"], 1500.0);
        assert_eq!(kv["p99_us"], 12.5);
    }
}
