//! The event loop: one thread, one `mio::Poll`, every socket in it.
//!
//! This is the heart of the project, in the style of Redis's `ae.c`: wait for
//! readiness, dispatch on the token, do the work, repeat. Try it:
//!
//! ```text
//! make run                     # serves on 127.0.0.1:8000
//! nc 127.0.0.1 8000            # type lines, get them back
//! kill -TERM <pid>             # graceful drain
//! reactor-echo --log-level trace   # the loop narrates its work
//! ```
//!
//! One turn of the loop ([`Server::serve`], below), in a fixed order of
//! phases, as Redis's `aeProcessEvents` and nginx's cycle run:
//!
//! ```text
//! poll_once -> for each event: dispatch(event) -> before_sleep()
//! ```
//!
//! 1. [`Server::poll_once`] blocks until a socket is ready, a signal
//!    arrives, or the nearest deadline passes (none: it blocks indefinitely).
//! 2. [`Server::dispatch`]: one `match` on each event's token. The listener
//!    accepts, the signal pipe starts a drain, a connection reads frames,
//!    hands them to the [`Handler`] and writes the replies at once, in the
//!    same turn (only a partial write waits for a writable event).
//! 3. [`Server::before_sleep`]: connections that were paused for
//!    backpressure and have drained, or ran out of read budget, are read
//!    again; expired timers fire; a finished drain ends the loop.
//!
//! Each piece of that work (an event, a resumed read, a timer) runs inside
//! [`Server::work`], which writes out the output it queued and, at
//! `--log-level trace`, narrates it: the one place for both.
//!
//! The life of one echo, from the socket back to the socket:
//!
//! ```text
//! dispatch                    the connection's token came up readable
//!  └ connection_event         (read.rs) still the connection the token names?
//!     ├ read_input            read until a short read, EAGAIN or EOF
//!     │  ├ deliver            cut frames (framing.rs), Handler::on_frame
//!     │  │  └ Context::send   queue the echo, put the connection on the flush list
//!     │  └ flush_replies_of   (write.rs) write each connection on the list;
//!     │     └ write_and_advance  write_pending, wake_waiters_if_drained, advance_close
//!     │                      backed up past the high-water mark? pause the reader
//!     └ write_and_advance     whatever is still pending; move a close along
//! ... later: the peer's EOF (read 0) -> HalfClosed -> output flushed ->
//!     advance_close -> destroy (close.rs): the fd is closed, FIN goes out
//! ```
//!
//! Every socket is registered once, edge-triggered, for READABLE | WRITABLE,
//! and never re-registered. Under edge triggering each wakeup reports the
//! socket's whole readiness (so most events say readable *and* writable),
//! but the kernel wakes us *because of* write space only after it found the
//! send buffer short of room (a write that filled it, or a readiness check
//! that found less than a third of it free). So the standing write interest
//! costs no wakeups of its own, and steady state makes no `epoll_ctl` calls.
//!
//! The rest of the loop lives next door, one concern per file, each an
//! `impl Server` block whose header says what it holds: [`accept`] (and
//! EMFILE), [`read`], [`write`](mod@write) (and backpressure), [`close`], [`drain`]
//! (and signals, and the live upgrade's steps), [`timeouts`], [`observe`] (stats and narration) and
//! [`mailbox`] (a worker of `--workers`). `docs/architecture.md` maps every
//! file of the crate, with the functions to start from.

mod accept;
mod close;
mod drain;
mod mailbox;
mod observe;
mod read;
mod timeouts;
mod write;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{Level, info, log_enabled};
use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::Config;
use crate::connection::{ConnId, Connection};
use crate::fd_limit::fit_fd_limit;
use crate::handler::{Handler, Outgoing};
use crate::io_util::interrupted;
use crate::listener;
use crate::signals;
use crate::stats::Stats;
use crate::timers::Timers;
use crate::upgrade::{UpgradePlan, Upgrader};

pub(crate) use accept::{Acceptor, OpenCount};
pub(crate) use close::abort;
use drain::Drain;
pub use drain::DrainReport;
pub(crate) use mailbox::{DoneCount, Exit, FromWorker, Mailbox, Sleeping, ToWorker};
use observe::Work;
use read::Readiness;

// Reserved tokens. Connection tokens carry a slab key in their low 32 bits
// (see `ConnId::token`), and slab keys stay far below these.
const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
/// A worker's mailbox (the coordinator's wake-ups), with `--workers`.
pub(crate) const MAILBOX: Token = Token(usize::MAX - 2);
/// A live upgrade's readiness channel (`upgrade.rs`).
const UPGRADE: Token = Token(usize::MAX - 3);

