//! Readiness notification: telling a supervisor, in the protocol of
//! systemd's sd_notify(3), that we are ready, how many connections are open,
//! and that we are stopping.
//!
//! ```text
//! READY=1                        once the listener is ready (main)
//! STATUS=listening on ADDR, 0 connections open
//! STOPPING=1                     when the drain starts (one line in each drain)
//! STATUS=draining N connections
//! MAINPID=PID                    a live upgrade handed over to PID (upgrade.rs)
//! STATUS=handed over to pid PID; draining
//! ```
//!
//! A process that a live upgrade started (`upgrade.rs`) sends its
//! `READY=1` to the old process instead, over the channel it inherited right
//! after the listeners (fd 4 after one, fd 3 + N after a reuseport group of
//! N; [`to_old_process`]): a Unix `SOCK_SEQPACKET` socket, one message
//! per datagram as on `NOTIFY_SOCKET`, which it keeps open for its whole
//! life, so that the old process sees its end (EOF) if it dies. The
//! supervisor hears of the new process from the old one (`MAINPID=`).
//!
//! The protocol is a few lines of text in one datagram, sent to the Unix
//! socket named by `NOTIFY_SOCKET`: a path, or an abstract name written with
//! a leading `@`. Without `NOTIFY_SOCKET` (not started by systemd with
//! `Type=notify`) every call here does nothing. It is a dozen lines over
//! std's `UnixDatagram`, so no crate is needed.
//!
//! Why it matters: with `Type=notify`, systemd starts the units that wait
//! for us only after READY=1, and shows STATUS in `systemctl status`.
//!
//! Notification is best effort, as with sd_notify: a message that cannot be
//! sent is logged and the server goes on. The socket is non-blocking, so a
//! supervisor that is slow to read can never stall the event loop.

use std::ffi::OsStr;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{self, UnixDatagram};
use std::path::Path;
use std::sync::OnceLock;

use log::{debug, warn};
use socket2::{Domain, Socket, Type};

/// Where to send, once `init_from_env` found `NOTIFY_SOCKET`.
static NOTIFIER: OnceLock<Notifier> = OnceLock::new();

struct Notifier {
    socket: UnixDatagram,
    to: net::SocketAddr,
}

/// Reads `NOTIFY_SOCKET` and gets ready to send to it; returns whether it
/// is set. Without it, the other functions do nothing. An error means the
/// variable is set but names no Unix socket we can send to: the caller logs
/// it and serves on without notifying, as a daemon does when sd_notify fails.
pub fn init_from_env() -> Result<bool, String> {
    let Some(value) = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()) else {
        return Ok(false);
    };
    let text = value.to_string_lossy().into_owned();
    let to = parse_address(value.as_bytes()).map_err(|e| format!("NOTIFY_SOCKET=`{text}`: {e}"))?;
    let socket = UnixDatagram::unbound()
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .map_err(|e| format!("NOTIFY_SOCKET=`{text}`: cannot make a socket: {e}"))?;
    // A second call keeps the first notifier: there is one supervisor.
    let _ = NOTIFIER.set(Notifier { socket, to });
    debug!("NOTIFY_SOCKET={text}: will notify readiness");
    Ok(true)
}

/// The channel to the old process of a live upgrade, if one started us.
static OLD_PROCESS: OnceLock<Socket> = OnceLock::new();

/// Takes `fd` (fd 4, or fd 3 + N after N listeners, from
/// `activation::take_from_env`) as the channel on
/// which to tell the old process of a live upgrade that we are ready:
/// [`ready`] then says it there, and not to `NOTIFY_SOCKET`. The error (a
/// descriptor that is not a Unix seqpacket socket) is for exit status 2.
pub fn to_old_process(fd: OwnedFd) -> Result<(), String> {
    let what = "the readiness channel of an upgrade (the fd after the listeners)";
    let socket = Socket::from(fd);
    let domain = socket.domain().map_err(|e| format!("{what}: {e}"))?;
    let kind = socket.r#type().map_err(|e| format!("{what}: {e}"))?;
    if domain != Domain::UNIX || kind != Type::SEQPACKET {
        return Err(format!(
            "{what} is a {domain:?} {kind:?} socket, not a Unix seqpacket socket"
        ));
    }
    // Not passed on to a process we start later; and never a stall.
    socket
        .set_cloexec(true)
        .and_then(|()| socket.set_nonblocking(true))
        .map_err(|e| format!("{what} cannot be set up: {e}"))?;
    let _ = OLD_PROCESS.set(socket);
    Ok(())
}

/// `/path` or `@abstract-name` (systemd's spelling of a name in Linux's
/// abstract namespace, which starts with a 0 byte on the wire).
fn parse_address(bytes: &[u8]) -> io::Result<net::SocketAddr> {
    match bytes.first() {
        Some(b'@') => net::SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => {
            // Unix paths are bytes, not necessarily UTF-8.
            net::SocketAddr::from_pathname(Path::new(OsStr::from_bytes(bytes)))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an absolute path or an abstract name (@name); other kinds (vsock:) are not supported",
        )),
    }
}

/// `READY=1`: the listener is ready and connects will be served. Said to
/// the old process when a live upgrade started us (it tells the supervisor,
/// [`handed_over`]), else to `NOTIFY_SOCKET`.
pub fn ready(local_addr: SocketAddr) {
    let message = format!("READY=1\nSTATUS=listening on {local_addr}, 0 connections open");
    match OLD_PROCESS.get() {
        Some(old) => match old.send_with_flags(message.as_bytes(), libc::MSG_NOSIGNAL) {
            Ok(_) => debug!("told the old process: {}", message.replace('\n', "; ")),
            Err(e) => warn!("cannot tell the old process that we are ready: {e}"),
        },
        None => send(&message),
    }
}

/// `MAINPID=`: a live upgrade handed the service over to the process `pid`,
/// which the supervisor must now watch instead of us.
pub fn handed_over(pid: u32) {
    send(&format!(
        "MAINPID={pid}\nSTATUS=handed over to pid {pid}; draining"
    ));
}

/// `STOPPING=1`: the drain has started, with `open` connections to finish.
pub fn stopping(open: usize) {
    send(&format!("STOPPING=1\nSTATUS=draining {open} connections"));
}

/// Sends one message, if `NOTIFY_SOCKET` was set.
fn send(message: &str) {
    let Some(notifier) = NOTIFIER.get() else {
        return;
    };
    match notifier
        .socket
        .send_to_addr(message.as_bytes(), &notifier.to)
    {
        Ok(_) => debug!("notified: {}", message.replace('\n', "; ")),
        Err(e) => warn!(
            "cannot notify the supervisor ({}): {e}",
            message.replace('\n', "; ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_abstract_names_are_understood() {
        let path = parse_address(b"/run/systemd/notify").unwrap();
        assert_eq!(path.as_pathname(), Some(Path::new("/run/systemd/notify")));
        let abstract_name = parse_address(b"@sd-notify-test").unwrap();
        assert_eq!(
            abstract_name.as_abstract_name(),
            Some(&b"sd-notify-test"[..])
        );
        assert!(parse_address(b"vsock:2:1234").is_err());
        assert!(parse_address(b"relative/path").is_err());
    }
}
