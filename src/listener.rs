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

/// `--accept reuseport`: `count` listening sockets on one address, in one
/// `SO_REUSEPORT` group, one per worker, with the group steered by CPU
/// (`sys::steer_reuseport_by_cpu`: listener `i` takes the connections
/// whose SYN CPU `c` handled, `c % count == i`). Also returns the lock
/// that keeps a second instance off the port; hold it as long as the
/// listeners.
///
/// A second instance must be refused, and a reuseport group would not
/// refuse it: a socket with `SO_REUSEPORT` of the same user joins the group
/// and silently takes its share of the connections. Two checks, in order:
///
/// 1. A bind probe: a socket *without* `SO_REUSEPORT` is bound to the
///    address first. It fails with "address in use" if anything holds the
///    port (a reactor-echo in any mode, or another program), as a plain
///    listener would. With port 0 it also picks the port for the group.
/// 2. A lock: an abstract unix socket named after the address
///    (`InstanceLock`), bound before the probe is closed and held for the
///    life of the process. It closes the gap between the probe and the
///    group's first bind, where two instances started at once could both
///    pass the probe: only one can bind the name. The kernel frees the
///    name when the process dies, however it dies. It covers reactor-echo
///    instances in the same network namespace; any other program is
///    caught by the probe (unless it binds with `SO_REUSEPORT` itself in
///    that same gap, as the same user).
pub fn listen_group(
    addr: SocketAddr,
    backlog: u32,
    send_buffer: Option<usize>,
    count: usize,
) -> io::Result<(Vec<TcpListener>, InstanceLock)> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())?;
    let addr = probe
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("the probe is bound to no IP address"))?;
    let lock = InstanceLock::take(addr)?;
    drop(probe);
    let mut group = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = bind_member(addr, send_buffer)?;
        listen_member(&socket, backlog)?;
        group.push(TcpListener::from_std(socket.into()));
    }
    // The program goes on once every member has joined: until then the
    // index `cpu % count` may name no member yet (the kernel then hashes).
    if let Some(first) = group.first() {
        crate::sys::steer_reuseport_by_cpu(first, count as u32)?;
    }
    debug!("listening on {addr} with {count} reuseport listeners (backlog {backlog} each)");
    Ok((group, lock))
}

/// A reuseport group of inherited listeners ([`join_group`]): the
/// inherited members, listening, and the ones that complete it, bound but
/// not listening yet. [`InheritedGroup::open`] makes them listen.
pub struct InheritedGroup {
    /// The inherited listeners, in the group's order.
    pub members: Vec<TcpListener>,
    /// The sockets that complete the group, one per worker past the
    /// inherited ones: bound, not listening, so not members yet.
    pub unopened: Vec<Socket>,
    backlog: u32,
}

