//! The coordinator of `--workers`: its own small loop over the listener,
//! the signals and the workers' reports. It accepts and hands each client to
//! the least-loaded worker (ties in turn), sends the drain (one deadline for
//! all) and the second signal, leaves behind a worker stuck past that
//! deadline, replaces a worker that died and re-homes the clients waiting
//! in its inbox, collects SIGUSR1's numbers, and adds up the reports when
//! every worker has finished. See `mod.rs` for the design.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::TcpStream;
use mio::{Events, Poll};
use signal_hook_mio::v1_0::Signals;

use super::{LISTENER, REPORTS, SIGNALS, Spawn, UPGRADE, Worker};
use crate::event_loop::{Acceptor, DrainReport, Exit, FromWorker, OpenCount, ToWorker, abort};
use crate::io_util::interrupted;
use crate::signals::{self, Order};
use crate::stats::{Snapshot, Spread};
use crate::upgrade::{Step, UpgradePlan, Upgrader};

/// How long the coordinator waits for the workers past the drain's deadline
/// (or past a second stop signal) before it gives up on those still running.
/// A healthy worker cuts its connections off within one turn of its loop at
/// the deadline; one that has not reported a second later is stuck (in a
/// handler that never returns, say), and the process exits without it.
pub(super) const STUCK_GRACE: Duration = Duration::from_secs(1);

/// The coordinator's loop: accept and hand over, signals, workers' reports.
pub(super) struct Coordinator {
    poll: Poll,
    acceptor: Acceptor,
    signals: Signals,
    drain_timeout: Duration,
    reports: Receiver<FromWorker>,
    workers: Vec<Worker>,
    /// Starts a worker in the place of one that died.
    spawn: Spawn,
    /// Workers that died and were replaced: their counters still count.
    retired: Vec<Worker>,
    now: Instant,
    rejected: u64,
    /// Where the next least-loaded scan starts: one past the last pick.
    next_pick: usize,
    draining: bool,
    /// A second stop signal came during the drain.
    forced: bool,
    /// When the coordinator stops waiting for workers: the drain's deadline
    /// plus `STUCK_GRACE`, or a second signal plus `STUCK_GRACE`.
    give_up_at: Option<Instant>,
    /// Workers left behind at `give_up_at`, and their connections.
    stuck: Vec<(usize, usize)>,
    /// SIGUSR1's answers so far, one slot per worker.
    stats_asked: Option<Vec<Option<Snapshot>>>,
    /// SIGUSR2's live upgrade.
    upgrade: Upgrader,
    /// `--accept reuseport` with a live upgrade: a descriptor of each
    /// worker's listener, by index, to pass them all to the new process.
    /// See [`Coordinator::lend`] for why they are let go at the handover
    /// and at the drain. `None` for a listener that was closed (its
    /// worker died and no replacement could start).
    group: Vec<Option<OwnedFd>>,
    /// `--accept reuseport`: the workers accept, and count the open
    /// connections of the process here (the coordinator hands none over).
    open_count: Option<Arc<OpenCount>>,
}

impl Coordinator {
    pub(super) fn new(
        poll: Poll,
        acceptor: Acceptor,
        signals: Signals,
        drain_timeout: Duration,
        reports: Receiver<FromWorker>,
        workers: Vec<Worker>,
        spawn: Spawn,
    ) -> Self {
        Coordinator {
            poll,
            acceptor,
            signals,
            drain_timeout,
            reports,
            workers,
            spawn,
            retired: Vec::new(),
            now: Instant::now(),
            rejected: 0,
            next_pick: 0,
            draining: false,
            forced: false,
            give_up_at: None,
            stuck: Vec::new(),
            stats_asked: None,
            upgrade: Upgrader::new(UPGRADE),
            group: Vec::new(),
            open_count: None,
        }
    }

    /// `--accept reuseport`: the workers count the open connections of the
    /// process in `open` (the coordinator hands none over).
    pub(super) fn count_open_in(&mut self, open: Arc<OpenCount>) {
        self.open_count = Some(open);
    }

