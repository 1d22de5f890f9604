//! Steady clients: a writer thread and a reader thread per connection, on
//! blocking sockets, writing small batches of lines back to back while the
//! other thread reads the echoes 4 KiB at a time, until SIGTERM.
//!
//! This is the "ordinary client" of issue 9's defect 1: the two directions
//! run independently and the reader lags a little, so the server's output
//! queue for the connection fills to its high-water mark, drains to the
//! low one, and reading resumes before it ever empties. A server that
//! frees written bytes only when that queue empties then grows without
//! bound. The soak's mio loop, busy with a few hundred other clients,
//! cannot keep one connection that busy; two threads each can.
//!
//! The checks are the same as for the loop's clients (see `clients.rs`):
//! the echo is exactly what was sent, then a FIN after SIGTERM, on a line
//! boundary, and no RST.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::clients::{Shared, Tally};
use super::content::{Expect, Piece, Pools, Script};
use super::rng::{Rng, derive};

/// What the steady clients are, and how long to wait for their end.
#[derive(Clone, Debug)]
pub struct Plan {
    pub server: SocketAddr,
    pub clients: usize,
    pub seed: u64,
    /// Client numbers start here (the loop's clients count from 0).
    pub first_id: u64,
    pub max_frame: usize,
    /// The longest a read or write may block: past it, the client is hung.
    pub patience: Duration,
}

/// How one steady client ended, as its two threads saw it.
struct Ends {
    id: u64,
    binary: bool,
    /// Bytes written (or being written) and echoed; lines written.
    sent: u64,
    echoed: u64,
    lines: u64,
    /// EOF read; whether SIGTERM had been sent by then.
    eof: Option<bool>,
    at_line_end: bool,
    /// A failed read or write, and whether SIGTERM had been sent by then.
    read_error: Option<(io::Error, bool)>,
    write_error: Option<(io::Error, bool)>,
    bad_echo: Option<String>,
    connected: Instant,
    done: Instant,
    last_write: Option<Instant>,
}

/// Starts the steady clients. They stop writing once `shared.term` is set,
/// and read to their end; the thread returned yields their tally.
pub fn start(plan: Plan, shared: &Arc<Shared>) -> io::Result<JoinHandle<Tally>> {
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name("soak-steady".into())
        .spawn(move || {
            let mut clients = Vec::new();
            for i in 0..plan.clients as u64 {
                let plan = plan.clone();
                let shared = Arc::clone(&shared);
                let id = plan.first_id + i;
                clients.push((
                    id,
                    std::thread::Builder::new()
                        .name(format!("soak-steady-{i}"))
                        .spawn(move || run_one(&plan, id, &shared)),
                ));
            }
            let mut tally = Tally::default();
            for (id, spawned) in clients {
                let outcome = match spawned {
                    Ok(handle) => handle
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("its thread panicked"))),
                    Err(e) => Err(e),
                };
                tally.steady += 1;
                match outcome {
                    Ok(ends) => judge(ends, shared.term.get().copied(), &mut tally),
                    Err(e) => tally.violate("connect failed", format!("steady client {id}: {e}")),
                }
            }
            tally
        })
}

