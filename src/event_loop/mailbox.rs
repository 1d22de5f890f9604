//! A worker's mailbox: how a loop running as one of `--workers N` hears from
//! the coordinator (`src/workers/`), and answers it.
//!
//! The coordinator owns the listener and the signals. It sends each worker
//! the clients it accepted for it, and the drain, the second signal and
//! SIGUSR1's request for numbers. A message goes into a channel, then the
//! coordinator wakes the worker's poll through a `mio::Waker` (an eventfd
//! registered under the token `MAILBOX`), so the worker sleeps in
//! `epoll_wait` like any loop and reads its mail as one more event.
//!
//! When the worker's loop ends, it hands the inbox itself back (`Exit`), so
//! clients it was sent but never opened are not lost with it.
//!
//! Nothing here is on the path of a message: the channel carries one item
//! per connection and per signal, never per line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::Instant;

use log::{debug, warn};
use mio::Waker;
use mio::net::TcpStream;

use super::observe::Work;
use super::{DrainReport, Server};
use crate::connection::CloseReason;
use crate::handler::Handler;
use crate::stats::Snapshot;

/// From the coordinator to one worker.
pub(crate) enum ToWorker {
    /// A client the coordinator accepted: this worker's for good once it
    /// opens it. (If the worker dies first, the coordinator gets it back
    /// with the inbox: see `Exit`.)
    Connection(TcpStream, SocketAddr),
    /// A stop signal: drain, under the one deadline computed for everyone.
    Drain {
        signal: &'static str,
        deadline: Instant,
    },
    /// A second stop signal: cut off what is left, now.
    Force,
    /// SIGUSR1: send your numbers.
    Stats,
    /// `--accept reuseport`: a live upgrade's new process is ready and
    /// accepts from the same sockets; close your listener and serve on.
    StopAccepting,
}

/// From one worker (by its index) to the coordinator.
pub(crate) enum FromWorker {
    /// The answer to `ToWorker::Stats`.
    Stats(usize, Snapshot),
    /// The worker's loop has ended, by finishing its drain or by failing.
    /// Its last message.
    Exited(usize, Exit),
}

/// How a worker's loop ended.
pub(crate) struct Exit {
    /// Its drain's counters; after a failure, what it counted until then,
    /// plus the connections it reset (`reset_after_panic`).
    pub report: DrainReport,
    /// Its last numbers.
    pub snapshot: Snapshot,
    /// Why it failed (a panic, or an error from `poll`); `None` when it
    /// finished its drain.
    pub failure: Option<String>,
    /// Its inbox, handed back: connections the coordinator sent it that it
    /// never opened are still in it, for the coordinator to give to a
    /// worker that is alive. (The coordinator keeps the sending end, so
    /// nothing sent before it reads this message can be lost.)
    pub inbox: Option<Receiver<ToWorker>>,
    /// Its own listener (`--accept reuseport`), if it died before its
    /// drain closed it: the worker that replaces it accepts from it, so
    /// the clients in its queue are served.
    pub listener: Option<mio::net::TcpListener>,
}

/// The worker's end of the mailbox.
pub(crate) struct Mailbox {
    pub index: usize,
    pub inbox: Receiver<ToWorker>,
    pub outbox: Sender<FromWorker>,
    /// Wakes the coordinator after something was put in `outbox`.
    pub coordinator: Arc<Waker>,
    /// Connections this worker is done with (closed, or never opened). The
    /// coordinator counts what it handed over, so their difference is this
    /// worker's load. Written by this worker only, once per connection.
    pub done: Arc<DoneCount>,
    /// Set while this worker sleeps (or is about to) in `epoll_wait`: the
    /// coordinator wakes it only then. See [`Sleeping`].
    pub sleeping: Arc<Sleeping>,
}

/// A worker's count of the connections it is done with: written by the
/// worker, read by the coordinator. Each sits alone on its own cache lines,
/// so that one worker's writes do not take the line away from the counters
/// of the others (false sharing): allocated one after another, the bare
/// 8-byte counters would share a 64-byte line. 128 rather than 64 because
/// x86's spatial prefetcher fetches lines in pairs (crossbeam's
/// `CachePadded` uses 128 on x86-64 and aarch64 for the same reason); a
/// few hundred bytes for a handful of workers.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct DoneCount(AtomicUsize);

