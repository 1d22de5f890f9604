//! Chaos soak for reactor-echo: the real binary, a few hundred concurrent
//! clients mixing every fault, every byte accounted for, for a minute or ten.
//!
//! ```text
//! make soak                                  # 60 s, release build
//! SOAK_SECS=600 make soak                    # a long run
//! SOAK_ARGS="--workers 2" make soak          # extra server flags, verbatim
//! soak --server target/release/reactor-echo [--secs 60] [--seed N]
//!      [--workers 200] [--idlers 100] [--steady 20] [--max-frame 32768]
//!      [--drain-timeout 10] [--send-buffer 32768] [-- SERVER_FLAGS...]
//! ```
//!
//! It starts the server on `127.0.0.1:0` (the port comes from its
//! `listening on ADDR` log line) and runs, all on loopback:
//!
//! - the clients of `bench/src/soak/clients.rs`: pipelined lines, 1-byte
//!   fragmentation, huge bursts, binary lines, over-long lines, slow and
//!   stalled readers, small receive buffers, half-closes, RSTs, idle
//!   connections, bursts of connects; each checks its echo byte for byte;
//! - the steady clients of `bench/src/soak/steady.rs`, a writer and a
//!   reader thread each, streaming both ways at once without a break, the
//!   load under which the server's output queue never empties;
//! - between some clients and the server, the relay of
//!   `bench/src/soak/relay.rs`, which re-segments, delays and coalesces;
//! - a small server send buffer (`--send-buffer`, 32 KiB unless told; 0
//!   leaves it to the kernel): without it, loopback's autotuned buffers
//!   (megabytes) absorb every echo and the server's own output queue,
//!   short writes and backpressure would hardly ever be exercised;
//! - a sampler of the server's RSS, once a second, which must stay flat
//!   (the rule is at `RSS_SLACK_KIB`);
//! - at the end, SIGTERM while clients are busy, then the drain: every
//!   well-behaved client must get all its echoes and a FIN, and the server
//!   must exit 0, having logged no error and no panic;
//! - a watch on the kernel's `TCP_INFO` of every connection the server and
//!   the relay send on, four times a second (`bench/src/soak/throttle.rs`),
//!   for the one state that excuses a late end: a connection the kernel
//!   throttles, its receiver offering a window smaller than the sender's
//!   MSS (docs/reliability.md). A client whose echoes were held back that
//!   way may end late, not at all, or with the RST of the server's drain
//!   deadline, and the server may then exit 3, but only if every
//!   connection its log names as cut off was seen throttled during the
//!   drain. The table names these clients; nothing else is excused.
//!
//! What each client must see is written down, rule by rule, in
//! `Client::judge` (`bench/src/soak/clients.rs`). A run also fails if one of
//! its faults never happened (a soak that tested nothing must not pass).
//!
//! Server flags the soak sets itself (`--listen`, `--max-frame`,
//! `--drain-timeout`, `--send-buffer`) must be given as soak flags, not after
//! `--`. `--idle-timeout` does not mix with the soak's idle clients: the
//! server may close them before SIGTERM, which the soak counts as a
//! violation.
//!
//! Prints the seed (`--seed` replays every random choice; the timing, and
//! so the interleaving, is the machine's), progress every 5 s, and a
//! summary table with a verdict. Exits 0 on PASS, 1 on FAIL, 2 on bad usage.

#[path = "../soak/clients.rs"]
mod clients;
#[path = "../soak/content.rs"]
mod content;
#[path = "../soak/net.rs"]
mod net;
#[path = "../soak/relay.rs"]
mod relay;
#[path = "../soak/rng.rs"]
mod rng;
#[path = "../soak/steady.rs"]
mod steady;
#[path = "../soak/throttle.rs"]
mod throttle;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reactor_echo_bench::server::follow_log;
use rustix::process::{Pid, Signal, kill_process};

use clients::{Plan, Shared, Tally};
use relay::RelayStats;

const MIB: f64 = 1024.0 * 1024.0;

