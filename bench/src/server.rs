//! One server under test: started under `taskset` on its CPUs, measured
//! scenario by scenario, stopped.
//!
//! K load generator processes (`loadgen`, pinned to the load generators'
//! CPUs) share a scenario's connections and their messages/s are summed.
//! The server's CPU time (user + system, every thread, from
//! `/proc/PID/stat`) over the whole run, warm-up included, is divided by
//! every message echoed in that time, and so are its syscalls when they
//! are counted.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::host::{self, parse_kv};
use crate::openloop;
use crate::scenario::{Kind, Scenario};
use crate::syscalls::{Counter, Counting, Syscalls};

/// How the load is driven: the same for every server.
pub struct Load {
    pub loadgen: PathBuf,
    pub client_cpus: String,
    /// Load generator processes (K); a scenario's connections are split
    /// between them.
    pub clients: usize,
    pub secs: f64,
    pub warmup: f64,
    pub counter: Option<Counter>,
}

/// Reads a server's standard error to its end, on a thread of its own (a
/// server whose stderr pipe fills up, unread, blocks), handing each line to
/// `each`. The address of its first "listening on ADDR" line, as text,
/// comes on the channel returned.
pub fn follow_log(
    stderr: impl Read + Send + 'static,
    mut each: impl FnMut(String) + Send + 'static,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find("listening on ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(line[at + "listening on ".len()..].trim().to_string());
            }
            each(line);
        }
    });
    rx
}

/// What one scenario measured on one server, in one round.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub msgs_per_s: f64,
    pub cpu_us_per_msg: f64,
    /// Round trips: closed loop, the worst of the load generators'
    /// percentiles; open loop, the percentiles of their merged histograms,
    /// from each line's intended send time; churn, connect to echo.
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// The slowest (open loop and churn).
    pub max_us: f64,
    /// Open loop: the rate asked for, and the rate sent in the measuring
    /// window (0 for the other loads).
    pub target_per_s: f64,
    pub offered_per_s: f64,
    /// Open loop: how late the load generator sent (p99 of its lag behind
    /// the schedule, the worst process), in µs: above a few µs, the load
    /// generator itself did not keep up.
    pub lag_p99_us: f64,
    /// Open loop: lines sent in the window whose echo never came back
    /// (each counted in the latencies with the time it had waited).
    pub unanswered: u64,
    /// Echoed lines that differed from what was sent.
    pub errors: u64,
    /// The server's syscalls per message, where they were counted.
    pub syscalls: Option<Syscalls>,
    /// The server's RSS after the scenario.
    pub rss_kib: f64,
    /// Other work on the machine meanwhile, in CPUs: the CPU time of every
    /// process but the server, this driver and its load generators, over the
    /// wall time. On a machine shared with builds and tests this says which
    /// samples were taken while something else ran.
    pub other_cpus: f64,
}

/// N idle connections on a fresh server, each of which echoed one line.
#[derive(Clone, Debug, Default)]
pub struct Idle {
    pub conns: usize,
    pub echoed: usize,
    pub rss_kib: f64,
    /// Before the connections were opened.
    pub baseline_kib: f64,
}

/// The program a command line starts, for checking that it was built.
pub fn program(argv: &[String]) -> &Path {
    Path::new(argv.first().map_or("", String::as_str))
}