impl DoneCount {
    /// One more connection done (the worker only).
    pub(crate) fn add_one(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections done so far (the coordinator).
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Whether a worker is asleep in its poll, so that the coordinator writes
/// its waker (an `eventfd` write, and a `futex`-free but real wake-up of a
/// thread) only when the worker needs one. A worker busy with a turn finds
/// the new mail itself at the end of the turn.
///
/// The protocol (Dekker's, as in Go's netpoller and tokio's parker), with
/// the flag `S` and the inbox `Q`:
///
/// ```text
/// worker, before each poll          coordinator, after sending
///   S = true                          Q.push(message)
///   fence(SeqCst)                     fence(SeqCst)
///   read all of Q (re-check)          if S { wake the worker }
///   poll: sleep until woken
///   S = false
/// ```
///
/// No wake-up is lost: the two `SeqCst` fences are in one total order. If
/// the worker's fence comes first, its `S = true` is visible to the
/// coordinator's load after its own fence, and it wakes the worker. If the
/// coordinator's fence comes first, its push is visible to the worker's
/// re-check, which reads the message before sleeping. (Both may happen:
/// one spare wake-up, harmless.) A bare `SeqCst` store and load would not
/// do: the channel's push is a release store, and without the fence the
/// coordinator's load of `S` could be ordered before it (store-load
/// reordering, which x86 allows too). `S = false` after the poll can be
/// `Relaxed`: a stale `true` read by the coordinator costs one spare
/// wake-up, never a lost one.
///
/// It sits alone on its cache lines, as [`DoneCount`] does: the worker
/// writes it twice a turn.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Sleeping(AtomicBool);

impl Sleeping {
    /// The worker, before its re-check of the inbox and its poll.
    pub(crate) fn going_to_sleep(&self) {
        self.0.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The worker, once its poll has returned (or will not block).
    pub(crate) fn awake(&self) {
        self.0.store(false, Ordering::Relaxed);
    }

    /// The coordinator, after sending: whether the worker must be woken.
    pub(crate) fn needs_wake(&self) -> bool {
        fence(Ordering::SeqCst);
        self.0.load(Ordering::Relaxed)
    }
}

impl Mailbox {
    /// Puts `message` in the coordinator's box and wakes it.
    pub(crate) fn send(&self, message: FromWorker) {
        // The coordinator outlives every worker; if it is gone regardless,
        // nobody is left to tell.
        if self.outbox.send(message).is_ok()
            && let Err(e) = self.coordinator.wake()
        {
            warn!("cannot wake the coordinator: {e}");
        }
    }
}

impl<H: Handler> Server<H> {
    /// Reads every message waiting. The waker fires once for any number of
    /// them (its eventfd is edge-triggered like every source), so read
    /// until the channel is empty; a message sent after that comes with a
    /// wake of its own, or is found by the re-check before the next poll
    /// (`recheck_mail`). Returns how many messages it read.
    pub(super) fn read_mail(&mut self) -> usize {
        let mut read = 0;
        loop {
            let Some(mailbox) = &self.mailbox else {
                return read;
            };
            let message = match mailbox.inbox.try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Empty) => return read,
                // The coordinator is gone: nobody will send the drain.
                Err(TryRecvError::Disconnected) => {
                    if self.drain.is_none() {
                        warn!("the coordinator is gone: draining");
                        let deadline = self.now + self.config.drain_timeout;
                        self.start_drain("coordinator gone", deadline);
                    }
                    return read;
                }
            };
            read += 1;
            match message {
                ToWorker::Connection(stream, addr) => match self.open_connection(stream, addr) {
                    None => self.count_done(),
                    // Handed over during the drain (it waited in the inbox
                    // of a worker that died): it is drained like the rest.
                    Some(id) if self.drain.is_some() => {
                        self.begin_close(id, CloseReason::Drain);
                        self.write_and_advance(id);
                    }
                    Some(_) => {}
                },
                ToWorker::Drain { signal, deadline } => self.start_drain(signal, deadline),
                ToWorker::Force => self.force_drain(),
                ToWorker::StopAccepting => self.acceptor.close(self.poll.registry()),
                ToWorker::Stats => {
                    debug!("stats requested");
                    if let Some(mailbox) = &self.mailbox {
                        mailbox.send(FromWorker::Stats(mailbox.index, self.snapshot()));
                    }
                }
            }
        }
    }

    /// A worker about to poll: says it is going to sleep, then reads any
    /// mail the coordinator sent without waking it (see [`Sleeping`]).
    /// Returns whether there was any: then the loop must not block, as the
    /// mail may need the end of a turn (a drain with nothing left to close
    /// ends there). A lone loop has no mailbox: false.
    pub(super) fn recheck_mail(&mut self) -> bool {
        let Some(mailbox) = &self.mailbox else {
            return false;
        };
        mailbox.sleeping.going_to_sleep();
        let mut read = 0;
        self.work(Work::Recheck, |server| read = server.read_mail());
        if read > 0 {
            self.woke_up();
        }
        read > 0
    }

    /// A worker's poll has returned: the coordinator need not wake it.
    pub(super) fn woke_up(&self) {
        if let Some(mailbox) = &self.mailbox {
            mailbox.sleeping.awake();
        }
    }

    /// How this worker ended, for the coordinator: its counters, its last
    /// numbers and its inbox. `failure` says why the loop failed, if it did;
    /// then `abandon` has already reset its connections.
    pub(crate) fn worker_exit(mut self, failure: Option<String>) -> Exit {
        Exit {
            report: self.report,
            snapshot: self.snapshot(),
            failure,
            inbox: self.mailbox.take().map(|mailbox| mailbox.inbox),
            listener: self.acceptor.take_listener(),
        }
    }

    /// Tells the coordinator that one connection of this worker is gone
    /// (and, with `--accept reuseport`, gives its place back).
    pub(super) fn count_done(&self) {
        if let Some(mailbox) = &self.mailbox {
            mailbox.done.add_one();
        }
        self.acceptor.release(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_done_count_has_its_cache_lines_to_itself() {
        // As the coordinator makes them, one per worker, one after another.
        let counts: Vec<Arc<DoneCount>> = (0..8).map(|_| Arc::default()).collect();
        let lines: Vec<usize> = counts
            .iter()
            .map(|c| {
                let at = Arc::as_ptr(c) as usize;
                assert_eq!(at % 128, 0, "not at the start of a line pair");
                at / 128
            })
            .collect();
        for (i, a) in lines.iter().enumerate() {
            assert!(!lines[i + 1..].contains(a), "two counts share a line");
        }
        assert_eq!(std::mem::size_of::<DoneCount>(), 128);
    }
}
