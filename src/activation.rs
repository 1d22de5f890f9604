//! Socket activation: serving on a listening socket that another process
//! made and handed to us, instead of binding one ourselves.
//!
//! ```text
//! systemd-socket-activate -l 127.0.0.1:8000 reactor-echo   # then: nc 127.0.0.1 8000
//! ```
//!
//! The convention is systemd's (`sd_listen_fds(3)`), and any launcher can
//! follow it: the socket arrives as file descriptor 3, `LISTEN_FDS=1` says
//! how many there are, and `LISTEN_PID` names the process they are meant
//! for. The PID check matters because the environment is inherited: a
//! shell or a script started by the real recipient would otherwise believe
//! fd 3 is a socket for it too. So, as `sd_listen_fds` does:
//!
//! - no `LISTEN_PID`, or one that is not our pid: the variables are not for
//!   us, and we bind `--listen` as usual;
//! - `LISTEN_FDS=0`: nothing was passed; we bind `--listen`;
//! - `LISTEN_FDS=1`: fd 3 is ours. It must be a listening TCP socket (IPv4
//!   or IPv6), or we refuse to start;
//! - `LISTEN_FDS=N`, more than one: fds 3 to 3 + N - 1 are ours, each a
//!   listening TCP socket as above. Only `--accept reuseport` serves more
//!   than one, and only N sockets on one address, the members of one
//!   `SO_REUSEPORT` group: what its live upgrade passes (`main.rs` refuses
//!   the rest);
//! - a value that is not a number: refused.
//!
//! In every case the variables are removed from our environment, so that
//! no process we might start later mistakes them for its own. That removal
//! happens first thing in `main`, while the process has one thread (see
//! `sys::remove_env_if_single_threaded` for why that matters).
//!
//! A live upgrade (`upgrade.rs`) starts the new process the same way, with
//! one difference: the old process cannot know the new one's pid before it
//! starts it, so it cannot set `LISTEN_PID`. It sets
//! `REACTOR_ECHO_UPGRADE=<its own pid>` instead, which holds for the process
//! whose *parent* has that pid: a process that the new one starts later has
//! another parent, so the check does what `LISTEN_PID`'s does. With it, the
//! descriptor after the last socket (fd 4 after one listener, fd 3 + N after
//! N) is the readiness channel on which the new process says `READY=1`
//! (`notify.rs`).
//!
//! Why bother: the socket belongs to whoever made it (systemd, say), not
//! to us. It listens before we start and after we exit, so connects that
//! come while we restart wait in its accept queue instead of being refused.
//! See `docs/restart.md`.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys;

/// Stands in for `LISTEN_PID` when a live upgrade starts us: the pid of the
/// process that did, our parent (see the file's header).
pub const UPGRADE_VAR: &str = "REACTOR_ECHO_UPGRADE";

/// The variables of the convention, and ours. `LISTEN_FDNAMES` (names for
/// the descriptors) is read by no one here, but cleared with the others.
pub const VARS: [&str; 4] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", UPGRADE_VAR];

/// What the environment handed us at start.
#[derive(Debug)]
pub struct Activation {
    /// fds 3, 4, ..., now ours, when `LISTEN_FDS` is 1 or more and
    /// `LISTEN_PID` is our pid (empty otherwise); not yet checked to be
    /// listening TCP sockets ([`listener`] does that).
    pub fds: Vec<OwnedFd>,
    /// The descriptor after the last socket, now ours, when a live upgrade
    /// started us (`REACTOR_ECHO_UPGRADE` names our parent): the channel on
    /// which to tell the old process that we are ready
    /// (`notify::to_old_process`).
    pub ready: Option<OwnedFd>,
    /// Things worth a log line: variables that were there but not for us,
    /// or that could not be cleared.
    pub notes: Vec<String>,
}

