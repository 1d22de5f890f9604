//! Signals and the graceful drain (shutdown): stop listening, stop taking
//! input, deliver what is owed, close every connection cleanly, all under
//! one deadline; a second signal cuts the rest off.
//!
//! Signals arrive as ordinary events: signal-hook's handler writes to a
//! socketpair whose read end is registered with the poll (token `SIGNALS`).
//! With `--workers`, the coordinator reads the signals and sends each worker
//! the drain (`mailbox.rs`); each worker then drains as below. See
//! `docs/shutdown.md`.

use std::time::Instant;

use log::{Level, info, log, warn};
use signal_hook::consts::SIGUSR1;
use signal_hook_mio::v1_0::Signals;

use super::Server;
use super::close::Ending;
use crate::connection::{CloseReason, ConnId};
use crate::handler::Handler;
use crate::sys;

/// Connections named in the log when a drain cuts them off; the rest are
/// only counted (a drain may cut off thousands).
const CUT_OFF_NAMED: usize = 10;

/// Graceful shutdown in progress.
#[derive(Clone, Copy, Debug)]
pub(super) struct Drain {
    pub(super) deadline: Instant,
    /// A second signal came: stop now.
    forced: bool,
}

/// What a drain achieved: `run` returns it when the server stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections that got all their output and a FIN.
    pub closed_cleanly: u64,
    /// Connections closed with output undelivered, at the deadline or on a
    /// second signal.
    pub cut_off: u64,
    /// Connections that failed on their own (reset by the peer) during the drain.
    pub failed: u64,
    /// The drain was ended early by a second signal.
    pub forced: bool,
    /// With `--workers`: workers that panicked or whose loop failed (their
    /// connections are not counted above).
    pub workers_failed: usize,
}

impl DrainReport {
    /// Whether every connection got everything it was owed.
    pub fn is_complete(&self) -> bool {
        self.cut_off == 0
    }

    /// Adds up the reports of several loops.
    pub(crate) fn add(&mut self, other: &DrainReport) {
        self.closed_cleanly += other.closed_cleanly;
        self.cut_off += other.cut_off;
        self.failed += other.failed;
        self.forced |= other.forced;
        self.workers_failed += other.workers_failed;
    }

    /// The summary line at the end of a drain.
    pub(crate) fn summary(&self) -> String {
        format!(
            "drain {}: {} connections closed cleanly, {} cut off, {} failed",
            if self.is_complete() {
                "complete"
            } else {
                "incomplete"
            },
            self.closed_cleanly,
            self.cut_off,
            self.failed
        )
    }
}

/// What one read of the signal socketpair brought: whether SIGUSR1 asked
/// for numbers, and the name of each stop signal, in order.
///
/// Each stop signal counts: the first starts the drain, any other forces
/// the exit, even when both arrive in one batch (`kill -TERM` then
/// `kill -INT` at once). signal-hook reports each kind of signal once per
/// batch, as the kernel does for pending signals: two SIGTERMs this close
/// are one.
pub(crate) fn read_signals(signals: &mut Signals) -> (bool, Vec<&'static str>) {
    let mut report_stats = false;
    let mut stops = Vec::new();
    for signal in signals.pending() {
        match signal {
            SIGUSR1 => report_stats = true,
            other => stops.push(signal_hook::low_level::signal_name(other).unwrap_or("signal")),
        }
    }
    (report_stats, stops)
}

impl<H: Handler> Server<H> {
    /// Reads the signals that arrived: see `read_signals`.
    pub(super) fn handle_signals(&mut self) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let (report_stats, stops) = read_signals(signals);
        if report_stats {
            info!("stats: {}", self.snapshot());
        }
        for name in stops {
            if self.drain.is_none() {
                let deadline = self.now + self.config.drain_timeout;
                crate::notify::stopping(self.conns.len());
                self.start_drain(name, deadline);
            } else {
                warn!("{name} during the drain: exiting now");
                self.force_drain();
            }
        }
    }

    /// Graceful shutdown: stop listening, stop taking input, deliver what is
    /// owed, close every connection cleanly, all before `deadline`.
    pub(super) fn start_drain(&mut self, signal: &str, deadline: Instant) {
        self.acceptor.close();
        self.drain = Some(Drain {
            deadline,
            forced: false,
        });
        // A worker's line is detail: the coordinator says it for everyone.
        log!(
            self.own_level(),
            "{signal}: draining {} connections (deadline {:?}); send it again to exit at once",
            self.conns.len(),
            deadline.saturating_duration_since(self.now)
        );
        // O(connections), once per process: fine.
        let ids: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for id in ids {
            self.begin_close(id, CloseReason::Drain);
            self.settle(id);
        }
    }

    /// A second signal: the drain ends at the end of this turn, and what is
    /// left is cut off.
    pub(super) fn force_drain(&mut self) {
        if let Some(drain) = &mut self.drain {
            drain.forced = true;
        }
    }

    /// Ends the drain once every connection is done, or cuts off the rest
    /// at the deadline or on a second signal.
    pub(super) fn finish_drain(&mut self) -> Option<DrainReport> {
        let drain = self.drain?;
        if !self.conns.is_empty() && !drain.forced && self.now < drain.deadline {
            return None;
        }
        let ids: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for (n, id) in ids.into_iter().enumerate() {
            // Who was given up on, and how far each had got: the first few
            // by name, so an operator can tell a client that stopped
            // reading from one that was merely slow.
            if n < CUT_OFF_NAMED
                && let Some(conn) = self.conn_mut(id)
            {
                let peer = conn
                    .stream
                    .peer_addr()
                    .map_or_else(|_| "?".to_string(), |a| a.to_string());
                let unacked = sys::unacked_bytes(&conn.stream).unwrap_or(0);
                info!(
                    "{id} from {peer} cut off: {}, {} bytes unsent, {unacked} sent but not acknowledged",
                    conn.state,
                    conn.output.len()
                );
            }
            self.destroy(id, Ending::CutOff);
        }
        self.report.forced = drain.forced;
        log!(self.own_level(), "{}", self.report.summary());
        Some(self.report)
    }

    /// The level for lines that a lone loop says to the user, but that the
    /// coordinator says for all workers at once.
    fn own_level(&self) -> Level {
        if self.mailbox.is_some() {
            Level::Debug
        } else {
            Level::Info
        }
    }
}
