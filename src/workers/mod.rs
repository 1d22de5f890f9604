//! `--workers N`: N copies of the event loop, one per thread, sharing
//! nothing on the path of a message, as nginx and Seastar run.
//!
//! ```text
//! reactor-echo --workers 4          # or --workers auto: one per CPU we may use
//! kill -USR1 <pid>                  # totals, and how evenly the workers share them
//! ```
//!
//! The shape: this thread (the coordinator) owns the listening socket and
//! the signals, in a `mio::Poll` of its own. It accepts each client and
//! hands it to the worker serving the fewest connections, over a channel,
//! then wakes that worker's poll with a `mio::Waker` (`event_loop/mailbox.rs`).
//! From then on the connection belongs to that worker alone: its own poll,
//! slab, timers, read buffer and counters. No lock is taken and nothing is
//! shared on the data path; the only shared word per worker is a count of
//! the connections it has finished with, written once per connection.
//!
//! Why one acceptor rather than a listener per worker with `SO_REUSEPORT`
//! (nginx's `reuseport`, Envoy): the kernel spreads reuseport connections by
//! a hash of their addresses, blind to load. With a few connections per
//! worker, some workers get twice the average and some none (Seastar turned
//! it off for that reason), and a listener closed at shutdown resets the
//! clients still in its own queue. One acceptor that picks the least-loaded
//! worker spreads connections exactly evenly, keeps `--max-connections` and
//! the EMFILE trick in one place, and closes one listener at the drain. Its
//! cost is a channel send and a wake-up per connection, not per message.
//! Seastar, memcached and Redis 8's I/O threads hand connections over the
//! same way.
//!
//! Signals: the first stop signal closes the listener and sends every worker
//! the drain with one deadline, computed here once; a second one cuts every
//! worker off. SIGUSR1 asks every worker for its numbers and logs the totals
//! and the spread. A worker that panics (or whose poll fails) does not hang
//! the process: the others are drained, and `run` reports the failure.
//!
//! `--workers 1` does not come here at all: the lone loop serves the
//! listener and the signals itself, with no extra thread.
//!
//! This file starts the workers; `coordinator.rs` is the coordinator's loop.

mod coordinator;

use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use log::info;
use mio::{Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook_mio::v1_0::Signals;

use coordinator::Coordinator;

use crate::config::Config;
use crate::event_loop::{Acceptor, DrainReport, FromWorker, MAILBOX, Mailbox, Server, ToWorker};
use crate::fd_limit::fit_fd_limit;
use crate::handler::Handler;
use crate::listener;
use crate::stats::Snapshot;

// The coordinator's tokens: it has only these three sources.
const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const REPORTS: Token = Token(2);

/// The coordinator's view of one worker.
struct Worker {
    inbox: Sender<ToWorker>,
    waker: Arc<Waker>,
    /// Connections handed to it so far (written here only).
    handed: usize,
    /// Connections it is done with (written by the worker only).
    done: Arc<AtomicUsize>,
    /// It has something new in its inbox: wake it once the batch is sent.
    to_wake: bool,
    /// Its loop is still running.
    running: bool,
    /// How it ended, once it has.
    outcome: Option<Result<(DrainReport, Snapshot), String>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Connections it is serving now (or has still to take from its inbox).
    fn load(&self) -> usize {
        self.handed
            .saturating_sub(self.done.load(Ordering::Relaxed))
    }
}

/// N event loops behind one acceptor; see the file's header.
pub struct Workers<F> {
    poll: Poll,
    acceptor: Acceptor,
    local_addr: SocketAddr,
    signals: Signals,
    config: Config,
    count: usize,
    new_handler: Arc<F>,
}

impl<F, H> Workers<F>
where
    F: Fn(usize) -> H + Send + Sync + 'static,
    H: Handler + 'static,
{
    /// Listens on the first of `addrs` that can be bound, for `count`
    /// workers (at least 2). Each worker's handler is built on its own
    /// thread by `new_handler(worker_index)`, so handlers need not be `Send`.
    /// Takes over the same signals as [`Server::bind`], and raises the
    /// open-file limit once for the whole process.
    pub fn bind(
        addrs: &[SocketAddr],
        config: Config,
        count: usize,
        new_handler: F,
    ) -> io::Result<Self> {
        config
            .validate()
            .map_err(|msg| io::Error::new(io::ErrorKind::InvalidInput, msg))?;
        if count < 2 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "Workers needs at least 2 workers; run a Server for one",
            ));
        }
        let mut last_err = io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on");
        let mut bound = None;
        for addr in addrs {
            match listener::listen(*addr, config.backlog, config.send_buffer) {
                Ok(listener) => {
                    bound = Some(listener);
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        let Some(listener) = bound else {
            return Err(last_err);
        };
        Self::with_listener(listener, config, count, new_handler)
    }

    /// Serves on `listener`, a socket that is already listening (one
    /// inherited under socket activation: `activation.rs`), instead of
    /// binding one. Otherwise as [`Workers::bind`].
    pub fn from_listener(
        listener: std::net::TcpListener,
        config: Config,
        count: usize,
        new_handler: F,
    ) -> io::Result<Self> {
        config
            .validate()
            .map_err(|msg| io::Error::new(io::ErrorKind::InvalidInput, msg))?;
        if count < 2 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "Workers needs at least 2 workers; run a Server for one",
            ));
        }
        // mio requires it, and an inherited socket may arrive blocking.
        listener.set_nonblocking(true)?;
        Self::with_listener(
            mio::net::TcpListener::from_std(listener),
            config,
            count,
            new_handler,
        )
    }

    /// The rest of `bind` and `from_listener`, once there is a listener.
    fn with_listener(
        listener: mio::net::TcpListener,
        config: Config,
        count: usize,
        new_handler: F,
    ) -> io::Result<Self> {
        fit_fd_limit(config.max_connections);
        let poll = Poll::new()?;
        let local_addr = listener.local_addr()?;
        let mut acceptor = Acceptor::new(Some(listener), config.max_connections);
        if let Some(listener) = acceptor.listener_mut() {
            poll.registry()
                .register(listener, LISTENER, Interest::READABLE)?;
        }
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Workers {
            poll,
            acceptor,
            local_addr,
            signals,
            config,
            count,
            new_handler: Arc::new(new_handler),
        })
    }

    /// The address actually bound (with the real port for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts the workers and serves until a signal starts a drain and
    /// every worker has finished it. The report adds up every worker's;
    /// `workers_failed` counts workers that panicked or whose loop failed.
    pub fn run(self) -> io::Result<DrainReport> {
        let Workers {
            poll,
            acceptor,
            local_addr,
            signals,
            config,
            count,
            new_handler,
        } = self;
        let reports_waker = Arc::new(Waker::new(poll.registry(), REPORTS)?);
        let (outbox, reports) = mpsc::channel();
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            workers.push(spawn_worker(
                index,
                local_addr,
                &config,
                &new_handler,
                &outbox,
                &reports_waker,
            )?);
        }
        info!("{count} workers started");
        let mut coordinator = Coordinator::new(
            poll,
            acceptor,
            signals,
            config.drain_timeout,
            reports,
            workers,
        );
        coordinator.serve()
    }
}

