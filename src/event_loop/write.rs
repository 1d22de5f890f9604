//! Writing replies, and backpressure: a connection whose output backs up
//! past the high-water mark stops being read until it drains below the
//! low-water mark, so a client that sends without reading cannot grow the
//! server's memory.
//!
//! Replies are written in the same turn that read the request; only a short
//! write waits for a writable event. See `docs/architecture.md`.

use log::debug;

use super::close::Ending;
use super::{HIGH_WATER, LOW_WATER, Server};
use crate::connection::{CloseReason, ConnId, State};
use crate::handler::Handler;

impl<H: Handler> Server<H> {
    /// Writes what each connection with new output has pending. `sender`
    /// is the connection whose frames produced that output: if it backed up
    /// anywhere past the high-water mark, stop reading from the sender.
    pub(super) fn flush_dirty(&mut self, sender: Option<ConnId>) {
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

    /// Writes `id`'s pending output and moves its close along; the one place
    /// where a connection that is done is removed.
    pub(super) fn settle(&mut self, id: ConnId) {
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
