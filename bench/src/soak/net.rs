//! Socket plumbing shared by the soak's clients and its relay: connecting
//! with options that must be set before `connect`, aborting with RST, and
//! telling the errors apart.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::TcpStream;
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};

/// Starts a non-blocking connect to `addr`. With `recv_buffer`, sets
/// `SO_RCVBUF` first: only before `connect` does it also bound the window
/// the peer is offered, which is what makes the peer's writes come up short.
pub fn connect(addr: SocketAddr, recv_buffer: Option<usize>) -> io::Result<TcpStream> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    if let Some(bytes) = recv_buffer {
        sockopt::set_socket_recv_buffer_size(&fd, bytes)?;
    }
    match rustix::net::connect(&fd, &addr) {
        Ok(()) | Err(Errno::INPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(fd)))
}

/// `SO_SNDBUF` (the kernel doubles it). Setting it also ends the kernel's
/// autotuning of that buffer, which on loopback grows it to megabytes.
pub fn set_send_buffer(stream: &TcpStream, bytes: usize) -> io::Result<()> {
    Ok(sockopt::set_socket_send_buffer_size(stream, bytes)?)
}

/// Where a non-blocking connect stands, asked after a writable event (as
/// mio documents: `take_error`, then `peer_addr`).
pub enum Connect {
    Pending,
    Done,
    Failed(io::Error),
}

pub fn connect_state(stream: &TcpStream) -> Connect {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return Connect::Failed(e),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Connect::Done,
        Err(e) if e.kind() == ErrorKind::NotConnected => Connect::Pending,
        Err(e) => Connect::Failed(e),
    }
}

/// Closes `stream` abortively: `SO_LINGER` 0 makes `close` send RST and
/// throw away whatever is queued either way.
pub fn abort(stream: TcpStream) {
    // If the option cannot be set the close is an ordinary one; the soak's
    // fault count then overstates RSTs by one, which is harmless.
    let _ = sockopt::set_socket_linger(&stream, Some(Duration::ZERO));
    drop(stream);
}

/// `TCP_NODELAY`: every write leaves as its own segment (no Nagle), so
/// small writes really arrive fragmented.
pub fn set_nodelay(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

pub fn would_block(e: &io::Error) -> bool {
    e.kind() == ErrorKind::WouldBlock
}

pub fn interrupted(e: &io::Error) -> bool {
    e.kind() == ErrorKind::Interrupted
}
