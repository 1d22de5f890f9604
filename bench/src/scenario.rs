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

/// The four scenarios of issue 11: key, title, connections, lines in
/// flight on each, bytes per line.
#[rustfmt::skip]
pub const SCENARIOS: [Scenario; 4] = [
    row("ping-pong", "ping-pong, 50 conns × 1 line of 64 B",   50,   1,    64),
    row("pipelined", "pipelined, 50 conns × 16 lines of 64 B", 50,   16,   64),
    row("c1000",     "1,000 conns × 1 line of 64 B",           1000, 1,    64),
    row("bulk",      "bulk, 10 conns × 4 lines of 16 KiB",     10,   4,    16384),
];

const fn row(
    key: &'static str,
    title: &'static str,
    conns: usize,
    depth: usize,
    size: usize,
) -> Scenario {
    Scenario {
        key,
        title,
        conns,
        depth,
        size,
    }
}

/// The scenarios whose key contains one of `words`; all of them for none.
pub fn matching(words: &[String]) -> Vec<&'static Scenario> {
    SCENARIOS
        .iter()
        .filter(|s| words.is_empty() || words.iter().any(|w| s.key.contains(w.as_str())))
        .collect()
}