/// Memory rule. The RSS samples (one a second until SIGTERM) are cut in
/// thirds. The first is warm-up (connections opening, buffers and heap
/// growing to their working size) and is not judged. The peak of the last
/// third may exceed the peak of the middle third by at most
/// `max(12 MiB, 10% of it)`. Growth at a steady rate `r` over a run of `T`
/// seconds raises the last third's peak by `r * T / 3` over the middle
/// third's, so it fails once `r > 36 MiB / T` (at a working set under
/// 120 MiB): about 1.8 MiB/s in a 20 s run, 0.6 MiB/s in 60 s and 0.06 MiB/s
/// (3.6 MiB a minute) in 10 minutes. A bounded server passes however long
/// it runs: both thirds see the same working set, and the slack covers a
/// peak that the random load reaches only late (the allocator keeps most of
/// a peak mapped, so RSS tracks the highest load seen so far, not the load).
const RSS_SLACK_KIB: u64 = 12 * 1024;

struct Args {
    server: PathBuf,
    secs: u64,
    seed: u64,
    workers: usize,
    idlers: usize,
    steady: usize,
    max_frame: usize,
    drain_timeout: u64,
    send_buffer: usize,
    server_args: Vec<String>,
}

const USAGE: &str = "usage: soak --server PATH [--secs 60] [--seed N] [--workers 200] \
                     [--idlers 100] [--steady 20] [--max-frame 32768] [--drain-timeout 10] [--send-buffer 32768] \
                     [-- SERVER_FLAGS...]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        server: PathBuf::new(),
        secs: 60,
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| rng::mix(d.as_nanos() as u64)),
        workers: 200,
        idlers: 100,
        steady: 20,
        max_frame: 32768,
        drain_timeout: 10,
        send_buffer: 32 * 1024,
        server_args: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--" {
            a.server_args = args.collect();
            break;
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--server" => a.server = PathBuf::from(&value),
            "--secs" => a.secs = value.parse().map_err(|e| bad(&e))?,
            "--seed" => {
                a.seed = match value.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16).map_err(|e| bad(&e))?,
                    None => value.parse().map_err(|e| bad(&e))?,
                }
            }
            "--workers" => a.workers = value.parse().map_err(|e| bad(&e))?,
            "--idlers" => a.idlers = value.parse().map_err(|e| bad(&e))?,
            "--steady" => a.steady = value.parse().map_err(|e| bad(&e))?,
            "--max-frame" => a.max_frame = value.parse().map_err(|e| bad(&e))?,
            "--drain-timeout" => a.drain_timeout = value.parse().map_err(|e| bad(&e))?,
            "--send-buffer" => a.send_buffer = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.server.as_os_str().is_empty() {
        return Err("--server PATH is required".into());
    }
    // Thirds of at least three one-second samples each, for the memory rule.
    if a.secs < 9 {
        return Err("--secs must be at least 9".into());
    }
    if a.max_frame < 256 {
        return Err("--max-frame must be at least 256".into());
    }
    if a.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    Ok(a)
}

/// The server's stderr as the soak keeps it: the last lines, and counts.
#[derive(Default)]
struct Log {
    tail: VecDeque<String>,
    warnings: u64,
    errors: u64,
    panics: u64,
    /// The connections the drain cut off, as the log names them.
    cut: throttle::CutOffs,
    /// The connections cut off at their close deadline, outside the drain.
    deadline: Arc<throttle::DeadlineCutOffs>,
}

struct Server {
    child: Child,
    pid: Pid,
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

impl Server {
    /// Starts the server and waits for its `listening on ADDR` line. Its
    /// stderr is read to the end on a thread, or the server would block
    /// on a full pipe.
    fn start(a: &Args) -> Result<Server, String> {
        let mut cmd = Command::new(&a.server);
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(["--max-frame", &a.max_frame.to_string()])
            .args(["--drain-timeout", &a.drain_timeout.to_string()]);
        if a.send_buffer > 0 {
            cmd.args(["--send-buffer", &a.send_buffer.to_string()]);
        }
        cmd.args(&a.server_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        println!("server:  {cmd:?}");
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", a.server.display()))?;
        let pid = Pid::from_child(&child);
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let log = Arc::new(Mutex::new(Log::default()));
        let rx = {
            let log = Arc::clone(&log);
            follow_log(stderr, move |line| {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                log.warnings += line.contains(" WARN ") as u64;
                log.errors += line.contains(" ERROR ") as u64;
                log.panics += line.contains("panicked") as u64;
                log.cut.read_line(&line);
                log.deadline.read_line(&line);
                if log.tail.len() == 40 {
                    log.tail.pop_front();
                }
                log.tail.push_back(line);
            })
        };
        let mut server = Server {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(text) => {
                server.addr = text
                    .parse()
                    .map_err(|e| format!("`listening on {text}`: {e}"))?;
                Ok(server)
            }
            Err(_) => {
                let _ = server.child.kill();
                let status = server
                    .child
                    .wait()
                    .map_or("unknown".to_string(), |s| s.to_string());
                Err(format!(
                    "the server did not log `listening on ADDR` ({status}); its log:\n{}",
                    server.log_tail()
                ))
            }
        }
    }

    fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.tail.iter().map(|l| format!("  | {l}\n")).collect()
    }