/// Events taken from the kernel per `poll`.
const EVENTS_PER_POLL: usize = 1024;
/// The loop's one read buffer, shared by all connections.
const READ_BUFFER: usize = 64 * 1024;
/// Stop reading from a connection once output it caused backs up past this...
const HIGH_WATER: usize = 64 * 1024;
/// ...and start again once that output drains below this.
const LOW_WATER: usize = 16 * 1024;
/// Reads per connection per turn before others get their turn.
const READS_PER_TURN: usize = 16;
/// How long a closing connection (not drain) may take to flush and close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// When accepting fails and cannot be worked around, try again after this
/// (nginx re-enables accept after a delay too).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

// Connection tokens are (serial << 32 | key); they need 64-bit tokens.
const _: () = assert!(usize::BITS >= 64, "reactor-echo needs a 64-bit target");

/// A TCP server on one hand-rolled event loop, serving one [`Handler`].
pub struct Server<H: Handler> {
    poll: Poll,
    /// The listening socket (none in a worker of `--workers`).
    acceptor: Acceptor,
    local_addr: SocketAddr,
    /// The stop signals and SIGUSR1 (none in a worker: the coordinator has them).
    signals: Option<Signals>,
    /// A worker's line to the coordinator (none in a lone loop).
    mailbox: Option<Mailbox>,
    /// SIGUSR2's live upgrade (never used in a worker).
    upgrade: Upgrader,
    conns: Slab<Connection>,
    handler: H,
    config: Config,
    read_buf: Box<[u8]>,
    outgoing: Outgoing,
    /// Connections to read again this turn: unpaused, or out of read budget.
    resume: Vec<ConnId>,
    timers: Timers,
    /// The loop's clock, read once per turn (as libuv's `uv_now`).
    now: Instant,
    next_serial: u32,
    drain: Option<Drain>,
    report: DrainReport,
    stats: Stats,
    /// `--log-level trace` is on: narrate this turn (read once per turn).
    narrating: bool,
}

impl<H: Handler> Server<H> {
    /// Listens on the first of `addrs` that can be bound, and gets ready to
    /// serve. Also takes over SIGTERM, SIGINT, SIGQUIT and SIGHUP (graceful
    /// drain; a second one exits at once) and SIGUSR1 (log statistics), and
    /// raises the open-file limit to fit `config.max_connections`.
    pub fn bind(addrs: &[SocketAddr], config: Config, handler: H) -> io::Result<Self> {
        config.check()?;
        let listener = listener::listen_on_first(addrs, config.backlog, config.send_buffer)?;
        Self::with_listener(listener, config, handler)
    }

    /// Serves on `listener`, a socket that is already listening (one
    /// inherited under socket activation: `activation.rs`), instead of
    /// binding one. Otherwise as [`Server::bind`].
    pub fn from_listener(
        listener: std::net::TcpListener,
        config: Config,
        handler: H,
    ) -> io::Result<Self> {
        config.check()?;
        Self::with_listener(listener::adopt(listener)?, config, handler)
    }

    fn with_listener(mut listener: TcpListener, config: Config, handler: H) -> io::Result<Self> {
        fit_fd_limit(config.max_connections, 1);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        // Signals arrive as ordinary events (`signals.rs`).
        let signals = signals::listen(poll.registry(), SIGNALS)?;
        let local_addr = listener.local_addr()?;
        let mut server = Server::new(poll, local_addr, config, handler);
        server.acceptor = Acceptor::new(Some(listener), server.config.max_connections);
        server.signals = Some(signals);
        Ok(server)
    }

    /// A worker of `--workers`: a loop with no listener and no signals,
    /// fed by the coordinator through `mailbox`, its waker registered with
    /// `poll` under `MAILBOX`.
    ///
    /// With `--accept reuseport`, `listener` is the worker's own, which it
    /// accepts from itself under the process's cap that `open` counts.
    pub(crate) fn worker(
        poll: Poll,
        local_addr: SocketAddr,
        config: Config,
        handler: H,
        mailbox: Mailbox,
        listener: Option<(TcpListener, Arc<OpenCount>)>,
    ) -> io::Result<Self> {
        let mut server = Server::new(poll, local_addr, config, handler);
        server.mailbox = Some(mailbox);
        if let Some((mut listener, open)) = listener {
            server
                .poll
                .registry()
                .register(&mut listener, LISTENER, Interest::READABLE)?;
            server.acceptor = Acceptor::shared(listener, server.config.max_connections, open);
        }
        Ok(server)
    }

    fn new(poll: Poll, local_addr: SocketAddr, config: Config, handler: H) -> Self {
        Server {
            poll,
            local_addr,
            acceptor: Acceptor::new(None, config.max_connections),
            signals: None,
            mailbox: None,
            upgrade: Upgrader::new(UPGRADE),
            conns: Slab::new(),
            handler,
            config,
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            outgoing: Outgoing::default(),
            resume: Vec::new(),
            timers: Timers::default(),
            now: Instant::now(),
            next_serial: 0,
            drain: None,
            report: DrainReport::default(),
            stats: Stats::default(),
            narrating: false,
        }
    }

