//! Opening the listening socket: `socket`, `bind`, `listen`, with the
//! options a production server sets, through `socket2`.
//!
//! mio's own `TcpListener::bind` listens with a backlog of 128. While the
//! loop is busy (or just waking up), a burst of connects fills a queue that
//! short, and Linux then drops further SYNs (`ListenOverflows` in
//! `/proc/net/netstat` counts them): those clients retry only after a
//! second. So we listen with our own backlog, 1024 by default (Redis uses
//! 511, nginx 511 or more). The kernel silently caps it at
//! `net.core.somaxconn`; the log says when it does.

use std::io;
use std::net::SocketAddr;

use log::{debug, warn};
use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// The default `listen` backlog: connections the kernel completes for us
/// while we are busy, before it starts dropping SYNs.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Listens on the first of `addrs` that can be bound (as `listen` does);
/// the last error if none can.
pub fn listen_on_first(
    addrs: &[SocketAddr],
    backlog: u32,
    send_buffer: Option<usize>,
) -> io::Result<TcpListener> {
    let mut last_err = io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on");
    for addr in addrs {
        match listen(*addr, backlog, send_buffer) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

/// Takes over a socket that is already listening (one inherited under
/// socket activation, `activation.rs`). mio requires it non-blocking, and
/// an inherited socket may arrive blocking.
pub fn adopt(listener: std::net::TcpListener) -> io::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(listener))
}

/// Binds `addr` and listens with `backlog`. With `send_buffer`, sets
/// `SO_SNDBUF` on the listener; accepted sockets inherit it (and the kernel's
/// send-buffer autotuning is off for them, as with nginx's `sndbuf=`).
pub fn listen(
    addr: SocketAddr,
    backlog: u32,
    send_buffer: Option<usize>,
) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As mio and std do: restart at once on a port whose old connections
    // are still in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    if let Some(bytes) = send_buffer {
        socket.set_send_buffer_size(bytes)?;
    }
    socket.bind(&addr.into())?;
    let somaxconn = read_somaxconn();
    if let Some(cap) = somaxconn.filter(|&cap| cap < backlog) {
        warn!("listen backlog {backlog} is capped by net.core.somaxconn to {cap}");
    }
    // The kernel takes the smaller of this and somaxconn; past i32::MAX it
    // would be negative, which means "the default" to some kernels.
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    debug!("listening with a backlog of {backlog} (somaxconn {somaxconn:?})");
    Ok(TcpListener::from_std(socket.into()))
}

/// `net.core.somaxconn`, the kernel's cap on any listen backlog.
fn read_somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}
