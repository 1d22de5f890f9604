//! The live upgrade: on SIGUSR2, as nginx does, start the binary now at
//! our path with our arguments, hand it the listening socket, wait for it
//! to say it is ready, then stop accepting, serve our connections a little
//! longer and drain. See `docs/restart.md`.
//!
//! ```text
//! cp reactor-echo.new /usr/local/bin/reactor-echo.tmp && mv -f /usr/local/bin/reactor-echo.tmp /usr/local/bin/reactor-echo
//! kill -USR2 $(cat /run/reactor-echo.pid)     # the new binary serves; the old one drains and exits 0
//! ```
//!
//! The steps, in the old process (the lone loop, or the coordinator of
//! `--workers`, which owns the signals):
//!
//! 1. [`Upgrader::begin`]: a `SOCK_SEQPACKET` socketpair for readiness, then
//!    `posix_spawn` (`sys::spawn_with_fds`) of [`UpgradePlan::program`] with
//!    the listener at fd 3 and the pair's other end at fd 4, and
//!    `LISTEN_FDS=1` and `REACTOR_ECHO_UPGRADE=<our pid>` in its environment
//!    (`activation.rs` says why not `LISTEN_PID`). With `--accept reuseport`
//!    there is one listener per worker, N in all: they go at fds 3 to
//!    3 + N - 1 in the order of the group, `LISTEN_FDS=N`, and the channel
//!    at fd 3 + N.
//! 2. The new process serves on them as on any inherited socket, writes the
//!    pid file, and says `READY=1` on the channel (`notify::ready`). Both
//!    processes now accept from the same sockets, so the same accept
//!    queues: a connect is taken by one or the other, never refused.
//! 3. [`Upgrader::readable`] reads `READY=1`: we close our listeners
//!    ([`Step::StopAccepting`]), tell a supervisor `MAINPID=` of the new
//!    process, and keep serving our connections for [`UpgradePlan::grace`],
//!    so that a request already on its way is answered.
//! 4. [`Upgrader::tick`] at the end of the grace says [`Step::Drain`]: the
//!    drain of SIGTERM (every echo owed, then FIN), then exit 0.
//!
//! If the new process cannot be started, closes fd 4 (it exited) or is not
//! ready within [`UpgradePlan::timeout`], the upgrade fails: the log says
//! why, a child still running is killed, every child is reaped, the pid file
//! is taken back if the failed process wrote it, and we serve on as before.
//! A stop signal during the wait abandons the upgrade the same way.
//!
//! After the handover the new process is our child until we exit; then the
//! kernel gives it to init (or the nearest subreaper), which reaps it, as
//! with nginx's new master. We keep the channel open meanwhile: its EOF
//! tells us if the new process dies while we drain, and we reap it then.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Socket, Type};

use crate::activation;
use crate::io_util::{interrupted, would_block};
use crate::{notify, pid_file, sys};

/// How long the new process has to report ready, by default
/// (`--upgrade-timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the old process serves its connections after the handover,
/// before it drains, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(1);

/// What SIGUSR2 starts: a program, its arguments, and the limits of the
/// wait. [`UpgradePlan::this_process`] makes the plan of the command line;
/// a program serving its own [`crate::Handler`] can make its own.
#[derive(Clone, Debug)]
pub struct UpgradePlan {
    /// The file to execute. The binary *now* at this path runs, so that
    /// replacing the file (by `rename`, as package managers do) and sending
    /// SIGUSR2 runs the new version.
    pub program: PathBuf,
    /// Its `argv`, `argv[0]` included.
    pub argv: Vec<OsString>,
    /// How long the new process has to report ready before it is killed
    /// and the upgrade given up.
    pub timeout: Duration,
    /// How long the old process serves on after the handover, before the
    /// drain: a request already sent when the listener closed is answered.
    pub grace: Duration,
    /// The pid file (`--pid-file`), which the new process writes once
    /// ready; taken back if a new process that failed had written it.
    pub pid_file: Option<PathBuf>,
}

impl UpgradePlan {
    /// This process again, with the same arguments. Call it at start-up.
    ///
    /// Which file: `argv[0]` when it holds a `/` (made absolute against the
    /// current folder now, in case the folder changes), as nginx executes its
    /// `argv[0]`: a symlink there is followed anew at each upgrade, so
    /// flipping `current -> release-2` upgrades to release 2. A bare name
    /// (found on `PATH` by the shell) is resolved through
    /// `std::env::current_exe` now, at start-up; later that link
    /// (`/proc/self/exe`) would name the *old*, replaced file, `(deleted)`.
    pub fn this_process(timeout: Duration, pid_file: Option<PathBuf>) -> io::Result<Self> {
        let argv: Vec<OsString> = std::env::args_os().collect();
        let program = match argv.first() {
            Some(arg0) if arg0.as_encoded_bytes().contains(&b'/') => std::path::absolute(arg0)?,
            _ => std::env::current_exe()?,
        };
        Ok(UpgradePlan {
            program,
            argv,
            timeout,
            grace: DEFAULT_GRACE,
            pid_file,
        })
    }
}