/// Starts worker `index` on its own thread, with its own poll.
fn spawn_worker<F, H>(
    index: usize,
    local_addr: SocketAddr,
    config: &Config,
    new_handler: &Arc<F>,
    outbox: &Sender<FromWorker>,
    coordinator: &Arc<Waker>,
) -> io::Result<Worker>
where
    F: Fn(usize) -> H + Send + Sync + 'static,
    H: Handler + 'static,
{
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), MAILBOX)?);
    let (inbox_sender, inbox) = mpsc::channel();
    let done = Arc::new(AtomicUsize::new(0));
    let mailbox = Mailbox {
        index,
        inbox,
        outbox: outbox.clone(),
        coordinator: coordinator.clone(),
        done: done.clone(),
    };
    let config = config.clone();
    let new_handler = new_handler.clone();
    let thread = std::thread::Builder::new()
        .name(format!("worker-{index}"))
        .spawn(move || {
            let outbox = mailbox.outbox.clone();
            let coordinator = mailbox.coordinator.clone();
            // A panic must not take the process down with the connections
            // of the other workers: catch it, and tell the coordinator.
            let outcome = catch_unwind(AssertUnwindSafe(move || {
                let handler = new_handler(index);
                Server::worker(poll, local_addr, config, handler, mailbox).run_worker()
            }));
            let outcome = match outcome {
                Ok(Ok(done)) => Ok(done),
                Ok(Err(e)) => Err(format!("its event loop failed: {e}")),
                Err(panic) => Err(format!("it panicked: {}", panic_message(&*panic))),
            };
            if outbox.send(FromWorker::Exited(index, outcome)).is_ok() {
                let _ = coordinator.wake();
            }
        })?;
    Ok(Worker {
        inbox: inbox_sender,
        waker,
        handed: 0,
        done,
        to_wake: false,
        running: true,
        outcome: None,
        thread: Some(thread),
    })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConnId;
    use crate::handler::Context;
    use std::io::{Read, Write};
    use std::time::Duration;

    /// Echoes, but a frame "boom" panics the worker serving it.
    struct PanicOnBoom;

    impl Handler for PanicOnBoom {
        fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, frame: &[u8]) {
            assert!(frame != b"boom\n", "the handler was told to panic");
            ctx.send(conn, frame);
        }
    }

    fn roundtrip(c: &mut std::net::TcpStream, line: &[u8]) {
        c.write_all(line).unwrap();
        let mut got = vec![0; line.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(got, line);
    }

    #[test]
    fn a_worker_that_panics_does_not_hang_the_process() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let workers = Workers::bind(&[addr], Config::default(), 2, |_| PanicOnBoom).unwrap();
        let addr = workers.local_addr();
        let (done, ended) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(workers.run());
        });
        // Least-loaded: the first client goes to one worker, the second to
        // the other.
        let mut doomed = std::net::TcpStream::connect(addr).unwrap();
        roundtrip(&mut doomed, b"hello\n");
        let mut other = std::net::TcpStream::connect(addr).unwrap();
        roundtrip(&mut other, b"hello\n");
        doomed.write_all(b"boom\n").unwrap();

        let report = ended
            .recv_timeout(Duration::from_secs(20))
            .expect("the process must not hang on a dead worker")
            .unwrap();
        assert_eq!(report.workers_failed, 1);
        // The surviving worker drained its client: every byte, then FIN.
        let mut rest = Vec::new();
        other.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert_eq!(report.closed_cleanly, 1);
    }
}
