//! The event loop: one thread, one `mio::Poll`, every socket in it.
//!
//! This is the heart of the project, in the style of Redis's `ae.c`: wait for
//! readiness, dispatch on the token, do the work, repeat. Try it:
//!
//! ```text
//! make run                     # serves on 127.0.0.1:8000
//! nc 127.0.0.1 8000            # type lines, get them back
//! kill -TERM <pid>             # graceful drain
//! reactor-echo --log-level trace   # the loop narrates every event
//! ```
//!
//! One turn of the loop:
//! 1. `poll` blocks until a socket is ready, a signal arrives, or the nearest
//!    deadline passes (none: it blocks indefinitely).
//! 2. For each event: the listener accepts, the signal pipe starts a drain,
//!    a connection reads frames, hands them to the [`Handler`] and writes
//!    the replies at once, in the same turn (only a partial write waits
//!    for a writable event).
//! 3. Connections that were paused for backpressure and have drained are
//!    read again; expired timers fire; a finished drain ends the loop.
//!
//! Every socket is registered once, edge-triggered, for READABLE | WRITABLE,
//! and never re-registered: under edge triggering a writable event only
//! comes after a full send buffer drains, so the standing interest costs
//! nothing, and steady state makes no `epoll_ctl` calls at all.

use std::fs::File;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use log::{Level, debug, error, info, log_enabled, trace, warn};
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::Config;
use crate::connection::{CloseReason, ConnId, Connection, State};
use crate::fd_limit::fit_fd_limit;
use crate::framing::FrameAssembler;
use crate::handler::{Context, Handler, Outgoing};
use crate::io_util::{interrupted, would_block};
use crate::listener;
use crate::stats::{Snapshot, Stats};
use crate::sys;
use crate::throttle::Throttle;
use crate::timers::{Timer, Timers};

// Reserved tokens. Connection tokens carry a slab key in their low 32 bits
// (see `ConnId::token`), and slab keys stay far below these.
const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);

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

/// How a connection ended, for logs and the drain summary.
#[derive(Debug)]
enum Ending {
    /// Everything we owed was delivered and acknowledged (or the peer left).
    Clean,
    /// We gave up on it: a deadline passed with output not yet delivered.
    CutOff,
    /// The socket failed: the peer reset it, or it vanished.
    Failed(io::Error),
}

/// The parts of a readiness event the loop acts on.
#[derive(Clone, Copy, Debug, Default)]
struct Readiness {
    readable: bool,
    writable: bool,
    /// The peer's FIN has arrived (EPOLLRDHUP), or the socket hung up.
    read_closed: bool,
    error: bool,
}

impl Readiness {
    fn of(event: &Event) -> Self {
        Readiness {
            readable: event.is_readable(),
            writable: event.is_writable(),
            read_closed: event.is_read_closed(),
            error: event.is_error(),
        }
    }
}

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

/// Graceful shutdown in progress.
#[derive(Clone, Copy, Debug)]
struct Drain {
    deadline: Instant,
    /// A second signal came: stop now.
    forced: bool,
}

/// What a drain achieved: `run` returns it when the server stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections that got all their output and a FIN.
    pub closed_cleanly: u64,
    /// Connections closed with output undelivered, at the deadline or on a
    /// second signal.
    pub cut_off: u64,
    /// Connections that failed on their own (reset by the peer) during the drain.
    pub failed: u64,
    /// The drain was ended early by a second signal.
    pub forced: bool,
}

impl DrainReport {
    /// Whether every connection got everything it was owed.
    pub fn is_complete(&self) -> bool {
        self.cut_off == 0
    }
}

/// A TCP server on one hand-rolled event loop, serving one [`Handler`].
pub struct Server<H: Handler> {
    poll: Poll,
    /// `None` once draining: the listening socket is closed at once.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Signals,
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
    /// An fd held in reserve, released to shed clients when fds run out.
    spare_fd: Option<File>,
    accept_paused_until: Option<Instant>,
    drain: Option<Drain>,
    report: DrainReport,
    stats: Stats,
    over_capacity_log: Throttle,
    out_of_fds_log: Throttle,
}

