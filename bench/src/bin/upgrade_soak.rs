//! Proof under load of the live upgrade (SIGUSR2, `docs/restart.md`), and
//! the same load against a naive restart (SIGTERM, then start again), to
//! show what the upgrade removes.
//!
//! ```text
//! make upgrade-soak                              # release build, both modes, 10 handovers each
//! UPGRADE_SOAK_ARGS="--workers 2" make upgrade-soak
//! upgrade_soak --server target/release/reactor-echo [--mode both|upgrade|naive]
//!      [--handovers 10] [--pipelined 200] [--churn 50] [--burst 100]
//!      [--every 1.5] [-- SERVER_FLAGS...]
//! ```
//!
//! The server runs on `127.0.0.1`, with `--pid-file`. Meanwhile, all on
//! loopback, with blocking sockets, one thread each:
//!
//! - `--pipelined` long-lived clients send batches of 8 lines in one write
//!   and read the 8 echoes, again and again on one connection, until the
//!   server ends it (its drain), then connect again;
//! - `--churn` clients connect, send a line, read its echo and close, in a
//!   tight loop (a 5 ms pause, to stay inside loopback's port range);
//! - at each handover, `--burst` clients waiting on a barrier connect at
//!   once, at the instant the old process stops accepting: in upgrade mode
//!   when the pid file names the new process (it is ready, so the old one
//!   closes its listener now), in naive mode right after SIGTERM.
//!
//! Each client checks its echo byte for byte. A pipelined connection that
//! the server ends must have received the exact echo of whole lines it
//! sent, in order, then a FIN: that is every echo owed. (Lines the old
//! process had not read when it drained are not owed: they are counted.)
//!
//! Pass (upgrade mode): no connect refused, no connection reset, no
//! connect or echo slower than 1 s, no echo lost or wrong, every server
//! process exited 0 with no ERROR in its log, and none is left running.
//! The naive mode is held to nothing: its table shows what it loses.
//! Exits 0 when the upgrade run passes (or, with `--mode naive`, when the
//! run completed), 1 otherwise, 2 on bad usage.

use std::collections::BTreeSet;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reactor_echo_bench::server::follow_log;
use rustix::process::{Pid, Signal, WaitOptions};

/// Lines per pipelined batch.
const BATCH: usize = 8;
/// A connect, or an echo, slower than this is a stall.
const STALL: Duration = Duration::from_secs(1);
/// Past this, a read gives up: the client is stuck.
const STUCK: Duration = Duration::from_secs(10);
/// How long a server has to start, hand over or exit.
const PATIENCE: Duration = Duration::from_secs(30);
/// Violations quoted in full; the rest are counted.
const QUOTED: usize = 12;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Upgrade,
    Naive,
}

impl Mode {
    fn title(self) -> &'static str {
        match self {
            Mode::Upgrade => "live upgrade (SIGUSR2)",
            Mode::Naive => "naive restart (SIGTERM, then start)",
        }
    }
}

