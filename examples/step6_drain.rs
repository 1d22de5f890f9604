//! Step 6 of the tutorial (docs/tutorial/06-drain.md): the graceful drain.
//!
//! ```text
//! cargo run --example step6_drain                  # listens on 127.0.0.1:8006
//! cargo run --example step6_drain -- --listen 127.0.0.1:0 --drain-timeout 5
//! python3 docs/tutorial/client.py drain 127.0.0.1:8006 <pid>
//! ```
//!
//! On SIGTERM, SIGINT, SIGQUIT or SIGHUP (the Go tutorial's four): stop
//! accepting, deliver every echo owed, close each connection with a FIN
//! (not an RST) once nothing can be lost, and exit 0. At the deadline
//! (`--drain-timeout`, default 10 s like Go's `WaitWithTimeout`) cut off
//! the rest and exit 3. Signals arrive as events: signal-hook's handler
//! writes a byte to a socket pair, and the other end is registered with
//! our `Poll`. A read budget (`READS_PER_TURN`) keeps one busy client from
//! starving the others, the signal among them.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
const MAX_LINE: usize = 64 * 1024;
const HIGH_WATER: usize = 64 * 1024;
const LOW_WATER: usize = 16 * 1024;
/// At most this many reads per `read_lines` call, as in the real server.
const READS_PER_TURN: usize = 16;

struct Conn {
    stream: TcpStream,
    partial: Vec<u8>,
    output: Vec<u8>,
    writable: bool,
    paused: bool,
    eof: bool,
    /// Draining: input is discarded, output flushed, then FIN.
    closing: bool,
    /// shutdown(Write) done: the FIN follows the last byte of output.
    fin_sent: bool,
    /// `read_lines` stopped on its budget, not on WouldBlock: input may be
    /// left that no edge will announce, so the loop reads it again itself.
    budget_spent: bool,
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().skip_while(|a| *a != name).nth(1);
    let addr = flag("--listen").map_or("127.0.0.1:8006", String::as_str);
    let drain_timeout = Duration::from_secs(flag("--drain-timeout").map_or(Ok(10), |s| s.parse())?);
    let mut listener = TcpListener::bind(addr.parse::<SocketAddr>()?)?;
    eprintln!("listening on {}", listener.local_addr()?);

    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    // `None` once draining: dropping the listener closes it.
    let mut listener = Some(listener);
    // Go's `closing` flag and its WaitWithTimeout, in one: the deadline.
    let mut deadline: Option<Instant> = None;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    // The connections that spent their read budget, to be read again.
    let mut resume: Vec<usize> = Vec::new();

