//! Step 3 of the tutorial (docs/tutorial/03-edge-triggered.md): what a
//! readiness event means, and the bug of reading once per event.
//!
//! ```text
//! cargo run --example step3_edge_triggered -- -v               # 127.0.0.1:8003, narrated
//! cargo run --example step3_edge_triggered -- -v --buggy       # the lost wake-up
//! python3 docs/tutorial/client.py burst 127.0.0.1:8003 10000   # 10000 bytes in one go
//! ```
//!
//! mio registers every socket *edge-triggered* (EPOLLET). An event says
//! "this socket became readable": something arrived. It is not repeated
//! while data sits unread. epoll's default, level-triggered, would report
//! the socket again on every `poll` for as long as unread data remains.
//!
//! So the reader must empty the socket: read until WouldBlock, as step 2
//! does. With `--buggy` this program reads once per event instead, into a
//! 4 KiB buffer. Send 10000 bytes in one go: one event, one read, 4096
//! bytes echoed, and the other 5904 stay in the kernel with nothing to wake
//! us for them. They move only when the client sends something else (a new
//! edge), and then only 4096 more. `-v` prints every event and every read.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .iter()
        .skip_while(|arg| *arg != "--listen")
        .nth(1)
        .map_or("127.0.0.1:8003", String::as_str);
    // The deliberate bug: one read per event.
    let buggy = args.iter().any(|arg| arg == "--buggy");
    let verbose = args.iter().any(|arg| arg == "-v");
    let mut listener = TcpListener::bind(addr.parse::<SocketAddr>()?)?;
    eprintln!("listening on {}", listener.local_addr()?);

    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<TcpStream> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 4096];

    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for event in events.iter() {
            if verbose {
                // What epoll reported: the token we registered, and readiness.
                eprintln!(
                    "event: token {} readable={} read_closed={} error={}",
                    event.token().0,
                    event.is_readable(),
                    event.is_read_closed(),
                    event.is_error()
                );
            }
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
                                    entry.insert(stream);
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
                    let Some(stream) = conns.get_mut(token.0) else {
                        continue;
                    };
                    if !echo(stream, &mut buf, buggy, verbose) {
                        conns.remove(token.0);
                    }
                }
            }
        }
    }
}

/// Reads and echoes; returns `false` when the connection is finished.
fn echo(stream: &mut TcpStream, buf: &mut [u8], buggy: bool, verbose: bool) -> bool {
    loop {
        match stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                if verbose {
                    eprintln!("  read {n} bytes");
                }
                if let Err(e) = stream.write_all(&buf[..n]) {
                    eprintln!("write: {e}; closing");
                    return false;
                }
                if buggy {
                    // THE BUG. Back to poll with bytes maybe still queued.
                    // Under edge triggering no event will come for them:
                    // they already had theirs.
                    return true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if verbose {
                    eprintln!("  read: WouldBlock, the socket is empty");
                }
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}