fn run_one(plan: &Plan, id: u64, shared: &Arc<Shared>) -> io::Result<Ends> {
    let mut rng = Rng::new(derive(plan.seed, id * 2 + 1));
    let binary = rng.percent(50);
    let pools = Pools::new(plan.seed, plan.max_frame);
    let script = Script::new(
        derive(plan.seed, id * 2),
        &pools,
        id,
        binary,
        plan.max_frame,
        None,
    );
    let stream = TcpStream::connect_timeout(&plan.server, plan.patience)?;
    let connected = Instant::now();
    // No read or write blocks for ever: past `patience`, the client is hung.
    stream.set_read_timeout(Some(plan.patience))?;
    stream.set_write_timeout(Some(plan.patience))?;
    // Counted before each write, since the echo of its first lines can come
    // back before `write_all` returns.
    let sent = Arc::new(AtomicU64::new(0));
    let writer = {
        let mut stream = stream.try_clone()?;
        let sent = Arc::clone(&sent);
        let mut tx = script.clone();
        let shared = Arc::clone(shared);
        std::thread::Builder::new()
            .name(format!("soak-steady-w{id}"))
            .spawn(move || write_side(&mut stream, &mut tx, &mut rng, &sent, &shared))?
    };
    let mut ends = Ends {
        id,
        binary,
        sent: 0,
        echoed: 0,
        lines: 0,
        eof: None,
        at_line_end: true,
        read_error: None,
        write_error: None,
        bad_echo: None,
        connected,
        done: connected,
        last_write: None,
    };
    let mut rx = Expect::new(script);
    let mut reader = stream;
    let mut buf = vec![0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => {
                ends.eof = Some(shared.term.get().is_some());
                break;
            }
            Ok(n) => {
                if let Err(e) = rx.check(&buf[..n]) {
                    ends.bad_echo = Some(e);
                    break;
                }
                ends.echoed += n as u64;
                shared.echoed.fetch_add(n as u64, Ordering::Relaxed);
                if ends.echoed > sent.load(Ordering::Relaxed) {
                    ends.bad_echo = Some(format!(
                        "{} bytes echoed, more than the {} sent",
                        ends.echoed,
                        sent.load(Ordering::Relaxed)
                    ));
                    break;
                }
            }
            Err(ref e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                ends.read_error = Some((e, shared.term.get().is_some()));
                break;
            }
        }
    }
    ends.done = Instant::now();
    ends.at_line_end = rx.at_line_end();
    // Unblocks the writer if it is still in a write (only after a failure:
    // otherwise it stopped at SIGTERM).
    let _ = reader.shutdown(Shutdown::Both);
    let (lines, last_write, write_error) = writer
        .join()
        .map_err(|_| io::Error::other("the writer thread panicked"))?;
    ends.lines = lines;
    ends.last_write = last_write;
    ends.write_error = write_error;
    ends.sent = sent.load(Ordering::Relaxed);
    Ok(ends)
}

type WriteEnd = (u64, Option<Instant>, Option<(io::Error, bool)>);

fn write_side(
    stream: &mut TcpStream,
    tx: &mut Script,
    rng: &mut Rng,
    sent: &AtomicU64,
    shared: &Shared,
) -> WriteEnd {
    let term = &shared.term;
    let mut buf = Vec::new();
    let mut lines = 0;
    let mut last_write = None;
    while term.get().is_none() {
        buf.clear();
        let want = rng.size(100, 2000);
        while buf.len() < want && tx.next(&mut buf) == Piece::Line {
            lines += 1;
        }
        sent.fetch_add(buf.len() as u64, Ordering::Relaxed);
        if let Err(e) = stream.write_all(&buf) {
            return (lines, last_write, Some((e, term.get().is_some())));
        }
        shared.sent.fetch_add(buf.len() as u64, Ordering::Relaxed);
        last_write = Some(Instant::now());
    }
    (lines, last_write, None)
}

/// The rules of `Client::judge` (clients.rs), for a client that never
/// closes by itself and whose writes stop at SIGTERM.
fn judge(e: Ends, term: Option<Instant>, t: &mut Tally) {
    t.sent += e.sent;
    t.echoed += e.echoed;
    t.lines += e.lines;
    t.binary += e.binary as u64;
    if let Some(at) = term
        && e.connected < at
        && e.done > at
    {
        t.active_at_term += 1;
        if e.last_write
            .is_some_and(|w| w + Duration::from_secs(1) > at)
        {
            t.writing_at_term += 1;
        }
    }
    let who = format!(
        "steady client {} (sent {}, echoed {})",
        e.id, e.sent, e.echoed
    );
    if let Some(b) = e.bad_echo {
        t.violate("wrong echo", format!("{who}: {b}"));
        return;
    }
    if let Some((err, _)) = e.read_error {
        let kind = match err.kind() {
            ErrorKind::ConnectionReset => "RST instead of FIN",
            ErrorKind::WouldBlock | ErrorKind::TimedOut => "no end after drain",
            _ => "socket error",
        };
        t.violate(kind, format!("{who}: {err}"));
        return;
    }
    // Before SIGTERM the server closes no steady connection, so a write
    // cannot fail. After it, a write racing the server's close may meet the
    // RST its own bytes provoke (the reader has the FIN by then): the read
    // side's EOF, checked below, is what counts.
    if let Some((err, false)) = e.write_error {
        t.violate(
            "socket error",
            format!("{who}: write before SIGTERM: {err}"),
        );
        return;
    }
    match e.eof {
        Some(false) => t.violate(
            "FIN before SIGTERM",
            format!("{who}: the server closed a connection it had no reason to close"),
        ),
        Some(true) if !e.at_line_end => t.violate(
            "FIN inside a line",
            format!("{who}: EOF after a partial echoed line"),
        ),
        Some(true) => t.clean_fins += 1,
        None => t.violate("no end", format!("{who}: ended without EOF or error")),
    }
}
