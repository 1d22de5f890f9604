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

use log::{debug, info, warn};
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

    /// Says, at `info`, that `id` is being cut off, and how far it had
    /// got: its peer, its state, the bytes still queued here, the bytes in
    /// the kernel not yet acknowledged, and the send window and MSS from
    /// `TCP_INFO`, so an operator can tell a client that stopped reading
    /// from one that was merely slow. `when` follows "cut off": empty for
    /// the drain's deadline, or which deadline it was. The one place this
    /// line is written: the drain and a close deadline both call it.
    pub(super) fn log_cut_off(&mut self, id: ConnId, when: &str) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let peer = conn
            .stream
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        let unacked = sys::unacked_bytes(&conn.stream).unwrap_or(0);
        info!(
            "{id} from {peer} cut off{when}: {}, {} bytes unsent, {unacked} sent but not acknowledged{}",
            conn.state,
            conn.output.len(),
            tcp_send_state(&conn.stream)
        );
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

/// The end of a cut-off connection's log line: the peer's receive window
/// and our MSS from `TCP_INFO`, and what they mean when the window is the
/// reason the output could not be delivered. A window of 0 is a peer that
/// stopped reading. A window above 0 but below the MSS is a peer that
/// reads, yet whose kernel offers less than one full segment: the sender
/// then waits for the persist timer (about 200 ms) before each segment,
/// a few KiB/s (a receiver that set a small `SO_RCVBUF` before connecting
/// can end up there; see `docs/shutdown.md`).
fn tcp_send_state(stream: &mio::net::TcpStream) -> String {
    sys::send_state(stream).map_or_else(|_| String::new(), |state| describe_send_state(&state))
}

fn describe_send_state(state: &sys::SendState) -> String {
    let mss = state.mss;
    let in_flight = state.unacked_segments;
    match state.window {
        None => format!("; TCP_INFO: MSS {mss} B, {in_flight} segments in flight"),
        Some(0) => format!(
            "; TCP_INFO: send window 0 B, MSS {mss} B, {in_flight} segments in flight: \
             the peer is not reading"
        ),
        Some(window) if window < mss => format!(
            "; TCP_INFO: send window {window} B, MSS {mss} B, {in_flight} segments in flight: \
             the window is below the MSS, so each segment waits for the persist timer"
        ),
        Some(window) => format!(
            "; TCP_INFO: send window {window} B, MSS {mss} B, {in_flight} segments in flight"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_line_names_a_shut_window_and_one_below_the_mss() {
        let state = |window, mss| sys::SendState {
            window,
            mss,
            unacked_segments: 1,
        };
        // The throttled state of docs/reliability.md: 1952 offered, 2048 MSS.
        assert_eq!(
            describe_send_state(&state(Some(1952), 2048)),
            "; TCP_INFO: send window 1952 B, MSS 2048 B, 1 segments in flight: \
             the window is below the MSS, so each segment waits for the persist timer"
        );
        assert!(describe_send_state(&state(Some(0), 2048)).ends_with(": the peer is not reading"));
        assert_eq!(
            describe_send_state(&state(Some(65536), 2048)),
            "; TCP_INFO: send window 65536 B, MSS 2048 B, 1 segments in flight"
        );
        assert_eq!(
            describe_send_state(&state(None, 2048)),
            "; TCP_INFO: MSS 2048 B, 1 segments in flight"
        );
    }
}