/// Reads and clears `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, and
/// takes fds 3, 4, ... if they say they are ours. Call it first thing in `main`, before
/// any thread starts: only then can the variables be cleared (otherwise they
/// stay, and a note says so).
///
/// An error is a bad value in the variables (exit status 2).
pub fn take_from_env() -> Result<Activation, String> {
    let pid = std::env::var_os("LISTEN_PID");
    let fds = std::env::var_os("LISTEN_FDS");
    let upgrade = std::env::var_os(UPGRADE_VAR);
    let mut notes = Vec::new();
    let present = VARS.iter().any(|var| std::env::var_os(var).is_some());
    if present && !sys::remove_env_if_single_threaded(&VARS) {
        notes.push("could not clear LISTEN_PID and LISTEN_FDS from the environment: the process already runs more than one thread".to_string());
    }
    let ids = Ids {
        ours: std::process::id(),
        parent: std::os::unix::process::parent_id(),
    };
    let take_sockets = |count: usize| {
        sys::take_listen_fds(count).map_err(|e| {
            let fds = match count {
                1 => "fd 3".to_string(),
                n => format!("fds 3 to {}", sys::LISTEN_FDS_START as usize + n - 1),
            };
            format!("LISTEN_FDS={count}, but {fds} cannot be taken over: {e}")
        })
    };
    match decide(pid, fds, upgrade, ids)? {
        Passed::Nothing(note) => {
            notes.extend(note);
            Ok(Activation {
                fds: Vec::new(),
                ready: None,
                notes,
            })
        }
        Passed::Sockets(count) => Ok(Activation {
            fds: take_sockets(count)?,
            ready: None,
            notes,
        }),
        Passed::Upgrade(count) => {
            let fds = take_sockets(count)?;
            let at = sys::LISTEN_FDS_START + count as i32;
            let ready = sys::take_ready_fd(at).map_err(|e| {
                format!("{UPGRADE_VAR} is set, but fd {at} (the readiness channel) cannot be taken over: {e}")
            })?;
            Ok(Activation {
                fds,
                ready: Some(ready),
                notes,
            })
        }
    }
}

/// Our pid and our parent's, which the variables are checked against.
#[derive(Clone, Copy, Debug)]
struct Ids {
    ours: u32,
    parent: u32,
}

/// What the variables say, before any descriptor is touched.
#[derive(Debug, PartialEq, Eq)]
enum Passed {
    /// Nothing for us; maybe a note saying why the variables were ignored.
    Nothing(Option<String>),
    /// This many sockets (at least one), at fds 3, 4, ...
    Sockets(usize),
    /// A live upgrade: this many listeners (at least one) at fds 3, 4, ...,
    /// and the readiness channel right after them.
    Upgrade(usize),
}

/// `sd_listen_fds`'s decision, on the values of `LISTEN_PID`, `LISTEN_FDS`
/// and `REACTOR_ECHO_UPGRADE` (any may be missing) for the process `ids`.
fn decide(
    pid: Option<OsString>,
    fds: Option<OsString>,
    upgrade: Option<OsString>,
    ids: Ids,
) -> Result<Passed, String> {
    if let Some(upgrade) = upgrade {
        return decide_upgrade(upgrade, fds, ids.parent);
    }
    let our_pid = ids.ours;
    let Some(pid) = pid else {
        // Without a PID the variables cannot be known to be ours.
        return Ok(Passed::Nothing(fds.map(|_| {
            "LISTEN_FDS is set without LISTEN_PID: ignored, as sd_listen_fds does".to_string()
        })));
    };
    let pid_text = pid.to_string_lossy();
    let Ok(pid) = pid_text.trim().parse::<u32>() else {
        return Err(format!("LISTEN_PID=`{pid_text}` is not a process id"));
    };
    if pid != our_pid {
        return Ok(Passed::Nothing(Some(format!(
            "LISTEN_PID={pid} names another process (we are {our_pid}): LISTEN_FDS ignored"
        ))));
    }
    let Some(fds) = fds else {
        return Ok(Passed::Nothing(None));
    };
    match count(&fds)? {
        0 => Ok(Passed::Nothing(Some(
            "LISTEN_FDS=0: no socket was passed".to_string(),
        ))),
        n => Ok(Passed::Sockets(n)),
    }
}

/// `LISTEN_FDS` as a number, at most `sys::LISTEN_FDS_MAX`.
fn count(fds: &OsString) -> Result<usize, String> {
    let text = fds.to_string_lossy();
    let n = text
        .trim()
        .parse::<usize>()
        .map_err(|_| format!("LISTEN_FDS=`{text}` is not a number of descriptors"))?;
    if n > sys::LISTEN_FDS_MAX {
        return Err(format!(
            "LISTEN_FDS={n}: more sockets than the {} this server takes",
            sys::LISTEN_FDS_MAX
        ));
    }
    Ok(n)
}

