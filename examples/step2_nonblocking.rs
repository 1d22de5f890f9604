//! Step 2 of the tutorial (docs/tutorial/02-nonblocking.md): non-blocking
//! sockets and one mio loop for every client, on one thread.
//!
//! ```text
//! cargo run --example step2_nonblocking                    # listens on 127.0.0.1:8002
//! cargo run --example step2_nonblocking -- --listen 127.0.0.1:0
//! nc 127.0.0.1 8002
//! ```
//!
//! A non-blocking socket never makes us wait: when there is nothing to
//! accept, nothing to read or no room to write, the call fails at once with
//! EAGAIN (`io::ErrorKind::WouldBlock`). One thread can then serve every
//! client, if something tells it which sockets have work: that is `Poll`
//! (epoll on Linux). We register each socket once with a `Token`, and
//! `poll` hands back the tokens of the sockets that became ready.
//!
//! mio's rule for what to do with a readiness event: do the operation
//! until it returns WouldBlock, or no further event may come for it. This
//! step obeys the rule; step 3 shows what happens when you do not.
//!
//! Still missing: lines (this echoes bytes as they come, step 4) and a
//! place to keep output the socket cannot take yet (step 5).

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

// Reserved token for the listener; connections use their slab key as their
// token, and a slab never gets near usize::MAX entries.
const LISTENER: Token = Token(usize::MAX);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .skip_while(|arg| arg != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8002".to_string());
    // mio's listener is non-blocking from the start.
    let mut listener = TcpListener::bind(addr.parse::<SocketAddr>()?)?;
    eprintln!("listening on {}", listener.local_addr()?);

    let mut poll = Poll::new()?; // epoll_create1
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?; // epoll_ctl(ADD)
    // Every open connection, by token: Go's goroutines each held their
    // `conn`; here one table holds them all.
    let mut conns: Slab<TcpStream> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 4096];

    loop {
        // epoll_wait: sleep until at least one registered socket is ready.
        if let Err(e) = poll.poll(&mut events, None) {
            // A signal interrupted the wait (EINTR): nothing happened, wait again.
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for event in events.iter() {
            match event.token() {
                // One event, however many clients are waiting: accept them
                // all, until the kernel says there are no more.
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, _peer)) => {
                            let entry = conns.vacant_entry();
                            let token = Token(entry.key());
                            match poll
                                .registry()
                                .register(&mut stream, token, Interest::READABLE)
                            {
                                Ok(()) => {
                                    entry.insert(stream);
                                }
                                Err(e) => eprintln!("register: {e}"), // drop: close it
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // A client that gave up before we took it: take the next.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // Out of file descriptors (EMFILE), say. The clients
                        // stay queued and no new event comes for them until
                        // another client connects; the real server deals with
                        // it (out_of_fds). This step only says so.
                        Err(e) => {
                            eprintln!("accept: {e}");
                            break;
                        }
                    }
                },
                token => {
                    // The slab key is the token. An event for a connection
                    // closed earlier in this batch finds nothing: ignore it.
                    let Some(stream) = conns.get_mut(token.0) else {
                        continue;
                    };
                    if !echo_until_would_block(stream, &mut buf) {
                        // Dropping the stream closes the socket, which also
                        // takes it out of the epoll set.
                        conns.remove(token.0);
                    }
                }
            }
        }
    }
}

/// Reads and echoes until the socket has nothing more (WouldBlock).
/// Returns `false` when the connection is finished: EOF or an error.
fn echo_until_would_block(stream: &mut TcpStream, buf: &mut [u8]) -> bool {
    loop {
        match stream.read(buf) {
            Ok(0) => return false, // EOF
            Ok(n) => {
                // Echo the bytes as they came. On a non-blocking socket,
                // write_all fails with WouldBlock if the send buffer fills
                // up, and the rest is lost: this step has nowhere to keep
                // it (step 5 has), so it gives up on the client.
                if let Err(e) = stream.write_all(&buf[..n]) {
                    eprintln!("write: {e}; closing");
                    return false;
                }
            }
            // EAGAIN: the receive queue is empty. Back to poll.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // Reset by the peer, and the like.
            Err(_) => return false,
        }
    }
}
