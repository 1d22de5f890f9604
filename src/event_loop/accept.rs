//! Accepting connections: the connection cap, and running out of file
//! descriptors (EMFILE) without hanging clients or spinning.
//!
//! The listener is edge-triggered like every socket, so one event may stand
//! for any number of waiting clients: `accept_all` accepts until
//! `WouldBlock`. When `accept` fails for lack of fds, the waiting clients
//! would otherwise get no new event and hang; `out_of_fds` is libuv's
//! "EMFILE trick". See `docs/architecture.md`.
//!
//! [`Acceptor`] is the listening side on its own, so that the single loop
//! and the coordinator of `--workers` (`src/workers/`) accept the same way:
//! the loop registers what it accepts itself, the coordinator hands it to a
//! worker.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use log::{debug, error, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};

use super::{ACCEPT_RETRY, Server};
use crate::connection::{ConnId, Connection};
use crate::framing::FrameAssembler;
use crate::handler::{Context, Handler};
use crate::io_util::{interrupted, would_block};
use crate::throttle::Throttle;
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

/// `--accept reuseport`: the connections open in the whole process, shared
/// by the workers, each of which accepts from a listener of its own. It
/// keeps `--max-connections` one cap for the process. A worker takes a
/// place (`try_take`) for each client it accepts, and gives it back when
/// the connection is done. Take-then-check with one `fetch_add` makes the
/// cap exact however many workers accept at once (a load, a compare and
/// an increment could let two workers both take the last place). `Relaxed`
/// is enough: the count guards nothing but itself, and read-modify-writes
/// of one atomic are totally ordered whatever the ordering. On its own
/// cache lines, as `DoneCount`.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct OpenCount(AtomicUsize);

impl OpenCount {
    /// Takes a place if fewer than `max` are taken.
    fn try_take(&self, max: usize) -> bool {
        if self.0.fetch_add(1, Ordering::Relaxed) < max {
            return true;
        }
        self.0.fetch_sub(1, Ordering::Relaxed);
        false
    }

