//! The one scenario table: every load the tool drives, the same four in
//! `make bench` and `make bench-compare`, as `redis-benchmark.c` keeps its
//! tests in one list. A new scenario is one row here; `--only` picks rows
//! by `key`.

/// One load: `conns` connections, each with `depth` lines of `size` bytes
/// in flight.
pub struct Scenario {
    /// Short name: `--only`'s, the chart's and the raw file's.
    pub key: &'static str,
    /// The tables' name.
    pub title: &'static str,
    pub conns: usize,
    pub depth: usize,
    pub size: usize,
}

/// The four scenarios of issue 11.
pub const SCENARIOS: [Scenario; 4] = [
    Scenario {
        key: "ping-pong",
        title: "ping-pong, 50 conns × 1 line of 64 B",
        conns: 50,
        depth: 1,
        size: 64,
    },
    Scenario {
        key: "pipelined",
        title: "pipelined, 50 conns × 16 lines of 64 B",
        conns: 50,
        depth: 16,
        size: 64,
    },
    Scenario {
        key: "c1000",
        title: "1,000 conns × 1 line of 64 B",
        conns: 1000,
        depth: 1,
        size: 64,
    },
    Scenario {
        key: "bulk",
        title: "bulk, 10 conns × 4 lines of 16 KiB",
        conns: 10,
        depth: 4,
        size: 16384,
    },
];

/// The scenarios whose key contains one of `words`; all of them for none.
pub fn matching(words: &[String]) -> Vec<&'static Scenario> {
    SCENARIOS
        .iter()
        .filter(|s| words.is_empty() || words.iter().any(|w| s.key.contains(w.as_str())))
        .collect()
}
