//! Watching the loop work: the stats snapshot (SIGUSR1, and the line at
//! exit) and, at `--log-level trace`, the narration: one line per turn and
//! one per piece of work (an event, a connection read again by
//! `resume_readers`, a timer that fired), all written here and called from
//! one place, `Server::work`; and one per read and write call, with short
//! reads, short writes and `EAGAIN` (in `read.rs` and `connection.rs`).
//!
//! Every narration line is a `trace!`, so below `trace` it costs one
//! comparison and formats nothing; the lines here, which build strings,
//! are only called when `log_enabled!(Level::Trace)` said so. Lines name a
//! connection by serial (`#3`), slab key and raw token (the `data.u64` that
//! strace prints for `epoll_wait`), and per-call lines by fd, so a log and
//! an strace of the same run can be read side by side.

use std::time::Duration;

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

    /// The line that opens a turn.
    pub(super) fn narrate_turn(&self, events: usize, timeout: Option<Duration>) {
        trace!(
            "turn {}: {events} events (timeout {timeout:?})",
            self.stats.loop_turns
        );
    }

    /// One trace line per piece of work: what the loop saw and what it did,
    /// from the counters `before` it and now.
    pub(super) fn narrate(&mut self, work: Work<'_>, before: &Stats) {
        match work {
            Work::Event(event) => self.narrate_event(event, before),
            Work::Resume(id) => self.narrate_conn("resume ", "", id, before),
            Work::Timer { what, conn } => self.narrate_conn(what, "", conn, before),
            Work::AcceptRetry => trace!(
                "  timer accept retry: accepted {}",
                self.stats.accepted - before.accepted
            ),
            // Every turn of a worker: a line only when it found mail.
            Work::Recheck if self.stats.accepted == before.accepted => {}
            Work::Recheck => trace!(
                "  inbox before sleeping: opened {}",
                self.stats.accepted - before.accepted
            ),
        }
    }

    /// The raw token is printed as epoll returns it (`data.u64` in strace),
    /// so a line here can be matched to its `epoll_wait` line in a trace.
    fn narrate_event(&mut self, event: &Event, before: &Stats) {
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
            _ => {
                let ready = format!(" {ready}");
                self.narrate_conn("", &ready, ConnId::from_token(token), before)
            }
        }
    }

    /// `  {what}#serial (key, token){ready}: read, frames, wrote; what is left`.
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
        trace!(
            "  {what}{id} (key {}, token {}){ready}: read {read} B, {frames} frames, wrote {wrote} B; {after}",
            id.key(),
            id.token().0
        );
    }
}

/// A piece of the loop's work, as `Server::work` narrates it.
#[derive(Clone, Copy)]
pub(super) enum Work<'a> {
    /// An event from `poll`.
    Event(&'a Event),
    /// A connection read again before the loop sleeps (`resume_readers`).
    Resume(ConnId),
    /// A timer for a connection; `what` names it, with a trailing space.
    Timer { what: &'static str, conn: ConnId },
    /// The timer that retries `accept` after a failure.
    AcceptRetry,
    /// A worker's look at its inbox before it sleeps (`recheck_mail`).
    Recheck,
}
