//! The checker's client side: blocking loopback sockets, the lines it
//! sends, and reads that tell "nothing more came" from "it ended".

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connects, with reads and writes that give up after `patience`.
pub fn connect(addr: SocketAddr, patience: Duration) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, patience)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(patience)).ok();
    s.set_write_timeout(Some(patience)).ok();
    Ok(s)
}

/// Connects with a small receive buffer and a small segment size, both
/// set before `connect`: `SO_RCVBUF` then also bounds the window the
/// server is offered, and `TCP_MAXSEG` the segments it may send. Linux
/// sizes a socket's send buffer from its segment size (about 20 segments to
/// start with), so the server's socket then takes about 100 KiB of echo
/// rather than megabytes, and its writes come up short soon.
pub fn connect_small_window(addr: SocketAddr, patience: Duration) -> Result<TcpStream, String> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| format!("socket: {e}"))?;
    s.set_recv_buffer_size(4096)
        .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    s.set_tcp_mss(536).map_err(|e| format!("TCP_MAXSEG: {e}"))?;
    s.connect_timeout(&addr.into(), patience)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(patience)).ok();
    s.set_write_timeout(Some(patience)).ok();
    Ok(s)
}

/// A line of exactly `len` bytes ('\n' included), unique to (`tag`, `k`).
pub fn line(tag: &str, k: usize, len: usize) -> Vec<u8> {
    let mut out = format!("{tag}:{k}:").into_bytes();
    let mut i = 0;
    while out.len() + 1 < len {
        out.push(b'a' + ((k * 13 + i * 7) % 26) as u8);
        i += 1;
    }
    out.push(b'\n');
    out
}

/// `count` lines of `len` bytes, numbered from `first`.
pub fn lines(tag: &str, first: usize, count: usize, len: usize) -> Vec<u8> {
    (first..first + count)
        .flat_map(|k| line(tag, k, len))
        .collect()
}

/// How reading ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// As many bytes as were asked for.
    Complete,
    /// A FIN: end of stream.
    Eof,
    /// An RST.
    Reset,
    /// Nothing new for the whole stall time.
    Stalled,
    Error(ErrorKind),
}

impl End {
    pub fn describe(&self, stall: Duration) -> String {
        match self {
            End::Complete => "all of it".into(),
            End::Eof => "then EOF (FIN)".into(),
            End::Reset => "then a reset (RST)".into(),
            End::Stalled => format!("then nothing for {} s", stall.as_secs_f64()),
            End::Error(kind) => format!("then the error {kind:?}"),
        }
    }
}

/// Reads until `want` bytes have come (`None`: until the stream ends), the
/// stream ends, or nothing arrives for `stall`. Pauses `pause` after each
/// read of at most `chunk` bytes: a slow reader.
pub fn read_for(
    s: &mut TcpStream,
    want: Option<usize>,
    stall: Duration,
    chunk: usize,
    pause: Duration,
) -> (Vec<u8>, End) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; chunk];
    s.set_read_timeout(Some(stall)).ok();
    let end = loop {
        if want.is_some_and(|w| got.len() >= w) {
            break End::Complete;
        }
        let room = want.map_or(chunk, |w| (w - got.len()).min(chunk));
        match s.read(&mut buf[..room]) {
            Ok(0) => break End::Eof,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break End::Stalled;
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break End::Reset,
            Err(e) => break End::Error(e.kind()),
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    };
    (got, end)
}

/// Reads exactly `want` bytes at full speed, or what came before the end.
pub fn read_n(s: &mut TcpStream, want: usize, stall: Duration) -> (Vec<u8>, End) {
    read_for(s, Some(want), stall, 64 * 1024, Duration::ZERO)
}

/// Reads until the stream ends (or stalls).
pub fn read_to_end(s: &mut TcpStream, stall: Duration) -> (Vec<u8>, End) {
    read_for(s, None, stall, 64 * 1024, Duration::ZERO)
}

/// Whether anything arrives within `wait` (without consuming it).
pub fn anything_within(s: &TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).ok();
    let mut b = [0u8; 1];
    s.peek(&mut b).is_ok()
}

/// "byte N differs" or "" when `got` is a prefix of `want`.
pub fn first_difference(got: &[u8], want: &[u8]) -> Option<usize> {
    got.iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .or(if got.len() > want.len() {
            Some(want.len())
        } else {
            None
        })
}

/// A thread that writes `data` in chunks, counting what got out.
pub struct Writer {
    pub written: Arc<AtomicUsize>,
    thread: JoinHandle<io::Result<()>>,
}

impl Writer {
    pub fn start(s: &TcpStream, data: Vec<u8>, chunk: usize) -> Writer {
        let written = Arc::new(AtomicUsize::new(0));
        let mut w = s.try_clone().expect("clone a socket");
        // The writer never gives up by itself: the checker decides.
        w.set_write_timeout(None).ok();
        let thread = {
            let written = written.clone();
            std::thread::spawn(move || {
                for part in data.chunks(chunk) {
                    w.write_all(part)?;
                    written.fetch_add(part.len(), Ordering::Relaxed);
                }
                Ok(())
            })
        };
        Writer { written, thread }
    }

    pub fn written(&self) -> usize {
        self.written.load(Ordering::Relaxed)
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits until the writer is done, or has made no progress for
    /// `quiet` (it is blocked: every buffer on the way is full), or `limit`.
    /// Returns whether it finished.
    pub fn wait_done_or_blocked(&self, quiet: Duration, limit: Duration) -> bool {
        let give_up = Instant::now() + limit;
        let mut last = usize::MAX;
        loop {
            if self.is_finished() {
                return true;
            }
            let now = self.written();
            if now == last || Instant::now() >= give_up {
                return false;
            }
            last = now;
            std::thread::sleep(quiet);
        }
    }

    pub fn join(self) -> io::Result<()> {
        self.thread.join().expect("the writer thread")
    }
}

/// A thread that keeps sending the same block until stopped or until the
/// connection fails, counting what got out.
pub struct Flood {
    stop: Arc<AtomicBool>,
    pub sent: Arc<AtomicUsize>,
    thread: JoinHandle<io::Result<()>>,
}

impl Flood {
    /// Sends `block(k)` for k = 0, 1, 2, ...
    pub fn start(s: &TcpStream, block: impl Fn(usize) -> Vec<u8> + Send + 'static) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let mut w = s.try_clone().expect("clone a socket");
        w.set_write_timeout(None).ok();
        let thread = {
            let stop = stop.clone();
            let sent = sent.clone();
            std::thread::spawn(move || {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let b = block(k);
                    w.write_all(&b)?;
                    sent.fetch_add(b.len(), Ordering::Relaxed);
                    k += 1;
                }
                Ok(())
            })
        };
        Flood { stop, sent, thread }
    }

    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops it; returns how it ended and the total sent. A writer
    /// blocked in `write` is stuck until its connection moves or closes:
    /// the caller must see to that, or give up waiting after `limit`.
    pub fn stop(self, limit: Duration) -> Option<(io::Result<()>, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        let give_up = Instant::now() + limit;
        while !self.thread.is_finished() {
            if Instant::now() >= give_up {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let sent = self.sent();
        Some((self.thread.join().expect("the flood thread"), sent))
    }
}