    /// Makes SIGUSR2 a live upgrade to `plan`. With `--accept reuseport`,
    /// `group` holds a descriptor of each worker's listener, in the group's
    /// order (empty otherwise: the coordinator's own listener goes).
    pub(super) fn upgrade_with(&mut self, plan: UpgradePlan, group: Vec<Option<OwnedFd>>) {
        self.upgrade.set_plan(plan);
        self.group = group;
    }

    /// The listeners SIGUSR2 hands over: the coordinator's own, or the
    /// reuseport group's, one per worker, in order. The order matters: the
    /// new process gives socket `i` to its worker `i`, and the program that
    /// steers by CPU names members by their place in the group.
    ///
    /// Holding a second descriptor of a worker's listener keeps the socket
    /// open, in the group and taking its share of the connects, for as long
    /// as it is held, even after the worker closed its own: so these are
    /// let go as soon as the workers stop accepting, at the handover
    /// (`stop_accepting`) and at the drain. Empty when there is nothing
    /// to hand over (then SIGUSR2 is logged and ignored); a group with a
    /// closed member is not handed over at all, as half of it would be
    /// lost.
    fn lend<'a>(acceptor: &'a Acceptor, group: &'a [Option<OwnedFd>]) -> Vec<BorrowedFd<'a>> {
        if let Some(fd) = acceptor.listener_fd() {
            return vec![fd];
        }
        if let Some(closed) = group.iter().position(Option::is_none) {
            warn!(
                "SIGUSR2: the listener of worker {closed} was closed (its replacement could not \
                 start); the group cannot be handed over whole: restart instead"
            );
            return Vec::new();
        }
        group.iter().flatten().map(AsFd::as_fd).collect()
    }

    /// A live upgrade's new process is ready and accepts from the same
    /// sockets: close ours. With `--accept reuseport`, each worker closes
    /// its own, and the coordinator lets go of its descriptors.
    fn stop_accepting(&mut self) {
        self.acceptor.close(self.poll.registry());
        if !self.group.is_empty() {
            self.group.clear();
            self.tell_all(|| ToWorker::StopAccepting);
        }
    }