impl<H: Handler> Server<H> {
    /// Listens on the first of `addrs` that can be bound, and gets ready to
    /// serve. Also takes over SIGTERM, SIGINT, SIGQUIT and SIGHUP (graceful
    /// drain; a second one exits at once) and SIGUSR1 (log statistics), and
    /// raises the open-file limit to fit `config.max_connections`.
    pub fn bind(addrs: &[SocketAddr], config: Config, handler: H) -> io::Result<Self> {
        config
            .validate()
            .map_err(|msg| io::Error::new(io::ErrorKind::InvalidInput, msg))?;
        let mut last_err = io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on");
        for addr in addrs {
            match listener::listen(*addr, config.backlog, config.send_buffer) {
                Ok(listener) => return Self::with_listener(listener, config, handler),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    fn with_listener(mut listener: TcpListener, config: Config, handler: H) -> io::Result<Self> {
        fit_fd_limit(config.max_connections);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        // signal-hook's handler writes to a pipe; the pipe's read end is a
        // source like any socket, so signals arrive as ordinary events.
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Server {
            poll,
            local_addr: listener.local_addr()?,
            listener: Some(listener),
            signals,
            conns: Slab::new(),
            handler,
            config,
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            outgoing: Outgoing::default(),
            resume: Vec::new(),
            timers: Timers::default(),
            now: Instant::now(),
            next_serial: 0,
            spare_fd: File::open("/dev/null").ok(),
            accept_paused_until: None,
            drain: None,
            report: DrainReport::default(),
            stats: Stats::default(),
            over_capacity_log: Throttle::new(Duration::from_secs(1)),
            out_of_fds_log: Throttle::new(Duration::from_secs(1)),
        })
    }

    /// The address actually bound (with the real port for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until a signal starts a drain and the drain ends.
    pub fn run(mut self) -> io::Result<DrainReport> {
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                // A signal landed while we slept; its byte is in the pipe and
                // shows up as an event on the next poll.
                Err(ref e) if interrupted(e) => {}
                Err(e) => return Err(e),
            }
            self.now = Instant::now();
            self.stats.loop_turns += 1;
            // Checked once per turn: narration costs nothing below `trace`.
            let narrate = log_enabled!(Level::Trace);
            if narrate {
                let n = events.iter().count();
                trace!(
                    "turn {}: {n} events (timeout {timeout:?})",
                    self.stats.loop_turns
                );
            }
            for event in events.iter() {
                self.stats.events += 1;
                let before = narrate.then_some(self.stats);
                match event.token() {
                    LISTENER => self.accept_all(),
                    SIGNALS => self.handle_signals(),
                    token => self.connection_event(ConnId::from_token(token), Readiness::of(event)),
                }
                self.flush_dirty(None);
                if let Some(before) = before {
                    self.narrate(event, &before);
                }
            }
            self.resume_readers();
            self.run_timers();
            if let Some(report) = self.finish_drain() {
                info!("stats: {}", self.snapshot());
                return Ok(report);
            }
        }
    }

