//! Signals: which ones the server takes, what each asks of it, and how they
//! reach the loop. The lone loop (`event_loop/drain.rs`) and the coordinator
//! of `--workers` (`workers/coordinator.rs`) both use this file, as tokio
//! keeps its whole signal seam in one small module.
//!
//! | signal | order |
//! |---|---|
//! | SIGTERM, SIGINT, SIGQUIT, SIGHUP | [`Order::Stop`]: the first starts the graceful drain, a second exits at once |
//! | SIGUSR1 | [`Order::Stats`]: log the stats line |
//! | SIGUSR2 | [`Order::Upgrade`]: start the binary at our path again, hand it the listener, then drain (`upgrade.rs`) |
//!
//! How they arrive: signal-hook's handler writes a byte to a socketpair
//! (the self-pipe trick), whose read end is registered with the poll like
//! any socket, so a signal is an ordinary event and the loop reads it in
//! its own time, never inside a handler. Only one thread reads them; a
//! worker of `--workers` blocks them ([`keep_away_from_this_thread`]).
//!
//! To add a signal:
//! 1. its number in [`HANDLED`], and a variant of [`Order`] for it in
//!    [`orders`] (or map it to an order that exists);
//! 2. its arm in the two places that act on orders: `Server::handle_signals`
//!    (`event_loop/drain.rs`) and the coordinator's `handle_signals`
//!    (`workers/coordinator.rs`), which passes it on to the workers in a
//!    `ToWorker` message if they must act (`event_loop/mailbox.rs`);
//! 3. the table above, and the signal list in `main.rs`'s `--help` text
//!    and the README.

use std::io;

use libc::c_int;
use log::warn;
use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

use crate::sys;

/// Every signal the server takes over from the default action.
pub(crate) const HANDLED: [c_int; 6] = [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2];

/// What a signal asks of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// Stop: drain (the first), or exit at once (any after it). Carries the
    /// signal's name for the log.
    Stop(&'static str),
    /// Log the stats line (SIGUSR1).
    Stats,
    /// A live upgrade (SIGUSR2): start the new binary on our listener, and
    /// drain once it is ready (`upgrade.rs`).
    Upgrade,
}

/// Takes over [`HANDLED`] and registers their socketpair with `registry`
/// under `token`.
pub(crate) fn listen(registry: &Registry, token: Token) -> io::Result<Signals> {
    let mut signals = Signals::new(HANDLED)?;
    registry.register(&mut signals, token, Interest::READABLE)?;
    Ok(signals)
}

/// The orders that arrived since the last call, in order.
///
/// Each stop signal counts: the first starts the drain, any other forces
/// the exit, even when both arrive in one batch (`kill -TERM` then
/// `kill -INT` at once). signal-hook reports each kind of signal once per
/// batch, as the kernel does for pending signals: two SIGTERMs this close
/// are one.
pub(crate) fn orders(signals: &mut Signals) -> Vec<Order> {
    signals
        .pending()
        .map(|signal| match signal {
            SIGUSR1 => Order::Stats,
            SIGUSR2 => Order::Upgrade,
            other => Order::Stop(signal_hook::low_level::signal_name(other).unwrap_or("signal")),
        })
        .collect()
}

/// Blocks [`HANDLED`] in the calling thread, so that the kernel delivers
/// them to another one. A worker of `--workers` calls it first thing:
/// signal-hook's handler then never runs on it, and its `epoll_wait` is
/// never interrupted (EINTR). A signal that lands before the call does no
/// harm: the handler writes to the reader's socketpair from any thread.
pub(crate) fn keep_away_from_this_thread() {
    if let Err(e) = sys::block_signals(&HANDLED) {
        warn!("cannot block signals in a worker thread: {e}");
    }
}
