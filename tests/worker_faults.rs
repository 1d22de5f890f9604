//! `--workers` with handlers that fail: a worker that never comes back from
//! its handler, and a worker that panics. These need handlers the binary
//! does not have, so they run `Workers` in this process, with real loopback
//! sockets and real signals sent to this process (signal-hook takes them, as
//! it does in the binary).
//!
//! Signals reach every server in a process, so the tests here take turns
//! (`one_at_a_time`), and a capturing logger lets them read the log.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reactor_echo::{Config, ConnId, Context, DrainReport, Handler, Workers};

/// Generous: the test machine has two cores and is noisy.
const PATIENCE: Duration = Duration::from_secs(20);

/// One server per process at a time: a signal reaches all of them.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    let guard = TURN.lock().unwrap_or_else(|e| e.into_inner());
    capture_log();
    LOG.lock().unwrap().clear();
    guard
}

static LOG: Mutex<String> = Mutex::new(String::new());

/// Keeps every log line at debug and above in `LOG` (and prints it, for
/// a failing test's output).
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Debug
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = format!("{} {}\n", record.level(), record.args());
            eprint!("{line}");
            LOG.lock().unwrap().push_str(&line);
        }
    }

    fn flush(&self) {}
}

fn capture_log() {
    static LOGGER: Capture = Capture;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

fn log_text() -> String {
    LOG.lock().unwrap().clone()
}

fn wait_for_log(needle: &str) {
    let give_up = Instant::now() + PATIENCE;
    while !log_text().contains(needle) {
        assert!(Instant::now() < give_up, "no `{needle}` in the log");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends this process a stop signal, as `kill` would.
fn signal(sig: i32) {
    signal_hook::low_level::raise(sig).unwrap();
}

/// Starts `workers` on a thread; the receiver gets what `run` returned.
fn start<F, H>(
    config: Config,
    count: usize,
    new_handler: F,
) -> (SocketAddr, mpsc::Receiver<io::Result<DrainReport>>)
where
    F: Fn(usize) -> H + Send + Sync + 'static,
    H: Handler + 'static,
{
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let workers = Workers::bind(&[addr], config, count, new_handler).unwrap();
    let addr = workers.local_addr();
    let (done, ended) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(workers.run());
    });
    (addr, ended)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s
}

fn roundtrip(c: &mut TcpStream, line: &[u8]) {
    c.write_all(line).unwrap();
    let mut got = vec![0; line.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, line);
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Eof,
    Reset,
    Data(Vec<u8>),
    Other(io::ErrorKind),
}

fn read_end(c: &mut TcpStream) -> End {
    let mut buf = [0u8; 256];
    match c.read(&mut buf) {
        Ok(0) => End::Eof,
        Ok(n) => End::Data(buf[..n].to_vec()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => End::Reset,
        Err(e) => End::Other(e.kind()),
    }
}

/// A number from the last line of the log that has `name=`.
fn logged_number(log: &str, name: &str) -> u64 {
    let key = format!(" {name}=");
    let line = log.lines().rfind(|l| l.contains(&key)).expect(name);
    let at = line.find(&key).unwrap() + key.len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Echoes, but the frame "hang\n" never returns: a handler stuck in a loop.
struct HangOnHang;

impl Handler for HangOnHang {
    fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, frame: &[u8]) {
        if frame == b"hang\n" {
            // Asleep rather than spinning, so as not to take a core from
            // the tests that run after this one in the same process.
            loop {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        ctx.send(conn, frame);
    }
}

#[test]
fn a_stuck_worker_cannot_keep_the_process_alive() {
    let _turn = one_at_a_time();
    // At the deadline (1 s) plus the grace (1 s); and at once on a second
    // signal, long before the deadline (60 s).
    for second_signal in [false, true] {
        LOG.lock().unwrap().clear();
        let config = Config {
            drain_timeout: Duration::from_secs(if second_signal { 60 } else { 1 }),
            ..Config::default()
        };
        let (addr, ended) = start(config, 2, |_| HangOnHang);
        // The least-loaded choice with its rotating tie-break: the first
        // client goes to worker 0, the second to worker 1.
        let mut stuck = connect(addr);
        roundtrip(&mut stuck, b"hello\n");
        let mut fine = connect(addr);
        roundtrip(&mut fine, b"hello\n");
        stuck.write_all(b"hang\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));

        let t0 = Instant::now();
        signal(signal_hook::consts::SIGTERM);
        if second_signal {
            // The drain has begun: the healthy worker closed its client,
            // and once the client closes too, it is done.
            assert_eq!(read_end(&mut fine), End::Eof);
            fine.shutdown(std::net::Shutdown::Write).unwrap();
            wait_for_log("#1 closed");
            signal(signal_hook::consts::SIGINT);
        }
        let report = ended
            .recv_timeout(PATIENCE)
            .expect("a stuck worker must not keep the process alive")
            .unwrap();
        let took = t0.elapsed();
        let log = log_text();
        assert!(
            took < Duration::from_secs(10),
            "second signal: {second_signal}; took {took:?}"
        );
        assert_eq!(report.workers_stuck, 1, "{report:?}\n{log}");
        assert_eq!(report.workers_failed, 0, "{report:?}");
        // Its one connection is counted, as abandoned.
        assert_eq!(report.abandoned, 1, "{report:?}");
        assert_eq!(report.forced, second_signal, "{report:?}");
        // Exit status 3 in the binary: the drain did not complete.
        assert!(!report.is_complete(), "{report:?}");
        // The healthy worker drained its client: a clean FIN.
        assert_eq!(report.closed_cleanly, 1, "{report:?}");
        if !second_signal {
            assert_eq!(read_end(&mut fine), End::Eof);
        }
        // The log names the worker that did not finish.
        assert!(
            log.contains("worker 0 did not finish"),
            "second signal: {second_signal}\n{log}"
        );
        assert!(
            log.contains("1 abandoned on a stuck worker"),
            "second signal: {second_signal}\n{log}"
        );
    }
}

/// Echoes, but the frame "boom\n" makes the worker sleep, then panic: the
/// clients handed to it meanwhile wait in its inbox.
struct SlowPanic;

impl Handler for SlowPanic {
    fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, frame: &[u8]) {
        if frame == b"boom\n" {
            std::thread::sleep(Duration::from_millis(1000));
            panic!("the handler was told to panic");
        }
        ctx.send(conn, frame);
    }
}

#[test]
fn a_worker_panic_loses_no_connection_and_the_process_keeps_serving() {
    let _turn = one_at_a_time();
    let (addr, ended) = start(Config::default(), 2, |_| SlowPanic);
    // Worker 0 gets the first client, worker 1 the second.
    let mut doomed = connect(addr);
    roundtrip(&mut doomed, b"hello\n");
    let mut other = connect(addr);
    roundtrip(&mut other, b"hello\n");
    doomed.write_all(b"boom\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));

    // While worker 0 sleeps, 20 clients arrive and each sends a line at
    // once; about half are handed to worker 0 and wait in its inbox.
    let mut waiting: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut c = connect(addr);
            c.write_all(format!("waiting {i}\n").as_bytes()).unwrap();
            c
        })
        .collect();
    // Every one is served, by the survivor or by worker 0's replacement.
    for (i, c) in waiting.iter_mut().enumerate() {
        let want = format!("waiting {i}\n");
        let mut got = vec![0; want.len()];
        c.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("client {i}: {e}\n{}", log_text()));
        assert_eq!(got, want.as_bytes());
    }
    // The client owed the echo that never came is reset, not sent a FIN.
    assert_eq!(read_end(&mut doomed), End::Reset);
    // The process keeps serving, on both workers.
    let mut fresh: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    for c in &mut fresh {
        roundtrip(c, b"after\n");
    }
    roundtrip(&mut other, b"still here\n");
    let log = log_text();
    assert!(log.contains("worker 0 stopped: it panicked"), "{log}");
    assert!(log.contains("worker 0 started again"), "{log}");

    signal(signal_hook::consts::SIGTERM);
    let report = ended
        .recv_timeout(PATIENCE)
        .expect("the process stops on SIGTERM")
        .unwrap();
    let log = log_text();
    // The exit status still says a worker panicked (4 in the binary).
    assert_eq!(report.workers_failed, 1, "{report:?}\n{log}");
    assert_eq!(report.reset_after_panic, 1, "{report:?}\n{log}");
    // Everyone else was open at the drain, and drained cleanly.
    assert_eq!(report.closed_cleanly, 1 + 20 + 4, "{report:?}\n{log}");
    assert_eq!(report.cut_off + report.failed, 0, "{report:?}");
    for c in waiting.iter_mut().chain(&mut fresh) {
        assert_eq!(read_end(c), End::Eof);
    }
    assert_eq!(read_end(&mut other), End::Eof);
    // Every accepted connection is in exactly one counter.
    let accepted = logged_number(&log, "accepted");
    assert_eq!(accepted, 26, "{log}");
    assert_eq!(logged_number(&log, "closed"), accepted, "{log}");
    assert_eq!(
        report.closed_cleanly + report.reset_after_panic,
        accepted,
        "{report:?}\n{log}"
    );
    assert!(
        log.contains(
            "25 connections closed cleanly, 0 cut off, 0 failed, 1 reset after a worker panic"
        ),
        "{log}"
    );
    // The replacement served some of them.
    let spread = log.lines().rfind(|l| l.contains("workers: ")).unwrap();
    assert!(!spread.contains("connections=[0 "), "{spread}");
}
