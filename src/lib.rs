//! # reactor-echo
//!
//! A TCP server on a single-threaded, hand-rolled event loop over raw
//! [`mio`]: no async runtime, no thread per connection; with [`Workers`],
//! N copies of that loop, one per core, sharing nothing. It rebuilds the echo
//! server of the Go tutorial "Golang 编写 Tcp 服务器" (the TCP layer of godis)
//! the way an epoll server is really built, to be read, run and measured.
//!
//! Goals, in order: correct under every network condition (split and
//! coalesced packets, slow readers, resets, half-closes, running out of
//! file descriptors, shutdown without losing a byte); lean in syscalls and
//! memory; simple enough to learn multiplexed I/O from.
//!
//! Non-goals: threads that share connections or state (each worker of
//! [`Workers`] is a whole loop of its own, and a connection a worker has
//! opened never moves to another), TLS, UDP, platforms other than Linux
//! (the loop itself is portable mio; the lingering close and fd-limit code
//! use Linux calls), and being a general-purpose framework.
//!
//! ## Map
//! One concept per file, each opening with a `//!` header that says what it
//! holds. The one map of them all, with the functions to start from, is
//! `docs/architecture.md` ("Where the code is"; in Chinese,
//! `docs/zh/architecture.md`). The loop's turn and the life of one echo
//! are at the top of `src/event_loop/mod.rs`, the file of [`Server`].
//!
//! ## Writing a handler
//! The loop cuts input into frames and calls your [`Handler`] for each; you
//! answer by queueing bytes on any connection through the [`Context`].
//! The loop writes them out, applies backpressure and drains on shutdown.
//!
//! ```no_run
//! use reactor_echo::{Config, ConnId, Context, Handler, Server};
//!
//! /// Answers every line in upper case.
//! struct Shout;
//!
//! impl Handler for Shout {
//!     fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, frame: &[u8]) {
//!         ctx.send(conn, &frame.to_ascii_uppercase());
//!     }
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     let addr = "127.0.0.1:8000".parse().unwrap();
//!     let server = Server::bind(&[addr], Config::default(), Shout)?;
//!     println!("listening on {}", server.local_addr());
//!     let report = server.run()?; // until SIGTERM and a complete drain
//!     std::process::exit(if report.is_complete() { 0 } else { 3 });
//! }
//! ```
//! `examples/chat.rs` is a fuller one: a chat room that writes each line to
//! every other connection.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod activation;
mod config;
mod connection;
mod echo;
mod event_loop;
mod fd_limit;
pub mod framing;
mod handler;
mod io_util;
mod listener;
pub mod notify;
pub mod pid_file;
mod signals;
mod stats;
mod sys;
mod throttle;
mod timers;
mod upgrade;
mod workers;

pub use config::Config;
pub use connection::{CloseReason, ConnId, State};
pub use echo::Echo;
pub use event_loop::{DrainReport, Server};
pub use handler::{Context, Handler};
pub use stats::{Snapshot, Stats};
pub use upgrade::UpgradePlan;
pub use workers::{Accept, Workers};
