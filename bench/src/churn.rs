//! The churn load (`loadgen --churn`): connections that come and go. Each
//! of `slots` slots connects, sends one line, reads its echo, closes, and
//! starts over at once, all on one mio loop; connects are non-blocking, so
//! that a slow handshake holds up only its own slot.
//!
//! Its figures are per connection: connections per second in the measuring
//! window, and the time of each connection from `connect` to its echo (the
//! close that follows is not waited on). The driver divides the server's
//! CPU time and syscalls by every connection of the run, warm-up included,
//! as it divides them by messages elsewhere.

use std::io::{self, ErrorKind, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::lines::{push_line, read_available};
use crate::openloop::{histogram, quantile_us};

/// One churn run.
pub struct Config {
    pub addr: SocketAddr,
    /// Connections open at once.
    pub slots: usize,
    pub size: usize,
    pub warmup: f64,
    pub secs: f64,
}

/// What a churn run counted.
pub struct Tally {
    from: Instant,
    to: Instant,
    /// Connections whose echo came back in the window.
    pub measured: u64,
    /// Every connection that completed, warm-up included.
    pub total: u64,
    /// Echoes that differed from what was sent.
    pub errors: u64,
    /// Connect to echo, of the measured connections, in ns.
    pub latency: Histogram<u64>,
}

impl Tally {
    pub fn new(from: Instant, to: Instant) -> Tally {
        Tally {
            from,
            to,
            measured: 0,
            total: 0,
            errors: 0,
            latency: histogram(),
        }
    }

    /// A connection opened at `opened` had its echo back at `now`.
    pub fn done(&mut self, opened: Instant, now: Instant) {
        self.total += 1;
        if now >= self.from && now < self.to {
            self.measured += 1;
            let ns = (now - opened).as_nanos().min(u64::MAX as u128) as u64;
            self.latency.saturating_record(ns.max(1));
        }
    }

    /// The figures, as `key=value` for the driver: a "message" is a
    /// connection, so that the driver's msgs/s is connections/s and its
    /// CPU per message is CPU per connection.
    pub fn line(&self, secs: f64) -> String {
        let l = &self.latency;
        format!(
            "msgs_per_s={:.0} conns_per_s={:.0} p50_us={:.1} p99_us={:.1} p999_us={:.1} \
             max_us={:.1} errors={} total_msgs={} total_conns={}",
            self.measured as f64 / secs,
            self.measured as f64 / secs,
            quantile_us(l, 0.5),
            quantile_us(l, 0.99),
            quantile_us(l, 0.999),
            l.max() as f64 / 1000.0,
            self.errors,
            self.total,
            self.total,
        )
    }
}

struct Slot {
    stream: TcpStream,
    opened: Instant,
    sent: bool,
    /// The line sent, to check the echo against.
    line: Vec<u8>,
    input: Vec<u8>,
}

fn open(addr: SocketAddr, poll: &Poll, i: usize, serial: u64, size: usize) -> io::Result<Slot> {
    let opened = Instant::now();
    let mut stream = TcpStream::connect(addr).map_err(|e| {
        if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
            io::Error::new(
                e.kind(),
                format!("connect: {e} (out of local ports: TIME_WAIT; see net.ipv4.tcp_tw_reuse)"),
            )
        } else {
            e
        }
    })?;
    stream.set_nodelay(true)?;
    poll.registry().register(
        &mut stream,
        Token(i),
        Interest::READABLE | Interest::WRITABLE,
    )?;
    let mut line = Vec::with_capacity(size);
    push_line(&mut line, i, serial, size);
    Ok(Slot {
        stream,
        opened,
        sent: false,
        line,
        input: Vec::with_capacity(size),
    })
}

/// Runs the churn load of `c` and counts it.
pub fn run(c: &Config) -> io::Result<Tally> {
    let mut poll = Poll::new()?;
    let start = Instant::now();
    let from = start + Duration::from_secs_f64(c.warmup);
    let to = from + Duration::from_secs_f64(c.secs);
    let mut tally = Tally::new(from, to);
    let mut serial = 0u64;
    let mut slots = Vec::with_capacity(c.slots);
    for i in 0..c.slots {
        slots.push(open(c.addr, &poll, i, serial, c.size)?);
        serial += 1;
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if now >= to {
            break;
        }
        poll.poll(&mut events, Some(to - now))?;
        for event in events.iter() {
            let i = event.token().0;
            let slot = &mut slots[i];
            if event.is_writable() && !slot.sent {
                if let Some(e) = slot.stream.take_error()? {
                    return Err(io::Error::new(e.kind(), format!("connect: {e}")));
                }
                match slot.stream.peer_addr() {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::NotConnected => continue,
                    Err(e) => return Err(e),
                }
                // One short line into an empty socket buffer: one write.
                let n = slot.stream.write(&slot.line)?;
                if n != slot.line.len() {
                    return Err(io::Error::other("short write of one line"));
                }
                slot.sent = true;
            }
            if !(event.is_readable() || event.is_read_closed()) || !slot.sent {
                continue;
            }
            read_available(
                &mut slot.stream,
                &mut buf,
                &mut slot.input,
                &"before the echo",
            )?;
            if slot.input.len() < slot.line.len() {
                continue;
            }
            if slot.input != slot.line {
                tally.errors += 1;
            }
            tally.done(slot.opened, Instant::now());
            // Close (the drop deregisters it) and start the next at once.
            slots[i] = open(c.addr, &poll, i, serial, c.size)?;
            serial += 1;
        }
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::parse_kv;

    #[test]
    fn only_the_window_counts_toward_the_rate() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut t = Tally::new(t0 + 10 * ms, t0 + 1010 * ms);
        t.done(t0, t0 + 5 * ms); // warm-up
        for k in 0..300u32 {
            let at = t0 + (10 + k * 3) * ms;
            t.done(at - ms / 2, at);
        }
        t.done(t0 + 1010 * ms, t0 + 1011 * ms); // after the window
        assert_eq!((t.measured, t.total), (300, 302));
        let kv = parse_kv(&t.line(1.0));
        assert_eq!(kv["conns_per_s"], 300.0);
        assert_eq!(kv["msgs_per_s"], 300.0, "a message is a connection");
        assert_eq!(kv["total_msgs"], 302.0, "CPU is divided by all of them");
        assert!((kv["p99_us"] - 500.0).abs() <= 1.0, "{kv:?}");
    }

    #[test]
    fn connections_come_and_go_against_a_real_server() {
        let addr = crate::lines::echo_server_for_tests();
        let c = Config {
            addr,
            slots: 4,
            size: 64,
            warmup: 0.05,
            secs: 0.3,
        };
        let t = run(&c).unwrap();
        assert_eq!(t.errors, 0);
        assert!(t.measured >= 20, "{} connections", t.measured);
        assert!(t.total >= t.measured);
        assert_eq!(t.latency.len(), t.measured);
    }
}
