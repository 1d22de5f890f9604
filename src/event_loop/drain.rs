//! Signals and the graceful drain (shutdown): stop listening, stop taking
//! input, deliver what is owed, close every connection cleanly, all under
//! one deadline; a second signal cuts the rest off.
//!
//! Signals arrive as ordinary events (`signals.rs`: which ones, and how).
//! SIGUSR2's live upgrade (`upgrade.rs`) ends in this drain too, once the
//! new process is ready and a short grace has passed.
//! With `--workers`, the coordinator reads the signals and sends each worker
//! the drain (`mailbox.rs`); each worker then drains as below. See
//! `docs/shutdown.md`.

use std::time::Instant;

use log::{Level, info, log, warn};

use super::Server;
use super::close::Ending;
use crate::connection::{CloseReason, ConnId};
use crate::handler::Handler;
use crate::signals::{self, Order};
use crate::upgrade::Step;

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
    /// With `--workers`: workers that panicked or whose loop failed. Each
    /// was replaced while the process served on; its connections are
    /// counted in `reset_after_panic`.
    pub workers_failed: usize,
    /// With `--workers`: connections of a worker that panicked or whose loop
    /// failed, reset when it died (at any time, not only in a drain).
    pub reset_after_panic: u64,
    /// With `--workers`: workers that had not finished the drain at its
    /// deadline plus a grace (or a grace after a second signal), and were
    /// left behind when the process exited.
    pub workers_stuck: usize,
    /// Connections of those stuck workers: closed by the kernel when the
    /// process exits, whatever they were owed.
    pub abandoned: u64,
}

impl DrainReport {
    /// Whether every connection got everything it was owed: nothing was
    /// cut off, and no worker was left behind.
    pub fn is_complete(&self) -> bool {
        self.cut_off == 0 && self.workers_stuck == 0
    }

    /// Adds up the reports of several loops.
    pub(crate) fn add(&mut self, other: &DrainReport) {
        self.closed_cleanly += other.closed_cleanly;
        self.cut_off += other.cut_off;
        self.failed += other.failed;
        self.forced |= other.forced;
        self.workers_failed += other.workers_failed;
        self.reset_after_panic += other.reset_after_panic;
        self.workers_stuck += other.workers_stuck;
        self.abandoned += other.abandoned;
    }

    /// The summary line at the end of a drain. The counters that only
    /// `--workers` can have are named only when they are not zero.
    pub(crate) fn summary(&self) -> String {
        let mut line = format!(
            "drain {}: {} connections closed cleanly, {} cut off, {} failed",
            if self.is_complete() {
                "complete"
            } else {
                "incomplete"
            },
            self.closed_cleanly,
            self.cut_off,
            self.failed
        );
        if self.reset_after_panic > 0 {
            line += &format!(", {} reset after a worker panic", self.reset_after_panic);
        }
        match self.workers_stuck {
            0 => {}
            1 => line += &format!(", {} abandoned on a stuck worker", self.abandoned),
            n => line += &format!(", {} abandoned on {n} stuck workers", self.abandoned),
        }
        line
    }
}

impl<H: Handler> Server<H> {
    /// Acts on the signals that arrived (`signals.rs` says what each asks).
    pub(super) fn handle_signals(&mut self) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        for order in signals::orders(signals) {
            match order {
                Order::Stats => info!("stats: {}", self.snapshot()),
                Order::Upgrade => self.upgrade.begin(
                    self.poll.registry(),
                    self.acceptor.listener_fd().as_slice(),
                    self.drain.is_some(),
                    self.now,
                ),
                Order::Stop(name) if self.drain.is_none() => {
                    let deadline = self.now + self.config.drain_timeout;
                    // After a handover the supervisor watches the new
                    // process: our stop is not the service's.
                    if !self.upgrade.handed_over() {
                        crate::notify::stopping(self.conns.len());
                    }
                    self.start_drain(name, deadline);
                }
                Order::Stop(name) => {
                    warn!("{name} during the drain: exiting now");
                    self.force_drain();
                }
            }
        }
    }

    /// The upgrade's readiness channel has news: on `READY=1`, stop
    /// accepting (the new process accepts from the same socket now).
    pub(super) fn upgrade_event(&mut self) {
        if self.upgrade.readable(self.poll.registry(), self.now) == Step::StopAccepting {
            self.acceptor.close(self.poll.registry());
        }
    }

    /// The upgrade's deadlines: a new process too slow to be ready is
    /// given up; the grace after a handover ends in the drain.
    pub(super) fn upgrade_timers(&mut self) {
        if self.upgrade.deadline().is_none_or(|at| self.now < at) {
            return;
        }
        if self.upgrade.tick(self.poll.registry(), self.now) == Step::Drain && self.drain.is_none()
        {
            let deadline = self.now + self.config.drain_timeout;
            self.start_drain("upgrade", deadline);
        }
    }

    /// Graceful shutdown: stop listening, stop taking input, deliver what is
    /// owed, close every connection cleanly, all before `deadline`.
    pub(super) fn start_drain(&mut self, signal: &str, deadline: Instant) {
        self.acceptor.close(self.poll.registry());
        // An upgrade still waiting for its process is given up.
        self.upgrade.abandon(self.poll.registry(), signal);
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
            self.write_and_advance(id);
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
            if n < CUT_OFF_NAMED {
                self.log_cut_off(id, "");
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
