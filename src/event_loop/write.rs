//! Writing replies, and backpressure: a connection whose output backs up
//! past the high-water mark stops being read until it drains below the
//! low-water mark, so a client that sends without reading cannot grow the
//! server's memory.
//!
//! Replies are written in the same turn that read the request; only a short
//! write waits for a writable event. See `docs/architecture.md`.
//!
//! The write path, in the order a connection goes through it:
//! - [`Server::flush_replies_of`] / [`Server::flush_all`]: take each
//!   connection off the flush list (starting the close a handler asked for);
//! - [`Server::write_and_advance`], for one connection, in three steps:
//!   [`Server::write_pending`] (may destroy it, if the socket failed),
//!   [`Server::wake_waiters_if_drained`], [`Server::advance_close`] (may
//!   destroy it, once nothing can be lost);
//! - [`Server::pause_if_backed_up`]: backpressure for the reader whose
//!   frames queued the output.

use log::debug;

use super::close::Ending;
use super::{HIGH_WATER, LOW_WATER, Server};
use crate::connection::{CloseReason, ConnId, Flush, State};
use crate::handler::Handler;

impl<H: Handler> Server<H> {
    /// Writes the output that `reader`'s frames just queued, on whichever
    /// connections it went to; if it backed up anywhere past the high-water
    /// mark, stops reading from `reader` (echo: the two are the same).
    pub(super) fn flush_replies_of(&mut self, reader: ConnId) {
        while let Some(id) = self.next_to_flush() {
            self.write_and_advance(id);
            self.pause_if_backed_up(id, reader);
        }
    }

    /// Writes the output queued by work that had no reader to pause (a
    /// timer, the close of another connection, a drain): nobody's frames
    /// caused it.
    pub(super) fn flush_all(&mut self) {
        while let Some(id) = self.next_to_flush() {
            self.write_and_advance(id);
        }
    }

    /// Takes the next live connection off the flush list, and starts the
    /// close its handler asked for, if it did.
    fn next_to_flush(&mut self) -> Option<ConnId> {
        while let Some(id) = self.outgoing.dirty.pop() {
            let Some(conn) = self.conn_mut(id) else {
                continue;
            };
            let flush = std::mem::replace(&mut conn.flags.flush, Flush::No);
            if flush == Flush::ThenClose {
                self.begin_close(id, CloseReason::Handler);
            }
            return Some(id);
        }
        None
    }

    /// The write path for one connection: write what is pending, wake the
    /// readers that were waiting for it to drain, and move a close along.
    /// Either the first or the last step may destroy the connection; the
    /// last is the one place where a connection that is done is removed.
    pub(super) fn write_and_advance(&mut self, id: ConnId) {
        if self.write_pending(id) {
            self.wake_waiters_if_drained(id);
            self.advance_close(id);
        }
    }

    /// Writes `id`'s pending output, as much as the socket takes. Returns
    /// whether the connection is still there: a write error destroys it.
    fn write_pending(&mut self, id: ConnId) -> bool {
        let Self {
            conns,
            outgoing,
            stats,
            now,
            ..
        } = self;
        let Some(conn) = conns.get_mut(id.key()).filter(|c| c.id == id) else {
            return false;
        };
        match conn.write_out(&mut outgoing.spare) {
            Ok(0) => true,
            Ok(n) => {
                stats.bytes_out += n as u64;
                conn.last_active = *now;
                true
            }
            Err(e) => {
                self.destroy(id, Ending::Failed(e));
                false
            }
        }
    }

    /// Once `id`'s output is down to the low-water mark, resumes the readers
    /// that were paused on it.
    fn wake_waiters_if_drained(&mut self, id: ConnId) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if conn.output.len() <= LOW_WATER && !conn.waiters.is_empty() {
            let waiters = std::mem::take(&mut conn.waiters);
            self.wake_waiters(waiters);
        }
    }

    /// Moves a closing (or half-closed) connection along (`close_progress`),
    /// and destroys it once nothing can be lost, or when the socket failed.
    fn advance_close(&mut self, id: ConnId) {
        match self.close_progress(id) {
            Ok(false) => {}
            Ok(true) => self.destroy(id, Ending::Clean),
            Err(e) => self.destroy(id, Ending::Failed(e)),
        }
    }

    /// Backpressure: if `full`'s output is past the high-water mark, pause
    /// `reader` until it drains (echo: `full` and `reader` are the same).
    fn pause_if_backed_up(&mut self, full: ConnId, reader: ConnId) {
        let Some(conn) = self.conn_mut(full) else {
            return;
        };
        if conn.output.len() <= HIGH_WATER {
            return;
        }
        if !conn.waiters.contains(&reader) {
            conn.waiters.push(reader);
        }
        if let Some(s) = self.conn_mut(reader)
            && s.state == State::Open
        {
            s.state = State::Backpressured;
            debug!("{reader} backpressured: output of {full} is over {HIGH_WATER} bytes");
        }
    }

    /// Resumes connections that were paused on output which has now drained.
    pub(super) fn wake_waiters(&mut self, waiters: Vec<ConnId>) {
        for w in waiters {
            if let Some(conn) = self.conn_mut(w)
                && conn.state == State::Backpressured
            {
                conn.state = State::Open;
                debug!("{w} resumed");
                self.queue_resume(w);
            }
        }
    }
}
