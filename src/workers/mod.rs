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
//! Signals: only this thread takes them (each worker blocks them). The first
//! stop signal closes the listener and sends every worker the drain with one
//! deadline, computed here once; a second one cuts every worker off. The
//! coordinator keeps that deadline itself: a worker that has not finished
//! `STUCK_GRACE` after it (or after a second signal) is named in the log and
//! left behind, and `run` returns. SIGUSR1 asks every worker for its numbers
//! and logs the totals and the spread. SIGUSR2's live upgrade (`upgrade.rs`)
//! is the coordinator's too: it hands the listener to the new process (with
//! `--accept reuseport`, every worker's, in the group's order), stops
//! accepting once that one is ready, and then drains every worker.
//!
//! A worker that panics (or whose poll fails) resets the connections it
//! held, hands back the clients still waiting in its inbox, which go to the
//! live workers, and is replaced by a fresh worker; the process serves on,
//! and the final report counts the failure (exit status 4).
//!
//! `--workers 1` does not come here at all: the lone loop serves the
//! listener and the signals itself, with no extra thread.
//!
//! This file starts the workers; `coordinator.rs` is the coordinator's loop.

mod coordinator;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use log::{error, info};
use mio::{Interest, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;

use coordinator::Coordinator;

use crate::config::Config;
use crate::event_loop::{
    Acceptor, DoneCount, DrainReport, Exit, FromWorker, MAILBOX, Mailbox, OpenCount, Server,
    Sleeping, ToWorker,
};
use crate::fd_limit::fit_fd_limit;
use crate::handler::Handler;
use crate::listener::{self, InstanceLock};
use crate::signals;
use crate::stats::Snapshot;
use crate::sys;
use crate::upgrade::UpgradePlan;

// The coordinator's tokens: it has only these four sources.
const LISTENER: Token = Token(0);
const SIGNALS: Token = Token(1);
const REPORTS: Token = Token(2);
/// A live upgrade's readiness channel (`upgrade.rs`).
const UPGRADE: Token = Token(3);

/// The coordinator's view of one worker.
struct Worker {
    /// How many workers held its place before it (0: the first).
    generation: usize,
    inbox: Sender<ToWorker>,
    waker: Arc<Waker>,
    /// Connections handed to it so far (written here only).
    handed: usize,
    /// Connections it is done with (written by the worker only).
    done: Arc<DoneCount>,
    /// Set by the worker while it sleeps in its poll (`Sleeping`): only
    /// then does it need a wake-up.
    sleeping: Arc<Sleeping>,
    /// It has something new in its inbox: wake it (if it sleeps) once the
    /// batch is sent.
    to_wake: bool,
    /// Its loop is still running.
    running: bool,
    /// How it ended, once it has (its inbox already taken).
    ended: Option<Exit>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the worker for a place (an index), of a generation: the
/// coordinator calls it to replace a worker that died.
/// With `--accept reuseport`, the listener of that place goes with it.
type Spawn = Box<dyn Fn(usize, usize, Option<mio::net::TcpListener>) -> io::Result<Worker>>;

/// How clients reach the workers (`--accept`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Accept {
    /// One thread accepts every client and hands each to the least-loaded
    /// worker: exact balance, one listener.
    #[default]
    Coordinator,
    /// Each worker accepts from a listener of its own, all in one
    /// `SO_REUSEPORT` group steered by the CPU that took the SYN: no
    /// hand-over, balance left to the kernel.
    Reuseport,
}

impl Worker {
    /// Connections it is serving now (or has still to take from its inbox).
    fn load(&self) -> usize {
        self.handed.saturating_sub(self.done.get())
    }
}

/// N event loops behind one acceptor; see the file's header.
pub struct Workers<F> {
    poll: Poll,
    /// The coordinator's listener (none with `--accept reuseport`).
    acceptor: Acceptor,
    /// `--accept reuseport`: one listener per worker, by index, and the
    /// process's count of open connections, and the lock on the address.
    group: Vec<mio::net::TcpListener>,
    /// An inherited group ([`Workers::from_group`]): its members, and the
    /// sockets that complete it, which listen only once `run` starts (after
    /// `READY=1`). `group` is empty then.
    inherited: Option<listener::InheritedGroup>,
    /// A descriptor of each member of the group, in order, made before we
    /// say we are ready: the coordinator hands them to a live upgrade
    /// (`Coordinator::lend`).
    lent: Vec<OwnedFd>,
    open: Option<Arc<OpenCount>>,
    lock: Option<InstanceLock>,
    /// `--pin-cpus`: worker `i` runs on the `i`-th of these CPUs (modulo).
    pin: Option<Vec<usize>>,
    local_addr: SocketAddr,
    signals: Signals,
    config: Config,
    count: usize,
    new_handler: Arc<F>,
    upgrade: Option<UpgradePlan>,
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
        check(&config, count)?;
        let listener = listener::listen_on_first(addrs, config.backlog, config.send_buffer)?;
        Self::with_listener(listener, config, count, new_handler)
    }

    /// `--accept reuseport`: listens on the first of `addrs` that can be
    /// bound with `count` listeners, one per worker, in one `SO_REUSEPORT`
    /// group steered by CPU (`listener::listen_group`, which also explains
    /// how a second instance is refused). Each worker accepts by itself,
    /// under one process-wide cap; the coordinator thread keeps the
    /// signals, the drain and replacing a worker that dies, and accepts
    /// nothing.
    pub fn bind_reuseport(
        addrs: &[SocketAddr],
        config: Config,
        count: usize,
        new_handler: F,
    ) -> io::Result<Self> {
        check(&config, count)?;
        let mut last_err = io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on");
        let mut bound = None;
        for addr in addrs {
            match listener::listen_group(*addr, config.backlog, config.send_buffer, count) {
                Ok(group) => {
                    bound = Some(group);
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        let (group, lock) = bound.ok_or(last_err)?;
        let lent = duplicates(group.iter().map(AsFd::as_fd))?;
        let local_addr = group[0].local_addr()?;
        let mut workers = Self::with_group(local_addr, lent, config, count, new_handler)?;
        workers.group = group;
        workers.lock = Some(lock);
        Ok(workers)
    }

    /// `--accept reuseport` on sockets that are already listening, all on
    /// one address: those a live upgrade's old process passed (its group,
    /// in order), or socket activation's. They become the first members of
    /// the group, and sockets are bound to complete it, one per worker
    /// (`listener::join_group`); those listen, and the group is steered by
    /// CPU, only when [`Workers::run`] starts, after this process has said
    /// it is ready. More sockets than workers are refused.
    pub fn from_group(
        listeners: Vec<std::net::TcpListener>,
        config: Config,
        count: usize,
        new_handler: F,
    ) -> io::Result<Self> {
        check(&config, count)?;
        let inherited = listeners
            .into_iter()
            .map(listener::adopt)
            .collect::<io::Result<Vec<_>>>()?;
        let group = listener::join_group(inherited, config.backlog, config.send_buffer, count)?;
        let members = group.members.iter().map(AsFd::as_fd);
        let lent = duplicates(members.chain(group.unopened.iter().map(AsFd::as_fd)))?;
        let local_addr = group.members[0].local_addr()?;
        let mut workers = Self::with_group(local_addr, lent, config, count, new_handler)?;
        workers.inherited = Some(group);
        Ok(workers)
    }

    /// The rest of `bind_reuseport` and `from_group`, which then put their
    /// group in.
    fn with_group(
        local_addr: SocketAddr,
        lent: Vec<OwnedFd>,
        config: Config,
        count: usize,
        new_handler: F,
    ) -> io::Result<Self> {
        let acceptor = Acceptor::new(None, config.max_connections);
        let mut workers = Self::assemble(
            Poll::new()?,
            acceptor,
            local_addr,
            config,
            count,
            new_handler,
        )?;
        workers.open = Some(Arc::default());
        workers.lent = lent;
        Ok(workers)
    }

    /// What every constructor does once it has its poll and acceptor: the
    /// open-file limit for the whole process, the signals, and the fields
    /// (a group, its count of open connections and its lock are put in by
    /// the reuseport constructors).
    fn assemble(
        poll: Poll,
        acceptor: Acceptor,
        local_addr: SocketAddr,
        config: Config,
        count: usize,
        new_handler: F,
    ) -> io::Result<Self> {
        fit_fd_limit(config.max_connections, count);
        let signals = signals::listen(poll.registry(), SIGNALS)?;
        Ok(Workers {
            poll,
            acceptor,
            group: Vec::new(),
            inherited: None,
            lent: Vec::new(),
            open: None,
            lock: None,
            pin: None,
            local_addr,
            signals,
            config,
            count,
            new_handler: Arc::new(new_handler),
            upgrade: None,
        })
    }

    /// `--pin-cpus`: pins worker `i` to the `i`-th CPU this process may run
    /// on (modulo their number), so that with `--accept reuseport` a
    /// connection stays on the CPU that took its SYN, from SYN to close.
    /// The coordinator thread is not pinned.
    pub fn pin_cpus(&mut self) -> io::Result<()> {
        self.pin = Some(sys::allowed_cpus()?);
        Ok(())
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
        check(&config, count)?;
        Self::with_listener(listener::adopt(listener)?, config, count, new_handler)
    }

    /// The rest of `bind` and `from_listener`, once there is a listener.
    fn with_listener(
        listener: mio::net::TcpListener,
        config: Config,
        count: usize,
        new_handler: F,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let local_addr = listener.local_addr()?;
        let mut acceptor = Acceptor::new(Some(listener), config.max_connections);
        if let Some(listener) = acceptor.listener_mut() {
            poll.registry()
                .register(listener, LISTENER, Interest::READABLE)?;
        }
        Self::assemble(poll, acceptor, local_addr, config, count, new_handler)
    }

    /// The address actually bound (with the real port for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Makes SIGUSR2 a live upgrade to `plan` (`upgrade.rs`), as
    /// [`Server::upgrade_with`]: the coordinator owns the signals, so it
    /// hands the listener over (with `--accept reuseport`, every worker's,
    /// in the group's order) and then drains every worker.
    pub fn upgrade_with(&mut self, plan: UpgradePlan) {
        self.upgrade = Some(plan);
    }

    /// Starts the workers and serves until a signal starts a drain and
    /// every worker has finished it. The report adds up every worker's;
    /// `workers_failed` counts workers that panicked or whose loop failed.
    pub fn run(self) -> io::Result<DrainReport> {
        let Workers {
            poll,
            acceptor,
            group,
            inherited,
            lent,
            open,
            lock,
            pin,
            local_addr,
            signals,
            config,
            count,
            new_handler,
            upgrade: plan,
        } = self;

        let reports_waker = Arc::new(Waker::new(poll.registry(), REPORTS)?);
        let (outbox, reports) = mpsc::channel();
        // Held until `run` returns: a second instance is refused till then.
        let _lock = lock;
        let drain_timeout = config.drain_timeout;
        let shared = open.clone();
        let spawn: Spawn = Box::new(move |index, generation, listener| {
            let cpu = pin
                .as_ref()
                .filter(|cpus| !cpus.is_empty())
                .map(|cpus| cpus[index % cpus.len()]);
            let own = listener.zip(shared.clone());
            spawn_worker(
                index,
                generation,
                local_addr,
                &config,
                &new_handler,
                &outbox,
                &reports_waker,
                (own, cpu),
            )
        });
        // An inherited group opens now, once we have said we are ready
        // (`listener::join_group` says why).
        let group = match inherited {
            None => group,
            Some(inherited) => {
                let (members, failed) = inherited.open();
                info!("the reuseport group is open: {} listeners", members.len());
                if let Some(e) = failed {
                    error!(
                        "the reuseport group opened with {} of its {count} listeners: {e}; \
                         the workers past them accept nothing",
                        members.len()
                    );
                }
                members
            }
        };
        // With a live upgrade to hand the group over, the coordinator keeps
        // a descriptor of each member (see `Coordinator::lend`); a socket
        // that could not listen is no member.
        let lent: Vec<Option<OwnedFd>> = match plan {
            Some(_) => lent.into_iter().take(group.len()).map(Some).collect(),
            None => Vec::new(),
        };
        let mut workers = Vec::with_capacity(count);
        let mut group = group.into_iter();
        for index in 0..count {
            workers.push(spawn(index, 0, group.next())?);
        }
        info!("{count} workers started");
        let mut coordinator = Coordinator::new(
            poll,
            acceptor,
            signals,
            drain_timeout,
            reports,
            workers,
            spawn,
        );
        if let Some(open) = open {
            coordinator.count_open_in(open);
        }
        if let Some(plan) = plan {
            coordinator.upgrade_with(plan, lent);
        }
        coordinator.serve()
    }
}

/// What `bind` and `from_listener` refuse before they touch a socket.
fn check(config: &Config, count: usize) -> io::Result<()> {
    config.check()?;
    if count < 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "Workers needs at least 2 workers; run a Server for one",
        ));
    }
    Ok(())
}

