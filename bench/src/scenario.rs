//! The one scenario table: every load the tool drives, the same five in
//! `make bench` and `make bench-compare`, as `redis-benchmark.c` keeps its
//! tests in one list. A new scenario is one row here; `--only` picks rows
//! by `key`. `make bench-latency` takes one of them, [`LATENCY_BASE`], for
//! each server's maximum, then offers [`LEVELS`] of it open-loop.

/// How a scenario's load generator drives its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `depth` lines in flight on each connection, each echo answered with
    /// a new line: as fast as the server answers.
    Closed,
    /// `conns` connections at a time, each connecting, echoing one line
    /// and closing: a "message" is a connection, so msgs/s are
    /// connections/s and CPU per message is CPU per connection.
    Churn,
}

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
    pub kind: Kind,
}

/// The four scenarios of issue 11 and the churn of issue 18: key, title,
/// connections, lines in flight on each, bytes per line, kind.
#[rustfmt::skip]
pub const SCENARIOS: [Scenario; 5] = [
    row("ping-pong", "ping-pong, 50 conns × 1 line of 64 B",   50,   1,    64,    Kind::Closed),
    row("pipelined", "pipelined, 50 conns × 16 lines of 64 B", 50,   16,   64,    Kind::Closed),
    row("c1000",     "1,000 conns × 1 line of 64 B",           1000, 1,    64,    Kind::Closed),
    row("bulk",      "bulk, 10 conns × 4 lines of 16 KiB",     10,   4,    16384, Kind::Closed),
    row("churn",     "churn, 50 at a time: connect, 1 line of 64 B, close (msgs = connections)",
                                                               50,   1,    64,    Kind::Churn),
];

/// The scenario whose closed-loop msgs/s is a server's maximum in `make
/// bench-latency`, and whose connections and line size the open loop uses.
pub const LATENCY_BASE: &str = "ping-pong";

/// The offered loads of `make bench-latency`, as fractions of each server's
/// own maximum.
pub const LEVELS: [f64; 4] = [0.25, 0.50, 0.75, 0.90];

/// The [`LATENCY_BASE`] row.
pub fn latency_base() -> &'static Scenario {
    SCENARIOS
        .iter()
        .find(|s| s.key == LATENCY_BASE)
        .expect("the base is a row")
}

const fn row(
    key: &'static str,
    title: &'static str,
    conns: usize,
    depth: usize,
    size: usize,
    kind: Kind,
) -> Scenario {
    Scenario {
        key,
        title,
        conns,
        depth,
        size,
        kind,
    }
}

/// The scenarios whose key contains one of `words`; all of them for none.
pub fn matching(words: &[String]) -> Vec<&'static Scenario> {
    SCENARIOS
        .iter()
        .filter(|s| words.is_empty() || words.iter().any(|w| s.key.contains(w.as_str())))
        .collect()
}