/// What the loop must do after an upgrade event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing.
    Nothing,
    /// The new process is ready: close the listener (it has its own copy).
    StopAccepting,
    /// The grace after the handover is over: drain as on SIGTERM.
    Drain,
}

/// The new process and our end of its readiness channel.
struct Child {
    pid: u32,
    /// `None` once the channel reached its end (and was deregistered).
    channel: Option<Socket>,
}

enum State {
    Idle,
    /// Started; waiting for `READY=1` until `deadline`.
    Starting {
        child: Child,
        deadline: Instant,
    },
    /// It is ready and we stopped accepting; drain at `drain_at` (`None`
    /// once the drain was asked for).
    HandedOver {
        child: Child,
        drain_at: Option<Instant>,
    },
}

/// The old process's side of the live upgrade; one per loop that owns the
/// listener and the signals (the lone loop, or the coordinator).
pub(crate) struct Upgrader {
    plan: Option<UpgradePlan>,
    token: Token,
    state: State,
}

/// Longest readiness message read; the rest of a longer one is cut off.
const MESSAGE_MAX: usize = 4096;

impl Upgrader {
    /// No plan: SIGUSR2 is logged and ignored until [`Upgrader::set_plan`].
    /// The readiness channel is registered under `token`.
    pub(crate) fn new(token: Token) -> Self {
        Upgrader {
            plan: None,
            token,
            state: State::Idle,
        }
    }

    pub(crate) fn set_plan(&mut self, plan: UpgradePlan) {
        self.plan = Some(plan);
    }

    /// The new process is ready and has the listener: we no longer accept,
    /// and the supervisor was told that it watches the new process now.
    pub(crate) fn handed_over(&self) -> bool {
        matches!(self.state, State::HandedOver { .. })
    }

