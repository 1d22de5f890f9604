//! Counters for `kill -USR1` and the exit log: what the loop has done so far.
//!
//! To add a metric:
//! 1. a field of [`Stats`] (a total since start) or of [`Snapshot`] (a
//!    figure of the moment, computed in `Server::snapshot`,
//!    `event_loop/observe.rs`);
//! 2. count it where it happens in the loop: `self.stats.NAME += 1`;
//! 3. add it up across workers: `Stats::add` (or `Snapshot::sum`);
//! 4. print it: `Snapshot`'s `Display` below (the SIGUSR1 and exit line);
//!    and, if the workers' balance in it matters, in `Spread`.

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
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    /// Totals since start.
    pub totals: Stats,
    /// Connections open now.
    pub open: usize,
    /// Connections not being read because their output is backed up.
    pub backpressured: usize,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.closed += other.closed;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.frames += other.frames;
        self.loop_turns += other.loop_turns;
        self.events += other.events;
    }
}

impl Snapshot {
    /// The snapshots of several loops, added up.
    pub(crate) fn sum(all: &[Snapshot]) -> Snapshot {
        let mut total = Snapshot::default();
        for s in all {
            total.totals.add(&s.totals);
            total.open += s.open;
            total.backpressured += s.backpressured;
        }
        total
    }
}

/// How evenly the workers of `--workers` share the work: per worker, the
/// connections it accepted, the frames and the bytes it read; and for each,
/// the busiest worker's figure divided by the average (1.00 is perfect).
pub(crate) struct Spread<'a>(&'a [Snapshot]);

impl<'a> Spread<'a> {
    pub(crate) fn of(snapshots: &'a [Snapshot]) -> Self {
        Spread(snapshots)
    }

    /// Busiest ÷ average of one figure; 0 when there is nothing yet.
    pub(crate) fn imbalance(values: &[u64]) -> f64 {
        let max = values.iter().copied().max().unwrap_or(0);
        let sum: u64 = values.iter().sum();
        if sum == 0 {
            return 0.0;
        }
        max as f64 * values.len() as f64 / sum as f64
    }
}

impl fmt::Display for Spread<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let figures: [(&str, Vec<u64>); 3] = [
            (
                "connections",
                self.0.iter().map(|s| s.totals.accepted).collect(),
            ),
            ("frames", self.0.iter().map(|s| s.totals.frames).collect()),
            (
                "bytes_in",
                self.0.iter().map(|s| s.totals.bytes_in).collect(),
            ),
        ];
        write!(f, "{} workers;", self.0.len())?;
        for (name, values) in &figures {
            let list: Vec<String> = values.iter().map(u64::to_string).collect();
            write!(f, " {name}=[{}]", list.join(" "))?;
        }
        f.write_str("; busiest/average:")?;
        for (name, values) in &figures {
            write!(f, " {name}={:.2}", Spread::imbalance(values))?;
        }
        Ok(())
    }
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