struct Args {
    server: PathBuf,
    modes: Vec<Mode>,
    handovers: usize,
    pipelined: usize,
    churn: usize,
    burst: usize,
    every: Duration,
    server_args: Vec<String>,
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("upgrade_soak: {msg}");
    eprintln!(
        "usage: upgrade_soak --server PATH [--mode both|upgrade|naive] [--handovers N] \
         [--pipelined N] [--churn N] [--burst N] [--every SECONDS] [-- SERVER_FLAGS...]"
    );
    ExitCode::from(2)
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        server: PathBuf::new(),
        modes: vec![Mode::Upgrade, Mode::Naive],
        handovers: 10,
        pipelined: 200,
        churn: 50,
        burst: 100,
        every: Duration::from_millis(1500),
        server_args: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--" {
            args.server_args = it.by_ref().collect();
            break;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag} {value}: not a number"))
        };
        match flag.as_str() {
            "--server" => args.server = PathBuf::from(&value),
            "--mode" => {
                args.modes = match value.as_str() {
                    "both" => vec![Mode::Upgrade, Mode::Naive],
                    "upgrade" => vec![Mode::Upgrade],
                    "naive" => vec![Mode::Naive],
                    _ => return Err(format!("--mode {value}: both, upgrade or naive")),
                }
            }
            "--handovers" => args.handovers = number()?,
            "--pipelined" => args.pipelined = number()?,
            "--churn" => args.churn = number()?,
            "--burst" => args.burst = number()?,
            "--every" => {
                args.every = value
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or(format!("--every {value}: not a number of seconds"))?
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.server.as_os_str().is_empty() {
        return Err("--server is required".into());
    }
    Ok(args)
}

/// What the clients saw, counted by every thread.
#[derive(Default)]
struct Tally {
    connects: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    /// Connects slower than `STALL`.
    slow_connects: AtomicU64,
    slowest_connect_us: AtomicU64,
    /// Echoes slower than `STALL`, or never (stuck).
    slow_echoes: AtomicU64,
    /// A short-lived client's connection closed before its echo came.
    lost: AtomicU64,
    /// Wrong bytes, or a FIN in the middle of an echo.
    bad_echo: AtomicU64,
    other_errors: AtomicU64,
    lines_echoed: AtomicU64,
    short_lived_ok: AtomicU64,
    burst_attempts: AtomicU64,
    burst_ok: AtomicU64,
    /// Pipelined connections the server ended with a FIN, owing nothing.
    ended_by_server: AtomicU64,
    /// Lines sent on those that the server had not read when it drained.
    unread_at_fin: AtomicU64,
    violations: Mutex<Vec<String>>,
}

impl Tally {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn violation(&self, counter: &AtomicU64, what: String) {
        Tally::add(counter, 1);
        let mut v = self.violations.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < QUOTED {
            v.push(what);
        }
    }

    /// A failed I/O call, filed under its kind.
    fn io_failure(&self, who: &str, step: &str, e: &io::Error) {
        let counter = match e.kind() {
            ErrorKind::ConnectionRefused => &self.refused,
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
                &self.reset
            }
            ErrorKind::WouldBlock | ErrorKind::TimedOut => &self.slow_echoes,
            _ => &self.other_errors,
        };
        self.violation(counter, format!("{who}: {step}: {e}"));
    }
}

/// Connects, timing it; the failure is counted.
fn timed_connect(addr: SocketAddr, tally: &Tally, who: &str) -> Option<TcpStream> {
    Tally::add(&tally.connects, 1);
    let started = Instant::now();
    let result = TcpStream::connect(addr);
    let took = started.elapsed();
    tally
        .slowest_connect_us
        .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
    if took > STALL {
        tally.violation(
            &tally.slow_connects,
            format!("{who}: connect took {took:?}"),
        );
    }
    match result {
        Ok(s) => {
            let _ = s.set_read_timeout(Some(STUCK));
            let _ = s.set_write_timeout(Some(STUCK));
            let _ = s.set_nodelay(true);
            Some(s)
        }
        Err(e) => {
            tally.io_failure(who, "connect", &e);
            None
        }
    }
}

/// One line of `len` bytes, '\n' included, unique to (`who`, `k`).
fn line(who: &str, k: u64, len: usize) -> Vec<u8> {
    let mut l = format!("{who}:{k}:").into_bytes();
    while l.len() < len - 1 {
        l.push(b'a' + (l.len() % 26) as u8);
    }
    l.push(b'\n');
    l
}

/// Connect, one line, its echo, close.
fn echo_once(addr: SocketAddr, tally: &Tally, who: &str, k: u64) -> bool {
    let Some(mut s) = timed_connect(addr, tally, who) else {
        return false;
    };
    let l = line(who, k, 32);
    let started = Instant::now();
    if let Err(e) = s.write_all(&l) {
        tally.io_failure(who, "write", &e);
        return false;
    }
    let mut got = vec![0; l.len()];
    let mut have = 0;
    while have < got.len() {
        match s.read(&mut got[have..]) {
            Ok(0) => {
                tally.violation(
                    &tally.lost,
                    format!("{who}: the connection ended before its echo ({have} bytes)"),
                );
                return false;
            }
            Ok(n) => have += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tally.io_failure(who, "read", &e);
                return false;
            }
        }
    }
    if got != l {
        tally.violation(&tally.bad_echo, format!("{who}: echo {got:?} for {l:?}"));
        return false;
    }
    if started.elapsed() > STALL {
        tally.violation(
            &tally.slow_echoes,
            format!("{who}: echo took {:?}", started.elapsed()),
        );
    }
    Tally::add(&tally.lines_echoed, 1);
    true
}