    /// Time until the nearest deadline; `None` (block indefinitely) if none.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.resume.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = [
            self.timers.next_deadline(),
            self.accept_paused_until,
            self.drain.map(|d| d.deadline),
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(next.saturating_duration_since(Instant::now()))
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        self.conns.get_mut(id.key()).filter(|c| c.id == id)
    }

    // ---------------------------------------------------------------- accept

    /// Accepts every waiting connection. Edge-triggered: the listener fires
    /// once for any number of them, so accept until `WouldBlock`.
    fn accept_all(&mut self) {
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

    // --------------------------------------------------------------- signals

    /// Reads every signal that arrived since the last event. Each stop
    /// signal counts: the first starts the drain, any other forces the exit,
    /// even when both arrive in one batch (`kill -TERM` then `kill -INT` at
    /// once). signal-hook reports each kind of signal once per batch, as the
    /// kernel does for pending signals: two SIGTERMs this close are one.
    fn handle_signals(&mut self) {
        let mut report_stats = false;
        let mut stops = Vec::new();
        for signal in self.signals.pending() {
            match signal {
                SIGUSR1 => report_stats = true,
                other => stops.push(signal_hook::low_level::signal_name(other).unwrap_or("signal")),
            }
        }
        if report_stats {
            info!("stats: {}", self.snapshot());
        }
        for name in stops {
            match &mut self.drain {
                None => self.start_drain(name),
                Some(drain) => {
                    warn!("{name} during the drain: exiting now");
                    drain.forced = true;
                }
            }
        }
    }

    /// Graceful shutdown: stop listening, stop taking input, deliver what is
    /// owed, close every connection cleanly, all under one deadline.
    fn start_drain(&mut self, signal: &str) {
        // Closing the listener at once: new connects are refused, and clients
        // still waiting in its backlog are reset, never served.
        self.listener = None;
        self.accept_paused_until = None;
        self.drain = Some(Drain {
            deadline: self.now + self.config.drain_timeout,
            forced: false,
        });
        info!(
            "{signal}: draining {} connections (deadline {:?}); send it again to exit at once",
            self.conns.len(),
            self.config.drain_timeout
        );
        // O(connections), once per process: fine.
        let ids: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for id in ids {
            self.begin_close(id, CloseReason::Drain);
            self.settle(id);
        }
    }

    /// Ends the drain once every connection is done, or cuts off the rest
    /// at the deadline or on a second signal.
    fn finish_drain(&mut self) -> Option<DrainReport> {
        let drain = self.drain?;
        if !self.conns.is_empty() && !drain.forced && self.now < drain.deadline {
            return None;
        }
        let ids: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for id in ids {
            self.destroy(id, Ending::CutOff);
        }
        self.report.forced = drain.forced;
        let r = self.report;
        info!(
            "drain {}: {} connections closed cleanly, {} cut off, {} failed",
            if r.is_complete() {
                "complete"
            } else {
                "incomplete"
            },
            r.closed_cleanly,
            r.cut_off,
            r.failed
        );
        Some(r)
    }

    // ----------------------------------------------------------- connections

    fn connection_event(&mut self, id: ConnId, ready: Readiness) {
        // As Redis's ae.c does, "check if the event is still valid": a slab key
        // freed earlier in this batch (maybe already given to a new
        // connection) can still have an event waiting in `events`. The serial
        // in the token tells the old connection from the new one.
        let Some(conn) = self.conn_mut(id) else {
            trace!("{id}: stale event ignored");
            return;
        };
        if ready.writable {
            conn.write_ready = true;
        }
        if ready.error {
            // mio calls readiness flags hints; take_error says for sure.
            match conn.stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.destroy(id, Ending::Failed(e)),
            }
        }
        if ready.readable || ready.read_closed {
            self.read_input(id, ready.read_closed);
        }
        // Writable (a full send buffer drained, or our FIN was acknowledged)
        // or not: write what is pending and move a close along.
        self.settle(id);
    }

    /// Reads, cuts frames, hands them to the handler and writes the replies.
    ///
    /// mio's contract for edge-triggered readiness: "the operation must be
    /// performed repeatedly until it returns WouldBlock. Unless this is done,
    /// there is no guarantee that another readiness event will be delivered."
    /// We keep it, with one exception that saves a syscall per message: a
    /// short read (less than the buffer) means the receive queue was empty
    /// at that moment, and any byte that arrives later makes a new edge, so
    /// the read that would only return EAGAIN is skipped (as tokio and Netty
    /// do). That is unsafe in one case: if the peer's FIN is already queued
    /// (read-closed), no further edge will come, so then we read on to EOF.
    /// `until_would_block` asks for that, and also after a pause, when data
    /// may have queued up with its edge long gone.
    fn read_input(&mut self, id: ConnId, until_would_block: bool) {
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(id.key()).filter(|c| c.id == id) else {
                return;
            };
            // Backpressured: resumed later. Closing: `settle` reads and
            // discards. Half-closed: nothing more can come.
            if conn.state != State::Open {
                return;
            }
            let n = match conn.stream.read(&mut self.read_buf) {
                Ok(0) => return self.peer_closed(id),
                Ok(n) => n,
                Err(ref e) if would_block(e) => return,
                Err(ref e) if interrupted(e) => continue,
                Err(e) => return self.destroy(id, Ending::Failed(e)),
            };
            conn.last_active = self.now;
            self.stats.bytes_in += n as u64;
            self.deliver(id, n);
            // Write the replies now, in the same turn that read the request.
            self.flush_dirty(Some(id));
            if n < self.read_buf.len() && !until_would_block {
                return;
            }
        }
        // Read budget spent and there may be more: come back after the
        // others, so one busy client cannot starve the rest.
        self.resume.push(id);
    }

    /// Hands the frames completed by the `n` bytes just read to the handler.
    fn deliver(&mut self, id: ConnId, n: usize) {
        let Self {
            conns,
            handler,
            outgoing,
            read_buf,
            stats,
            config,
            ..
        } = self;
        let Some(conn) = conns.get_mut(id.key()) else {
            return;
        };
        // Take the assembler out so the handler may borrow every connection,
        // this one included. An empty assembler allocates nothing.
        let empty = FrameAssembler::new(config.framing, config.max_frame);
        let mut input = std::mem::replace(&mut conn.input, empty);
        let mut ctx = Context::new(conns, outgoing);
        // In bounds: `n` came from `read` into this very buffer.
        let result = input.push(&read_buf[..n], |frame| {
            stats.frames += 1;
            handler.on_frame(&mut ctx, id, frame);
            if ctx.close_requested(id) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        if let Some(conn) = self.conn_mut(id) {
            conn.input = input;
        }
        if let Err(too_long) = result {
            let peer = self
                .conn_mut(id)
                .and_then(|c| c.stream.peer_addr().ok())
                .map_or_else(|| "?".to_string(), |a| a.to_string());
            warn!("{id} from {peer}: {too_long}; closing that connection");
            self.begin_close(id, CloseReason::FrameTooLong);
        }
    }

    /// The peer sent EOF. 拆包 at the end of the stream: a partial frame can
    /// never complete, so it is dropped, never echoed.
    fn peer_closed(&mut self, id: ConnId) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if conn.input.buffered() > 0 {
            debug!(
                "{id} EOF after {} bytes of an unfinished frame: dropped",
                conn.input.buffered()
            );
        }
        conn.input.discard();
        conn.state = State::HalfClosed;
        debug!("{id} peer closed its side");
    }

    /// Writes what each connection with new output has pending. `sender`
    /// is the connection whose frames produced that output: if it backed up
    /// anywhere past the high-water mark, stop reading from the sender.
    fn flush_dirty(&mut self, sender: Option<ConnId>) {
        while let Some(id) = self.outgoing.dirty.pop() {
            let Some(conn) = self.conn_mut(id) else {
                continue;
            };
            conn.dirty = false;
            if conn.close_requested {
                self.begin_close(id, CloseReason::Handler);
            }
            self.settle(id);
            if let Some(sender) = sender {
                self.pause_if_backed_up(id, sender);
            }
        }
    }

    /// Backpressure: if `full`'s output is past the high-water mark, pause
    /// `sender` until it drains (echo: `full` and `sender` are the same).
    fn pause_if_backed_up(&mut self, full: ConnId, sender: ConnId) {
        let Some(conn) = self.conn_mut(full) else {
            return;
        };
        if conn.output.len() <= HIGH_WATER {
            return;
        }
        if !conn.waiters.contains(&sender) {
            conn.waiters.push(sender);
        }
        if let Some(s) = self.conn_mut(sender)
            && s.state == State::Open
        {
            s.state = State::Backpressured;
            debug!("{sender} backpressured: output of {full} is over {HIGH_WATER} bytes");
        }
    }

    /// Resumes connections that were paused on output which has now drained.
    fn wake_waiters(&mut self, waiters: Vec<ConnId>) {
        for w in waiters {
            if let Some(conn) = self.conn_mut(w)
                && conn.state == State::Backpressured
            {
                conn.state = State::Open;
                debug!("{w} resumed");
                self.resume.push(w);
            }
        }
    }

    /// Reads again from connections that were paused or out of budget.
    /// Edge-triggered: their data may have been waiting since an event we
    /// did not act on, and no new event will come for it. Read it ourselves.
    fn resume_readers(&mut self) {
        let ids = std::mem::take(&mut self.resume);
        for id in ids {
            self.read_input(id, true);
            self.settle(id);
            self.flush_dirty(None);
        }
    }

    /// Writes `id`'s pending output and moves its close along; the one place
    /// where a connection that is done is removed.
    fn settle(&mut self, id: ConnId) {
        let Self {
            conns,
            outgoing,
            stats,
            now,
            ..
        } = self;
        let Some(conn) = conns.get_mut(id.key()).filter(|c| c.id == id) else {
            return;
        };
        match conn.write_out(&mut outgoing.spare) {
            Ok(0) => {}
            Ok(n) => {
                stats.bytes_out += n as u64;
                conn.last_active = *now;
            }
            Err(e) => return self.destroy(id, Ending::Failed(e)),
        }
        if conn.output.len() <= LOW_WATER && !conn.waiters.is_empty() {
            let waiters = std::mem::take(&mut conn.waiters);
            self.wake_waiters(waiters);
        }
        match self.close_progress(id) {
            Ok(false) => {}
            Ok(true) => self.destroy(id, Ending::Clean),
            Err(e) => self.destroy(id, Ending::Failed(e)),
        }
    }

    /// Whether `id` can now be closed without losing anything.
    ///
    /// Closing a TCP socket that still has unread input makes the kernel
    /// send RST instead of FIN, and throw away output not yet sent; data that
    /// arrives after close does the same. So a closing connection reads and
    /// discards its input, flushes its output, sends FIN with
    /// `shutdown(Write)`, and is closed only once the peer's EOF has arrived
    /// (nothing more can come) or the peer has acknowledged every byte and
    /// the FIN (`SIOCOUTQ` is 0: it holds all we sent, so even a late RST
    /// cannot take anything from it). nginx calls this a lingering close.
    fn close_progress(&mut self, id: ConnId) -> io::Result<bool> {
        let Self {
            conns, read_buf, ..
        } = self;
        let Some(conn) = conns.get_mut(id.key()) else {
            return Ok(false);
        };
        match conn.state {
            State::Open | State::Backpressured => Ok(false),
            // The peer sent FIN and can send nothing more: once our output
            // is in the kernel, close() delivers it and then a FIN.
            State::HalfClosed => Ok(conn.output.is_empty()),
            State::Closing {
                reason,
                mut fin_sent,
                mut peer_eof,
            } => {
                if !peer_eof {
                    peer_eof = conn.discard_input(read_buf)?;
                }
                if conn.output.is_empty() && !fin_sent {
                    conn.stream.shutdown(Shutdown::Write)?;
                    fin_sent = true;
                }
                conn.state = State::Closing {
                    reason,
                    fin_sent,
                    peer_eof,
                };
                Ok(fin_sent
                    && (peer_eof || sys::unacked_bytes(&conn.stream).map_or(true, |n| n == 0)))
            }
        }
    }

    /// Starts closing `id` ourselves. Its unfinished input frame is dropped;
    /// output already queued is still delivered.
    fn begin_close(&mut self, id: ConnId, reason: CloseReason) {
        let now = self.now;
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let peer_eof = match conn.state {
            State::Open | State::Backpressured => false,
            State::HalfClosed => true,
            State::Closing { .. } => return,
        };
        conn.input.discard();
        conn.state = State::Closing {
            reason,
            fin_sent: false,
            peer_eof,
        };
        debug!("{id} closing: {reason}");
        // A drain has its own deadline, for all connections at once.
        if reason != CloseReason::Drain {
            self.timers
                .push(now + CLOSE_TIMEOUT, Timer::CloseDeadline(id));
        }
    }

    /// Removes `id` and closes its socket. One cut off with output still
    /// undelivered is reset (see `abort`); every other one gets a FIN. Dropping the stream closes the
    /// fd, which also takes it out of the epoll set: no `epoll_ctl` needed.
    fn destroy(&mut self, id: ConnId, how: Ending) {
        if self.conn_mut(id).is_none() {
            return;
        }
        let conn = self.conns.remove(id.key());
        self.stats.closed += 1;
        match &how {
            Ending::Clean => debug!("{id} closed"),
            Ending::CutOff => debug!(
                "{id} cut off ({}, {} bytes unsent)",
                conn.state,
                conn.output.len()
            ),
            Ending::Failed(e) => debug!("{id} failed: {e}"),
        }
        if self.drain.is_some() {
            match how {
                Ending::Clean => self.report.closed_cleanly += 1,
                Ending::CutOff => self.report.cut_off += 1,
                Ending::Failed(_) => self.report.failed += 1,
            }
        }
        let Connection {
            stream,
            waiters,
            output,
            ..
        } = conn;
        if matches!(how, Ending::CutOff) && !output.is_empty() {
            abort(&stream);
        }
        drop(stream);
        self.wake_waiters(waiters);
        self.handler
            .on_close(&mut Context::new(&mut self.conns, &mut self.outgoing), id);
    }

    // ---------------------------------------------------------------- timers

    fn run_timers(&mut self) {
        if self.accept_paused_until.is_some_and(|at| at <= self.now) {
            self.accept_paused_until = None;
            self.accept_all();
        }
        while let Some(timer) = self.timers.pop_expired(self.now) {
            match timer {
                Timer::Idle(id) => self.idle_check(id),
                Timer::CloseDeadline(id) => {
                    if self.conn_mut(id).is_some() {
                        debug!("{id} did not finish closing in {CLOSE_TIMEOUT:?}");
                        self.destroy(id, Ending::CutOff);
                    }
                }
            }
            self.flush_dirty(None);
        }
        let conns = &self.conns;
        self.timers.compact(conns.len(), |id| {
            conns.get(id.key()).is_some_and(|c| c.id == id)
        });
    }

    /// An idle deadline came up: close the connection if it really was idle
    /// all that time, or set the timer again for its real deadline.
    fn idle_check(&mut self, id: ConnId) {
        let (Some(idle), now) = (self.config.idle_timeout, self.now) else {
            return;
        };
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if matches!(conn.state, State::Closing { .. }) {
            return;
        }
        let due = conn.last_active + idle;
        if due > now {
            self.timers.push(due, Timer::Idle(id));
            return;
        }
        debug!("{id} idle for {idle:?}");
        self.begin_close(id, CloseReason::IdleTimeout);
        self.settle(id);
    }

    // ---------------------------------------------------------- observation

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            totals: self.stats,
            open: self.conns.len(),
            // O(connections), only when asked for: fine.
            backpressured: self
                .conns
                .iter()
                .filter(|(_, c)| c.state == State::Backpressured)
                .count(),
        }
    }

    /// One trace line per event: what the loop saw and what it did.
    fn narrate(&mut self, event: &Event, before: &Stats) {
        let mut ready = String::new();
        for (flag, name) in [
            (event.is_readable(), "R"),
            (event.is_writable(), "W"),
            (event.is_read_closed(), "rdhup"),
            (event.is_write_closed(), "hup"),
            (event.is_error(), "err"),
        ] {
            if flag {
                if !ready.is_empty() {
                    ready.push('|');
                }
                ready.push_str(name);
            }
        }
        let s = &self.stats;
        let (read, wrote, frames) = (
            s.bytes_in - before.bytes_in,
            s.bytes_out - before.bytes_out,
            s.frames - before.frames,
        );
        match event.token() {
            LISTENER => trace!(
                "  listener {ready}: accepted {}",
                s.accepted - before.accepted
            ),
            SIGNALS => trace!("  signals {ready}"),
            token => {
                let id = ConnId::from_token(token);
                let after = match self.conn_mut(id) {
                    Some(c) => format!("{} B pending, {}", c.output.len(), c.state),
                    None => "closed".to_string(),
                };
                trace!(
                    "  {id} (key {}) {ready}: read {read} B, {frames} frames, wrote {wrote} B; {after}",
                    id.key()
                );
            }
        }
    }
}

