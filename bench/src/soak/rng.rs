//! A tiny seeded random number generator for the soak (xorshift64*, seeded
//! through splitmix64), so that a run's choices can be replayed from the
//! seed it prints, without a crate for it.

use std::time::Duration;

/// splitmix64's output function: turns any 64-bit value (0 included) into a
/// well-mixed one. Used to seed, and to derive independent streams.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of stream number `stream` under the run's `seed`: each client
/// and each relayed connection gets its own, so its choices do not depend
/// on how the others' calls interleave.
pub fn derive(seed: u64, stream: u64) -> u64 {
    mix(seed ^ mix(stream.wrapping_mul(0xA24B_AED4_963E_E407)))
}

/// xorshift64* (Vigna): fast, 64 bits of state, plenty for test choices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // xorshift's state must never be 0; `mix` maps exactly one input to 0.
        Rng(mix(seed).max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-and-shift (Lemire), which
    /// avoids the bias of `%` toward small values.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `lo..=hi`, as a `usize`.
    pub fn size(&mut self, lo: usize, hi: usize) -> usize {
        self.between(lo as u64, hi as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A duration uniform in `lo_ms..=hi_ms` milliseconds, at microsecond grain.
    pub fn millis(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_micros(self.between(lo_ms * 1000, hi_ms * 1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_zero_is_a_fine_seed() {
        let mut a = Rng::new(0);
        let mut b = Rng::new(0);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| x != 0));
        assert_ne!(derive(1, 1), derive(1, 2));
    }

    #[test]
    fn between_stays_in_bounds_and_reaches_both_ends() {
        let mut r = Rng::new(7);
        let draws: Vec<u64> = (0..10_000).map(|_| r.between(3, 6)).collect();
        assert!(draws.iter().all(|&x| (3..=6).contains(&x)));
        assert!(draws.contains(&3) && draws.contains(&6));
    }
}