/// A server under test, killed if dropped before `stop`.
pub struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Running {
    /// Starts `argv` (with `{addr}` and `{cpus}` filled in) on `cpus`, and
    /// waits until it accepts connections.
    pub fn start(argv: &[String], cpus: &[usize]) -> Result<Running, String> {
        let addr = host::free_addr();
        let argv: Vec<String> = argv
            .iter()
            .map(|a| {
                a.replace("{addr}", &addr.to_string())
                    .replace("{cpus}", &cpus.len().to_string())
            })
            .collect();
        let mut child = Command::new("taskset")
            .args(["-c", &crate::cpus::format_list(cpus)])
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `loadgen ADDR` on the load generators' CPUs.
    pub fn loadgen(&self, load: &Load) -> Command {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &load.client_cpus])
            .arg(&load.loadgen)
            .arg(self.addr.to_string());
        cmd
    }

    /// Runs one scenario against the server and measures it.
    pub fn measure(&mut self, sc: &Scenario, load: &Load) -> Result<Sample, String> {
        let (secs, warmup) = (load.secs.to_string(), load.warmup.to_string());
        self.drive(sc.conns, load, |conns| {
            let mut a = match sc.kind {
                Kind::Closed => vec!["--depth".to_string(), sc.depth.to_string()],
                Kind::Churn => vec!["--churn".to_string()],
            };
            a.extend(
                [
                    "--conns",
                    &conns.to_string(),
                    "--size",
                    &sc.size.to_string(),
                ]
                .map(String::from),
            );
            a.extend(["--secs", &secs, "--warmup", &warmup].map(String::from));
            a
        })
    }

    /// Offers `rate` lines a second, open loop, over the connections of
    /// `sc` (their lines' size too), and measures the latency of each from
    /// its intended send time.
    pub fn measure_open(
        &mut self,
        sc: &Scenario,
        rate: f64,
        load: &Load,
    ) -> Result<Sample, String> {
        let k = load.clients.clamp(1, sc.conns) as f64;
        let (secs, warmup) = (load.secs.to_string(), load.warmup.to_string());
        self.drive(sc.conns, load, |conns| {
            [
                "--conns",
                &conns.to_string(),
                "--size",
                &sc.size.to_string(),
                "--rate",
                &format!("{:.3}", rate / k),
                "--secs",
                &secs,
                "--warmup",
                &warmup,
            ]
            .map(String::from)
            .to_vec()
        })
    }

    /// Starts K load generators on `conns` connections split between them
    /// (`args` says what each of them does with its share), waits for
    /// them, and measures the server meanwhile.
    fn drive(
        &mut self,
        conns: usize,
        load: &Load,
        args: impl Fn(usize) -> Vec<String>,
    ) -> Result<Sample, String> {
        let pid = self.pid();
        let counting = load.counter.and_then(|c| Counting::start(c, pid));
        let before = host::cpu_seconds(pid);
        // The counter is ours too: perf's own CPU time is not other work.
        let ours: Vec<u32> = [Some(pid), counting.as_ref().map(Counting::pid)]
            .into_iter()
            .flatten()
            .collect();
        let others_before = host::others_cpu(&ours);
        let started = Instant::now();
        let k = load.clients.clamp(1, conns);
        let loadgens: Vec<Child> = (0..k)
            .map(|i| {
                // Connections split as evenly as they go: 1000 over 3 is 334, 333, 333.
                let share = conns / k + usize::from(i < conns % k);
                self.loadgen(load)
                    .args(args(share))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("start {}: {e}", load.loadgen.display()))
            })
            .collect::<Result<_, _>>()?;
        let outputs: Vec<_> = loadgens.into_iter().map(Child::wait_with_output).collect();
        let cpu = host::cpu_seconds(pid) - before;
        let wall = started.elapsed().as_secs_f64();
        let others = host::others_delta(&others_before, &host::others_cpu(&ours));
        let counted = counting.and_then(Counting::finish);
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("server exited during the run: {status}"));
        }
        let mut stdouts = Vec::new();
        for out in outputs {
            let out = out.map_err(|e| format!("loadgen: {e}"))?;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let last = parse_kv(stdout.lines().last().unwrap_or(""));
            if !out.status.success() || !last.contains_key("msgs_per_s") {
                let err = String::from_utf8_lossy(&out.stderr);
                let tail: String = err.trim().chars().rev().take(200).collect();
                return Err(format!(
                    "loadgen failed ({}): {}",
                    out.status,
                    tail.chars().rev().collect::<String>()
                ));
            }
            stdouts.push(stdout);
        }
        let (mut sample, total) = combine(&stdouts, cpu)?;
        sample.other_cpus = (others / wall).max(0.0);
        sample.syscalls = counted.map(|s| s.per(total));
        sample.rss_kib = host::rss_kib(pid);
        Ok(sample)
    }

    /// Opens `n` connections, each echoing one line, holds them, and reads
    /// the server's RSS meanwhile.
    pub fn idle(&self, n: usize, load: &Load) -> Result<Idle, String> {
        let baseline_kib = host::rss_kib(self.pid());
        let mut child = self
            .loadgen(load)
            .args(["--idle", &n.to_string(), "--hold", "3"])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start {}: {e}", load.loadgen.display()))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        std::thread::sleep(Duration::from_millis(500));
        let rss_kib = host::rss_kib(self.pid());
        let _ = child.wait();
        Ok(Idle {
            conns: n,
            echoed: parse_kv(&line).get("idle_ok").copied().unwrap_or(0.0) as usize,
            rss_kib,
            baseline_kib,
        })
    }

    /// Stops the server: SIGTERM (reactor-echo drains, the peers just
    /// exit), SIGKILL after 5 s.
    pub fn stop(mut self) {
        host::signal(self.child.id(), Signal::TERM);
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

/// The load generators' outputs, one each, as one sample: rates and counts
/// summed; percentiles from their merged histograms where they printed them
/// (the open loop), else the worst of theirs; the server's `cpu` seconds
/// divided by every message of the run (every connection, for churn).
/// Returns the sample and that count.
pub fn combine(stdouts: &[String], cpu: f64) -> Result<(Sample, f64), String> {
    let mut sample = Sample::default();
    let mut total = 0.0;
    let mut merged = openloop::histogram();
    let mut histograms = 0;
    for stdout in stdouts {
        for line in stdout.lines().filter(|l| l.starts_with("hist=")) {
            openloop::decode_into(line, &mut merged)?;
            histograms += 1;
        }
        let kv = parse_kv(stdout.lines().last().unwrap_or(""));
        let get = |k: &str| kv.get(k).copied().unwrap_or(0.0);
        sample.msgs_per_s += get("msgs_per_s");
        sample.target_per_s += get("target_per_s");
        sample.offered_per_s += get("offered_per_s");
        sample.p50_us = sample.p50_us.max(get("p50_us"));
        sample.p99_us = sample.p99_us.max(get("p99_us"));
        sample.p999_us = sample.p999_us.max(get("p999_us"));
        sample.max_us = sample.max_us.max(get("max_us"));
        sample.lag_p99_us = sample.lag_p99_us.max(get("lag_p99_us"));
        sample.unanswered += get("unanswered") as u64;
        sample.errors += get("errors") as u64;
        total += get("total_msgs");
    }
    if histograms == stdouts.len() && !merged.is_empty() {
        sample.p50_us = openloop::quantile_us(&merged, 0.5);
        sample.p99_us = openloop::quantile_us(&merged, 0.99);
        sample.p999_us = openloop::quantile_us(&merged, 0.999);
        sample.max_us = merged.max() as f64 / 1000.0;
    }
    let total = f64::max(total, 1.0);
    sample.cpu_us_per_msg = cpu * 1e6 / total;
    Ok((sample, total))
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_figures_are_per_connection() {
        // Two load generators' churn lines; the server used 1.2 s of CPU.
        let a = "msgs_per_s=6000 conns_per_s=6000 p50_us=90.0 p99_us=300.0 p999_us=900.0 \
                 max_us=2000.0 errors=0 total_msgs=27000 total_conns=27000";
        let b = "msgs_per_s=5000 conns_per_s=5000 p50_us=80.0 p99_us=400.0 p999_us=800.0 \
                 max_us=1500.0 errors=1 total_msgs=21000 total_conns=21000";
        let (s, total) = combine(&[a.to_string(), b.to_string()], 1.2).unwrap();
        assert_eq!(s.msgs_per_s, 11_000.0, "connections/s, summed");
        assert_eq!(total, 48_000.0, "every connection, warm-up included");
        assert!(
            (s.cpu_us_per_msg - 25.0).abs() < 1e-9,
            "1.2 s ÷ 48,000 connections"
        );
        assert_eq!((s.p99_us, s.max_us, s.errors), (400.0, 2000.0, 1));
    }

    #[test]
    fn open_loop_percentiles_come_from_the_merged_histograms() {
        let line = |values: &[u64], rate: f64| {
            let mut h = openloop::histogram();
            for &v in values {
                h.record(v).unwrap();
            }
            format!(
                "{}\nmsgs_per_s={rate} offered_per_s={rate} target_per_s={rate} p50_us=1 p99_us=1 \
                 p999_us=1 max_us=1 lag_p99_us=3.5 unanswered=0 errors=0 total_msgs=100",
                openloop::encode(&h)
            )
        };
        // One process saw 99 fast lines, the other one slow one: merged,
        // the max is the slow one and the median a fast one.
        let fast: Vec<u64> = vec![10_000; 99];
        let (s, _) = combine(&[line(&fast, 500.0), line(&[50_000_000], 500.0)], 0.001).unwrap();
        assert_eq!(
            (s.msgs_per_s, s.target_per_s, s.offered_per_s),
            (1000.0, 1000.0, 1000.0)
        );
        assert!((s.p50_us - 10.0).abs() < 0.01, "{}", s.p50_us);
        assert!((s.max_us - 50_000.0).abs() < 50.0, "{}", s.max_us);
        assert!((s.cpu_us_per_msg - 5.0).abs() < 1e-9);
    }
}
