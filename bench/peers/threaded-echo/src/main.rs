//! Blocking thread-per-connection line echo: a peer of reactor-echo in
//! `make bench-compare`.
//!
//! ```text
//! threaded-echo ADDR
//! ```
//!
//! The oldest design: `accept` in a loop, one OS thread per connection,
//! blocking `read` and `write`, no event loop. How it answers, the same as
//! the other peers so that they are compared fairly: each thread reads into
//! a 64 KiB buffer, finds the last `'\n'` of what it holds, and writes every
//! complete line back in one `write_all`; a partial line waits for the rest.
//!
//! It uses as many cores as it is given: the kernel schedules its threads
//! on the CPUs it is pinned to (`taskset`). SIGTERM ends it at once.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

fn serve(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0usize;
    loop {
        // A line longer than the buffer: grow it rather than cut the line.
        if have == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match s.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        have += n;
        if let Some(last) = buf[..have].iter().rposition(|&b| b == b'\n') {
            if s.write_all(&buf[..=last]).is_err() {
                return;
            }
            buf.copy_within(last + 1..have, 0);
            have -= last + 1;
        }
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7002".into());
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    for s in listener.incoming().flatten() {
        // Default stacks (2 MiB of address space, touched lazily), as the
        // shared cross-check's copy of this peer has.
        std::thread::spawn(move || serve(s));
    }
}
