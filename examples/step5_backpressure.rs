//! Step 5 of the tutorial (docs/tutorial/05-backpressure.md): write
//! interest, partial writes and backpressure.
//!
//! ```text
//! cargo run --example step5_backpressure                  # listens on 127.0.0.1:8005
//! python3 docs/tutorial/client.py slow 127.0.0.1:8005 16  # 16 MiB, not reading at first
//! ```
//!
//! Output the socket cannot take yet now waits in each connection's
//! `output`, and goes out on a later writable event (EPOLLOUT). Above
//! HIGH_WATER bytes of pending output we stop reading from that client
//! (backpressure: TCP then slows the client down for us). At LOW_WATER or
//! below we read again, at once and by ourselves: the data that queued up
//! during the pause had its edges while we were not reading, and no new
//! one will come for it.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
const MAX_LINE: usize = 64 * 1024;
/// Stop reading from a client once this much of its echo is pending...
const HIGH_WATER: usize = 64 * 1024;
/// ...and start again once it is down to this.
const LOW_WATER: usize = 16 * 1024;

struct Conn {
    stream: TcpStream,
    partial: Vec<u8>,
    /// Echoes the socket has not taken yet.
    output: Vec<u8>,
    /// The send buffer may have room. Cleared when a write comes up short
    /// (the kernel now owes us a writable edge), set by a writable event.
    writable: bool,
    /// Backpressure: not reading, because `output` went over HIGH_WATER.
    paused: bool,
    /// The client sent EOF: close once `output` is written.
    eof: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .skip_while(|arg| arg != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8005".to_string());
    let mut listener = TcpListener::bind(addr.parse::<SocketAddr>()?)?;
    eprintln!("listening on {}", listener.local_addr()?);

    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];

    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let entry = conns.vacant_entry();
                            let token = Token(entry.key());
                            // Both directions, once, for the connection's life.
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
                },
                token => {
                    let Some(conn) = conns.get_mut(token.0) else {
                        continue;
                    };
                    // Ok(false): done. Err: reset, line too long, and the like.
                    if !matches!(on_event(conn, event, &mut buf), Ok(true)) {
                        conns.remove(token.0);
                    }
                }
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
    if event.is_readable() {
        read_lines(conn, buf)?; // does nothing while paused
    }
    write_out(conn)?;
    if conn.paused && conn.output.len() <= LOW_WATER {
        conn.paused = false;
        // Resume, and read now: no event will come for what is queued.
        read_lines(conn, buf)?;
    }
    Ok(!(conn.eof && conn.output.is_empty()))
}

/// Reads until WouldBlock, EOF or backpressure, queueing and writing the
/// echo of every complete line.
fn read_lines(conn: &mut Conn, buf: &mut [u8]) -> io::Result<()> {
    while !conn.paused && !conn.eof {
        let n = match conn.stream.read(buf) {
            Ok(0) => {
                conn.eof = true;
                conn.partial = Vec::new(); // an unfinished line is dropped
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
        // Write the echoes in the same turn that read the lines.
        write_out(conn)?;
        if conn.output.len() > HIGH_WATER {
            conn.paused = true; // the client is not reading: stop reading it
        }
    }
    Ok(())
}

/// Writes pending output until all is written or the socket is full.
fn write_out(conn: &mut Conn) -> io::Result<()> {
    while conn.writable && !conn.output.is_empty() {
        match conn.stream.write(&conn.output) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                // A short write means the buffer filled up: the kernel will
                // send a writable edge when there is room, as after EAGAIN.
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

/// Step 4's framing: calls `on_line` with each complete line of `bytes`;
/// `partial` carries an unfinished line from one read to the next.
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