    /// VmRSS in KiB, from /proc; `None` once the process is gone.
    fn rss_kib(&self) -> Option<u64> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid.as_raw_nonzero())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

/// A soak that gives up early (say, the relay cannot start) must not leave
/// the server running.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

fn kib_as_mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// What the RSS samples say, and whether they pass the memory rule.
struct Memory {
    samples: Vec<u64>,
    first: u64,
    max: u64,
    last: u64,
    middle_max: u64,
    last_max: u64,
    limit: u64,
}

impl Memory {
    fn of(samples: Vec<u64>) -> Option<Memory> {
        if samples.len() < 6 {
            return None;
        }
        let third = samples.len() / 3;
        let middle_max = *samples[third..2 * third].iter().max()?;
        Some(Memory {
            first: samples[0],
            max: *samples.iter().max()?,
            last: *samples.last()?,
            middle_max,
            last_max: *samples[2 * third..].iter().max()?,
            limit: middle_max + RSS_SLACK_KIB.max(middle_max / 10),
            samples,
        })
    }

    fn flat(&self) -> bool {
        self.last_max <= self.limit
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: FAIL: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(a: &Args) -> Result<bool, String> {
    println!(
        "soak:    seed {:#x}, {} s, {} workers + {} idlers + {} steady + connect bursts (replay: --seed {:#x})",
        a.seed, a.secs, a.workers, a.idlers, a.steady, a.seed
    );
    let mut server = Server::start(a)?;
    println!(
        "server:  pid {}, listening on {}",
        server.pid.as_raw_nonzero(),
        server.addr
    );
    let stop_relay = Arc::new(AtomicBool::new(false));
    let watch = throttle::Watch::new(vec![server.addr]);
    let (relay_addr, relay) = relay::start(
        server.addr,
        a.seed,
        Arc::clone(&stop_relay),
        Arc::clone(&watch),
    )
    .map_err(|e| format!("cannot start the relay: {e}"))?;
    println!("relay:   {relay_addr} -> {}", server.addr);
    watch.add_sender(relay_addr);
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = watch
        .start(Arc::clone(&stop_watch))
        .map_err(|e| format!("cannot start the TCP_INFO watch: {e}"))?;

    let plan = Plan {
        server: server.addr,
        relay: relay_addr,
        seed: a.seed,
        workers: a.workers,
        idlers: a.idlers,
        max_frame: a.max_frame,
        patience_after_term: Duration::from_secs(a.drain_timeout + 5),
        cut_offs: Arc::clone(
            &server
                .log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .deadline,
        ),
    };
    let shared = Arc::new(Shared::default());
    let clients = {
        let shared = Arc::clone(&shared);
        let watch = Arc::clone(&watch);
        std::thread::Builder::new()
            .name("soak-clients".into())
            .spawn(move || clients::run(&plan, &shared, &watch))
            .map_err(|e| format!("cannot start the client thread: {e}"))?
    };
    let steady = steady::start(
        steady::Plan {
            server: server.addr,
            clients: a.steady,
            seed: a.seed,
            first_id: 1 << 40,
            max_frame: a.max_frame,
            patience: Duration::from_secs(a.drain_timeout + 5),
        },
        &shared,
    )
    .map_err(|e| format!("cannot start the steady clients: {e}"))?;

    // The run: one RSS sample a second, a progress line every 5 s.
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut early_exit: Option<ExitStatus> = None;
    for second in 1..=a.secs {
        std::thread::sleep(
            (start + Duration::from_secs(second)).saturating_duration_since(Instant::now()),
        );
        if let Ok(Some(status)) = server.child.try_wait() {
            early_exit = Some(status);
            break;
        }
        if let Some(kib) = server.rss_kib() {
            samples.push(kib);
        }
        if second % 5 == 0 {
            println!(
                "t={second:>4}s  clients {:>6}  open {:>4}  sent {:>10}  echoed {:>10}  rss {:>9}  violations {}",
                shared.started.load(Ordering::Relaxed),
                shared.open.load(Ordering::Relaxed),
                mib(shared.sent.load(Ordering::Relaxed)),
                mib(shared.echoed.load(Ordering::Relaxed)),
                samples.last().map_or("-".into(), |&k| kib_as_mib(k)),
                shared.violations.load(Ordering::Relaxed),
            );
        }
    }

    // SIGTERM while the clients are busy. The moment is published first, so
    // that any EOF a client reads while it is unset came before the drain.
    let term = Instant::now();
    let _ = shared.term.set(term);
    let mut exit: Option<ExitStatus> = early_exit;
    let mut drain_time = None;
    let mut killed = false;
    if early_exit.is_none() {
        kill_process(server.pid, Signal::TERM).map_err(|e| format!("kill -TERM: {e}"))?;
        let give_up = term + Duration::from_secs(a.drain_timeout + 10);
        loop {
            match server.child.try_wait() {
                Ok(Some(status)) => {
                    drain_time = Some(term.elapsed());
                    exit = Some(status);
                    break;
                }
                Ok(None) if Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                _ => {
                    // Past its own deadline: hung. Take it down and fail.
                    let _ = server.child.kill();
                    exit = server.child.wait().ok();
                    killed = true;
                    break;
                }
            }
        }
    }
    let mut tally = clients
        .join()
        .map_err(|_| "the client thread panicked".to_string())?
        .map_err(|e| format!("the client loop failed: {e}"))?;
    tally.merge(
        steady
            .join()
            .map_err(|_| "the steady clients' thread panicked".to_string())?,
    );
    stop_relay.store(true, Ordering::Relaxed);
    stop_watch.store(true, Ordering::Relaxed);
    watcher
        .join()
        .map_err(|_| "the TCP_INFO watch panicked".to_string())?;
    let relay_stats = relay
        .join()
        .map_err(|_| "the relay thread panicked".to_string())?
        .map_err(|e| format!("the relay failed: {e}"))?;

    let memory = Memory::of(samples);
    let verdict = report(
        a,
        &server,
        &tally,
        &relay_stats,
        memory.as_ref(),
        Ending {
            exit,
            early_exit: early_exit.is_some(),
            killed,
            term,
            drain_time,
        },
        &watch,
        relay_addr,
    );
    Ok(verdict)
}

/// How the server's run ended.
struct Ending {
    exit: Option<ExitStatus>,
    /// It exited before SIGTERM; it was killed after its drain deadline.
    early_exit: bool,
    killed: bool,
    /// When SIGTERM was sent, and how long the drain then took.
    term: Instant,
    drain_time: Option<Duration>,
}

#[allow(clippy::too_many_arguments)]
fn report(
    a: &Args,
    server: &Server,
    t: &Tally,
    r: &RelayStats,
    memory: Option<&Memory>,
    end: Ending,
    watch: &throttle::Watch,
    relay: SocketAddr,
) -> bool {
    let Ending {
        exit,
        early_exit,
        killed,
        term,
        drain_time,
    } = end;
    let mut failures: Vec<String> = Vec::new();
    let mut cut_off_notes: Vec<String> = Vec::new();
    let row = |what: &str, value: String| println!("| {what:<28} | {value} |");
    println!();
    println!("| {:<28} | value |", "what");
    println!("|{}|{}|", "-".repeat(30), "-".repeat(50));
    row(
        "seed, duration",
        format!("{:#x}, {} s of load", a.seed, a.secs),
    );
    row(
        "clients",
        format!(
            "{} ({} workers, {} idlers, {} steady, {} in {} connect bursts)",
            t.workers + t.idlers + t.steady + t.burst_conns,
            t.workers,
            t.idlers,
            t.steady,
            t.burst_conns,
            t.bursts
        ),
    );
    row(
        "bytes sent / echoed",
        format!(
            "{} / {} ({} lines generated)",
            mib(t.sent),
            mib(t.echoed),
            t.lines
        ),
    );
    row(
        "writes",
        format!(
            "{} pipelined, {} fragmented ({} writes of 1-3 B), {} bursts ({})",
            t.pipelined_ops,
            t.fragmented_ops,
            t.fragment_writes,
            t.burst_ops,
            mib(t.burst_bytes)
        ),
    );
    row(
        "client profiles",
        format!(
            "{} binary, {} small SO_RCVBUF, {} slow readers, {} TCP_NODELAY",
            t.binary, t.small_rcvbuf, t.slow_readers, t.nodelay
        ),
    );
    row(
        "faults",
        format!(
            "{} read stalls, {} over-long lines, {} half-closes ({} after a partial line), {} RST aborts",
            t.stalls, t.overlongs, t.half_closes, t.partial_last_lines, t.aborts
        ),
    );
    row(
        "idle connections",
        format!("{} silent, {} after one line", t.idle_silent, t.idle_hello),
    );
    row(
        "relay",
        format!(
            "{} connections ({} small SO_RCVBUF to server), {} up / {} down",
            r.pairs,
            r.small_rcvbuf,
            mib(r.bytes_up),
            mib(r.bytes_down)
        ),
    );
    row(
        "relay segmentation",
        format!(
            "{} writes: {} split a read, {} coalesced reads, {} of 1 B; {} delayed",
            r.writes, r.splits, r.coalesced, r.one_byte_writes, r.delayed
        ),
    );
    row(
        "relay resets passed on",
        format!(
            "{} from clients, {} from the server; {} connects refused, {} discarded",
            r.resets_from_client,
            r.resets_from_server,
            r.connect_failed,
            mib(r.discarded)
        ),
    );
    row(
        "slowest direct connect",
        format!(
            "{:.1} ms (longest client-loop turn {:.1} ms)",
            t.max_connect.as_secs_f64() * 1e3,
            t.longest_turn.as_secs_f64() * 1e3
        ),
    );
    if let Some(m) = memory {
        row(
            "server RSS first / max / last",
            format!(
                "{} / {} / {}",
                kib_as_mib(m.first),
                kib_as_mib(m.max),
                kib_as_mib(m.last)
            ),
        );
        row(
            "RSS peaks: middle / last third",
            format!(
                "{} / {} (limit {}: middle + max(12 MiB, 10%))",
                kib_as_mib(m.middle_max),
                kib_as_mib(m.last_max),
                kib_as_mib(m.limit),
            ),
        );
        if !m.flat() {
            failures.push(format!(
                "memory grew: the last third's peak {} is over the limit {}",
                kib_as_mib(m.last_max),
                kib_as_mib(m.limit)
            ));
        }
    } else {
        failures.push("too few RSS samples to judge memory".into());
    }
    row(
        "at SIGTERM",
        format!(
            "{} clients active, {} writing, {} with reading stopped",
            t.active_at_term, t.writing_at_term, t.stalled_at_term
        ),
    );
    row(
        "drain time (SIGTERM to exit)",
        drain_time.map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
    );
    let status = exit.map_or("unknown".into(), |s| s.to_string());
    row("server exit status", status.clone());
    let log = server.log.lock().unwrap_or_else(|p| p.into_inner());
    row(
        "server log",
        format!(
            "{} warnings, {} errors, {} panics",
            log.warnings, log.errors, log.panics
        ),
    );
    row(
        "ends checked",
        format!(
            "{} clean FINs, {} exact echoes, {} closed by the client; at drain: {} refused, {} reset unserved",
            t.clean_fins,
            t.exact_echoes,
            t.self_closed,
            t.refused_at_drain,
            t.reset_unserved_at_drain
        ),
    );
    let (samples, sample_errors, sample_error, throttled_conns) = watch.totals();
    row(
        "kernel-throttled connections",
        format!(
            "{throttled_conns} seen (a window under the sender's MSS, which the receiver's ceiling keeps there) in {samples} TCP_INFO samples{}; clients late because of it: {} no end, {} reset at the deadline, {} echo late",
            if sample_errors > 0 {
                format!(
                    " ({sample_errors} failed: {})",
                    sample_error.as_deref().unwrap_or("?")
                )
            } else {
                String::new()
            },
            t.throttled_no_end,
            t.throttled_reset,
            t.throttled_echo_late
        ),
    );
    row(
        "cut off at a close deadline",
        format!(
            "{} by the server's log (an over-long line's echoes not taken in 10 s); of their clients, {} could not have read their due at their pace in the time the soak's own loop left them",
            log.deadline.count(),
            t.lagged_resets
        ),
    );
    row(
        "violations",
        if t.violations.is_empty() {
            "0".into()
        } else {
            t.violations
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );

    if t.violation_count() > 0 {
        failures.push(format!("{} client violations", t.violation_count()));
    }
    if early_exit {
        failures.push(format!("the server exited before SIGTERM: {status}"));
    } else if killed {
        failures.push("the server did not exit after its drain deadline".into());
    } else if exit.and_then(|s| s.code()) == Some(3) {
        // Cut off at the deadline: right only for connections the kernel
        // throttled, each named in the log and seen so during the drain.
        let end = term + drain_time.unwrap_or_default();
        match throttle::judge_cut_offs(&log.cut, watch, server.addr, relay, term, end) {
            Ok(cut) => {
                row(
                    "cut off at the deadline",
                    format!(
                        "{} connections, every one throttled by the kernel: exit 3 is the server keeping its promise",
                        cut.len()
                    ),
                );
                for (peer, spell) in &cut {
                    cut_off_notes.push(format!("{peer}: {}", throttle::describe(spell)));
                }
            }
            Err(why) => failures.push(format!("server exit status {status}: {why}")),
        }
    } else if exit.and_then(|s| s.code()) != Some(0) {
        failures.push(format!(
            "server exit status {status}, not 0 (3: connections cut off)"
        ));
    }
    if log.panics > 0 {
        failures.push("the server panicked".into());
    }
    if log.errors > 0 {
        failures.push(format!("the server logged {} errors", log.errors));
    }
    if t.active_at_term == 0 || t.writing_at_term == 0 {
        failures.push("no client was busy at SIGTERM: the drain was not tested".into());
    }
    // A soak whose faults did not happen proves nothing: each must have.
    let coverage = [
        ("pipelined writes", t.pipelined_ops),
        ("fragmented writes", t.fragmented_ops),
        ("bursts", t.burst_ops),
        ("binary clients", t.binary),
        ("small SO_RCVBUF clients", t.small_rcvbuf),
        ("slow readers", t.slow_readers),
        ("read stalls", t.stalls),
        ("over-long lines", t.overlongs),
        ("half-closes", t.half_closes),
        ("RST aborts", t.aborts),
        ("idle connections", t.idle_silent + t.idle_hello),
        ("connect bursts", t.bursts),
        ("relayed connections", r.pairs),
        ("relay splits", r.splits),
        ("relay coalescing", r.coalesced),
        ("clean FINs checked", t.clean_fins),
        ("exact echoes checked", t.exact_echoes),
    ];
    for (what, n) in coverage {
        if n == 0 {
            failures.push(format!("no {what} happened"));
        }
    }
    if let Some(m) = memory {
        let mibs: Vec<String> = m
            .samples
            .iter()
            .map(|k| format!("{:.0}", *k as f64 / 1024.0))
            .collect();
        println!("\nserver RSS, MiB, once a second: {}", mibs.join(" "));
    }
    if !t.throttled_examples.is_empty() {
        println!(
            "\nclients late because the kernel throttled their connection (the sender's TCP_INFO):"
        );
        for e in &t.throttled_examples {
            println!("  {e}");
        }
    }
    if !t.lagged_examples.is_empty() {
        println!(
            "\nclients reset at the server's close deadline because the soak's own loop kept them from reading:"
        );
        for e in &t.lagged_examples {
            println!("  {e}");
        }
    }
    if !cut_off_notes.is_empty() {
        println!("\ncut off at the drain deadline, each throttled by the kernel:");
        for e in &cut_off_notes {
            println!("  {e}");
        }
    }
    if !t.examples.is_empty() {
        println!("\nfirst violations:");
        for e in &t.examples {
            println!("  {e}");
        }
    }
    if failures.is_empty() {
        println!("\nverdict: PASS (seed {:#x})", a.seed);
        true
    } else {
        drop(log);
        println!("\nserver log, last lines:\n{}", server.log_tail());
        println!("verdict: FAIL (seed {:#x})", a.seed);
        for f in &failures {
            println!("  - {f}");
        }
        false
    }
}