    /// The next moment [`Upgrader::tick`] has work: the readiness deadline,
    /// or the end of the grace.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Idle => None,
            State::Starting { deadline, .. } => Some(*deadline),
            State::HandedOver { drain_at, .. } => *drain_at,
        }
    }

    /// SIGUSR2: starts the new process on `listeners` (one, or a reuseport
    /// group's in its order), unless an upgrade is under way, or we are
    /// draining (`draining`), or there is no plan or no listener. Every
    /// refusal and failure is logged; we serve on.
    pub(crate) fn begin(
        &mut self,
        registry: &Registry,
        listeners: &[BorrowedFd<'_>],
        draining: bool,
        now: Instant,
    ) {
        let Some(plan) = &self.plan else {
            warn!("SIGUSR2: no live upgrade is set up here; ignored");
            return;
        };
        match &self.state {
            State::Starting { child, .. } => {
                warn!(
                    "SIGUSR2: an upgrade is already under way (pid {} is starting); ignored",
                    child.pid
                );
                return;
            }
            State::HandedOver { child, .. } => {
                warn!(
                    "SIGUSR2: this process handed over to pid {} already and is draining; \
                     send SIGUSR2 to that one",
                    child.pid
                );
                return;
            }
            State::Idle => {}
        }
        if draining {
            warn!("SIGUSR2 during the drain: no listener to hand over; ignored");
            return;
        }
        if listeners.is_empty() {
            warn!("SIGUSR2: no listener to hand over; ignored");
            return;
        }
        let timeout = plan.timeout;
        let program = plan.program.display().to_string();
        let what = match listeners.len() {
            1 => "the listener".to_string(),
            n => format!("the {n} listeners"),
        };
        match start(plan, listeners) {
            Ok((pid, channel)) => {
                let fd = channel.as_raw_fd();
                if let Err(e) =
                    registry.register(&mut SourceFd(&fd), self.token, Interest::READABLE)
                {
                    // Without the channel we would never hear READY=1.
                    error!("SIGUSR2: cannot watch the readiness of pid {pid}: {e}");
                    drop(channel);
                    stop_and_reap(pid, Duration::ZERO);
                    return;
                }
                info!(
                    "SIGUSR2: started {program} as pid {pid}, with {what}; \
                     waiting up to {timeout:?} for it to report ready"
                );
                self.state = State::Starting {
                    child: Child {
                        pid,
                        channel: Some(channel),
                    },
                    deadline: now + timeout,
                };
            }
            Err(e) => error!("SIGUSR2: cannot start {program}: {e}; this process serves on"),
        }
    }

    /// The readiness channel has something: `READY=1`, or its end.
    pub(crate) fn readable(&mut self, registry: &Registry, now: Instant) -> Step {
        let (ready, ended) = match &mut self.state {
            State::Idle => return Step::Nothing,
            State::Starting { child, .. } | State::HandedOver { child, .. } => {
                match &child.channel {
                    Some(channel) => read_messages(channel, child.pid),
                    None => return Step::Nothing,
                }
            }
        };
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Starting { child, .. } if ready => {
                let grace = self.plan.as_ref().map_or(DEFAULT_GRACE, |p| p.grace);
                info!(
                    "upgrade: pid {} is ready and serving; this process stops accepting, \
                     serves its connections for {grace:?} more, then drains",
                    child.pid
                );
                notify::handed_over(child.pid);
                let mut child = child;
                if ended {
                    child = self.new_process_ended(registry, child);
                }
                self.state = State::HandedOver {
                    child,
                    drain_at: Some(now + grace),
                };
                Step::StopAccepting
            }
            State::Starting { child, .. } if ended => {
                self.fail(
                    registry,
                    child,
                    "closed its readiness channel without READY=1",
                    EXITING_GRACE,
                );
                Step::Nothing
            }
            State::HandedOver { child, drain_at } if ended => {
                let child = self.new_process_ended(registry, child);
                self.state = State::HandedOver { child, drain_at };
                Step::Nothing
            }
            other => {
                self.state = other;
                Step::Nothing
            }
        }
    }

    /// The readiness deadline, or the end of the grace.
    pub(crate) fn tick(&mut self, registry: &Registry, now: Instant) -> Step {
        match &mut self.state {
            State::Starting { deadline, .. } if now >= *deadline => {
                let timeout = self.plan.as_ref().map_or(DEFAULT_TIMEOUT, |p| p.timeout);
                if let State::Starting { child, .. } =
                    std::mem::replace(&mut self.state, State::Idle)
                {
                    self.fail(
                        registry,
                        child,
                        &format!("did not report ready within {timeout:?}"),
                        Duration::ZERO,
                    );
                }
                Step::Nothing
            }
            State::HandedOver { drain_at, .. } if drain_at.is_some_and(|at| now >= at) => {
                *drain_at = None;
                Step::Drain
            }
            _ => Step::Nothing,
        }
    }

    /// A stop signal (`why`): an upgrade still waiting for its process is
    /// given up (the process is stopped and reaped); after the handover,
    /// the drain the signal starts replaces the one planned.
    pub(crate) fn abandon(&mut self, registry: &Registry, why: &str) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => {}
            State::Starting { child, .. } => {
                warn!(
                    "{why}: giving up the upgrade; stopping pid {}, which was not ready yet",
                    child.pid
                );
                let pid = child.pid;
                if let Some(channel) = child.channel {
                    close_channel(registry, channel);
                }
                stop_and_reap(pid, Duration::ZERO);
                self.reclaim_pid_file(pid);
            }
            State::HandedOver { child, .. } => {
                self.state = State::HandedOver {
                    child,
                    drain_at: None,
                };
            }
        }
    }

    /// The upgrade failed: say why, stop and reap the child (given `grace`
    /// to end by itself first), take the pid file back; we serve on.
    fn fail(&mut self, registry: &Registry, child: Child, why: &str, grace: Duration) {
        let pid = child.pid;
        if let Some(channel) = child.channel {
            close_channel(registry, channel);
        }
        error!("upgrade failed: pid {pid} {why}; this process serves on");
        stop_and_reap(pid, grace);
        self.reclaim_pid_file(pid);
    }

    fn reclaim_pid_file(&self, failed: u32) {
        let Some(path) = self.plan.as_ref().and_then(|p| p.pid_file.as_ref()) else {
            return;
        };
        match pid_file::reclaim(path, failed) {
            Ok(true) => info!(
                "pid file {} named pid {failed}: it names this process again",
                path.display()
            ),
            Ok(false) => {}
            Err(e) => warn!("cannot take back the pid file {}: {e}", path.display()),
        }
    }

    /// After the handover, the channel's end means the new process exited
    /// (or closed it): reap it if it exited, so that it is no zombie while
    /// we drain.
    fn new_process_ended(&mut self, registry: &Registry, mut child: Child) -> Child {
        if let Some(channel) = child.channel.take() {
            close_channel(registry, channel);
        }
        match sys::try_wait(child.pid) {
            Ok(Some(status)) => error!(
                "upgrade: pid {}, which took over the listener, has ended ({status}); \
                 nothing listens unless a supervisor restarts it",
                child.pid
            ),
            Ok(None) => debug!(
                "upgrade: pid {} closed its readiness channel; still running",
                child.pid
            ),
            Err(e) => warn!("upgrade: cannot reap pid {}: {e}", child.pid),
        }
        child
    }
}