/// A long-lived client: batches of lines on one connection until the
/// server ends it, then another connection, until `stop`.
fn pipelined(addr: SocketAddr, id: usize, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let who = format!("pipelined {id}");
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut s) = timed_connect(addr, &tally, &who) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        // One session: until the server's FIN, a failure, or `stop`.
        loop {
            if stop.load(Ordering::Relaxed) {
                // Our end first: the server owes nothing, so EOF follows.
                let _ = s.shutdown(Shutdown::Write);
                let mut rest = Vec::new();
                match s.read_to_end(&mut rest) {
                    Ok(_) if rest.is_empty() => {}
                    Ok(_) => tally.violation(
                        &tally.bad_echo,
                        format!("{who}: {} bytes after our last echo", rest.len()),
                    ),
                    Err(e) => tally.io_failure(&who, "final read", &e),
                }
                return;
            }
            let mut batch = Vec::new();
            let mut ends = Vec::new();
            for i in 0..BATCH {
                batch.extend(line(&who, k, 24 + (k as usize + i) % 40));
                ends.push(batch.len());
                k += 1;
            }
            let started = Instant::now();
            if let Err(e) = s.write_all(&batch) {
                // The server may have closed after its FIN, which the read
                // below would have shown: look for it.
                if !matches!(
                    session_end(&mut s, &batch, &ends, 0, &tally, &who),
                    Some(true)
                ) {
                    tally.io_failure(&who, "write", &e);
                }
                break;
            }
            match session_end(&mut s, &batch, &ends, 0, &tally, &who) {
                None => {
                    if started.elapsed() > STALL {
                        tally.violation(
                            &tally.slow_echoes,
                            format!("{who}: a batch took {:?}", started.elapsed()),
                        );
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Some(_) => break,
            }
        }
    }
}

/// Reads the echo of `batch` (from `have` bytes on). `None`: all of it
/// came, the session goes on. `Some(true)`: the server ended the session
/// cleanly (a FIN after the echo of whole lines); `Some(false)`: it failed
/// (counted).
fn session_end(
    s: &mut TcpStream,
    batch: &[u8],
    ends: &[usize],
    mut have: usize,
    tally: &Tally,
    who: &str,
) -> Option<bool> {
    let mut buf = [0u8; 4096];
    while have < batch.len() {
        let want = (batch.len() - have).min(buf.len());
        match s.read(&mut buf[..want]) {
            Ok(0) => {
                // Every echo owed: the FIN comes after whole lines only.
                let Some(echoed) = ends
                    .iter()
                    .position(|&e| e == have)
                    .map(|i| i + 1)
                    .or((have == 0).then_some(0))
                else {
                    tally.violation(
                        &tally.bad_echo,
                        format!("{who}: FIN in the middle of a line, after {have} bytes"),
                    );
                    return Some(false);
                };
                Tally::add(&tally.lines_echoed, echoed as u64);
                Tally::add(&tally.unread_at_fin, (ends.len() - echoed) as u64);
                Tally::add(&tally.ended_by_server, 1);
                return Some(true);
            }
            Ok(n) => {
                if buf[..n] != batch[have..have + n] {
                    tally.violation(
                        &tally.bad_echo,
                        format!("{who}: wrong bytes at offset {have} of a batch"),
                    );
                    return Some(false);
                }
                have += n;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tally.io_failure(who, "read", &e);
                return Some(false);
            }
        }
    }
    Tally::add(&tally.lines_echoed, ends.len() as u64);
    None
}

