//! Kernel-throttled connections: recognised by the sender's `TCP_INFO`,
//! read for every socket of the server and the relay with the kernel's
//! `sock_diag` netlink interface (what `ss -ti` uses), so the soak sees the
//! server's side of a connection too, not only its own.
//!
//! The state (docs/reliability.md, "A connection the kernel throttles"): a
//! receiver whose `SO_RCVBUF` was set small before `connect` has no window
//! scaling, so its sender caps its MSS at half the largest window it was
//! offered (2048 for a 4096-byte buffer). If the receiver's kernel later
//! lowers its window ceiling below that MSS, it offers a window (1952, say)
//! the sender will not fill: the sender holds its data back (silly-window
//! avoidance) until the persist timer, about 200 ms, fires. The connection
//! then moves a window every 200 ms, about 9 KiB/s, though both programs do
//! everything right: the sender has handed its bytes to the kernel and the
//! receiver reads as fast as it can.
//!
//! What the soak checks ([`is_throttled`]), on both ends of a loopback
//! connection. The sender: a window offered (not zero: a zero window is a
//! reader that stopped) but smaller than its MSS, bytes in its kernel not
//! yet sent, time spent limited by the receive window, and no window
//! scaling. The receiver: its window ceiling (`rcv_ssthresh`, rounded down
//! to its estimate of the sender's segment size, as the kernel rounds the
//! windows it offers without scaling) is under the sender's MSS, so it
//! cannot offer a full segment however fast its reader reads. A reader that
//! is merely slow also leaves its sender a window under the MSS, for a
//! while; its ceiling is higher, so it does not count. And a connection
//! counts as throttled only once it was seen so in two samples
//! ([`MIN_SIGHTINGS`]).
//!
//! [`Watch`] samples every connection of the server and the relay a few
//! times a second and remembers the throttled ones; the soak's judges ask
//! it whether a client that ended late, or a connection the server cut off
//! at its drain deadline, was throttled by the kernel while it waited.

use std::collections::HashMap;
use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Time between two samples of every connection.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Samples in the throttled state needed before a connection counts as
/// throttled: the state persists (a persist timer is 200 ms and more), so a
/// throttled connection is seen again and again.
pub const MIN_SIGHTINGS: u32 = 2;
/// Two sightings further apart than this start a new spell.
const SPELL_GAP: Duration = Duration::from_secs(2);

/// The fields of the kernel's `struct tcp_info` (linux/tcp.h) that the soak
/// reads: the sender's view of a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// The MSS this side sends with.
    pub snd_mss: u32,
    /// This side's estimate of the MSS its peer sends with, and the most
    /// window it will offer (its ceiling, which the kernel moves).
    pub rcv_mss: u32,
    pub rcv_ssthresh: u32,
    /// The window the peer offers, after scaling.
    pub snd_wnd: u32,
    /// Bytes in the kernel's send queue not yet sent.
    pub notsent: u32,
    /// Segments sent and not yet acknowledged.
    pub unacked: u32,
    /// Microseconds spent sending, and of those, limited by the peer's window.
    pub busy_us: u64,
    pub rwnd_limited_us: u64,
    /// The receiver's window scale (a shift): 0 when it has none, as after
    /// a small `SO_RCVBUF` set before `connect`.
    pub snd_wscale: u8,
}

// Offsets in `struct tcp_info`, fixed by the kernel's ABI.
/// The byte of the bit fields `tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4`.
const TCPI_WSCALE: usize = 6;
const TCPI_SND_MSS: usize = 16;
const TCPI_RCV_MSS: usize = 20;
const TCPI_RCV_SSTHRESH: usize = 64;
const TCPI_UNACKED: usize = 24;
const TCPI_NOTSENT_BYTES: usize = 144;
const TCPI_BUSY_TIME: usize = 168;
const TCPI_RWND_LIMITED: usize = 176;
const TCPI_SND_WND: usize = 228;
/// `tcpi_snd_wnd` is the last field read: kernels older than 5.19 stop before it.
const TCPI_LEN: usize = TCPI_SND_WND + 4;

