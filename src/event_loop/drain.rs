//! Signals and the graceful drain (shutdown): stop listening, stop taking
//! input, deliver what is owed, close every connection cleanly, all under
//! one deadline; a second signal cuts the rest off.
//!
//! Signals arrive as ordinary events: signal-hook's handler writes to a
//! socketpair whose read end is registered with the poll (token `SIGNALS`).
//! See `docs/shutdown.md`.

use std::time::Instant;

use log::{info, warn};
use signal_hook::consts::SIGUSR1;

use super::Server;
use super::close::Ending;
use crate::connection::{CloseReason, ConnId};
use crate::handler::Handler;

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
}

impl DrainReport {
    /// Whether every connection got everything it was owed.
    pub fn is_complete(&self) -> bool {
        self.cut_off == 0
    }
}

impl<H: Handler> Server<H> {
    /// Reads every signal that arrived since the last event. Each stop
    /// signal counts: the first starts the drain, any other forces the exit,
    /// even when both arrive in one batch (`kill -TERM` then `kill -INT` at
    /// once). signal-hook reports each kind of signal once per batch, as the
    /// kernel does for pending signals: two SIGTERMs this close are one.
    pub(super) fn handle_signals(&mut self) {
        let mut report_stats = false;
        let mut stops = Vec::new();
        for signal in self.signals.pending() {
            match signal {
                SIGUSR1 => report_stats = true,
                other => stops.push(signal_hook::low_level::signal_name(other).unwrap_or("signal")),
            }
        }
        if report_stats {
            info!("stats: {}", self.snapshot());
        }
        for name in stops {
            match &mut self.drain {
                None => self.start_drain(name),
                Some(drain) => {
                    warn!("{name} during the drain: exiting now");
                    drain.forced = true;
                }
            }
        }
    }

    /// Graceful shutdown: stop listening, stop taking input, deliver what is
    /// owed, close every connection cleanly, all under one deadline.
    fn start_drain(&mut self, signal: &str) {
        self.acceptor.close();
        self.drain = Some(Drain {
            deadline: self.now + self.config.drain_timeout,
            forced: false,
        });
        info!(
            "{signal}: draining {} connections (deadline {:?}); send it again to exit at once",
            self.conns.len(),
            self.config.drain_timeout
        );
        // O(connections), once per process: fine.
        let ids: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for id in ids {
            self.begin_close(id, CloseReason::Drain);
            self.settle(id);
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
        for id in ids {
            self.destroy(id, Ending::CutOff);
        }
        self.report.forced = drain.forced;
        let r = self.report;
        info!(
            "drain {}: {} connections closed cleanly, {} cut off, {} failed",
            if r.is_complete() {
                "complete"
            } else {
                "incomplete"
            },
            r.closed_cleanly,
            r.cut_off,
            r.failed
        );
        Some(r)
    }
}
