//! Step 4 of the tutorial (docs/tutorial/04-framing.md): per-connection
//! buffers and '\n' framing, 拆包 and 粘包.
//!
//! ```text
//! cargo run --example step4_framing                    # listens on 127.0.0.1:8004
//! nc 127.0.0.1 8004
//! python3 docs/tutorial/client.py split 127.0.0.1:8004
//! ```
//!
//! TCP delivers a stream of bytes, not the messages the client wrote. One
//! read may hold half a line (拆包, "abc" now, "def\n" later) or several
//! lines (粘包, "abc\ndef\n"). Steps 2 and 3 echoed bytes as they came, so
//! "abc" went back before its line was complete. Now a line is the unit:
//! each connection keeps the start of an unfinished line in its own buffer
//! until the '\n' arrives, and every complete line is handed to `on_line`
//! (here: echo). This is what Go's `reader.ReadString('\n')` did for us.
//!
//! All connections share one 64 KiB read buffer; a connection owns only its
//! unfinished line, which may not grow past MAX_LINE (else one client could
//! make us buffer without end).

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
/// The longest line we wait for; a longer one closes its connection.
const MAX_LINE: usize = 64 * 1024;

/// One client: its socket and the start of a line whose '\n' has not come.
struct Conn {
    stream: TcpStream,
    partial: Vec<u8>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .skip_while(|arg| arg != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8004".to_string());
    let mut listener = TcpListener::bind(addr.parse::<SocketAddr>()?)?;
    eprintln!("listening on {}", listener.local_addr()?);

    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024]; // shared by every connection
    let mut replies = Vec::new(); // the echoes of one read, written at once

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
                            match poll
                                .registry()
                                .register(&mut stream, token, Interest::READABLE)
                            {
                                Ok(()) => {
                                    let partial = Vec::new(); // owns no memory yet
                                    entry.insert(Conn { stream, partial });
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
                    if !serve(conn, &mut buf, &mut replies) {
                        conns.remove(token.0);
                    }
                }
            }
        }
    }
}

/// Reads until WouldBlock, echoing every complete line. Returns `false`
/// when the connection is finished.
fn serve(conn: &mut Conn, buf: &mut [u8], replies: &mut Vec<u8>) -> bool {
    loop {
        let n = match conn.stream.read(buf) {
            // EOF. An unfinished line can never be completed: it is
            // dropped, never echoed (Go's ReadString returns it with io.EOF,
            // and the Go handler drops it too).
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        replies.clear();
        let echo = |line: &[u8]| replies.extend_from_slice(line);
        if let Err(e) = frame_lines(&mut conn.partial, &buf[..n], echo) {
            eprintln!("{e}; closing");
            return false;
        }
        // 粘包: all the lines of one read go back in one write.
        if let Err(e) = conn.stream.write_all(replies) {
            // Still no place to keep what the socket cannot take: step 5.
            eprintln!("write: {e}; closing");
            return false;
        }
    }
}

/// Cuts `bytes`, the latest read, into lines and calls `on_line` with each
/// complete one, '\n' included. `partial` holds the start of a line from
/// earlier reads, and keeps the new unfinished tail for the next read.
fn frame_lines(
    partial: &mut Vec<u8>,
    bytes: &[u8],
    mut on_line: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut rest = bytes;
    while let Some(i) = memchr::memchr(b'\n', rest) {
        let (end, tail) = rest.split_at(i + 1);
        if partial.is_empty() {
            on_line(end); // a whole line in this read: no copy
        } else {
            // 拆包: the line started in an earlier read.
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
