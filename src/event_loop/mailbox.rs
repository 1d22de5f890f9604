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
//! Nothing here is on the path of a message: the channel carries one item
//! per connection and per signal, never per line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::Instant;

use log::{debug, warn};
use mio::Waker;
use mio::net::TcpStream;

use super::{DrainReport, Server};
use crate::handler::Handler;
use crate::stats::Snapshot;

/// From the coordinator to one worker.
pub(crate) enum ToWorker {
    /// A client the coordinator accepted: this worker's for good.
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
}

/// From one worker (by its index) to the coordinator.
pub(crate) enum FromWorker {
    /// The answer to `ToWorker::Stats`.
    Stats(usize, Snapshot),
    /// The worker's loop has ended: its drain report and last numbers, or
    /// why it failed (a panic, or an error from `poll`).
    Exited(usize, Result<(DrainReport, Snapshot), String>),
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
    pub done: Arc<AtomicUsize>,
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
    /// wake of its own.
    pub(super) fn read_mail(&mut self) {
        loop {
            let Some(mailbox) = &self.mailbox else { return };
            let message = match mailbox.inbox.try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Empty) => return,
                // The coordinator is gone: nobody will send the drain.
                Err(TryRecvError::Disconnected) => {
                    if self.drain.is_none() {
                        warn!("the coordinator is gone: draining");
                        let deadline = self.now + self.config.drain_timeout;
                        self.start_drain("coordinator gone", deadline);
                    }
                    return;
                }
            };
            match message {
                ToWorker::Connection(stream, addr) => {
                    if !self.open_connection(stream, addr) {
                        self.count_done();
                    }
                }
                ToWorker::Drain { signal, deadline } => self.start_drain(signal, deadline),
                ToWorker::Force => self.force_drain(),
                ToWorker::Stats => {
                    debug!("stats requested");
                    if let Some(mailbox) = &self.mailbox {
                        mailbox.send(FromWorker::Stats(mailbox.index, self.snapshot()));
                    }
                }
            }
        }
    }

    /// Tells the coordinator that one connection of this worker is gone.
    pub(super) fn count_done(&self) {
        if let Some(mailbox) = &self.mailbox {
            mailbox.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}
