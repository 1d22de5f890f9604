//! The raw epoll echo server (docs/tutorial/why-epoll.md): the loop of
//! steps 2 to 5 without mio, on rustix's safe `epoll`, one call per syscall.
//!
//! ```text
//! cargo run --example raw_epoll -- --listen 127.0.0.1:8007
//! ```
//!
//! Edge-triggered: every socket is registered once, for IN|OUT|RDHUP|ET, as
//! mio registers it, and a connection remembers "readable" and "writable"
//! until a call says EAGAIN. It echoes whole lines, pauses reading while
//! 1 MiB of echo is unsent, reads at most 16 times a turn (then queues
//! itself again), and stops at a short read unless the peer's FIN has come.

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, EventData, EventFlags as Ev};
use rustix::io::Errno;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, sockopt};
use slab::Slab;
use std::{net::SocketAddr, os::fd::OwnedFd};

const LISTENER: u64 = u64::MAX;
const HIGH_WATER: usize = 1 << 20;
const BUDGET: usize = 16;

#[derive(Default)]
struct Conn {
    input: Vec<u8>,
    output: Vec<u8>,
    readable: bool,
    writable: bool,
    rdhup: bool,
    eof: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.iter().skip_while(|a| *a != "--listen").nth(1);
    let addr: SocketAddr = addr.map_or("127.0.0.1:8007", |a| a.as_str()).parse()?;
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let listener = rustix::net::socket_with(AddressFamily::INET, SocketType::STREAM, flags, None)?;
    sockopt::set_socket_reuseaddr(&listener, true)?;
    rustix::net::bind(&listener, &addr)?;
    rustix::net::listen(&listener, 1024)?;
    let bound = SocketAddr::try_from(rustix::net::getsockname(&listener)?)?;
    eprintln!("listening on {bound}");

    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let edge = Ev::IN | Ev::RDHUP | Ev::ET; // mio adds RDHUP to every read interest
    epoll::add(&ep, &listener, EventData::new_u64(LISTENER), edge)?;
    let mut conns: Slab<(OwnedFd, Conn)> = Slab::new();
    let (mut events, mut again, mut buf) = (Vec::with_capacity(1024), vec![], vec![0; 65536]);
    loop {
        // Connections stopped by their budget are due again: do not sleep.
        let timeout = (!again.is_empty()).then_some(rustix::event::Timespec::default());
        events.clear();
        match epoll::wait(&ep, spare_capacity(&mut events), timeout.as_ref()) {
            Err(Errno::INTR) => continue, // SIGSTOP then SIGCONT, or a signal
            result => result?,
        };
        for key in std::mem::take(&mut again) {
            turn(&mut conns, key, &mut buf, &mut again);
        }
        for event in &events {
            if event.data.u64() == LISTENER {
                loop {
                    match rustix::net::accept_with(&listener, flags) {
                        Ok(fd) => {
                            let entry = conns.vacant_entry();
                            let data = EventData::new_u64(entry.key() as u64);
                            epoll::add(&ep, &fd, data, edge | Ev::OUT)?;
                            entry.insert((fd, Conn::default()));
                        }
                        Err(Errno::AGAIN) => break, // accept until EAGAIN
                        Err(Errno::INTR | Errno::CONNABORTED) => continue,
                        Err(e) => break eprintln!("accept: {e}"), // EMFILE: see the page
                    }
                }
            } else if let Some((_, conn)) = conns.get_mut(event.data.u64() as usize) {
                let (got, hup) = (event.flags, Ev::HUP | Ev::ERR);
                conn.readable |= got.intersects(Ev::IN | Ev::RDHUP | hup);
                conn.rdhup |= got.intersects(Ev::RDHUP | hup);
                conn.writable |= got.intersects(Ev::OUT | hup);
                turn(&mut conns, event.data.u64() as usize, &mut buf, &mut again);
            }
        }
    }
}

/// One turn of a connection: queued again if its budget ran out with input
/// waiting; closed (and so gone from epoll) on an error or when done.
fn turn(conns: &mut Slab<(OwnedFd, Conn)>, key: usize, buf: &mut [u8], again: &mut Vec<usize>) {
    let Some((fd, conn)) = conns.get_mut(key) else {
        return;
    };
    match work(fd, conn, buf) {
        Ok(true) => again.push(key),
        Ok(false) if !(conn.eof && conn.output.is_empty()) => {}
        _ => drop(conns.remove(key)), // close(fd)
    }
}

/// Writes until EAGAIN, then reads until EAGAIN, a short read, 1 MiB of
/// unsent echo or the budget; `Ok(true)` if the budget ran out.
fn work(fd: &OwnedFd, conn: &mut Conn, buf: &mut [u8]) -> rustix::io::Result<bool> {
    for round in 0..=BUDGET {
        while conn.writable && !conn.output.is_empty() {
            match rustix::net::send(fd, &conn.output, SendFlags::NOSIGNAL) {
                Ok(n) => drop(conn.output.drain(..n)),
                Err(Errno::AGAIN) => conn.writable = false, // the rest waits for EPOLLOUT
                Err(Errno::INTR) => {}
                Err(e) => return Err(e),
            }
        }
        if !conn.readable || conn.output.len() >= HIGH_WATER {
            return Ok(false); // nothing to read, or paused until the echo drains
        } else if round == BUDGET {
            return Ok(true); // input waits: queued again
        }
        match rustix::net::recv(fd, &mut *buf, RecvFlags::empty()) {
            Ok((0, _)) => (conn.eof, conn.readable) = (true, false),
            Ok((n, _)) => {
                conn.input.extend_from_slice(&buf[..n]);
                if let Some(end) = conn.input.iter().rposition(|&b| b == b'\n') {
                    conn.output.extend(conn.input.drain(..=end)); // whole lines only
                }
                // A short read emptied the socket, so the next byte is a new
                // edge; a FIN already seen (RDHUP) is not: read on to 0.
                conn.readable = n == buf.len() || conn.rdhup;
            }
            Err(Errno::AGAIN) => conn.readable = false,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    unreachable!("the last round returns")
}
