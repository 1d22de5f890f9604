//! Counters for `kill -USR1` and the exit log: what the loop has done so far.

use std::fmt;

/// Totals since start. Plain integers: the loop is single-threaded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections accepted only to be closed at once (over the cap, out of fds).
    pub rejected: u64,
    /// Served connections that have closed.
    pub closed: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Complete frames handed to the handler.
    pub frames: u64,
    /// Returns from `poll`.
    pub loop_turns: u64,
    /// Events those polls returned.
    pub events: u64,
}

/// One line: the totals plus two figures of the moment.
pub struct Snapshot {
    /// Totals since start.
    pub totals: Stats,
    /// Connections open now.
    pub open: usize,
    /// Connections not being read because their output is backed up.
    pub backpressured: usize,
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.totals;
        let per_poll = if s.loop_turns == 0 {
            0.0
        } else {
            s.events as f64 / s.loop_turns as f64
        };
        write!(
            f,
            "open={} accepted={} rejected={} closed={} bytes_in={} bytes_out={} frames={} \
             loop_turns={} events_per_poll={:.2} backpressured={}",
            self.open,
            s.accepted,
            s.rejected,
            s.closed,
            s.bytes_in,
            s.bytes_out,
            s.frames,
            s.loop_turns,
            per_poll,
            self.backpressured
        )
    }
}