    /// The address actually bound (with the real port for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Makes SIGUSR2 a live upgrade to `plan` (`upgrade.rs`); without a
    /// plan, SIGUSR2 is logged and ignored.
    pub fn upgrade_with(&mut self, plan: UpgradePlan) {
        self.upgrade.set_plan(plan);
    }

    /// Serves until a signal starts a drain and the drain ends.
    pub fn run(mut self) -> io::Result<DrainReport> {
        let report = self.serve()?;
        info!("stats: {}", self.snapshot());
        Ok(report)
    }

    /// A worker's `run`: serves until its drain ends. It borrows the
    /// server, so that the worker's thread still has it if this panics:
    /// see `abandon` and `worker_exit`.
    pub(crate) fn run_worker(&mut self) -> io::Result<()> {
        self.serve().map(|_| ())
    }

    /// The loop itself: one turn is poll, dispatch each event, then the
    /// work that waits for the end of the turn (Redis's `aeProcessEvents`
    /// and its `beforeSleep`, in nginx's fixed order).
    fn serve(&mut self) -> io::Result<DrainReport> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            self.poll_once(&mut events)?;
            for event in events.iter() {
                self.dispatch(event);
            }
            if let Some(report) = self.before_sleep() {
                return Ok(report);
            }
        }
    }

    /// Waits for events, or the nearest deadline, and reads the clock.
    fn poll_once(&mut self, events: &mut Events) -> io::Result<()> {
        // A worker reads mail that came without a wake-up (`mailbox.rs`).
        let timeout = if self.recheck_mail() {
            Some(Duration::ZERO)
        } else {
            self.poll_timeout()
        };
        let polled = self.poll.poll(events, timeout);
        self.woke_up();
        match polled {
            Ok(()) => {}
            // A signal landed while we slept; its byte is in the
            // socketpair and shows up as an event on the next poll.
            Err(ref e) if interrupted(e) => {}
            Err(e) => return Err(e),
        }
        self.now = Instant::now();
        self.stats.loop_turns += 1;
        // Checked once per turn: narration costs nothing below `trace`.
        self.narrating = log_enabled!(Level::Trace);
        if self.narrating {
            self.narrate_turn(events.iter().count(), timeout);
        }
        Ok(())
    }

    /// One event, one `match` on its token.
    fn dispatch(&mut self, event: &Event) {
        self.stats.events += 1;
        self.work(Work::Event(event), |server| match event.token() {
            LISTENER => server.accept_all(),
            SIGNALS => server.handle_signals(),
            MAILBOX => {
                server.read_mail();
            }
            UPGRADE => server.upgrade_event(),
            token => server.connection_event(ConnId::from_token(token), Readiness::of(event)),
        });
    }

    /// The end of a turn, once every event is handled: read again the
    /// connections that were paused or ran out of read budget, fire the
    /// timers that are due, and end a drain that has finished.
    fn before_sleep(&mut self) -> Option<DrainReport> {
        self.resume_readers();
        self.run_timers();
        self.upgrade_timers();
        self.finish_drain()
    }

    /// Does one piece of the turn's work (an event, a resumed read, a
    /// timer), then writes the output it queued anywhere, so that every
    /// reply goes out before the loop moves on. At `--log-level trace`,
    /// narrates what it did: the one place the loop's work is narrated.
    fn work(&mut self, what: Work<'_>, act: impl FnOnce(&mut Self)) {
        let before = self.narrating.then_some(self.stats);
        act(self);
        self.flush_all();
        if let Some(before) = before {
            self.narrate(what, &before);
        }
    }

    /// Time until the nearest deadline; `None` (block indefinitely) if none.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.resume.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = [
            self.timers.next_deadline(),
            self.acceptor.paused_until(),
            self.drain.map(|d| d.deadline),
            self.upgrade.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(next.saturating_duration_since(Instant::now()))
    }

    /// The connection `id` names, if it is still open: its slab slot must
    /// hold the same serial, not a newer connection that reused the slot.
    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        self.conns.get_mut(id.key()).filter(|c| c.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_tokens_never_name_a_slab_slot() {
        for token in [LISTENER, SIGNALS, MAILBOX, UPGRADE] {
            assert!(ConnId::from_token(token).key() >= Config::MAX_CONNECTIONS_LIMIT);
        }
        let id = ConnId {
            key: 7,
            serial: u32::MAX,
        };
        assert_eq!(ConnId::from_token(id.token()), id);
    }
}