/// `--accept reuseport` on inherited sockets (socket activation, or a live
/// upgrade, whose old process passes its group in order): they become the
/// first members of the group, in their order, and sockets are bound to
/// complete it to `count`, one per worker. Fails if they are more than
/// `count` (a worker would have to serve two), or not all on one address,
/// or if a socket cannot be bound beside them.
///
/// The sockets it binds do not listen yet, and the group's program is not
/// touched: until [`InheritedGroup::open`], this process has changed
/// nothing that the process that passed the group relies on. A live
/// upgrade's new process opens the group only once it has said `READY=1`,
/// so that if it fails before, the old process serves on with its group as
/// it was (a socket that listened here and died with us would reset the
/// connects queued in it).
///
/// `SO_REUSEPORT` is set on each inherited socket first. One made by
/// systemd without `ReusePort=yes`, or by a lone loop or a coordinator
/// before an upgrade, has it off, and Linux lets a new socket join a
/// listening one once it is on. Linux groups only the sockets of one user,
/// though: a socket that systemd made as root for a service that runs as
/// another user (`User=`, `DynamicUser=`) cannot be joined, and the bind
/// fails with "address in use"; the error says so, and the flag is turned
/// off again where it was off. No probe and no lock (see
/// [`listen_group`]): the inherited sockets hold the port, so a second
/// instance's probe fails on them.
pub fn join_group(
    inherited: Vec<TcpListener>,
    backlog: u32,
    send_buffer: Option<usize>,
    count: usize,
) -> io::Result<InheritedGroup> {
    let passed = inherited.len();
    if passed > count {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{passed} listeners were passed, a reuseport group of {passed}, and only \
                 {count} workers would accept from them: start with --workers {passed} or more"
            ),
        ));
    }
    let Some(first) = inherited.first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no listener was passed",
        ));
    };
    let addr = first.local_addr()?;
    let mut turned_on = Vec::new();
    for (index, listener) in inherited.iter().enumerate() {
        let at = listener.local_addr()?;
        if at != addr {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the listeners passed are on {addr} and {at}: a reuseport group serves one address"
                ),
            ));
        }
        let socket = socket2::SockRef::from(listener);
        if !socket.reuse_port()? {
            socket.set_reuse_port(true)?;
            turned_on.push(index);
        }
    }
    let unopened = (passed..count)
        .map(|_| bind_member(addr, send_buffer))
        .collect::<io::Result<Vec<_>>>();
    let unopened = match unopened {
        Ok(unopened) => unopened,
        Err(e) => {
            for &index in &turned_on {
                let _ = socket2::SockRef::from(&inherited[index]).set_reuse_port(false);
            }
            if e.kind() != io::ErrorKind::AddrInUse {
                return Err(e);
            }
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot add a listener beside the inherited one on {addr}: {e}. Linux puts \
                     in one SO_REUSEPORT group only the sockets of one user: one that systemd made \
                     (as root) for a service that runs as another user (User=, DynamicUser=) cannot \
                     take more; serve it with --accept coordinator"
                ),
            ));
        }
    };
    debug!(
        "serving {addr} with {passed} inherited reuseport listeners; {} more bound, to listen once ready",
        count - passed
    );
    Ok(InheritedGroup {
        members: inherited,
        unopened,
        backlog,
    })
}

impl InheritedGroup {
    /// Makes the bound sockets listen, after the inherited ones, and steers
    /// the group by CPU over all that listen. A socket that cannot listen
    /// is left out (and with it the ones after it, whose places in the
    /// group would shift): the error says so, and the group is steered over
    /// the members it has.
    pub fn open(mut self) -> (Vec<TcpListener>, Option<io::Error>) {
        let mut failed = None;
        for socket in self.unopened {
            if let Err(e) = listen_member(&socket, self.backlog) {
                failed = Some(e);
                break;
            }
            self.members.push(TcpListener::from_std(socket.into()));
        }
        if let Some(first) = self.members.first()
            && let Err(e) = crate::sys::steer_reuseport_by_cpu(first, self.members.len() as u32)
        {
            failed.get_or_insert(e);
        }
        (self.members, failed)
    }
}

/// A socket for a reuseport group on `addr`, bound, not listening yet.
fn bind_member(addr: SocketAddr, send_buffer: Option<usize>) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    if let Some(bytes) = send_buffer {
        socket.set_send_buffer_size(bytes)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Makes a bound member listen: it joins the group (in the group's order,
/// last) and takes its share of connects from now on.
fn listen_member(socket: &Socket, backlog: u32) -> io::Result<()> {
    // The kernel takes the smaller of this and somaxconn, per listener.
    socket.listen(backlog.min(i32::MAX as u32) as i32)
}

/// Held while a reuseport group serves an address: see [`listen_group`].
/// An abstract unix socket (no file: the name lives in the network
/// namespace and goes with the last descriptor).
#[derive(Debug)]
pub struct InstanceLock {
    _socket: std::os::unix::net::UnixListener,
}

impl InstanceLock {
    /// Takes the lock for `addr`, or fails with `AddrInUse`.
    fn take(addr: SocketAddr) -> io::Result<Self> {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("reactor-echo/reuseport/{addr}");
        let unix = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        match std::os::unix::net::UnixListener::bind_addr(&unix) {
            Ok(socket) => Ok(InstanceLock { _socket: socket }),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another reactor-echo already serves {addr} (the lock @{name} is taken)"),
            )),
            Err(e) => Err(e),
        }
    }
}
