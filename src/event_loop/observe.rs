//! Watching the loop work: the stats snapshot (SIGUSR1, and the line at
//! exit) and, at `--log-level trace`, the narration: one line per event,
//! per connection read again by `resume_readers` and per timer that fired
//! (here), and one per read and write call, with short reads, short writes
//! and `EAGAIN` (in `read.rs` and `connection.rs`).
//!
//! Every narration line is a `trace!`, so below `trace` it costs one
//! comparison and formats nothing; the lines here, which build strings,
//! are only called when `log_enabled!(Level::Trace)` said so. Lines name a
//! connection by serial (`#3`), slab key and raw token (the `data.u64` that
//! strace prints for `epoll_wait`), and per-call lines by fd, so a log and
//! an strace of the same run can be read side by side.

use log::trace;
use mio::event::Event;

use super::{LISTENER, MAILBOX, SIGNALS, Server};
use crate::config::Config;
use crate::connection::{ConnId, State};
use crate::handler::Handler;
use crate::stats::{Snapshot, Stats};

impl<H: Handler> Server<H> {
    pub(super) fn snapshot(&self) -> Snapshot {
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
    ///
    /// The raw token is printed as epoll returns it (`data.u64` in strace),
    /// so a line here can be matched to its `epoll_wait` line in a trace.
    pub(super) fn narrate(&mut self, event: &Event, before: &Stats) {
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
        let token = event.token();
        match token {
            LISTENER => trace!(
                "  listener (token {}) {ready}: accepted {}",
                token.0,
                self.stats.accepted - before.accepted
            ),
            SIGNALS => trace!("  signals (token {}) {ready}", token.0),
            MAILBOX => trace!(
                "  mailbox (token {}) {ready}: accepted {}",
                token.0,
                self.stats.accepted - before.accepted
            ),
            // Any other reserved token: slab keys never reach these.
            _ if ConnId::from_token(token).key() >= Config::MAX_CONNECTIONS_LIMIT => {
                trace!("  token {} {ready}", token.0)
            }
            _ => self.narrate_conn("", &ready, ConnId::from_token(token), before),
        }
    }

    /// One trace line for work the loop did on a connection outside an
    /// event of its own (`resume_readers`, a timer): `what` says which.
    pub(super) fn narrate_work(&mut self, what: &str, id: ConnId, before: &Stats) {
        self.narrate_conn(what, "", id, before);
    }

    /// `  {what} #serial (key, token) {ready}: read, frames, wrote; what is left`.
    fn narrate_conn(&mut self, what: &str, ready: &str, id: ConnId, before: &Stats) {
        let s = &self.stats;
        let (read, wrote, frames) = (
            s.bytes_in - before.bytes_in,
            s.bytes_out - before.bytes_out,
            s.frames - before.frames,
        );
        let after = match self.conn_mut(id) {
            Some(c) => format!("{} B pending, {}", c.output.len(), c.state),
            None => "closed".to_string(),
        };
        let what = if what.is_empty() {
            String::new()
        } else {
            format!("{what} ")
        };
        let ready = if ready.is_empty() {
            String::new()
        } else {
            format!(" {ready}")
        };
        trace!(
            "  {what}{id} (key {}, token {}){ready}: read {read} B, {frames} frames, wrote {wrote} B; {after}",
            id.key(),
            id.token().0
        );
    }
}
