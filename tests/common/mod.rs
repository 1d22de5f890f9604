//! Shared test harness: start the real binary, find its port, talk to it
//! over loopback, signal it, and watch its log, exit status and memory.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use rustix::process::Signal;

/// Generous: the test machine has two cores and is noisy.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub const BIN: &str = env!("CARGO_BIN_EXE_reactor-echo");

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `reactor-echo` on a free loopback port with extra `args`.
    /// `REACTOR_ECHO_TEST_WORKERS=N` in the environment adds `--workers N`
    /// (unless `args` name it): `make test` runs the suite that way too.
    pub fn start(args: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(["--listen", "127.0.0.1:0"]).args(args);
        if !args.contains(&"--workers") {
            cmd.args(workers_from_env());
        }
        Server::spawn(cmd)
    }

    /// Starts `cmd` (which must run the server) and waits for its
    /// "listening on ADDR" line.
    pub fn spawn(cmd: Command) -> Server {
        Server::spawn_with_stdin(cmd, Stdio::null())
    }

    /// As `spawn`, with `stdin` as the command's standard input (a socket
    /// for a launcher to pass on, say).
    pub fn spawn_with_stdin(mut cmd: Command, stdin: Stdio) -> Server {
        cmd.stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn_retrying_busy_text(&mut cmd);
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    {
                        let mut log = log.lock().unwrap();
                        log.push_str(&line);
                        log.push('\n');
                    }
                    // Only once the line is in the log: a test may look for it.
                    if let Some(at) = line.find("listening on ") {
                        let addr = line[at + "listening on ".len()..].trim().to_string();
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(addr);
                        }
                    }
                }
            });
        }
        let addr = match rx.recv_timeout(PATIENCE) {
            Ok(addr) => addr.parse().expect("listening address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not report its address; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Server { child, addr, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }

    /// Opens `n` connections and echoes one line on each: open, and idle.
    pub fn connect_echoed(&self, n: usize) -> Vec<TcpStream> {
        (0..n)
            .map(|i| {
                let mut c = self.connect();
                let line = test_line(i, 0, 16);
                roundtrip(&mut c, &line, &line);
                c
            })
            .collect()
    }

    pub fn signal(&self, sig: Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, sig).expect("kill");
    }

    /// Waits for the server to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the log reader catch the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends SIGTERM and expects an exit with `code` within PATIENCE.
    pub fn stop_expecting(&mut self, code: i32) {
        self.signal(Signal::TERM);
        self.expect_exit(code);
    }

    /// Expects the server to exit with `code` within PATIENCE.
    pub fn expect_exit(&mut self, code: i32) {
        let status = self.wait_exit(PATIENCE).expect("server exits");
        assert_eq!(
            status.code(),
            Some(code),
            "exit status; log:\n{}",
            self.log()
        );
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// A field of /proc/PID/status, in its own unit (kB for memory).
    pub fn proc_status(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)
                    .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Context switches of every thread of the server (each blocking poll
    /// that returns is one), the coordinator's and each worker's included.
    pub fn wakeups(&self) -> u64 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap();
        let mut total = 0;
        for task in tasks.flatten() {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            for line in status.lines() {
                if let Some(v) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    total += v.trim().parse::<u64>().unwrap();
                }
            }
        }
        total
    }

    pub fn rss_kib(&self) -> u64 {
        self.proc_status("VmRSS")
    }

    /// Open file descriptors of the server process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// CPU time (user + system) the server has used, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--workers N` when `REACTOR_ECHO_TEST_WORKERS=N` is set (`make test`
/// runs the integration tests once more that way), else nothing.
pub fn workers_from_env() -> Vec<String> {
    match std::env::var("REACTOR_ECHO_TEST_WORKERS") {
        Ok(n) if !n.is_empty() => vec!["--workers".to_string(), n],
        _ => Vec::new(),
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Reads exactly `n` bytes.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read echo");
    buf
}

/// How a read after the expected bytes ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// A clean FIN.
    Eof,
    /// RST.
    Reset,
    /// More bytes came.
    Data(Vec<u8>),
    /// Nothing within the timeout.
    Silence,
    Other(io::ErrorKind),
}

pub fn read_end(s: &mut TcpStream) -> End {
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => End::Eof,
        Ok(n) => End::Data(buf[..n].to_vec()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => End::Reset,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            End::Silence
        }
        Err(e) => End::Other(e.kind()),
    }
}