/// Starts worker `index` on its own thread, with its own poll; with
/// `--accept reuseport`, its own listener and the shared count of open
/// connections; with `--pin-cpus`, on that CPU.
#[allow(clippy::too_many_arguments)]
fn spawn_worker<F, H>(
    index: usize,
    generation: usize,
    local_addr: SocketAddr,
    config: &Config,
    new_handler: &Arc<F>,
    outbox: &Sender<FromWorker>,
    coordinator: &Arc<Waker>,
    (own, cpu): (
        Option<(mio::net::TcpListener, Arc<OpenCount>)>,
        Option<usize>,
    ),
) -> io::Result<Worker>
where
    F: Fn(usize) -> H + Send + Sync + 'static,
    H: Handler + 'static,
{
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), MAILBOX)?);
    let (inbox_sender, inbox) = mpsc::channel();
    let done = Arc::new(DoneCount::default());
    let sleeping = Arc::new(Sleeping::default());
    let mailbox = Mailbox {
        index,
        inbox,
        outbox: outbox.clone(),
        coordinator: coordinator.clone(),
        done: done.clone(),
        sleeping: sleeping.clone(),
    };
    let config = config.clone();
    let new_handler = new_handler.clone();
    // A replacement is named apart from the worker it replaces: worker-1.2
    // is the third to hold place 1.
    let name = match generation {
        0 => format!("worker-{index}"),
        n => format!("worker-{index}.{n}"),
    };
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        // Only the coordinator reads the signals.
        signals::keep_away_from_this_thread();
        if let Some(cpu) = cpu
            && let Err(e) = sys::pin_this_thread(cpu)
        {
            log::warn!("worker {index}: cannot pin to CPU {cpu}: {e}");
        }
        let outbox = mailbox.outbox.clone();
        let coordinator = mailbox.coordinator.clone();
        // A panic must not take the process down with the connections of
        // the other workers: `worker_main` catches it. This second net is
        // for a panic while recovering from one; the coordinator must hear
        // of the end in any case.
        let exit = catch_unwind(AssertUnwindSafe(|| {
            worker_main(index, poll, local_addr, config, &*new_handler, mailbox, own)
        }))
        .unwrap_or_else(|panic| Exit {
            report: DrainReport::default(),
            snapshot: Snapshot::default(),
            failure: Some(format!(
                "it panicked, and again while recovering: {}",
                panic_message(&*panic)
            )),
            inbox: None,
            listener: None,
        });
        if outbox.send(FromWorker::Exited(index, exit)).is_ok() {
            let _ = coordinator.wake();
        }
    })?;
    Ok(Worker {
        generation,
        inbox: inbox_sender,
        waker,
        handed: 0,
        done,
        sleeping,
        to_wake: false,
        running: true,
        ended: None,
        thread: Some(thread),
    })
}

