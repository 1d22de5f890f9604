//! Deadlines, kept in a min-heap so the loop can sleep exactly until the next.
//!
//! The loop's poll timeout is the time to the earliest deadline here; with
//! none, it blocks indefinitely and an idle server makes no syscalls at all.
//! There is no fixed tick and no scan of every connection.
//!
//! Entries are never removed early. Activity does not touch the heap: an idle
//! timer that fires for a connection that has been busy since is simply set
//! again for `last_active + timeout`, and timers of connections that have
//! closed are dropped when they come up (their `ConnId` no longer matches).
//! Cost: O(log n) per timer that fires. To keep dead entries from piling up
//! under heavy connection churn, [`Timers::compact`] rebuilds the heap when
//! it holds many more entries than there are connections: O(n), amortised
//! over at least as many pushes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::connection::ConnId;

/// What to do when a deadline passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Close the connection if it has had no traffic for the idle timeout.
    Idle(ConnId),
    /// Give up on a closing connection that has not finished closing.
    CloseDeadline(ConnId),
}

impl Timer {
    pub fn conn(self) -> ConnId {
        match self {
            Timer::Idle(id) | Timer::CloseDeadline(id) => id,
        }
    }
}

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns a timer whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse((_, t))| t),
            _ => None,
        }
    }

    /// Drops the timers of closed connections once they outnumber live ones.
    pub fn compact(&mut self, live_conns: usize, is_live: impl Fn(ConnId) -> bool) {
        if self.heap.len() > 2 * live_conns + 1024 {
            self.heap.retain(|Reverse((_, t))| is_live(t.conn()));
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(n: u32) -> ConnId {
        ConnId { key: n, serial: n }
    }

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.push(t0 + Duration::from_secs(2), Timer::Idle(id(2)));
        timers.push(t0 + Duration::from_secs(1), Timer::CloseDeadline(id(1)));
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_expired(t0), None);
        let later = t0 + Duration::from_secs(3);
        assert_eq!(timers.pop_expired(later), Some(Timer::CloseDeadline(id(1))));
        assert_eq!(timers.pop_expired(later), Some(Timer::Idle(id(2))));
        assert_eq!(timers.pop_expired(later), None);
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn compact_drops_dead_entries_only_when_they_pile_up() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        for n in 0..2000 {
            timers.push(t0, Timer::Idle(id(n)));
        }
        timers.compact(1000, |_| false);
        assert_eq!(timers.len(), 2000, "not enough dead entries to bother");
        timers.compact(10, |c| c.key < 10);
        assert_eq!(timers.len(), 10);
    }
}
