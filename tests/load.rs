//! Many clients at once: each gets exactly its own bytes back, in order.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::*;

/// Lets this test process hold thousands of sockets.
fn raise_own_fd_limit(want: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    if lim.current.is_some_and(|cur| cur < want) {
        lim.current = Some(want.min(hard));
        setrlimit(Resource::Nofile, lim).unwrap();
    }
}

#[test]
fn hundreds_of_pipelining_clients_each_get_their_own_bytes() {
    let server = Server::start(&[]);
    pipelining_clients(server.addr, 300, 5);
}

#[test]
fn three_thousand_open_connections_are_all_served() {
    const N: usize = 3000;
    raise_own_fd_limit(2 * N as u64 + 256);
    let server = Server::start(&[]);
    let mut conns: Vec<TcpStream> = Vec::with_capacity(N);
    for i in 0..N {
        let mut c = server.connect();
        let line = test_line(i, 0, 32);
        c.write_all(&line).unwrap();
        conns.push(c);
    }
    // All open at once; every one answers, then answers again.
    for (i, c) in conns.iter_mut().enumerate() {
        assert_eq!(read_n(c, 32), test_line(i, 0, 32), "conn {i}");
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let line = test_line(i, 1, 48);
        roundtrip(c, &line, &line);
    }
    assert!(server.open_fds() > N, "the server holds them all at once");
}