/// A live upgrade's variables: `REACTOR_ECHO_UPGRADE` must name our parent,
/// and `LISTEN_FDS` must count the listeners, at least one (the channel is
/// the descriptor after them).
fn decide_upgrade(upgrade: OsString, fds: Option<OsString>, parent: u32) -> Result<Passed, String> {
    let text = upgrade.to_string_lossy();
    let Ok(old) = text.trim().parse::<u32>() else {
        return Err(format!("{UPGRADE_VAR}=`{text}` is not a process id"));
    };
    if old != parent {
        // The old process is gone (we were adopted), or these are a
        // grandparent's variables: the descriptors are not for us.
        return Ok(Passed::Nothing(Some(format!(
            "{UPGRADE_VAR}={old} is not our parent (pid {parent}): LISTEN_FDS ignored"
        ))));
    }
    match fds.as_ref().map(count).transpose()? {
        Some(n) if n >= 1 => Ok(Passed::Upgrade(n)),
        other => Err(format!(
            "{UPGRADE_VAR} is set, so LISTEN_FDS must count the listeners passed, not {}",
            other.map_or("unset".to_string(), |n| n.to_string())
        )),
    }
}

/// Checks that `fd` (fd `3 + index`, from [`take_from_env`]) is a listening TCP
/// socket, IPv4 or IPv6, and readies it for the loop: non-blocking (the loop
/// must never wait in `accept`) and close-on-exec (no program we might start
/// inherits it by accident; a deliberate hand-over passes it explicitly).
/// `send_buffer` is `--send-buffer`: `SO_SNDBUF`, which accepted sockets
/// inherit, as for a socket we bind.
///
/// The backlog is not ours to set: the socket's maker chose it (a `.socket`
/// unit's `Backlog=`), so `--backlog` does not apply.
///
/// The error says what the fd is instead (exit status 2).
pub fn listener(
    fd: OwnedFd,
    index: usize,
    send_buffer: Option<usize>,
) -> Result<std::net::TcpListener, String> {
    let socket = Socket::from(fd);
    let what = format!(
        "fd {} (from LISTEN_FDS)",
        sys::LISTEN_FDS_START as usize + index
    );
    let uninspectable = |e: io::Error| format!("{what} cannot be inspected: {e}");
    let kind = match socket.r#type() {
        Ok(kind) => kind,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => {
            return Err(format!(
                "{what} is not a socket: it must be a listening TCP socket"
            ));
        }
        Err(e) => return Err(uninspectable(e)),
    };
    if kind != Type::STREAM {
        return Err(format!(
            "{what} is a {} socket, not a listening TCP socket",
            type_name(kind)
        ));
    }
    let domain = socket.domain().map_err(uninspectable)?;
    if domain != Domain::IPV4 && domain != Domain::IPV6 {
        return Err(format!(
            "{what} is a {} stream socket, not a TCP socket (IPv4 or IPv6)",
            domain_name(domain)
        ));
    }
    // SOCK_STREAM over IP is TCP, or SCTP or MPTCP if asked for by name.
    // MPTCP serves as TCP does; SCTP would not.
    let protocol = socket.protocol().map_err(uninspectable)?;
    if protocol.is_some_and(|p| p != Protocol::TCP && p != Protocol::MPTCP) {
        return Err(format!(
            "{what} is an IP stream socket of protocol {protocol:?}, not TCP"
        ));
    }
    // SO_ACCEPTCONN: whether listen() was called on it.
    if !socket.is_listener().map_err(uninspectable)? {
        return Err(format!(
            "{what} is a TCP socket that is not listening (listen() was never called on it)"
        ));
    }
    let ready = || -> io::Result<()> {
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        if let Some(bytes) = send_buffer {
            socket.set_send_buffer_size(bytes)?;
        }
        Ok(())
    };
    ready().map_err(|e| format!("{what} cannot be set up: {e}"))?;
    Ok(socket.into())
}

