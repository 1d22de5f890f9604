//! The measuring half of `bench/`: one tool, `bench`, whose scenarios come
//! from one table, as `redis-benchmark.c` is one tool over one list of
//! tests. It has two modes that share everything but their report:
//!
//! - `bench` (`make bench`): reactor-echo alone, with its extras: latency
//!   percentiles, syscalls by kind, RSS, idle connections;
//! - `bench compare` (`make bench-compare`): reactor-echo beside its peers
//!   (`bench/peers/`) at each server core count, in interleaved rounds.
//!
//! A run is plan, run, report:
//!
//! | module | what |
//! |---|---|
//! | [`plan`] | the command line read into what to run, checked first |
//! | [`run`] | the rounds, the order of servers turned each round, the retry on other work |
//! | [`report`] | medians, the Markdown of each mode, the section writer |
//! | [`scenario`] | the one scenario table |
//! | [`server`] | one server started on its CPUs, measured by `loadgen`, stopped |
//! | [`syscalls`] | the one syscall counter: perf or strace, and their parsers |
//! | [`chart`] | the one chart engine (plotters) and its two charts |
//! | [`cpus`], [`host`] | CPU lists; the machine, `/proc`, and small shared helpers |
//!
//! The load generator is its own program (`src/bin/loadgen.rs`), pinned to
//! other CPUs than the server; its loads other than the closed loop are
//! here, where they can be tested:
//!
//! | module | what |
//! |---|---|
//! | [`openloop`] | a fixed rate of requests, latency from each one's intended send time, in an HdrHistogram |
//! | [`churn`] | connect, one echo, close, in a loop |
//! | [`lines`] | the lines every load sends and checks |
//!
//! The chaos soak (`src/bin/soak.rs`) is not
//! part of this library.

pub mod chart;
pub mod churn;
pub mod cpus;
pub mod host;
pub mod lines;
pub mod openloop;
pub mod plan;
pub mod report;
pub mod run;
pub mod scenario;
pub mod server;
pub mod syscalls;
