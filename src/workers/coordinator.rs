//! The coordinator of `--workers`: its own small loop over the listener,
//! the signals and the workers' reports. It accepts and hands each client to
//! the least-loaded worker, sends the drain (one deadline for all) and the
//! second signal, collects SIGUSR1's numbers, and adds up the reports when
//! every worker has finished. See `mod.rs` for the design.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::TcpStream;
use mio::{Events, Poll};
use signal_hook_mio::v1_0::Signals;

use super::{LISTENER, REPORTS, SIGNALS, Worker};
use crate::event_loop::{Acceptor, DrainReport, FromWorker, ToWorker, read_signals};
use crate::io_util::interrupted;
use crate::stats::{Snapshot, Spread};

/// The coordinator's loop: accept and hand over, signals, workers' reports.
pub(super) struct Coordinator {
    poll: Poll,
    acceptor: Acceptor,
    signals: Signals,
    drain_timeout: Duration,
    reports: Receiver<FromWorker>,
    workers: Vec<Worker>,
    now: Instant,
    rejected: u64,
    draining: bool,
    /// SIGUSR1's answers so far, one slot per worker.
    stats_asked: Option<Vec<Option<Snapshot>>>,
}

impl Coordinator {
    pub(super) fn new(
        poll: Poll,
        acceptor: Acceptor,
        signals: Signals,
        drain_timeout: Duration,
        reports: Receiver<FromWorker>,
        workers: Vec<Worker>,
    ) -> Self {
        Coordinator {
            poll,
            acceptor,
            signals,
            drain_timeout,
            reports,
            workers,
            now: Instant::now(),
            rejected: 0,
            draining: false,
            stats_asked: None,
        }
    }

    pub(super) fn serve(&mut self) -> io::Result<DrainReport> {
        let mut events = Events::with_capacity(64);
        while self.workers.iter().any(|w| w.running) {
            let timeout = self
                .acceptor
                .paused_until()
                .map(|at| at.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(ref e) if interrupted(e) => {}
                Err(e) => {
                    // Without its poll the coordinator cannot hear signals
                    // or reports: drain everyone, then wait for them.
                    error!("the coordinator's poll failed: {e}; draining");
                    self.start_drain("poll failure");
                    self.join_all();
                    return Err(e);
                }
            }
            self.now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    SIGNALS => self.handle_signals(),
                    REPORTS => self.read_reports(),
                    _ => {}
                }
            }
            if self.acceptor.pause_over(self.now) {
                self.accept_all();
            }
            self.wake_workers();
        }
        self.join_all();
        Ok(self.final_report())
    }

    /// Connections served by all workers together.
    fn open(&self) -> usize {
        self.workers.iter().map(Worker::load).sum()
    }

    /// Accepts every waiting client (edge-triggered, as in the lone loop)
    /// and hands each to the least-loaded worker. O(workers) per client:
    /// a handful of loads to compare, fine.
    fn accept_all(&mut self) {
        let mut open = self.open();
        while let Some((stream, addr)) = self.acceptor.next(self.now, open, &mut self.rejected) {
            if self.hand_over(stream, addr) {
                open += 1;
            }
        }
    }

    /// Gives `stream` to the running worker with the fewest connections;
    /// returns whether one took it.
    fn hand_over(&mut self, mut stream: TcpStream, addr: SocketAddr) -> bool {
        loop {
            let Some(worker) = self
                .workers
                .iter_mut()
                .filter(|w| w.running)
                .min_by_key(|w| w.load())
            else {
                // No worker left: dropping the stream closes it.
                return false;
            };
            match worker.inbox.send(ToWorker::Connection(stream, addr)) {
                Ok(()) => {
                    worker.handed += 1;
                    worker.to_wake = true;
                    return true;
                }
                // That worker has just died: try the next one.
                Err(mpsc::SendError(ToWorker::Connection(back, _))) => {
                    worker.running = false;
                    stream = back;
                }
                Err(_) => return false,
            }
        }
    }

    /// One wake-up per worker per turn, however many messages it got.
    fn wake_workers(&mut self) {
        for worker in self.workers.iter_mut().filter(|w| w.to_wake) {
            worker.to_wake = false;
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

    fn handle_signals(&mut self) {
        let (report_stats, stops) = read_signals(&mut self.signals);
        if report_stats {
            let slots = self.workers.iter().map(|_| None).collect();
            self.stats_asked = Some(slots);
            self.tell_all(|| ToWorker::Stats);
        }
        for name in stops {
            if self.draining {
                warn!("{name} during the drain: exiting now");
                self.tell_all(|| ToWorker::Force);
            } else {
                self.start_drain(name);
            }
        }
    }

    /// Closes the listener and sends every worker the drain, with one
    /// deadline for all of them.
    fn start_drain(&mut self, signal: &'static str) {
        self.draining = true;
        self.acceptor.close();
        crate::notify::stopping(self.open());
        let deadline = self.now + self.drain_timeout;
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
            match report {
                FromWorker::Stats(index, snapshot) => self.stats_answer(index, snapshot),
                FromWorker::Exited(index, outcome) => {
                    let failed = outcome.is_err();
                    match &outcome {
                        Err(why) => error!("worker {index} stopped: {why}"),
                        Ok(_) => debug!("worker {index} finished"),
                    }
                    if let Some(worker) = self.workers.get_mut(index) {
                        worker.running = false;
                        worker.outcome = Some(outcome);
                    }
                    // The others must not serve on as if nothing happened:
                    // drain them, and let the exit status say it.
                    if failed && !self.draining {
                        self.start_drain("worker failure");
                    }
                    // A worker that is gone will not answer SIGUSR1.
                    self.log_stats_if_complete();
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
        log_stats(&snapshots, self.rejected);
    }

    /// Waits for every worker's thread to end.
    fn join_all(&mut self) {
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take()
                && thread.join().is_err()
            {
                // Cannot happen: the thread catches its own panics.
                error!("a worker thread ended in a panic");
            }
        }
        // Reports that came after the last poll.
        self.read_reports();
    }

    /// Adds up the workers' drain reports; logs the summary and the stats.
    fn final_report(&self) -> DrainReport {
        let mut total = DrainReport::default();
        let mut snapshots = Vec::new();
        for worker in &self.workers {
            match &worker.outcome {
                Some(Ok((report, snapshot))) => {
                    total.add(report);
                    snapshots.push(*snapshot);
                }
                Some(Err(_)) | None => total.workers_failed += 1,
            }
        }
        info!("{}", total.summary());
        log_stats(&snapshots, self.rejected);
        total
    }
}

/// The totals of all workers, then how evenly they shared the work.
fn log_stats(snapshots: &[Snapshot], rejected: u64) {
    let mut total = Snapshot::sum(snapshots);
    // The coordinator's acceptor rejects; workers never do.
    total.totals.rejected += rejected;
    info!("stats: {total}");
    info!("workers: {}", Spread::of(snapshots));
}
