//! A log line that repeats at most once per interval, counting what it held back.
//!
//! Used for warnings a peer or the OS can trigger in a flood (too many
//! connections, out of file descriptors): the first is logged at once, later
//! ones are counted and summarised, so logging cannot become the bottleneck.

use std::time::{Duration, Instant};

pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub const fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// Returns `Some(n)` when a line should be logged now, with `n` the number
    /// of occurrences held back since the last one; `None` to stay quiet.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_first_then_once_per_interval_with_count() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(1));
        assert_eq!(t.hit(t0), Some(0));
        assert_eq!(t.hit(t0 + Duration::from_millis(10)), None);
        assert_eq!(t.hit(t0 + Duration::from_millis(20)), None);
        assert_eq!(t.hit(t0 + Duration::from_millis(1100)), Some(2));
    }
}