    /// Gives back `n` places.
    fn release(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    /// Connections open in the process now.
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The listening socket, and what accepting from it safely takes: the
/// connection cap, a spare fd for running out of fds, and a pause after an
/// unexpected failure.
pub(crate) struct Acceptor {
    /// `None` once draining (the socket is closed at once), and in a worker
    /// of `--workers`, which never listens.
    listener: Option<TcpListener>,
    max_connections: usize,
    /// An fd held in reserve, released to shed clients when fds run out.
    spare_fd: Option<File>,
    /// Set after a failure that cannot be worked around: accept again then.
    paused_until: Option<Instant>,
    over_capacity_log: Throttle,
    out_of_fds_log: Throttle,
    /// `--accept reuseport`: the cap is the process's, counted here
    /// rather than by the caller's `open`.
    shared: Option<Arc<OpenCount>>,
}

impl Acceptor {
    pub(crate) fn new(listener: Option<TcpListener>, max_connections: usize) -> Self {
        Acceptor {
            spare_fd: listener.as_ref().and_then(|_| File::open("/dev/null").ok()),
            listener,
            max_connections,
            paused_until: None,
            over_capacity_log: Throttle::new(Duration::from_secs(1)),
            out_of_fds_log: Throttle::new(Duration::from_secs(1)),
            shared: None,
        }
    }

    /// A worker's own listener in `--accept reuseport`, under the cap that
    /// `shared` counts for the whole process.
    pub(crate) fn shared(
        listener: TcpListener,
        max_connections: usize,
        shared: Arc<OpenCount>,
    ) -> Self {
        Acceptor {
            shared: Some(shared),
            ..Acceptor::new(Some(listener), max_connections)
        }
    }

    /// Gives back `n` places of the shared cap, for connections done (or
    /// accepted and never served); nothing without one.
    pub(crate) fn release(&self, n: usize) {
        if let Some(shared) = &self.shared {
            shared.release(n);
        }
    }

    /// Takes the listener out (a worker that died hands it to the worker
    /// that replaces it); `None` once closed.
    pub(crate) fn take_listener(&mut self) -> Option<TcpListener> {
        self.listener.take()
    }

    /// The listening socket's descriptor, to hand it to a live upgrade's
    /// new process; `None` once closed.
    pub(crate) fn listener_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.listener.as_ref().map(std::os::fd::AsFd::as_fd)
    }

    /// The listening socket, to register it with a poll.
    pub(crate) fn listener_mut(&mut self) -> Option<&mut TcpListener> {
        self.listener.as_mut()
    }

    /// Stops listening: closes our descriptor of the socket. If it was the
    /// last one, new connects are refused and clients still waiting in the
    /// backlog are reset, never served; if another process holds the same
    /// socket (socket activation, or a live upgrade's new process), it
    /// listens on and serves them.
    ///
    /// It leaves `registry`'s poll first: epoll forgets a descriptor only
    /// when the last descriptor of its socket anywhere is closed, so a
    /// socket that lives on elsewhere would go on waking this poll for
    /// every connect that the other process serves.
    pub(crate) fn close(&mut self, registry: &Registry) {
        if let Some(mut listener) = self.listener.take()
            && let Err(e) = registry.deregister(&mut listener)
        {
            debug!("deregistering the listener: {e}");
        }
        self.paused_until = None;
    }

    /// When accepting is paused until, if it is.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Whether a pause has just run out (then the caller accepts again: no
    /// new event will come for clients that queued meanwhile).
    pub(crate) fn pause_over(&mut self, now: Instant) -> bool {
        if self.paused_until.is_some_and(|at| at <= now) {
            self.paused_until = None;
            return true;
        }
        false
    }

    /// The next waiting client, or `None` once there is none for now (or
    /// accepting is paused or closed). `open` is how many connections are
    /// being served; clients over the cap, and clients shed when fds run
    /// out, are closed here at once and counted in `rejected`.
    pub(crate) fn next(
        &mut self,
        now: Instant,
        open: usize,
        rejected: &mut u64,
    ) -> Option<(TcpStream, SocketAddr)> {
        if self.paused_until.is_some() {
            return None;
        }
        loop {
            let listener = self.listener.as_ref()?;
            match listener.accept() {
                Ok((stream, addr)) => {
                    let room = match &self.shared {
                        Some(shared) => shared.try_take(self.max_connections),
                        None => open < self.max_connections,
                    };
                    if room {
                        return Some((stream, addr));
                    }
                    // Accept and close rather than leave it in the kernel's
                    // backlog, where its client would wait forever. Dropping
                    // `stream` closes it.
                    *rejected += 1;
                    if let Some(held_back) = self.over_capacity_log.hit(now) {
                        warn!(
                            "connection limit of {} reached: closing new connections at once \
                             ({held_back} more since the last warning)",
                            self.max_connections
                        );
                    }
                }
                Err(ref e) if would_block(e) => return None,
                Err(ref e) if interrupted(e) => continue,
                Err(e) => match AcceptError::of(&e) {
                    AcceptError::OutOfFds => {
                        *rejected += self.out_of_fds(e, now, open);
                        return None;
                    }
                    AcceptError::ThisConnection => {
                        debug!("accept: {e}; skipping that connection");
                    }
                    AcceptError::Unexpected => {
                        error!("accept failed: {e}; trying again in {ACCEPT_RETRY:?}");
                        self.paused_until = Some(now + ACCEPT_RETRY);
                        return None;
                    }
                },
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
    /// Returns how many clients were shed.
    fn out_of_fds(&mut self, e: io::Error, now: Instant, open: usize) -> u64 {
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
            self.paused_until = Some(now + ACCEPT_RETRY);
        }
        if let Some(held_back) = self.out_of_fds_log.hit(now) {
            warn!(
                "accept: {e} ({open} connections open); closed {shed} waiting connections at once \
                 ({held_back} more such warnings held back)"
            );
        }
        shed
    }
}

impl<H: Handler> Server<H> {
    /// Accepts every waiting connection. Edge-triggered: the listener fires
    /// once for any number of them, so accept until `WouldBlock`.
    pub(super) fn accept_all(&mut self) {
        while let Some((stream, addr)) =
            self.acceptor
                .next(self.now, self.conns.len(), &mut self.stats.rejected)
        {
            if self.open_connection(stream, addr).is_none() {
                self.acceptor.release(1);
            }
        }
    }

    /// Serves a connection accepted here or handed over by the coordinator
    /// of `--workers`: registers it with this loop's poll, once, for good.
    /// Returns its id if it is now served.
    pub(super) fn open_connection(
        &mut self,
        mut stream: TcpStream,
        addr: SocketAddr,
    ) -> Option<ConnId> {
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
            return None;
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
        Some(id)
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