impl TcpInfo {
    /// Parses the kernel's bytes; `None` if they are too short (an old
    /// kernel without `tcpi_snd_wnd`).
    pub fn parse(b: &[u8]) -> Option<TcpInfo> {
        if b.len() < TCPI_LEN {
            return None;
        }
        let u32_at = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap());
        Some(TcpInfo {
            snd_mss: u32_at(TCPI_SND_MSS),
            rcv_mss: u32_at(TCPI_RCV_MSS),
            rcv_ssthresh: u32_at(TCPI_RCV_SSTHRESH),
            snd_wnd: u32_at(TCPI_SND_WND),
            notsent: u32_at(TCPI_NOTSENT_BYTES),
            unacked: u32_at(TCPI_UNACKED),
            busy_us: u64_at(TCPI_BUSY_TIME),
            rwnd_limited_us: u64_at(TCPI_RWND_LIMITED),
            snd_wscale: b[TCPI_WSCALE] & 0x0f,
        })
    }

    /// Share of the sending time limited by the receiver's window, in percent.
    pub fn rwnd_limited_pct(&self) -> f64 {
        if self.busy_us == 0 {
            0.0
        } else {
            self.rwnd_limited_us as f64 * 100.0 / self.busy_us as f64
        }
    }
}

/// The most window a receiver without window scaling can offer: its
/// ceiling rounded down to its estimate of the sender's segment size.
pub fn max_offer(receiver: &TcpInfo) -> u32 {
    match receiver.rcv_mss {
        0 => receiver.rcv_ssthresh,
        mss => receiver.rcv_ssthresh / mss * mss,
    }
}

/// The sender is held back by the kernel, not by either program: the
/// receiver offers a window, but one smaller than the sender's MSS, while
/// the sender has bytes queued it has not sent; without window scaling,
/// the receiver's ceiling keeps every window it can offer under that MSS.
pub fn is_throttled(sender: &TcpInfo, receiver: &TcpInfo) -> bool {
    sender.snd_wnd > 0
        && sender.snd_wnd < sender.snd_mss
        && sender.notsent > 0
        && sender.rwnd_limited_us > 0
        && sender.snd_wscale == 0
        && max_offer(receiver) < sender.snd_mss
}

/// One TCP socket as `sock_diag` reports it.
#[derive(Clone, Copy, Debug)]
pub struct Socket {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// Bytes in the receive queue, and in the send queue (sent or not, not
    /// acknowledged): `ss`'s Recv-Q and Send-Q. (The soak reads the send
    /// queue of a throttled sender; the relay's test reads both.)
    #[cfg_attr(not(test), allow(dead_code))]
    pub recv_q: u32,
    pub send_q: u32,
    /// The zero-window probe ("persist") timer is pending.
    pub persist: bool,
    pub info: Option<TcpInfo>,
}

// linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h.
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDR: usize = 16;
const INET_DIAG_REQ_V2: usize = 56;
const INET_DIAG_MSG: usize = 72;
const INET_DIAG_INFO: u16 = 2;
/// `idiag_timer` of a socket whose zero-window probe timer is pending.
const TIMER_PERSIST: u8 = 4;
/// Every TCP state but LISTEN (10), TIME_WAIT (6) and CLOSE (7).
const STATES: u32 = !((1 << 10) | (1 << 6) | (1 << 7));

/// Every IPv4 TCP socket whose local or peer port is in `ports`, with its
/// `TCP_INFO`. One netlink dump: no privileges needed.
pub fn sockets(ports: &[u16]) -> io::Result<Vec<Socket>> {
    // SAFETY: plain syscalls on a descriptor this function owns.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor, owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = [0u8; NLMSG_HDR + INET_DIAG_REQ_V2];
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    let body = &mut req[NLMSG_HDR..];
    body[0] = libc::AF_INET as u8;
    body[1] = libc::IPPROTO_TCP as u8;
    body[2] = 1 << (INET_DIAG_INFO - 1);
    body[4..8].copy_from_slice(&STATES.to_ne_bytes());
    // SAFETY: an all-zero sockaddr_nl is valid; nl_pid 0 is the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `req` and `kernel` are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut msgs = &buf[..n as usize];
        while msgs.len() >= NLMSG_HDR {
            let len = u32::from_ne_bytes(msgs[0..4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(msgs[4..6].try_into().unwrap());
            if len < NLMSG_HDR || len > msgs.len() {
                return Err(io::Error::other("sock_diag: a truncated netlink message"));
            }
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes(msgs[16..20].try_into().unwrap());
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                SOCK_DIAG_BY_FAMILY => {
                    if let Some(s) = parse_msg(&msgs[NLMSG_HDR..len])
                        && (ports.contains(&s.local.port()) || ports.contains(&s.peer.port()))
                    {
                        out.push(s);
                    }
                }
                _ => {}
            }
            msgs = &msgs[len.next_multiple_of(4).min(msgs.len())..];
        }
    }
}