/// Spawns the plan's program with `listeners` at fds 3, 4, ... and a
/// readiness channel right after them; its pid and our end of the channel.
fn start(plan: &UpgradePlan, listeners: &[BorrowedFd<'_>]) -> io::Result<(u32, Socket)> {
    // SOCK_SEQPACKET: one message per send, as on NOTIFY_SOCKET, and the
    // end of the other side (the process exits) reads as EOF.
    let (ours, theirs) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None)?;
    ours.set_cloexec(true)?;
    theirs.set_cloexec(true)?;
    ours.set_nonblocking(true)?;
    // Our environment, without a socket activation's variables (ours were
    // cleared at start, but a library user's process may hold some), then
    // those of the upgrade.
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !activation::VARS.iter().any(|v| k == v))
        .collect();
    env.push(("LISTEN_FDS".into(), listeners.len().to_string().into()));
    env.push((
        activation::UPGRADE_VAR.into(),
        std::process::id().to_string().into(),
    ));
    let mut fds = listeners.to_vec();
    fds.push(theirs.as_fd());
    let pid = sys::spawn_with_fds(&plan.program, &plan.argv, &env, &fds)?;
    // `theirs` is closed here: only the child holds that end now, so its
    // exit is our EOF.
    Ok((pid, ours))
}

/// Reads every message waiting on `channel`: whether one said `READY=1`,
/// and whether the channel has ended (the process exited or closed it).
fn read_messages(mut channel: &Socket, pid: u32) -> (bool, bool) {
    let mut buf = [0u8; MESSAGE_MAX];
    let mut ready = false;
    loop {
        match channel.read(&mut buf) {
            Ok(0) => return (ready, true),
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]);
                debug!("pid {pid} says: {}", message.replace('\n', "; "));
                ready |= message.lines().any(|line| line == "READY=1");
            }
            Err(ref e) if would_block(e) => return (ready, false),
            Err(ref e) if interrupted(e) => continue,
            Err(e) => {
                warn!("upgrade: reading the readiness channel of pid {pid}: {e}");
                return (ready, true);
            }
        }
    }
}

/// Deregisters our end of a channel and closes it.
fn close_channel(registry: &Registry, channel: Socket) {
    let fd = channel.as_raw_fd();
    if let Err(e) = registry.deregister(&mut SourceFd(&fd)) {
        debug!("deregistering a readiness channel: {e}");
    }
}

/// How long a new process whose readiness channel reached its end has to
/// finish exiting before it is killed. The end comes as the process closes
/// its descriptors, a moment before it becomes a zombie that can be
/// reaped; without this wait the log would name our SIGKILL instead of the
/// status it exited with (2, say, for a flag it refused), which is what an
/// operator needs. It blocks the loop, on a failed upgrade only.
const EXITING_GRACE: Duration = Duration::from_millis(50);

/// Kills our child `pid` if it still runs `grace` from now (SIGKILL: it
/// was not ready, so it serves no one), and reaps it, so that no zombie is
/// left.
fn stop_and_reap(pid: u32, grace: Duration) {
    let give_up = Instant::now() + grace;
    loop {
        match sys::try_wait(pid) {
            Ok(Some(status)) => {
                info!("upgrade: pid {pid} ended ({status}); reaped");
                return;
            }
            Ok(None) if Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(None) => break,
            Err(e) => {
                warn!("upgrade: cannot reap pid {pid}: {e}");
                return;
            }
        }
    }
    if let Err(e) = sys::signal_process(pid, libc::SIGKILL) {
        warn!("upgrade: cannot stop pid {pid}: {e}");
    }
    // A killed process ends at once: this wait is short. (One that was
    // exiting on its own may beat the signal: its status says which.)
    match sys::wait(pid) {
        Ok(status) => info!("upgrade: pid {pid} ended ({status}); reaped"),
        Err(e) => warn!("upgrade: cannot reap pid {pid}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_one_line_of_a_message() {
        let (ours, theirs) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap();
        ours.set_nonblocking(true).unwrap();
        assert_eq!(read_messages(&ours, 1), (false, false));
        theirs.send(b"STATUS=starting").unwrap();
        assert_eq!(read_messages(&ours, 1), (false, false));
        // NOT_READY=1 is not READY=1.
        theirs.send(b"NOT_READY=1").unwrap();
        assert_eq!(read_messages(&ours, 1), (false, false));
        theirs
            .send(b"READY=1\nSTATUS=listening on 127.0.0.1:1, 0 connections open")
            .unwrap();
        assert_eq!(read_messages(&ours, 1), (true, false));
        drop(theirs);
        assert_eq!(read_messages(&ours, 1), (false, true));
    }

    #[test]
    fn the_plan_of_this_process_names_an_absolute_program() {
        let plan = UpgradePlan::this_process(DEFAULT_TIMEOUT, None).unwrap();
        assert!(plan.program.is_absolute(), "{plan:?}");
        assert_eq!(plan.argv.len(), std::env::args_os().count());
    }
}
