//! Accepting connections: the connection cap, and running out of file
//! descriptors (EMFILE) without hanging clients or spinning.
//!
//! The listener is edge-triggered like every socket, so one event may stand
//! for any number of waiting clients: `accept_all` accepts until
//! `WouldBlock`. When `accept` fails for lack of fds, the waiting clients
//! would otherwise get no new event and hang; `out_of_fds` is libuv's
//! "EMFILE trick". See `docs/architecture.md`.

use std::fs::File;
use std::io;
use std::net::SocketAddr;

use log::{debug, error, warn};
use mio::Interest;
use mio::net::TcpStream;

use super::{ACCEPT_RETRY, Server};
use crate::connection::{ConnId, Connection};
use crate::framing::FrameAssembler;
use crate::handler::{Context, Handler};
use crate::io_util::{interrupted, would_block};
use crate::timers::Timer;

/// What a failed `accept` means for the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AcceptError {
    /// Out of file descriptors or memory: clients wait, and must be dealt with.
    OutOfFds,
    /// That one connection failed between the handshake and our accept
    /// (Linux passes such errors to `accept`): skip it, accept the next.
    ThisConnection,
    /// Anything else: log it and try again later rather than spin.
    Unexpected,
}

impl AcceptError {
    fn of(e: &io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                AcceptError::OutOfFds
            }
            Some(
                libc::ECONNABORTED
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ETIMEDOUT,
            ) => AcceptError::ThisConnection,
            _ => AcceptError::Unexpected,
        }
    }
}

impl<H: Handler> Server<H> {
    /// Accepts every waiting connection. Edge-triggered: the listener fires
    /// once for any number of them, so accept until `WouldBlock`.
    pub(super) fn accept_all(&mut self) {
        if self.accept_paused_until.is_some() {
            return;
        }
        while let Some(listener) = &self.listener {
            match listener.accept() {
                Ok((stream, addr)) => self.open_connection(stream, addr),
                Err(ref e) if would_block(e) => return,
                Err(ref e) if interrupted(e) => continue,
                Err(e) => {
                    if !self.accept_failed(e) {
                        return;
                    }
                }
            }
        }
    }

    fn open_connection(&mut self, mut stream: TcpStream, addr: SocketAddr) {
        if self.conns.len() >= self.config.max_connections {
            // Accept and close rather than leave it in the kernel's backlog,
            // where its client would wait forever. Dropping `stream` closes it.
            self.stats.rejected += 1;
            if let Some(held_back) = self.over_capacity_log.hit(self.now) {
                warn!(
                    "connection limit of {} reached: closing new connections at once \
                     ({held_back} more since the last warning)",
                    self.config.max_connections
                );
            }
            return;
        }
        // Replies are small: without TCP_NODELAY, Nagle's algorithm holds
        // one back until the previous is acknowledged, and a client's delayed
        // ACK makes that up to 40 ms.
        if let Err(e) = stream.set_nodelay(true) {
            debug!("set_nodelay for {addr}: {e}");
        }
        self.next_serial = self.next_serial.wrapping_add(1);
        let entry = self.conns.vacant_entry();
        let id = ConnId {
            key: entry.key() as u32,
            serial: self.next_serial,
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            id.token(),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("cannot register the connection from {addr}: {e}");
            return;
        }
        let input = FrameAssembler::new(self.config.framing, self.config.max_frame);
        entry.insert(Connection::new(stream, id, input, self.now));
        self.stats.accepted += 1;
        debug!("{id} accepted from {addr}");
        if let Some(idle) = self.config.idle_timeout {
            self.timers.push(self.now + idle, Timer::Idle(id));
        }
        self.handler
            .on_open(&mut Context::new(&mut self.conns, &mut self.outgoing), id);
    }

    /// Deals with a failed `accept`; returns whether to keep accepting.
    fn accept_failed(&mut self, e: io::Error) -> bool {
        match AcceptError::of(&e) {
            AcceptError::OutOfFds => {
                self.out_of_fds(e);
                false
            }
            AcceptError::ThisConnection => {
                debug!("accept: {e}; skipping that connection");
                true
            }
            AcceptError::Unexpected => {
                error!("accept failed: {e}; trying again in {ACCEPT_RETRY:?}");
                self.accept_paused_until = Some(self.now + ACCEPT_RETRY);
                false
            }
        }
    }

    /// Out of file descriptors. Failing `accept` leaves the client queued,
    /// and under edge triggering no new event comes for it: it would hang
    /// until some other client connects. libuv's `uv__emfile_trick`: close
    /// the spare fd kept for this moment, accept and close each waiting
    /// client (they see EOF at once), then take the spare back. If there is
    /// no spare, stop accepting and retry on a timer (as nginx does); the
    /// timer also serves the backlog once fds free up, with no new event.
    fn out_of_fds(&mut self, e: io::Error) {
        let mut shed = 0u64;
        if self.spare_fd.take().is_some() {
            while let Some(listener) = &self.listener {
                match listener.accept() {
                    Ok((stream, _)) => {
                        drop(stream);
                        shed += 1;
                    }
                    Err(ref e) if interrupted(e) => continue,
                    Err(_) => break,
                }
            }
            self.spare_fd = File::open("/dev/null").ok();
        }
        if self.spare_fd.is_none() {
            self.accept_paused_until = Some(self.now + ACCEPT_RETRY);
        }
        self.stats.rejected += shed;
        if let Some(held_back) = self.out_of_fds_log.hit(self.now) {
            warn!(
                "accept: {e} ({} connections open); closed {shed} waiting connections at once \
                 ({held_back} more such warnings held back)",
                self.conns.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_told_apart() {
        let os = io::Error::from_raw_os_error;
        for code in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert_eq!(AcceptError::of(&os(code)), AcceptError::OutOfFds);
        }
        // A client that gave up before we accepted it concerns it alone.
        for code in [
            libc::ECONNABORTED,
            libc::EPROTO,
            libc::ENETUNREACH,
            libc::ETIMEDOUT,
        ] {
            assert_eq!(AcceptError::of(&os(code)), AcceptError::ThisConnection);
        }
        assert_eq!(AcceptError::of(&os(libc::EBADF)), AcceptError::Unexpected);
    }
}