/// One `inet_diag_msg` and its attributes.
fn parse_msg(m: &[u8]) -> Option<Socket> {
    if m.len() < INET_DIAG_MSG {
        return None;
    }
    let timer = m[2];
    // inet_diag_sockid: ports big-endian, IPv4 addresses in the first word.
    let port = |at: usize| u16::from_be_bytes([m[at], m[at + 1]]);
    let ip = |at: usize| Ipv4Addr::new(m[at], m[at + 1], m[at + 2], m[at + 3]);
    let local = SocketAddr::V4(SocketAddrV4::new(ip(8), port(4)));
    let peer = SocketAddr::V4(SocketAddrV4::new(ip(24), port(6)));
    let u32_at = |at: usize| u32::from_ne_bytes(m[at..at + 4].try_into().unwrap());
    let mut s = Socket {
        local,
        peer,
        recv_q: u32_at(56),
        send_q: u32_at(60),
        persist: timer == TIMER_PERSIST,
        info: None,
    };
    let mut attrs = &m[INET_DIAG_MSG..];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        if kind == INET_DIAG_INFO {
            s.info = TcpInfo::parse(&attrs[4..len]);
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    Some(s)
}

/// A connection, from its sender's side: (sender's address, receiver's).
pub type Conn = (SocketAddr, SocketAddr);

/// A spell of sightings of one connection in the throttled state.
#[derive(Clone, Copy, Debug)]
pub struct Spell {
    pub first: Instant,
    pub last: Instant,
    pub count: u32,
    /// The sender's state at the last sighting: its `TCP_INFO`, its send
    /// queue, its persist timer; and the receiver's `TCP_INFO`.
    pub info: TcpInfo,
    pub receiver: TcpInfo,
    pub send_q: u32,
    pub persist: bool,
}

#[derive(Default)]
struct Seen {
    /// The sending addresses watched: the server's, the relay's.
    senders: Vec<SocketAddr>,
    spells: HashMap<Conn, Vec<Spell>>,
    /// Relayed connections: the client's address (as the relay sees it)
    /// for the relay's own connection to the server, and back.
    leg_of_client: HashMap<SocketAddr, SocketAddr>,
    client_of_leg: HashMap<SocketAddr, SocketAddr>,
    samples: u64,
    errors: u64,
    last_error: Option<String>,
    /// Relayed clients whose pair the soak's judge asked the relay to
    /// describe, and the relay's answers (`Watch::ask_relay`).
    relay_asks: Vec<SocketAddr>,
    relay_answers: HashMap<SocketAddr, String>,
    /// The relay's late turns, (from, until): it runs in the soak's
    /// process, and while it is late, no relayed client gets a byte.
    relay_lag: Vec<(Instant, Instant)>,
}

/// The soak's sampler: every [`SAMPLE_EVERY`], the `TCP_INFO` of every
/// connection the server or the relay sends on.
pub struct Watch {
    seen: Mutex<Seen>,
}

impl Watch {
    /// Watches the connections whose sending side has one of the addresses
    /// of `senders` (the server's listening address, the relay's).
    pub fn new(senders: Vec<SocketAddr>) -> Arc<Watch> {
        Arc::new(Watch {
            seen: Mutex::new(Seen {
                senders,
                ..Seen::default()
            }),
        })
    }

    /// Watches the connections sent on from `sender` as well.
    pub fn add_sender(&self, sender: SocketAddr) {
        self.seen().senders.push(sender);
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Samples until `stop` is set, on a thread of its own.
    pub fn start(self: &Arc<Watch>, stop: Arc<AtomicBool>) -> io::Result<JoinHandle<()>> {
        let watch = Arc::clone(self);
        std::thread::Builder::new()
            .name("soak-throttle".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    watch.sample();
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
    }

    /// One sample of every watched connection.
    pub fn sample(&self) {
        let senders = self.seen().senders.clone();
        let ports: Vec<u16> = senders.iter().map(|a| a.port()).collect();
        let result = sockets(&ports);
        let now = Instant::now();
        let mut seen = self.seen();
        seen.samples += 1;
        let sockets = match result {
            Ok(s) => s,
            Err(e) => {
                seen.errors += 1;
                seen.last_error = Some(e.to_string());
                return;
            }
        };
        let receivers: HashMap<Conn, TcpInfo> = sockets
            .iter()
            .filter_map(|s| Some(((s.local, s.peer), s.info?)))
            .collect();
        for s in sockets {
            if !senders.contains(&s.local) {
                continue;
            }
            let (Some(info), Some(&receiver)) = (s.info, receivers.get(&(s.peer, s.local))) else {
                continue;
            };
            if !is_throttled(&info, &receiver) {
                continue;
            }
            let spells = seen.spells.entry((s.local, s.peer)).or_default();
            match spells.last_mut() {
                Some(spell) if now - spell.last <= SPELL_GAP => {
                    spell.last = now;
                    spell.count += 1;
                    spell.info = info;
                    spell.receiver = receiver;
                    spell.send_q = s.send_q;
                    spell.persist = s.persist;
                }
                _ => spells.push(Spell {
                    first: now,
                    last: now,
                    count: 1,
                    info,
                    receiver,
                    send_q: s.send_q,
                    persist: s.persist,
                }),
            }
        }
    }

    /// Asks the relay what it holds for the relayed `client` (its pipes,
    /// its sockets' readiness), and waits up to `wait` for the answer: the
    /// relay answers on its next turn (`relay_questions`).
    pub fn ask_relay(&self, client: SocketAddr, wait: Duration) -> Option<String> {
        self.seen().relay_asks.push(client);
        let give_up = Instant::now() + wait;
        loop {
            if let Some(answer) = self.seen().relay_answers.remove(&client) {
                return Some(answer);
            }
            if Instant::now() >= give_up {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The relay's turns came `from` and `until`, too far apart.
    pub fn relay_late(&self, from: Instant, until: Instant) {
        self.seen().relay_lag.push((from, until));
    }

    /// The relay's late turns that overlap `from..to`.
    pub fn relay_lag(&self, from: Instant, to: Instant) -> Vec<(Instant, Instant)> {
        self.seen()
            .relay_lag
            .iter()
            .filter(|&&(a, b)| b > from && a < to)
            .copied()
            .collect()
    }

    /// For the relay, once a turn: the clients it is asked about.
    pub fn relay_questions(&self) -> Vec<SocketAddr> {
        std::mem::take(&mut self.seen().relay_asks)
    }

    /// The relay's answer about `client`.
    pub fn relay_answer(&self, client: SocketAddr, answer: String) {
        self.seen().relay_answers.insert(client, answer);
    }

    /// The relay connected `leg` to the server on behalf of `client`.
    pub fn link(&self, client: SocketAddr, leg: SocketAddr) {
        let mut seen = self.seen();
        seen.leg_of_client.insert(client, leg);
        seen.client_of_leg.insert(leg, client);
    }

    /// The relay's connection to the server for `client`, if it has one.
    pub fn leg_of(&self, client: SocketAddr) -> Option<SocketAddr> {
        self.seen().leg_of_client.get(&client).copied()
    }

    /// The relayed client that the relay's connection `leg` serves.
    pub fn client_of(&self, leg: SocketAddr) -> Option<SocketAddr> {
        self.seen().client_of_leg.get(&leg).copied()
    }

    /// The longest spell in which one of `conns` was seen throttled, at
    /// least [`MIN_SIGHTINGS`] times, between `from` and `to`.
    pub fn throttled(&self, conns: &[Conn], from: Instant, to: Instant) -> Option<Spell> {
        let seen = self.seen();
        conns
            .iter()
            .filter_map(|c| seen.spells.get(c))
            .flatten()
            .filter(|s| s.count >= MIN_SIGHTINGS && s.last >= from && s.first <= to)
            .max_by_key(|s| s.count)
            .copied()
    }

    /// For the summary: samples taken, failed samples (and the last error),
    /// connections ever seen throttled.
    pub fn totals(&self) -> (u64, u64, Option<String>, usize) {
        let seen = self.seen();
        let conns = seen
            .spells
            .values()
            .filter(|v| v.iter().any(|s| s.count >= MIN_SIGHTINGS))
            .count();
        (seen.samples, seen.errors, seen.last_error.clone(), conns)
    }
}

/// One spell, as the soak prints it: the figures `ss -ti` would show.
pub fn describe(s: &Spell) -> String {
    format!(
        "sender: snd_wnd {} < mss {}, Send-Q {} B ({} not sent), rwnd_limited {:.0}%, no window scaling{}; receiver: rcv_ssthresh {}, rcv_mss {}; seen {} times over {} ms",
        s.info.snd_wnd,
        s.info.snd_mss,
        s.send_q,
        s.info.notsent,
        s.info.rwnd_limited_pct(),
        if s.persist { ", persist timer" } else { "" },
        s.receiver.rcv_ssthresh,
        s.receiver.rcv_mss,
        s.count,
        (s.last - s.first).as_millis()
    )
}

/// The connections a server's drain cut off, from its log: the summary's
/// count and the peers of the lines that name them (at most ten are named).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CutOffs {
    pub count: Option<u64>,
    pub named: Vec<SocketAddr>,
    /// The drain has started ("draining" logged): from then on, a
    /// connection cut off at its own close deadline counts in the drain's
    /// summary too, so it is named here as well.
    pub draining: bool,
}

impl CutOffs {
    /// Reads one line of the server's log.
    pub fn read_line(&mut self, line: &str) {
        // "drain incomplete: 312 connections closed cleanly, 1 cut off, 0 failed"
        if let Some(at) = line.find(" connections closed cleanly, ")
            && line[..at].contains("drain ")
        {
            let rest = &line[at + " connections closed cleanly, ".len()..];
            if let Some(n) = rest
                .split(" cut off")
                .next()
                .and_then(|n| n.trim().parse::<u64>().ok())
            {
                self.count = Some(self.count.unwrap_or(0) + n);
            }
            return;
        }
        if line.contains(": draining ") {
            self.draining = true;
        }
        // "#17 from 127.0.0.1:40112 cut off: closing (drain), ..."; a cut-off
        // at a connection's own close deadline is the drain's only if it
        // came during the drain (the server's summary counts it then).
        if line.contains(AT_CLOSE_DEADLINE) && !self.draining {
            return;
        }
        if let Some(from) = line.find(" from ")
            && let Some(cut) = line[from..].find(" cut off")
            && let Ok(peer) = line[from + " from ".len()..from + cut].trim().parse()
        {
            self.named.push(peer);
        }
    }
}

/// What follows "cut off" in the server's line for a connection it gave up
/// on at its close deadline, outside a drain: a closing connection (an
/// over-long line, a half-close) whose peer did not take what it was owed
/// within 10 s (`CLOSE_TIMEOUT`).
pub const AT_CLOSE_DEADLINE: &str = " cut off at its close deadline";

/// The connections the server cut off at their close deadline, by peer,
/// each with the rest of its log line (state, bytes unsent and not
/// acknowledged, `TCP_INFO`): read from the log by the soak's log thread,
/// looked up by the clients' judge when a client got an RST.
#[derive(Debug, Default)]
pub struct DeadlineCutOffs {
    by_peer: Mutex<HashMap<SocketAddr, String>>,
}

impl DeadlineCutOffs {
    /// Reads one line of the server's log.
    pub fn read_line(&self, line: &str) {
        // "#9 from 127.0.0.1:40112 cut off at its close deadline (10s): closing (...), ..."
        if let Some(cut) = line.find(AT_CLOSE_DEADLINE)
            && let Some(from) = line[..cut].rfind(" from ")
            && let Ok(peer) = line[from + " from ".len()..cut].trim().parse()
        {
            let what = line[cut + " ".len()..].to_string();
            self.by_peer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(peer, what);
        }
    }

    /// The server's line for the first of `peers` it cut off at its close
    /// deadline, waiting up to `wait` for the log thread: the server logs
    /// before it resets, but the line crosses a pipe and another thread.
    pub fn find(&self, peers: &[SocketAddr], wait: Duration) -> Option<String> {
        let give_up = Instant::now() + wait;
        loop {
            {
                let by_peer = self.by_peer.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(line) = peers.iter().find_map(|p| by_peer.get(p)) {
                    return Some(line.clone());
                }
            }
            if Instant::now() >= give_up {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many the server cut off so.
    pub fn count(&self) -> usize {
        self.by_peer.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Whether a server that cut connections off at its drain deadline (exit 3)
/// did only what it promises: every connection it cut off was named in its
/// log, and each was throttled by the kernel during the drain (`term` to
/// `end`), on the server's side or, for a relayed one, on the relay's side
/// towards its client. `Err` says why not.
pub fn judge_cut_offs(
    cut: &CutOffs,
    watch: &Watch,
    server: SocketAddr,
    relay: SocketAddr,
    term: Instant,
    end: Instant,
) -> Result<Vec<(SocketAddr, Spell)>, String> {
    let count = cut
        .count
        .ok_or("the server's log has no drain summary line")?;
    if count != cut.named.len() as u64 {
        return Err(format!(
            "the server cut off {count} connections and named {} in its log: the others cannot be checked",
            cut.named.len()
        ));
    }
    let mut found = Vec::new();
    for &peer in &cut.named {
        let mut conns = vec![(server, peer)];
        if let Some(client) = watch.client_of(peer) {
            conns.push((relay, client));
        }
        match watch.throttled(&conns, term, end) {
            Some(spell) => found.push((peer, spell)),
            None => {
                return Err(format!(
                    "the server cut off {peer}, which was not seen throttled by the kernel"
                ));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// How the receiver of a [`Pair`] behaves.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Receiver {
        /// `SO_RCVBUF` 4096 before `connect`; reads as fast as it can, with
        /// `TCP_WINDOW_CLAMP` lowered under the sender's MSS once primed,
        /// as its kernel lowers the ceiling by itself in the failed soaks.
        Clamped,
        /// The same, not clamped.
        Small,
        /// Reads 256 bytes every 10 ms: a slow reader, the soak's own kind,
        /// with a small `SO_RCVBUF` or the kernel's.
        Slow { small: bool },
    }

    /// A real loopback connection: a sender that writes without pause, and
    /// a receiver as `Receiver` says.
    struct Pair {
        sender: SocketAddr,
        receiver: SocketAddr,
        read: Arc<std::sync::atomic::AtomicU64>,
        stop: Arc<AtomicBool>,
        threads: Vec<JoinHandle<()>>,
    }

    impl Pair {
        fn new(how: Receiver) -> Pair {
            use rustix::net::sockopt;
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let fd = rustix::net::socket(
                rustix::net::AddressFamily::INET,
                rustix::net::SocketType::STREAM,
                None,
            )
            .unwrap();
            if how != (Receiver::Slow { small: false }) {
                sockopt::set_socket_recv_buffer_size(&fd, 4096).unwrap();
            }
            rustix::net::connect(&fd, &listener.local_addr().unwrap()).unwrap();
            let mut receiver = TcpStream::from(fd);
            let (mut sender, _) = listener.accept().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let pair_sender = sender.local_addr().unwrap();
            let pair_receiver = receiver.local_addr().unwrap();
            sender
                .set_write_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            receiver
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let writer = {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let data = vec![b'x'; 64 * 1024];
                    while !stop.load(Ordering::Relaxed) {
                        let _ = sender.write(&data);
                    }
                })
            };
            let reader = {
                let stop = Arc::clone(&stop);
                let read = Arc::clone(&read);
                std::thread::spawn(move || {
                    let slow = matches!(how, Receiver::Slow { .. });
                    let mut buf = vec![0u8; if slow { 256 } else { 64 * 1024 }];
                    let primed = Instant::now() + Duration::from_millis(300);
                    let mut clamped = false;
                    while !stop.load(Ordering::Relaxed) {
                        if slow {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        if how == Receiver::Clamped && !clamped && Instant::now() >= primed {
                            set_window_clamp(&receiver, 1000);
                            clamped = true;
                        }
                        if let Ok(n) = receiver.read(&mut buf) {
                            read.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                })
            };
            Pair {
                sender: pair_sender,
                receiver: pair_receiver,
                read,
                stop,
                threads: vec![writer, reader],
            }
        }
    }

    impl Drop for Pair {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
    }

    /// `TCP_WINDOW_CLAMP`: the most window the receiver will offer.
    fn set_window_clamp(s: &TcpStream, bytes: i32) {
        // SAFETY: a valid descriptor and an int option.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_WINDOW_CLAMP,
                (&bytes as *const i32).cast(),
                size_of::<i32>() as u32,
            )
        };
        assert_eq!(rc, 0, "TCP_WINDOW_CLAMP: {}", io::Error::last_os_error());
    }

    /// Samples `watch` every [`SAMPLE_EVERY`] for `d`.
    fn sample_for(watch: &Watch, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            watch.sample();
            std::thread::sleep(SAMPLE_EVERY);
        }
    }

    #[test]
    fn a_clamped_receiver_throttles_its_sender_and_the_soak_says_so() {
        let throttled = Pair::new(Receiver::Clamped);
        let fast = Pair::new(Receiver::Small);
        let slow_small = Pair::new(Receiver::Slow { small: true });
        let slow = Pair::new(Receiver::Slow { small: false });
        let all = [&throttled, &fast, &slow_small, &slow];
        let watch = Watch::new(all.iter().map(|p| p.sender).collect());
        std::thread::sleep(Duration::from_millis(500));
        let start = Instant::now();
        let before: Vec<u64> = all.iter().map(|p| p.read.load(Ordering::Relaxed)).collect();
        sample_for(&watch, Duration::from_millis(1500));
        let end = Instant::now();
        let rate = |i: usize| {
            (all[i].read.load(Ordering::Relaxed) - before[i]) as f64 / (end - start).as_secs_f64()
        };

        // The state is real: the two ends' TCP_INFO, as `ss -ti` shows them.
        let both = sockets(&[throttled.sender.port()]).unwrap();
        let end_of = |local, peer| {
            both.iter()
                .find(|s| s.local == local && s.peer == peer)
                .and_then(|s| s.info)
                .expect("sock_diag lists both ends, with TCP_INFO")
        };
        let sender = end_of(throttled.sender, throttled.receiver);
        let receiver = end_of(throttled.receiver, throttled.sender);
        assert!(
            sender.snd_wnd > 0 && sender.snd_wnd < sender.snd_mss,
            "window {} not under the MSS {}",
            sender.snd_wnd,
            sender.snd_mss
        );
        assert_eq!(
            sender.snd_wscale, 0,
            "no window scaling after SO_RCVBUF 4096"
        );
        assert!(
            max_offer(&receiver) < sender.snd_mss,
            "the receiver can offer {} (rcv_ssthresh {}, rcv_mss {}), not under the MSS {}",
            max_offer(&receiver),
            receiver.rcv_ssthresh,
            receiver.rcv_mss,
            sender.snd_mss
        );
        assert!(
            rate(0) < 64.0 * 1024.0,
            "a throttled connection moves a window per persist timer: {:.0} B/s",
            rate(0)
        );
        assert!(
            rate(1) > 1024.0 * 1024.0,
            "the unclamped connection is fast: {:.0} B/s",
            rate(1)
        );

        // The soak's verdict: throttled, seen again and again; the others,
        // the fast one and the slow readers, are not.
        let spell = watch
            .throttled(&[(throttled.sender, throttled.receiver)], start, end)
            .expect("the watch saw the throttled connection");
        assert!(spell.count >= 4, "{}", describe(&spell));
        assert!(spell.info.rwnd_limited_pct() > 50.0, "{}", describe(&spell));
        for (p, what) in [
            (&fast, "fast"),
            (&slow_small, "slow, small buffer"),
            (&slow, "slow"),
        ] {
            let seen = watch.throttled(&[(p.sender, p.receiver)], start, end);
            assert!(
                seen.is_none(),
                "the {what} reader's connection is not throttled: {}",
                seen.map(|s| describe(&s)).unwrap_or_default()
            );
        }
        // Outside the time it was watched, nothing is claimed.
        assert!(
            watch
                .throttled(
                    &[(throttled.sender, throttled.receiver)],
                    end + Duration::from_secs(10),
                    end + Duration::from_secs(20)
                )
                .is_none()
        );

        // A drain that cut off the throttled connection kept its promise;
        // one that cut off another did not; nor did one that cut off more
        // than it named.
        let log = |peer: SocketAddr, named: bool| {
            let mut c = CutOffs::default();
            if named {
                c.read_line(&format!(
                    "2026-11-25T10:00:00Z INFO  [reactor_echo::event_loop::drain] #7 from {peer} cut off: closing (drain), 0 bytes unsent, 29000 sent but not acknowledged"
                ));
            }
            c.read_line("2026-11-25T10:00:00Z INFO  [reactor_echo] drain incomplete: 312 connections closed cleanly, 1 cut off, 0 failed");
            c
        };
        let relay = SocketAddr::from(([127, 0, 0, 1], 1));
        let ok = judge_cut_offs(
            &log(throttled.receiver, true),
            &watch,
            throttled.sender,
            relay,
            start,
            end,
        )
        .expect("a throttled connection cut off is the server keeping its promise");
        assert_eq!(ok.len(), 1);
        for p in [&fast, &slow_small, &slow] {
            let wrong = judge_cut_offs(&log(p.receiver, true), &watch, p.sender, relay, start, end);
            assert!(wrong.is_err(), "{wrong:?}");
        }
        let unnamed = judge_cut_offs(
            &log(throttled.receiver, false),
            &watch,
            throttled.sender,
            relay,
            start,
            end,
        );
        assert!(unnamed.is_err(), "{unnamed:?}");
    }

    #[test]
    fn cut_off_lines_are_read_with_or_without_extra_figures() {
        let mut c = CutOffs::default();
        c.read_line("x INFO #3 from 127.0.0.1:40112 cut off: open, 12 bytes unsent, 0 sent but not acknowledged, snd_wnd 1952, mss 2048");
        c.read_line("x INFO #4 from 127.0.0.1:40113 cut off: closing (drain), 0 bytes unsent, 5 sent but not acknowledged");
        c.read_line("x DEBUG #3 cut off (open, 12 bytes unsent)");
        // Not the drain's: a cut-off at a connection's own close deadline.
        let line = "x INFO #5 from 127.0.0.1:40114 cut off at its close deadline (10s): closing (frame too long, FIN sent), 0 bytes unsent, 7 sent but not acknowledged";
        c.read_line(line);
        let deadline = DeadlineCutOffs::default();
        deadline.read_line(line);
        deadline.read_line("x INFO #4 from 127.0.0.1:40113 cut off: closing (drain), 0 bytes unsent, 5 sent but not acknowledged");
        assert_eq!(deadline.count(), 1);
        assert_eq!(
            deadline.find(&["127.0.0.1:40114".parse().unwrap()], Duration::ZERO),
            Some("cut off at its close deadline (10s): closing (frame too long, FIN sent), 0 bytes unsent, 7 sent but not acknowledged".to_string())
        );
        // During the drain, one is counted in the drain's summary.
        c.read_line(
            "x INFO SIGTERM: draining 12 connections (deadline 10s); send it again to exit at once",
        );
        c.read_line("x INFO #6 from 127.0.0.1:40115 cut off at its close deadline (10s): closing (frame too long, FIN sent), 0 bytes unsent, 9 sent but not acknowledged");
        c.read_line("x INFO drain incomplete: 10 connections closed cleanly, 3 cut off, 1 failed");
        assert_eq!(
            c,
            CutOffs {
                count: Some(3),
                named: vec![
                    "127.0.0.1:40112".parse().unwrap(),
                    "127.0.0.1:40113".parse().unwrap(),
                    "127.0.0.1:40115".parse().unwrap()
                ],
                draining: true,
            }
        );
    }
}