/// One worker's life: builds its handler and its loop, runs the loop, and
/// says how it ended.
///
/// The loop runs inside `catch_unwind`, but the `Server` is built outside
/// it, so that after a panic this thread still owns the server: its
/// sockets, and its inbox, where clients handed to it may still wait. It
/// then resets the connections it held (`Server::abandon`) and hands the
/// inbox back, so that no accepted connection disappears unnoticed.
fn worker_main<F, H>(
    index: usize,
    poll: Poll,
    local_addr: SocketAddr,
    config: Config,
    new_handler: &F,
    mailbox: Mailbox,
    own: Option<(mio::net::TcpListener, Arc<OpenCount>)>,
) -> Exit
where
    F: Fn(usize) -> H,
    H: Handler,
{
    let handler = match catch_unwind(AssertUnwindSafe(|| new_handler(index))) {
        Ok(handler) => handler,
        Err(panic) => {
            return Exit {
                report: DrainReport::default(),
                snapshot: Snapshot::default(),
                failure: Some(format!(
                    "its handler panicked as it was made: {}",
                    panic_message(&*panic)
                )),
                inbox: Some(mailbox.inbox),
                listener: own.map(|(listener, _)| listener),
            };
        }
    };
    let mut server = match Server::worker(poll, local_addr, config, handler, mailbox, own) {
        Ok(server) => server,
        Err(e) => {
            return Exit {
                report: DrainReport::default(),
                snapshot: Snapshot::default(),
                failure: Some(format!("cannot register its listener: {e}")),
                inbox: None,
                listener: None,
            };
        }
    };
    let failure = match catch_unwind(AssertUnwindSafe(|| server.run_worker())) {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("its event loop failed: {e}")),
        Err(panic) => Some(format!("it panicked: {}", panic_message(&*panic))),
    };
    if failure.is_some() {
        server.abandon();
    }
    server.worker_exit(failure)
}

/// A descriptor of each of `fds`, made before we say we are ready, so that
/// running out of descriptors fails the start and not the loop.
fn duplicates<'a>(fds: impl Iterator<Item = BorrowedFd<'a>>) -> io::Result<Vec<OwnedFd>> {
    fds.map(|fd| fd.try_clone_to_owned()).collect()
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
