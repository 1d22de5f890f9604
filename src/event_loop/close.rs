//! Closing a connection without losing a byte: the lingering close, FIN,
//! RST for a connection we give up on, and `destroy`, the one place a
//! connection is removed.
//!
//! Closing a socket that still has unread input, or that receives data
//! after `close`, makes the kernel send RST and throw away output not yet
//! delivered. So a closing connection reads and discards, flushes, sends FIN
//! with `shutdown(Write)`, and is closed only when nothing can be lost. See
//! `docs/shutdown.md`.

use std::io;
use std::net::Shutdown;
use std::time::Duration;

use log::{debug, warn};
use mio::net::TcpStream;

use super::{CLOSE_TIMEOUT, Server};
use crate::connection::{CloseReason, ConnId, Connection, State};
use crate::handler::{Context, Handler};
use crate::sys;
use crate::timers::Timer;

/// How a connection ended, for logs and the drain summary.
#[derive(Debug)]
pub(super) enum Ending {
    /// Everything we owed was delivered and acknowledged (or the peer left).
    Clean,
    /// We gave up on it: a deadline passed with output not yet delivered.
    CutOff,
    /// The socket failed: the peer reset it, or it vanished.
    Failed(io::Error),
}

/// Makes the coming close abortive: with `SO_LINGER` set to zero seconds,
/// `close` discards unsent data and sends RST instead of FIN (TCP's ABORT).
/// Used when we give up on a connection that is still owed output: a FIN
/// after a truncated echo would tell the client that the stream ended
/// normally, which is a lie; RST tells it that the server gave up on it.
pub(crate) fn abort(stream: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        debug!("SO_LINGER for an abortive close: {e}");
    }
}

impl<H: Handler> Server<H> {
    /// Starts closing `id` ourselves. Its unfinished input frame is dropped;
    /// output already queued is still delivered.
    pub(super) fn begin_close(&mut self, id: ConnId, reason: CloseReason) {
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
    pub(super) fn close_progress(&mut self, id: ConnId) -> io::Result<bool> {
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

    /// Removes `id` and closes its socket. One cut off with output still
    /// undelivered is reset (see `abort`); every other one gets a FIN. Dropping the stream closes the
    /// fd, which also takes it out of the epoll set: no `epoll_ctl` needed.
    pub(super) fn destroy(&mut self, id: ConnId, how: Ending) {
        if self.conn_mut(id).is_none() {
            return;
        }
        let conn = self.conns.remove(id.key());
        self.stats.closed += 1;
        self.count_done();
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

    /// After this worker's loop panicked (or its poll failed): resets every
    /// connection it holds, and counts them in `reset_after_panic`.
    ///
    /// Every one is reset, not only those with output waiting here: the
    /// connection whose frame was being handled has no output queued (its
    /// reply was never made), the frames after it in the same read are gone,
    /// and the handler's state for all of them is lost. A FIN would tell each
    /// client that the server finished with it; RST says that it gave up.
    ///
    /// The panic may have left this server half way through a change (a
    /// frame half handled, a connection half closed), so this does as little
    /// as it can, and relies on nothing but the slab itself, whose own
    /// structure a panic cannot break (safe Rust: unwinding leaves memory
    /// valid, only our invariants may be off). It calls no handler, writes
    /// nothing, touches no timer and no epoll registration: it sets
    /// `SO_LINGER` to zero on each socket and closes it (closing also takes
    /// it out of the poll).
    pub(crate) fn abandon(&mut self) {
        let conns = std::mem::take(&mut self.conns);
        let n = conns.len() as u64;
        for (_, conn) in conns {
            abort(&conn.stream);
        }
        self.stats.closed += n;
        self.report.reset_after_panic += n;
        self.acceptor.release(n as usize);
        if n > 0 {
            warn!("reset the {n} connections this worker held: it can no longer serve them");
        }
    }
}