    loop {
        // Draining: wake up at the deadline even if nothing happens. With
        // connections to read again, do not sleep at all.
        let timeout = if resume.is_empty() {
            deadline.map(|d| d.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
            // A signal arriving while we sleep interrupts epoll_wait (EINTR);
            // its byte is waiting for us as an event on SIGNALS.
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => {
                    while let Some(l) = &listener {
                        match l.accept() {
                            Ok((mut stream, _)) => {
                                let entry = conns.vacant_entry();
                                let token = Token(entry.key());
                                let interest = Interest::READABLE | Interest::WRITABLE;
                                match poll.registry().register(&mut stream, token, interest) {
                                    Ok(()) => {
                                        entry.insert(Conn {
                                            stream,
                                            partial: Vec::new(),
                                            output: Vec::new(),
                                            writable: true,
                                            paused: false,
                                            eof: false,
                                            closing: false,
                                            fin_sent: false,
                                            budget_spent: false,
                                        });
                                    }
                                    Err(e) => eprintln!("register: {e}"),
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => {
                                eprintln!("accept: {e}");
                                break;
                            }
                        }
                    }
                }
                SIGNALS => {
                    for signal in signals.pending() {
                        if deadline.is_some() {
                            // A second signal: stop waiting, cut the rest off.
                            deadline = Some(Instant::now());
                            continue;
                        }
                        let name = signal_hook::low_level::signal_name(signal).unwrap_or("signal");
                        eprintln!("{name}: draining {} connections", conns.len());
                        deadline = Some(Instant::now() + drain_timeout);
                        listener = None; // stop accepting: new connects are refused
                        let mut done = Vec::new();
                        for (key, conn) in conns.iter_mut() {
                            conn.closing = true;
                            conn.partial.clear(); // an unfinished line is dropped
                            if !matches!(close_progress(conn, &mut buf), Ok(false)) {
                                done.push(key);
                            }
                        }
                        for key in done {
                            conns.remove(key);
                        }
                    }
                }
                token => {
                    let Some(conn) = conns.get_mut(token.0) else {
                        continue;
                    };
                    match on_event(conn, event, &mut buf) {
                        Ok(true) if conn.budget_spent => resume.push(token.0),
                        Ok(true) => {}
                        _ => drop(conns.remove(token.0)),
                    }
                }
            }
        }
        // After every other event of this turn, read again the connections
        // that spent their budget. One queued last turn may have spent it
        // again on an event of this turn: read it once.
        let mut again = std::mem::take(&mut resume);
        again.sort_unstable();
        again.dedup();
        for key in again {
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            conn.budget_spent = false;
            match serve(conn, true, &mut buf) {
                Ok(true) if conn.budget_spent => resume.push(key),
                Ok(true) => {}
                _ => drop(conns.remove(key)),
            }
        }
        if let Some(deadline) = deadline {
            if conns.is_empty() {
                eprintln!("drain complete");
                return Ok(ExitCode::SUCCESS);
            }
            if Instant::now() >= deadline {
                eprintln!("drain deadline: cutting off {} connections", conns.len());
                return Ok(ExitCode::from(3));
            }
        }
    }
}

/// Handles one readiness event; returns `Ok(false)` once the connection is done.
fn on_event(conn: &mut Conn, event: &Event, buf: &mut [u8]) -> io::Result<bool> {
    // mio calls readiness a hint; take_error says whether the socket failed.
    if event.is_error()
        && let Some(e) = conn.stream.take_error()?
    {
        return Err(e);
    }
    if event.is_writable() {
        conn.writable = true;
    }
    serve(conn, event.is_readable(), buf)
}

/// Reads (if `readable`: an event said so, or the read budget ran out),
/// writes, resumes; returns `Ok(false)` once the connection is done.
fn serve(conn: &mut Conn, readable: bool, buf: &mut [u8]) -> io::Result<bool> {
    if conn.closing {
        return close_progress(conn, buf).map(|done| !done);
    }
    if readable {
        read_lines(conn, buf)?;
    }
    write_out(conn)?;
    if conn.paused && conn.output.len() <= LOW_WATER {
        conn.paused = false;
        read_lines(conn, buf)?;
    }
    Ok(!(conn.eof && conn.output.is_empty()))
}

/// Moves a closing connection along; returns `Ok(true)` once it can be
/// closed without losing anything.
fn close_progress(conn: &mut Conn, buf: &mut [u8]) -> io::Result<bool> {
    // Read and discard: unread input at close() would turn our FIN into RST.
    while !conn.eof {
        match conn.stream.read(buf) {
            Ok(0) => conn.eof = true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    write_out(conn)?;
    if conn.output.is_empty() && !conn.fin_sent {
        conn.stream.shutdown(Shutdown::Write)?; // FIN, after the last echo
        conn.fin_sent = true;
    }
    // All our output is in the kernel, our FIN queued after it. Once the
    // client's EOF is here nothing more can arrive, so close() cannot turn
    // into RST: the kernel delivers what is queued, then the FIN.
    Ok(conn.fin_sent && conn.eof)
}

/// Step 5's reading: until WouldBlock, EOF or backpressure, but at most
/// `READS_PER_TURN` reads.
fn read_lines(conn: &mut Conn, buf: &mut [u8]) -> io::Result<()> {
    let mut reads = 0;
    while !conn.paused && !conn.eof {
        if reads == READS_PER_TURN {
            conn.budget_spent = true; // the loop reads it again, after the others
            break;
        }
        reads += 1;
        let n = match conn.stream.read(buf) {
            Ok(0) => {
                conn.eof = true;
                conn.partial = Vec::new();
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let Conn {
            partial, output, ..
        } = &mut *conn;
        frame_lines(partial, &buf[..n], |line| output.extend_from_slice(line))?;
        write_out(conn)?;
        if conn.output.len() > HIGH_WATER {
            conn.paused = true;
        }
    }
    Ok(())
}

/// Step 5's writing: until all is written or the socket is full.
fn write_out(conn: &mut Conn) -> io::Result<()> {
    while conn.writable && !conn.output.is_empty() {
        match conn.stream.write(&conn.output) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                conn.writable = n == conn.output.len();
                conn.output.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => conn.writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Step 4's framing.
fn frame_lines(
    partial: &mut Vec<u8>,
    bytes: &[u8],
    mut on_line: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut rest = bytes;
    while let Some(i) = memchr::memchr(b'\n', rest) {
        let (end, tail) = rest.split_at(i + 1);
        if partial.is_empty() {
            on_line(end);
        } else {
            partial.extend_from_slice(end);
            on_line(partial);
            partial.clear();
        }
        rest = tail;
    }
    if partial.len() + rest.len() > MAX_LINE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
    }
    partial.extend_from_slice(rest);
    Ok(())
}