fn churn(addr: SocketAddr, id: usize, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let who = format!("churn {id}");
    let mut k = 0;
    while !stop.load(Ordering::Relaxed) {
        if echo_once(addr, &tally, &who, k) {
            Tally::add(&tally.short_lived_ok, 1);
        }
        k += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `n` clients waiting on the returned barrier; each connects and echoes
/// once when it opens.
fn burst(
    addr: SocketAddr,
    n: usize,
    round: usize,
    tally: &Arc<Tally>,
) -> (Arc<Barrier>, Vec<JoinHandle<()>>) {
    let barrier = Arc::new(Barrier::new(n + 1));
    let threads = (0..n)
        .map(|i| {
            let (barrier, tally) = (barrier.clone(), tally.clone());
            spawn_small(move || {
                barrier.wait();
                Tally::add(&tally.burst_attempts, 1);
                if echo_once(addr, &tally, &format!("burst {round}.{i}"), 0) {
                    Tally::add(&tally.burst_ok, 1);
                }
            })
        })
        .collect();
    (barrier, threads)
}

fn spawn_small(f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(f)
        .expect("spawn a client thread")
}

/// A server process's stderr, read line by line into `log`; the first
/// "listening on ADDR" is sent on the channel.
fn read_log(
    stderr: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
) -> mpsc::Receiver<String> {
    follow_log(stderr, move |line| {
        log.lock().unwrap_or_else(|e| e.into_inner()).push(line)
    })
}

/// Starts the server on `listen`; its pid and address.
fn start_server(
    args: &Args,
    listen: &str,
    pid_file: &Path,
    log: &Arc<Mutex<Vec<String>>>,
) -> Result<(u32, SocketAddr), String> {
    let mut child = Command::new(&args.server)
        .args(["--listen", listen, "--pid-file"])
        .arg(pid_file)
        .args(&args.server_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args.server.display()))?;
    let pid = child.id();
    let stderr = child.stderr.take().ok_or("no stderr")?;
    // The child is reaped by pid (`wait_exit`), not through `child`.
    drop(child);
    let rx = read_log(stderr, log.clone());
    let addr = rx
        .recv_timeout(PATIENCE)
        .map_err(|_| "the server did not say where it listens".to_string())?;
    let addr = addr.parse().map_err(|e| format!("address {addr}: {e}"))?;
    Ok((pid, addr))
}

fn signal(pid: u32, sig: Signal) -> Result<(), String> {
    let p = Pid::from_raw(pid as i32).ok_or("pid 0")?;
    rustix::process::kill_process(p, sig).map_err(|e| format!("kill {pid}: {e}"))
}

/// Waits for `pid` (our child, or an orphan handed to us as subreaper)
/// and reaps it: its exit code, or 128 + the signal that ended it.
fn wait_exit(pid: u32, timeout: Duration) -> Result<i32, String> {
    let end = Instant::now() + timeout;
    let p = Pid::from_raw(pid as i32).ok_or("pid 0")?;
    loop {
        // ECHILD while it is still its parent's.
        if let Ok(Some((_, status))) = rustix::process::waitpid(Some(p), WaitOptions::NOHANG) {
            return Ok(status
                .exit_status()
                .or(status.terminating_signal().map(|s| 128 + s))
                .unwrap_or(-1));
        }
        if Instant::now() >= end {
            return Err(format!("pid {pid} did not exit within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// One run's results, for the table.
struct Run {
    mode: Mode,
    handovers: usize,
    tally: Arc<Tally>,
    exit_codes: Vec<i32>,
    /// Upgrade: SIGUSR2 to the new pid in the pid file; naive: SIGTERM to
    /// listening again.
    switch_ms: Vec<f64>,
    left_running: usize,
    log_errors: Vec<String>,
    failure: Option<String>,
}

impl Run {
    fn passed(&self) -> bool {
        let t = &self.tally;
        self.failure.is_none()
            && Tally::get(&t.refused) == 0
            && Tally::get(&t.reset) == 0
            && Tally::get(&t.slow_connects) == 0
            && Tally::get(&t.slow_echoes) == 0
            && Tally::get(&t.lost) == 0
            && Tally::get(&t.bad_echo) == 0
            && Tally::get(&t.other_errors) == 0
            && self.exit_codes.iter().all(|&c| c == 0)
            && self.exit_codes.len() == self.handovers + 1
            && self.left_running == 0
            && self.log_errors.is_empty()
    }
}

fn run(args: &Args, mode: Mode) -> Run {
    let tally = Arc::new(Tally::default());
    let mut out = Run {
        mode,
        handovers: args.handovers,
        tally: tally.clone(),
        exit_codes: Vec::new(),
        switch_ms: Vec::new(),
        left_running: 0,
        log_errors: Vec::new(),
        failure: None,
    };
    let dir = std::env::temp_dir().join(format!("upgrade-soak-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let pid_file = dir.join(format!("{mode:?}.pid"));
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut seen = BTreeSet::new();
    let (mut pid, addr) = match start_server(args, "127.0.0.1:0", &pid_file, &log) {
        Ok(started) => started,
        Err(e) => {
            out.failure = Some(e);
            return out;
        }
    };
    seen.insert(pid);
    println!("== {}: server pid {pid} on {addr}", mode.title());

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for id in 0..args.pipelined {
        let (t, s) = (tally.clone(), stop.clone());
        clients.push(spawn_small(move || pipelined(addr, id, t, s)));
    }
    for id in 0..args.churn {
        let (t, s) = (tally.clone(), stop.clone());
        clients.push(spawn_small(move || churn(addr, id, t, s)));
    }

    let result = (|| -> Result<(), String> {
        for round in 1..=args.handovers {
            std::thread::sleep(args.every);
            let (barrier, burst_threads) = burst(addr, args.burst, round, &tally);
            let started = Instant::now();
            let new = match mode {
                Mode::Upgrade => {
                    signal(pid, Signal::USR2)?;
                    // The new process writes the pid file just before its
                    // READY=1: the old one stops accepting at this instant.
                    let new = loop {
                        if let Some(p) = read_pid(&pid_file).filter(|&p| p != pid) {
                            break p;
                        }
                        if started.elapsed() > PATIENCE {
                            return Err(format!("round {round}: no handover from pid {pid}"));
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    };
                    out.switch_ms.push(started.elapsed().as_secs_f64() * 1e3);
                    barrier.wait();
                    out.exit_codes.push(wait_exit(pid, PATIENCE)?);
                    new
                }
                Mode::Naive => {
                    signal(pid, Signal::TERM)?;
                    barrier.wait();
                    out.exit_codes.push(wait_exit(pid, PATIENCE)?);
                    let (new, _) = start_server(args, &addr.to_string(), &pid_file, &log)?;
                    out.switch_ms.push(started.elapsed().as_secs_f64() * 1e3);
                    new
                }
            };
            for t in burst_threads {
                let _ = t.join();
            }
            seen.insert(new);
            pid = new;
            println!(
                "   handover {round}: pid {new} serves ({:.1} ms); {} connects so far, {} refused, {} reset",
                out.switch_ms.last().copied().unwrap_or(0.0),
                Tally::get(&tally.connects),
                Tally::get(&tally.refused),
                Tally::get(&tally.reset)
            );
        }
        std::thread::sleep(args.every);
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        let _ = t.join();
    }
    if let Err(e) = result {
        out.failure = Some(e);
    }
    // The last server: SIGTERM, exit 0.
    match signal(pid, Signal::TERM).and_then(|()| wait_exit(pid, PATIENCE)) {
        Ok(code) => out.exit_codes.push(code),
        Err(e) => out.failure = Some(e),
    }
    // Nothing left: every pid seen reaped, and no child of ours at all.
    std::thread::sleep(Duration::from_millis(100));
    for &p in &seen {
        if Path::new(&format!("/proc/{p}")).exists() {
            out.left_running += 1;
            let _ = signal(p, Signal::KILL);
            let _ = wait_exit(p, Duration::from_secs(5));
        }
    }
    if rustix::process::waitpid(None, WaitOptions::NOHANG).is_ok() {
        // Ok means we still have a child (ECHILD would be an error).
        out.left_running += 1;
    }
    out.log_errors = log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|l| l.contains(" ERROR ") || l.contains("panicked"))
        .cloned()
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn table(runs: &[Run]) -> String {
    let mut t = String::from("| |");
    for r in runs {
        t += &format!(" {} |", r.mode.title());
    }
    t += "\n|---|";
    for _ in runs {
        t += "---|";
    }
    t += "\n";
    let mut row = |name: &str, f: &dyn Fn(&Run) -> String| {
        t += &format!("| {name} |");
        for r in runs {
            t += &format!(" {} |", f(r));
        }
        t += "\n";
    };
    let n = |c: fn(&Tally) -> &AtomicU64| move |r: &Run| Tally::get(c(&r.tally)).to_string();
    row("handovers", &|r| r.handovers.to_string());
    row("connects", &n(|t| &t.connects));
    row("**connects refused**", &n(|t| &t.refused));
    row("**connections reset**", &n(|t| &t.reset));
    row("connects over 1 s", &n(|t| &t.slow_connects));
    row("slowest connect", &|r| {
        format!(
            "{:.1} ms",
            Tally::get(&r.tally.slowest_connect_us) as f64 / 1e3
        )
    });
    row("echoes over 1 s or stuck", &n(|t| &t.slow_echoes));
    row("closed before the echo", &n(|t| &t.lost));
    row("wrong bytes, or FIN mid-line", &n(|t| &t.bad_echo));
    row("other errors", &n(|t| &t.other_errors));
    row("burst connects at the handovers: served", &|r| {
        format!(
            "{} of {}",
            Tally::get(&r.tally.burst_ok),
            Tally::get(&r.tally.burst_attempts)
        )
    });
    row(
        "connect-echo-close clients: echoes",
        &n(|t| &t.short_lived_ok),
    );
    row("lines echoed, all clients", &n(|t| &t.lines_echoed));
    row(
        "pipelined connections ended by a drain (FIN, every echo owed)",
        &n(|t| &t.ended_by_server),
    );
    row(
        "lines the drain had not read (not owed)",
        &n(|t| &t.unread_at_fin),
    );
    row("switch time, median / max", &|r| {
        let mut v = r.switch_ms.clone();
        v.sort_by(f64::total_cmp);
        match (v.get(v.len() / 2), v.last()) {
            (Some(m), Some(x)) => format!("{m:.0} / {x:.0} ms"),
            _ => "-".into(),
        }
    });
    row("server exit statuses", &|r| {
        let zero = r.exit_codes.iter().filter(|&&c| c == 0).count();
        format!("{zero} of {} were 0", r.exit_codes.len())
    });
    row("ERROR lines in the server log", &|r| {
        r.log_errors.len().to_string()
    });
    row("processes left running", &|r| r.left_running.to_string());
    row("verdict", &|r| match (r.mode, r.passed()) {
        (_, true) => "PASS".into(),
        (Mode::Upgrade, false) => "**FAIL**".into(),
        (Mode::Naive, false) => "loses connects (expected)".into(),
    });
    t
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => return usage(&msg),
    };
    // Each new process outlives its parent: adopt the orphans, to reap
    // them and read their exit status.
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        eprintln!("upgrade_soak: cannot become a subreaper: {e}");
        return ExitCode::from(1);
    }
    println!(
        "upgrade_soak: {} pipelined clients, {} connect-echo-close clients, a burst of {} connects \
         at each of {} handovers, one every {:?}; server flags: {:?}",
        args.pipelined, args.churn, args.burst, args.handovers, args.every, args.server_args
    );
    let mut runs = Vec::new();
    for &mode in &args.modes {
        let r = run(&args, mode);
        let violations = r
            .tally
            .violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !violations.is_empty() {
            println!("   first violations ({}):", mode.title());
            for v in violations {
                println!("     {v}");
            }
        }
        for l in &r.log_errors {
            println!("   server log: {l}");
        }
        if let Some(f) = &r.failure {
            println!("   run failed: {f}");
        }
        runs.push(r);
    }
    println!("\n{}", table(&runs));
    let ok = runs.iter().all(|r| match r.mode {
        Mode::Upgrade => r.passed(),
        Mode::Naive => r.failure.is_none() && r.left_running == 0,
    });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