/// Reads until the stream ends; returns what came and how it ended.
pub fn read_until_end(s: &mut TcpStream) -> (Vec<u8>, End) {
    let mut got = Vec::new();
    loop {
        match read_end(s) {
            End::Data(d) => got.extend(d),
            end => return (got, end),
        }
    }
}

/// Reads everything up to EOF; panics on reset.
pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read to EOF without reset");
    out
}

/// Asserts nothing arrives within `wait`.
pub fn assert_silent(s: &mut TcpStream, wait: Duration) {
    s.set_read_timeout(Some(wait)).unwrap();
    assert_eq!(read_end(s), End::Silence);
    s.set_read_timeout(Some(PATIENCE)).unwrap();
}

/// Sends `bytes` and expects exactly `want` back.
pub fn roundtrip(s: &mut TcpStream, bytes: &[u8], want: &[u8]) {
    s.write_all(bytes).unwrap();
    assert_eq!(read_n(s, want.len()), want);
}

pub fn half_close(s: &TcpStream) {
    s.shutdown(Shutdown::Write).unwrap();
}

/// Closes `s` with RST instead of FIN (SO_LINGER with a zero timeout).
pub fn reset(s: TcpStream) {
    rustix::net::sockopt::set_socket_linger(&s, Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// Whether connecting is refused (nothing listens).
pub fn connect_refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect_timeout(&addr, Duration::from_secs(5)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
}

/// A deterministic line of `len` bytes (newline included) unique to (`conn`, `k`).
pub fn test_line(conn: usize, k: usize, len: usize) -> Vec<u8> {
    let mut line = format!("{conn}:{k}:").into_bytes();
    let mut i = 0;
    while line.len() + 1 < len {
        line.push(b'a' + ((conn * 7 + k * 13 + i) % 26) as u8);
        i += 1;
    }
    line.push(b'\n');
    line
}

/// `clients` clients at once, each sending `rounds` batches of 40 lines of
/// varied sizes and reading each batch back: every one must get exactly
/// its own bytes, in order.
pub fn pipelining_clients(addr: SocketAddr, clients: usize, rounds: usize) {
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = connect(addr);
                // Many lines in flight at once, of varied sizes.
                for round in 0..rounds {
                    let mut batch = Vec::new();
                    for k in 0..40 {
                        batch.extend(test_line(i, round * 40 + k, 20 + (i + k) % 200));
                    }
                    c.write_all(&batch).unwrap();
                    assert!(
                        read_n(&mut c, batch.len()) == batch,
                        "client {i} round {round}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Bytes that are awkward for text-minded code: every value but '\n'.
pub fn every_byte_but_newline() -> Vec<u8> {
    (0u8..=255).filter(|&b| b != b'\n').collect()
}

/// Writes `data` from a thread without reading, and waits until the writes
/// stall because every buffer on the way is full. Returns the writer and how
/// many bytes it got out before stalling.
pub fn write_until_stalled(s: &TcpStream, data: Vec<u8>) -> (std::thread::JoinHandle<()>, usize) {
    use std::sync::atomic::AtomicUsize;
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let mut w = s.try_clone().unwrap();
        let written = written.clone();
        std::thread::spawn(move || {
            for chunk in data.chunks(16 * 1024) {
                w.write_all(chunk).unwrap();
                written.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        })
    };
    let mut last = usize::MAX;
    let give_up = Instant::now() + PATIENCE;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = written.load(Ordering::Relaxed);
        if now == last {
            return (writer, now);
        }
        last = now;
        assert!(Instant::now() < give_up, "the writer never stalled");
    }
}

/// Writes `data` from a thread (so the test can read meanwhile); the
/// handle returns the number of bytes written before an error, if any.
pub fn write_in_background(
    mut s: TcpStream,
    data: Vec<u8>,
) -> std::thread::JoinHandle<(TcpStream, io::Result<()>)> {
    std::thread::spawn(move || {
        let r = s.write_all(&data);
        (s, r)
    })
}

/// A client thread that sends `test_line(tag, k, size)` for k = 0, 1, ...
/// until stopped or until the server closes on it.
pub struct EndlessSender {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl EndlessSender {
    pub fn start(c: &TcpStream, tag: usize, size: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut w = c.try_clone().unwrap();
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) && w.write_all(&test_line(tag, k, size)).is_ok()
                {
                    k += 1;
                }
            })
        };
        EndlessSender { stop, thread }
    }

    /// Whether it has ended by itself: the server closed on it.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
    }
}