    pub(super) fn serve(&mut self) -> io::Result<DrainReport> {
        let mut events = Events::with_capacity(64);
        while self.workers.iter().any(|w| w.running) {
            let timeout = [
                self.acceptor.paused_until(),
                self.give_up_at,
                self.upgrade.deadline(),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(ref e) if interrupted(e) => {}
                Err(e) => {
                    // Without its poll the coordinator cannot hear signals:
                    // drain everyone, and wait for their reports on the
                    // channel alone, as long as the deadline allows.
                    error!("the coordinator's poll failed: {e}; draining");
                    self.start_drain("poll failure");
                    self.wait_without_poll();
                    self.join_finished();
                    return Err(e);
                }
            }
            self.now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    SIGNALS => self.handle_signals(),
                    REPORTS => self.read_reports(),
                    UPGRADE => self.upgrade_event(),
                    _ => {}
                }
            }
            if self.upgrade.tick(self.poll.registry(), self.now) == Step::Drain && !self.draining {
                self.start_drain("upgrade");
            }
            if self.acceptor.pause_over(self.now) {
                self.accept_all();
            }
            self.wake_workers();
            if self.give_up_at.is_some_and(|at| self.now >= at) {
                self.leave_stuck_workers();
            }
        }
        self.join_finished();
        Ok(self.final_report())
    }

    /// After a failed poll: reads the workers' reports straight from the
    /// channel until all have finished or `give_up_at` has passed.
    fn wait_without_poll(&mut self) {
        while self.workers.iter().any(|w| w.running) {
            let left = self.give_up_at.map_or(Duration::ZERO, |at| {
                at.saturating_duration_since(Instant::now())
            });
            match self.reports.recv_timeout(left) {
                Ok(report) => self.on_report(report),
                Err(_) => {
                    self.now = Instant::now();
                    self.leave_stuck_workers();
                }
            }
        }
    }

    /// The drain's time is up, and these workers have not finished it:
    /// stop waiting for them. Their threads cannot be stopped from outside
    /// (a thread stuck in a handler never looks at its mailbox), so they
    /// are left running; they die when `run` returns and the process exits.
    fn leave_stuck_workers(&mut self) {
        for (index, worker) in self.workers.iter_mut().enumerate() {
            if !worker.running {
                continue;
            }
            let load = worker.load();
            error!(
                "worker {index} did not finish the drain within {STUCK_GRACE:?} of its deadline: \
                 left behind, with its {load} connections"
            );
            worker.running = false;
            self.stuck.push((index, load));
        }
    }

    /// Connections served by all workers together. A worker that has
    /// ended holds none: one that died has reset its connections.
    fn open(&self) -> usize {
        if let Some(open) = &self.open_count {
            return open.get();
        }
        self.workers
            .iter()
            .filter(|w| w.running)
            .map(Worker::load)
            .sum()
    }

    /// Accepts every waiting client (edge-triggered, as in the lone loop)
    /// and hands each to the least-loaded worker. O(workers) per client:
    /// a handful of loads to compare, fine.
    ///
    /// The first client of a batch is handed over and its worker woken at
    /// once, before the next `accept`: with clients that come one at a time
    /// (most batches are of one), the worker starts on it while the
    /// coordinator finds out that nothing else waits. The rest of a batch
    /// is woken for at its end, once per worker.
    fn accept_all(&mut self) {
        let mut open = self.open();
        let mut first = true;
        while let Some((stream, addr)) = self.acceptor.next(self.now, open, &mut self.rejected) {
            // With no worker left (dropping the stream closes it), the
            // drain is already under way.
            if self.hand_over(stream, addr).is_ok() {
                open += 1;
                if first {
                    first = false;
                    self.wake_workers();
                }
            }
        }
    }

    /// Gives `stream` to the running worker with the fewest connections;
    /// gives it back if no worker is left to take it.
    ///
    /// Ties are common (with clients that come and go, every worker often
    /// serves none), and `min_by_key` takes the first of equals: so the
    /// scan starts one past the last worker picked, and ties go round the
    /// workers in turn instead of all to the lowest index.
    fn hand_over(&mut self, stream: TcpStream, addr: SocketAddr) -> Result<(), TcpStream> {
        let mut message = ToWorker::Connection(stream, addr);
        let count = self.workers.len();
        loop {
            let start = self.next_pick;
            let Some(pick) = (0..count)
                .map(|k| (start + k) % count)
                .filter(|&i| self.workers[i].running)
                .min_by_key(|&i| self.workers[i].load())
            else {
                return match message {
                    ToWorker::Connection(stream, _) => Err(stream),
                    _ => Ok(()),
                };
            };
            self.next_pick = (pick + 1) % count;
            let worker = &mut self.workers[pick];
            match worker.inbox.send(message) {
                Ok(()) => {
                    worker.handed += 1;
                    worker.to_wake = true;
                    return Ok(());
                }
                // That worker's thread is gone without handing its inbox
                // back (it panicked while recovering): try the next one.
                Err(mpsc::SendError(back)) => {
                    worker.running = false;
                    message = back;
                }
            }
        }
    }

    /// At most one wake-up per worker per batch, however many messages it
    /// got, and none for a worker that is awake: it reads its inbox again
    /// before it sleeps (the protocol is on `Sleeping`, in `mailbox.rs`;
    /// `needs_wake` comes after the sends, as it must).
    fn wake_workers(&mut self) {
        for worker in self.workers.iter_mut().filter(|w| w.to_wake) {
            worker.to_wake = false;
            if !worker.sleeping.needs_wake() {
                continue;
            }
            if let Err(e) = worker.waker.wake() {
                warn!("cannot wake a worker: {e}");
            }
        }
    }

    /// Sends `message` (made afresh for each) to every running worker.
    fn tell_all(&mut self, message: impl Fn() -> ToWorker) {
        for worker in self.workers.iter_mut().filter(|w| w.running) {
            if worker.inbox.send(message()).is_ok() {
                worker.to_wake = true;
            }
        }
    }

    /// The upgrade's readiness channel has news: on `READY=1`, stop
    /// accepting (the new process accepts from the same sockets now).
    fn upgrade_event(&mut self) {
        if self.upgrade.readable(self.poll.registry(), self.now) == Step::StopAccepting {
            self.stop_accepting();
        }
    }

    fn handle_signals(&mut self) {
        for order in signals::orders(&mut self.signals) {
            match order {
                Order::Stats => {
                    let slots = self.workers.iter().map(|_| None).collect();
                    self.stats_asked = Some(slots);
                    self.tell_all(|| ToWorker::Stats);
                }
                Order::Upgrade => {
                    let listeners = Self::lend(&self.acceptor, &self.group);
                    self.upgrade
                        .begin(self.poll.registry(), &listeners, self.draining, self.now);
                }
                Order::Stop(name) if !self.draining => self.start_drain(name),
                Order::Stop(name) => {
                    warn!("{name} during the drain: exiting now");
                    self.tell_all(|| ToWorker::Force);
                    self.forced = true;
                    // Healthy workers cut off at once; wait no longer for the rest.
                    let at = self.now + STUCK_GRACE;
                    self.give_up_at = Some(self.give_up_at.map_or(at, |was| was.min(at)));
                }
            }
        }
    }

    /// Closes the listener and sends every worker the drain, with one
    /// deadline for all of them.
    fn start_drain(&mut self, signal: &'static str) {
        self.draining = true;
        self.acceptor.close(self.poll.registry());
        // Each worker closes its own listener as it drains.
        self.group.clear();
        // An upgrade still waiting for its process is given up.
        self.upgrade.abandon(self.poll.registry(), signal);
        // After a handover the supervisor watches the new process: our
        // stop is not the service's.
        if !self.upgrade.handed_over() {
            crate::notify::stopping(self.open());
        }
        let deadline = self.now + self.drain_timeout;
        self.give_up_at = Some(deadline + STUCK_GRACE);
        info!(
            "{signal}: draining {} connections on {} workers (deadline {:?}); send it again to exit at once",
            self.open(),
            self.workers.iter().filter(|w| w.running).count(),
            self.drain_timeout
        );
        self.tell_all(|| ToWorker::Drain { signal, deadline });
        self.wake_workers();
    }

    fn read_reports(&mut self) {
        while let Ok(report) = self.reports.try_recv() {
            self.on_report(report);
        }
    }

    fn on_report(&mut self, report: FromWorker) {
        match report {
            FromWorker::Stats(index, snapshot) => self.stats_answer(index, snapshot),
            FromWorker::Exited(index, exit) => self.worker_exited(index, exit),
        }
    }

    /// A worker's loop has ended. If it finished its drain, that is all.
    /// If it died (a panic, or its poll failed), it has reset the
    /// connections it held; a fresh worker takes its place (unless the
    /// process is draining), as nginx's master starts a new worker process,
    /// and the clients still waiting in its inbox go to live workers.
    fn worker_exited(&mut self, index: usize, mut exit: Exit) {
        let Some(worker) = self.workers.get_mut(index) else {
            return;
        };
        worker.running = false;
        // Everything ever sent to it is in there: this coordinator is the
        // only sender, and sends nothing to a worker that is not running.
        let orphans: Vec<(TcpStream, SocketAddr)> = exit
            .inbox
            .take()
            .map(|inbox| {
                inbox
                    .try_iter()
                    .filter_map(|message| match message {
                        ToWorker::Connection(stream, addr) => Some((stream, addr)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let died = exit.failure.is_some();
        match &exit.failure {
            Some(why) => error!(
                "worker {index} stopped: {why}; it reset the {} connections it held, \
                 and {} waiting for it go to other workers",
                exit.report.reset_after_panic,
                orphans.len()
            ),
            None => debug!("worker {index} finished"),
        }
        // Its own listener (`--accept reuseport`), still open if it died
        // serving: the clients queued there wait for its replacement
        // (unless a live upgrade's new process has taken over: then it
        // serves them, and ours is closed).
        let listener = exit.listener.take().filter(|_| !self.upgrade.handed_over());
        worker.ended = Some(exit);
        if died && !self.draining {
            self.replace(index, listener);
        }
        for (stream, addr) in orphans {
            if let Err(stream) = self.hand_over(stream, addr) {
                // Nobody left to serve it (the others have finished their
                // drain): it was accepted and is closed unserved, like a
                // client over the connection cap. Reset: it may be owed an
                // echo of what it sent.
                warn!("no worker left to serve {addr}: resetting it");
                abort(&stream);
                self.rejected += 1;
            }
        }
        self.wake_workers();
        // A worker that is gone will not answer SIGUSR1.
        self.log_stats_if_complete();
    }

    /// Starts a fresh worker in place `index`, whose worker died.
    fn replace(&mut self, index: usize, listener: Option<mio::net::TcpListener>) {
        let generation = self.workers[index].generation + 1;
        match (self.spawn)(index, generation, listener) {
            Ok(mut fresh) => {
                // SIGUSR1's question went to the one that died.
                if self.stats_asked.is_some() && fresh.inbox.send(ToWorker::Stats).is_ok() {
                    fresh.to_wake = true;
                }
                let dead = std::mem::replace(&mut self.workers[index], fresh);
                self.retired.push(dead);
                info!("worker {index} started again (replacement {generation})");
            }
            Err(e) => {
                error!("cannot start a worker in place of worker {index}: {e}");
                // Its listener went with the failed start; ours must not
                // keep the socket open with no one to accept.
                if let Some(slot) = self.group.get_mut(index) {
                    *slot = None;
                }
                if !self.workers.iter().any(|w| w.running) {
                    self.start_drain("no worker left");
                }
            }
        }
    }

    fn stats_answer(&mut self, index: usize, snapshot: Snapshot) {
        if let Some(slot) = self
            .stats_asked
            .as_mut()
            .and_then(|slots| slots.get_mut(index))
        {
            *slot = Some(snapshot);
        }
        self.log_stats_if_complete();
    }

    /// Logs SIGUSR1's line once every running worker has answered.
    fn log_stats_if_complete(&mut self) {
        let Some(slots) = &self.stats_asked else {
            return;
        };
        let complete = slots
            .iter()
            .zip(&self.workers)
            .all(|(slot, worker)| slot.is_some() || !worker.running);
        if !complete {
            return;
        }
        let snapshots: Vec<Snapshot> = slots.iter().flatten().copied().collect();
        self.stats_asked = None;
        // While serving, the numbers of the workers in place; those of a
        // worker that died are in the totals at the end.
        log_stats(&snapshots, &snapshots, self.rejected);
    }

    /// Waits for the threads of the workers that have reported their end
    /// (they are about to return). A stuck worker's thread is not waited
    /// for: it ends with the process.
    fn join_finished(&mut self) {
        // Reports that came after the last poll.
        self.read_reports();
        for worker in self.workers.iter_mut().chain(&mut self.retired) {
            if worker.ended.is_none() {
                continue;
            }
            if let Some(thread) = worker.thread.take()
                && thread.join().is_err()
            {
                // Cannot happen: the thread catches its own panics.
                error!("a worker thread ended in a panic");
            }
        }
    }

    /// Adds up the workers' drain reports; logs the summary and the stats.
    /// The totals count every worker, those that died and were replaced
    /// included; the spread shows the workers in place at the end.
    fn final_report(&self) -> DrainReport {
        let mut total = DrainReport::default();
        let mut all = Vec::new();
        for worker in self.retired.iter().chain(&self.workers) {
            // None: left behind, counted below.
            if let Some(exit) = &worker.ended {
                total.add(&exit.report);
                all.push(exit.snapshot);
                if exit.failure.is_some() {
                    total.workers_failed += 1;
                }
            }
        }
        // Also when every worker had finished before the second signal.
        total.forced |= self.forced;
        for &(_, load) in &self.stuck {
            total.workers_stuck += 1;
            total.abandoned += load as u64;
        }
        info!("{}", total.summary());
        let in_place: Vec<Snapshot> = self
            .workers
            .iter()
            .filter_map(|w| w.ended.as_ref().map(|exit| exit.snapshot))
            .collect();
        log_stats(&all, &in_place, self.rejected);
        total
    }
}

/// The totals of all workers, then how evenly the workers in place shared
/// the work.
fn log_stats(all: &[Snapshot], in_place: &[Snapshot], rejected: u64) {
    let mut total = Snapshot::sum(all);
    // The coordinator's acceptor rejects; workers never do.
    total.totals.rejected += rejected;
    info!("stats: {total}");
    info!("workers: {}", Spread::of(in_place));
}
