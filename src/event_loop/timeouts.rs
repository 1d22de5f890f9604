//! Timers: the idle timeout, the deadline of a close outside a drain, and
//! retrying `accept` after a failure. Deadlines live in a heap
//! (`crate::timers`), checked once per turn; the nearest one bounds `poll`'s
//! timeout, so an idle server makes no syscalls at all. At `trace`, each
//! timer that fires is narrated (`observe.rs`).

use log::{Level, debug, log_enabled, trace};

use super::close::Ending;
use super::{CLOSE_TIMEOUT, Server};
use crate::connection::{CloseReason, ConnId, State};
use crate::handler::Handler;
use crate::timers::Timer;

impl<H: Handler> Server<H> {
    pub(super) fn run_timers(&mut self) {
        if self.acceptor.pause_over(self.now) {
            let before = self.stats.accepted;
            self.accept_all();
            trace!(
                "  timer accept retry: accepted {}",
                self.stats.accepted - before
            );
        }
        // Checked once per turn: narration costs nothing below `trace`.
        let narrate = log_enabled!(Level::Trace);
        while let Some(timer) = self.timers.pop_expired(self.now) {
            let before = narrate.then_some(self.stats);
            let what = match timer {
                Timer::Idle(id) => {
                    self.idle_check(id);
                    "timer idle"
                }
                Timer::CloseDeadline(id) => {
                    if self.conn_mut(id).is_some() {
                        debug!("{id} did not finish closing in {CLOSE_TIMEOUT:?}");
                        self.destroy(id, Ending::CutOff);
                    }
                    "timer close deadline"
                }
            };
            self.flush_dirty(None);
            if let Some(before) = before {
                self.narrate_work(what, timer.conn(), &before);
            }
        }
        let conns = &self.conns;
        self.timers.compact(conns.len(), |id| {
            conns.get(id.key()).is_some_and(|c| c.id == id)
        });
    }

    /// An idle deadline came up: close the connection if it really was idle
    /// all that time, or set the timer again for its real deadline.
    fn idle_check(&mut self, id: ConnId) {
        let (Some(idle), now) = (self.config.idle_timeout, self.now) else {
            return;
        };
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if matches!(conn.state, State::Closing { .. }) {
            return;
        }
        let due = conn.last_active + idle;
        if due > now {
            self.timers.push(due, Timer::Idle(id));
            return;
        }
        debug!("{id} idle for {idle:?}");
        self.begin_close(id, CloseReason::IdleTimeout);
        self.settle(id);
    }
}