/// With `--workers`: asks for the stats (SIGUSR1) and returns the
/// `workers:` line that answers.
pub fn spread_line(server: &Server) -> String {
    let before = server.log().matches("workers: ").count();
    server.signal(Signal::USR1);
    let give_up = Instant::now() + PATIENCE;
    loop {
        let log = server.log();
        if log.matches("workers: ").count() > before {
            let line = log.lines().rfind(|l| l.contains("workers: ")).unwrap();
            return line.to_string();
        }
        assert!(Instant::now() < give_up, "no stats line:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The per-worker list `name=[a b c]` of a `workers:` line.
pub fn per_worker(line: &str, name: &str) -> Vec<u64> {
    let start = line.find(&format!("{name}=[")).expect(name) + name.len() + 2;
    let end = start + line[start..].find(']').unwrap();
    line[start..end]
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect()
}

/// The next datagram on `socket` (an sd_notify socket), as text.
pub fn next_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within PATIENCE");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The built example `name` (`examples/NAME.rs`), checked to be no older
/// than its source.
pub fn example(name: &str) -> PathBuf {
    let path = PathBuf::from(BIN)
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(format!("{name}.rs"));
    let how = format!("plain `cargo test` builds it, or `cargo build --example {name}`");
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} missing: {how}", path.display()));
    // `cargo test --test tutorial` alone does not rebuild examples: do not
    // test an old build of a step that has since been edited.
    if let Ok(edited) = std::fs::metadata(&source).and_then(|m| m.modified()) {
        assert!(
            built >= edited,
            "{} is older than {}: {how}",
            path.display(),
            source.display()
        );
    }
    path
}

/// Connects, sends a line and reads, again and again until the echo
/// comes back (a place under the connection cap freed up); fails with
/// `why` after `PATIENCE`.
pub fn connect_until_served(server: &Server, why: &str) {
    let give_up = Instant::now() + PATIENCE;
    loop {
        let mut c = server.connect();
        c.write_all(b"in\n").unwrap();
        match read_end(&mut c) {
            End::Data(d) if d == b"in\n" => break,
            _ => assert!(Instant::now() < give_up, "{why}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many sockets listen on `addr` (IPv4), read from `/proc/net/tcp`:
/// one for a lone loop or the coordinator, one per worker for a reuseport
/// group. Each line there is `sl local rem st ...`, the local address as
/// hex `IP:PORT` (the IP in the kernel's byte order), `st` 0A for LISTEN.
pub fn listeners_on(addr: SocketAddr) -> usize {
    let SocketAddr::V4(v4) = addr else {
        panic!("listeners_on reads IPv4 only: {addr}");
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    std::fs::read_to_string("/proc/net/tcp")
        .expect("/proc/net/tcp")
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
        })
        .count()
}

/// `cmd.spawn()`, tried again while it fails with `ETXTBSY`. A test that
/// has just written the binary it runs (`tests/upgrade.rs` installs copies)
/// closed its descriptor, but another test thread may have forked a child
/// in that instant, which holds a copy of it until its own `exec`; `exec`
/// of a file open for writing fails with "text file busy". The window is
/// that short, so a few tries a millisecond apart close it.
fn spawn_retrying_busy_text(cmd: &mut Command) -> Child {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("start reactor-echo: {e}"),
        }
    }
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    let set = rustix::thread::sched_getaffinity(None).expect("sched_getaffinity");
    (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect()
}

/// Pins the calling thread to `cpu`. On loopback a connect's SYN is
/// handled on the CPU of the thread that connects.
pub fn pin_this_thread(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("sched_setaffinity");
}

/// Waits until `n` sockets listen on `addr`: a reuseport group made of an
/// inherited socket opens its other listeners once the server has said it
/// is ready, a moment after its "listening on" line.
pub fn wait_for_listeners(addr: SocketAddr, n: usize) {
    let give_up = Instant::now() + PATIENCE;
    while listeners_on(addr) != n {
        assert!(
            Instant::now() < give_up,
            "{} listeners on {addr}, not {n}",
            listeners_on(addr)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The number written right after the first `marker` in a log `line`
/// (up to the next space): `number_after(line, "MSS ")`.
pub fn number_after(line: &str, marker: &str) -> u64 {
    let at = line
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in {line}"));
    let rest = &line[at + marker.len()..];
    let word = rest.split(' ').next().unwrap_or_default();
    word.parse()
        .unwrap_or_else(|_| panic!("no number after {marker:?} in {line}"))
}
