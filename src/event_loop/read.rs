//! A connection's readiness event: reading, cutting frames, handing them to
//! the handler, the peer's EOF, and reading again after a pause.
//!
//! This is where mio's edge-triggered contract matters most ("until
//! WouldBlock"), and where the loop deliberately stops early after a short
//! read; `read_input` says why that is safe. See `docs/syscalls.md` for the
//! syscalls this makes and `docs/framing.md` for the frames.

use std::io::Read;
use std::ops::ControlFlow;
use std::os::fd::AsRawFd;

use log::{debug, trace, warn};
use mio::event::Event;

use super::close::Ending;
use super::{READS_PER_TURN, Server, Work};
use crate::connection::{CloseReason, ConnId, State};
use crate::framing::FrameAssembler;
use crate::handler::{Context, Handler};
use crate::io_util::{interrupted, would_block};

/// The parts of a readiness event the loop acts on.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Readiness {
    readable: bool,
    writable: bool,
    /// The peer's FIN has arrived (EPOLLRDHUP), or the socket hung up.
    read_closed: bool,
    error: bool,
}

impl Readiness {
    pub(super) fn of(event: &Event) -> Self {
        Readiness {
            readable: event.is_readable(),
            writable: event.is_writable(),
            read_closed: event.is_read_closed(),
            error: event.is_error(),
        }
    }
}

impl<H: Handler> Server<H> {
    /// One readiness event for a connection: check it is still the one the
    /// token names, then read (and answer) what arrived, and write or close.
    pub(super) fn connection_event(&mut self, id: ConnId, ready: Readiness) {
        // As Redis's ae.c does, "check if the event is still valid": a slab key
        // freed earlier in this batch (maybe already given to a new
        // connection) can still have an event waiting in `events`. The serial
        // in the token tells the old connection from the new one.
        let Some(conn) = self.conn_mut(id) else {
            trace!("{id}: stale event ignored");
            return;
        };
        if ready.writable {
            conn.flags.write_ready = true;
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
        self.write_and_advance(id);
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
            // Backpressured: resumed later. Closing: `close_progress` reads
            // and discards. Half-closed: nothing more can come.
            if conn.state != State::Open {
                trace!("    {id}: not read ({})", conn.state);
                return;
            }
            let n = match conn.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    trace!("    {id} fd {}: read 0 B: EOF", conn.stream.as_raw_fd());
                    return self.peer_closed(id);
                }
                Ok(n) => n,
                Err(ref e) if would_block(e) => {
                    trace!("    {id} fd {}: read: EAGAIN", conn.stream.as_raw_fd());
                    return;
                }
                Err(ref e) if interrupted(e) => continue,
                Err(e) => return self.destroy(id, Ending::Failed(e)),
            };
            let short = n < self.read_buf.len();
            trace!(
                "    {id} fd {}: read {n} B{}",
                conn.stream.as_raw_fd(),
                match (short, until_would_block) {
                    (false, _) => " (a full buffer: read again)",
                    (true, false) =>
                        " (short: the queue is empty; stop, the next byte makes a new edge)",
                    (true, true) => " (short, but read on to EAGAIN or EOF)",
                }
            );
            conn.last_active = self.now;
            self.stats.bytes_in += n as u64;
            self.deliver(id, n);
            // Write the replies now, in the same turn that read the request.
            self.flush_replies_of(id);
            if short && !until_would_block {
                return;
            }
        }
        // Read budget spent and there may be more: come back after the
        // others, so one busy client cannot starve the rest.
        trace!("    {id}: {READS_PER_TURN} reads in this call: the rest is read later");
        self.queue_resume(id);
    }

    /// Queues `id` for `resume_readers`, once. Without the check, a
    /// connection whose event spends its budget while it is still queued
    /// from the turn before would be read twice over there.
    pub(super) fn queue_resume(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id)
            && !conn.flags.resume_queued
        {
            conn.flags.resume_queued = true;
            self.resume.push(id);
        }
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

    /// Reads again from connections that were paused or out of budget.
    /// Edge-triggered: their data may have been waiting since an event we
    /// did not act on, and no new event will come for it. Read it ourselves.
    ///
    /// Each gets a fresh budget of `READS_PER_TURN` reads, so a connection
    /// whose event spent its budget can be read up to twice that in one
    /// turn (once in its event, once here); if it still has more, it is
    /// queued again and waits for the next turn.
    pub(super) fn resume_readers(&mut self) {
        let ids = std::mem::take(&mut self.resume);
        for id in ids {
            let Some(conn) = self.conn_mut(id) else {
                continue;
            };
            conn.flags.resume_queued = false;
            self.work(Work::Resume(id), |server| {
                server.read_input(id, true);
                server.write_and_advance(id);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Echo;
    use crate::State;
    use crate::config::Config;
    use std::io::Write;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

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
    fn a_connection_is_queued_for_resume_once() {
        let mut server = server();
        let _client = std::net::TcpStream::connect(server.local_addr()).unwrap();
        let id = accept_one(&mut server);
        // Its event spent the budget while it was still queued: once only.
        server.queue_resume(id);
        server.queue_resume(id);
        assert_eq!(server.resume, [id]);
        // Nothing to read (EAGAIN): read, not queued again, and free to be.
        server.resume_readers();
        assert!(server.resume.is_empty());
        server.queue_resume(id);
        assert_eq!(server.resume, [id]);
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