fn type_name(kind: Type) -> String {
    match kind {
        Type::DGRAM => "datagram (UDP-like)".to_string(),
        Type::SEQPACKET => "seqpacket".to_string(),
        Type::RAW => "raw".to_string(),
        other => format!("{other:?}"),
    }
}

fn domain_name(domain: Domain) -> String {
    match domain {
        Domain::UNIX => "Unix-domain".to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    /// `decide` for the process 42, child of 7, without the upgrade variable.
    fn decide(
        pid: Option<OsString>,
        fds: Option<OsString>,
        our_pid: u32,
    ) -> Result<Passed, String> {
        super::decide(
            pid,
            fds,
            None,
            Ids {
                ours: our_pid,
                parent: 7,
            },
        )
    }

    #[test]
    fn an_upgrade_counts_only_for_the_child_of_the_named_process() {
        let ids = Ids {
            ours: 42,
            parent: 7,
        };
        let up = |upgrade, fds| super::decide(None, fds, os(upgrade), ids);
        assert_eq!(up("7", os("1")), Ok(Passed::Upgrade(1)));
        // A reuseport group: one listener per worker.
        assert_eq!(up("7", os("4")), Ok(Passed::Upgrade(4)));
        // Even with a LISTEN_PID left over: the upgrade's variable decides.
        assert_eq!(
            super::decide(os("1"), os("1"), os("7"), ids),
            Ok(Passed::Upgrade(1))
        );
        assert!(matches!(
            up("8", os("1")),
            Ok(Passed::Nothing(Some(note))) if note.contains("not our parent")
        ));
        assert!(
            up("seven", os("1"))
                .unwrap_err()
                .contains("not a process id")
        );
        assert!(up("7", None).unwrap_err().contains("not unset"));
        assert!(up("7", os("0")).unwrap_err().contains("not 0"));
    }

    #[test]
    fn the_variables_count_only_for_our_pid() {
        assert_eq!(decide(os("42"), os("1"), 42), Ok(Passed::Sockets(1)));
        assert_eq!(decide(os("42"), os("3"), 42), Ok(Passed::Sockets(3)));
        assert_eq!(decide(None, None, 42), Ok(Passed::Nothing(None)));
        assert!(matches!(
            decide(os("41"), os("1"), 42),
            Ok(Passed::Nothing(Some(note))) if note.contains("another process")
        ));
        assert!(matches!(
            decide(None, os("1"), 42),
            Ok(Passed::Nothing(Some(_)))
        ));
        assert_eq!(decide(os("42"), None, 42), Ok(Passed::Nothing(None)));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(
            decide(os("x"), os("1"), 42)
                .unwrap_err()
                .contains("LISTEN_PID")
        );
        assert!(
            decide(os("42"), os("one"), 42)
                .unwrap_err()
                .contains("LISTEN_FDS")
        );
        assert!(decide(os("42"), os("-1"), 42).is_err());
        assert!(
            decide(os("42"), os("4097"), 42)
                .unwrap_err()
                .contains("more sockets than")
        );
        assert!(matches!(
            decide(os("42"), os("0"), 42),
            Ok(Passed::Nothing(Some(_)))
        ));
    }

    #[test]
    fn only_a_listening_tcp_socket_is_taken() {
        let tcp = || Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let listening = tcp();
        listening
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        listening.listen(8).unwrap();
        let listener = listener(OwnedFd::from(listening), 0, None).unwrap();
        assert!(listener.local_addr().unwrap().ip().is_loopback());

        let err = listener_err(OwnedFd::from(tcp()));
        assert!(err.contains("not listening"), "{err}");
        assert!(err.starts_with("fd 4 (from LISTEN_FDS)"), "{err}");
        let udp = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        let err = listener_err(OwnedFd::from(udp));
        assert!(err.contains("datagram"), "{err}");
        let unix = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        let err = listener_err(OwnedFd::from(unix));
        assert!(err.contains("Unix"), "{err}");
        let file = std::fs::File::open("Cargo.toml").unwrap();
        let err = listener_err(OwnedFd::from(file));
        assert!(err.contains("not a socket"), "{err}");
    }

    fn listener_err(fd: OwnedFd) -> String {
        listener(fd, 1, None).unwrap_err()
    }
}