/// Makes the coming close abortive: with `SO_LINGER` set to zero seconds,
/// `close` discards unsent data and sends RST instead of FIN (TCP's ABORT).
/// Used when we give up on a connection that is still owed output: a FIN
/// after a truncated echo would tell the client that the stream ended
/// normally, which is a lie; RST tells it that the server gave up on it.
fn abort(stream: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        debug!("SO_LINGER for an abortive close: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Echo;
    use std::io::Write;

    fn server() -> Server<Echo> {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        Server::bind(&[addr], Config::default(), Echo).unwrap()
    }

    /// Accepts the next client to arrive in the backlog; returns its id.
    fn accept_one(server: &mut Server<Echo>) -> ConnId {
        let before = server.stats.accepted;
        let give_up = Instant::now() + Duration::from_secs(10);
        while server.stats.accepted == before {
            assert!(Instant::now() < give_up, "no client arrived");
            server.accept_all();
            std::thread::sleep(Duration::from_millis(1));
        }
        server
            .conns
            .iter()
            .map(|(_, c)| c.id)
            .max_by_key(|id| id.serial)
            .unwrap()
    }

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

    #[test]
    fn reserved_tokens_never_name_a_slab_slot() {
        for token in [LISTENER, SIGNALS] {
            assert!(ConnId::from_token(token).key() >= Config::MAX_CONNECTIONS_LIMIT);
        }
        let id = ConnId {
            key: 7,
            serial: u32::MAX,
        };
        assert_eq!(ConnId::from_token(id.token()), id);
    }

    #[test]
    fn stale_event_for_a_reused_slot_is_ignored() {
        let mut server = server();
        let addr = server.local_addr();
        let first = std::net::TcpStream::connect(addr).unwrap();
        let old = accept_one(&mut server);
        drop(first);
        server.destroy(old, Ending::Clean);

        let mut second = std::net::TcpStream::connect(addr).unwrap();
        let new = accept_one(&mut server);
        assert_eq!(new.key, old.key, "the slab reuses the freed slot");
        assert_ne!(new.serial, old.serial);
        second.write_all(b"hello\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));

        // An event still carrying the old connection's token (left over in
        // the same batch) must not touch the connection now in its slot.
        let everything = Readiness {
            readable: true,
            writable: true,
            read_closed: true,
            error: true,
        };
        server.connection_event(old, everything);
        assert_eq!(server.stats.bytes_in, 0);
        assert_eq!(server.conns[new.key()].state, State::Open);

        // The new connection's own event is served.
        server.connection_event(
            new,
            Readiness {
                readable: true,
                ..Readiness::default()
            },
        );
        assert_eq!(server.stats.bytes_in, 6);
        assert_eq!(server.stats.bytes_out, 6);
    }
}
