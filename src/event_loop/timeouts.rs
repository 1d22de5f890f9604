//! Timers: the idle timeout, the deadline of a close outside a drain, and
//! retrying `accept` after a failure. Deadlines live in a heap
//! (`crate::timers`), checked once per turn; the nearest one bounds `poll`'s
//! timeout, so an idle server makes no syscalls at all. At `trace`, each
//! timer that fires is narrated (`Server::work`, `observe.rs`).

use log::debug;

use super::close::Ending;
use super::{CLOSE_TIMEOUT, Server, Work};
use crate::connection::{CloseReason, ConnId, State};
use crate::handler::Handler;
use crate::timers::Timer;

impl<H: Handler> Server<H> {
    /// Fires every timer that is due, each as one piece of the turn's work
    /// (`Server::work`): its output is written at once.
    pub(super) fn run_timers(&mut self) {
        if self.acceptor.pause_over(self.now) {
            self.work(Work::AcceptRetry, Self::accept_all);
        }
        while let Some(timer) = self.timers.pop_expired(self.now) {
            let (what, conn) = match timer {
                Timer::Idle(id) => ("timer idle ", id),
                Timer::CloseDeadline(id) => ("timer close deadline ", id),
            };
            self.work(Work::Timer { what, conn }, |server| match timer {
                Timer::Idle(id) => server.idle_check(id),
                Timer::CloseDeadline(id) => {
                    if server.conn_mut(id).is_some() {
                        // A production server says when it resets a client.
                        let when = format!(" at its close deadline ({CLOSE_TIMEOUT:?})");
                        server.log_cut_off(id, &when);
                        server.destroy(id, Ending::CutOff);
                    }
                }
            });
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
        self.write_and_advance(id);
    }
}
