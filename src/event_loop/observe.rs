//! Watching the loop work: the stats snapshot (SIGUSR1, and the line at
//! exit) and, at `--log-level trace`, one narration line per event.

use log::trace;
use mio::event::Event;

use super::{LISTENER, SIGNALS, Server};
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
