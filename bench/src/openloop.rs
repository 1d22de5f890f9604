//! The open-loop load (`loadgen --rate R`): a fixed rate of requests,
//! spread round-robin over the connections, sent on schedule whether or not
//! the echoes of the earlier ones came back; each request's latency counts
//! from the time it was *meant* to be sent, so that a server (or a load
//! generator) that falls behind shows as latency rather than as fewer
//! requests. That is what wrk2 does about coordinated omission, and the
//! latencies go into an HdrHistogram as they do there.
//!
//! One mio loop per load generator process writes on schedule and reads
//! the echoes: echo keeps order on a connection, so each connection's echo
//! answers the oldest of its requests still waiting (a FIFO of intended
//! times per connection). Between events the loop sleeps on a `timerfd`
//! armed for the next request with nanosecond precision; `epoll_wait`'s
//! millisecond timeout would add up to a millisecond to every latency.
//!
//! The pieces are apart so that they can be tested: [`Schedule`] says
//! which request is due when and on which connection, [`Tally`] counts and
//! records them against the measuring window, [`run`] drives the sockets.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};

use crate::lines::{push_line, read_available, take_lines, write_pending};

/// One request of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Its number, from 0, over every connection.
    pub index: u64,
    /// The connection it goes on: `index % conns`.
    pub conn: usize,
    /// When it is meant to be sent: `start + index ÷ rate`.
    pub intended: Instant,
}

/// Request `i` is meant to be sent at `start + i ÷ rate`, on connection
/// `i % conns`, up to `until` (excluded). Each intended time is computed
/// from `i`, not from the last one, so that no rounding drifts the rate.
pub struct Schedule {
    start: Instant,
    period_ns: f64,
    conns: usize,
    until: Instant,
    next: u64,
}

impl Schedule {
    /// `rate` requests per second over `conns` connections (both above 0).
    pub fn new(start: Instant, rate: f64, conns: usize, until: Instant) -> Schedule {
        assert!(rate > 0.0 && conns > 0, "a rate and a connection");
        Schedule {
            start,
            period_ns: 1e9 / rate,
            conns,
            until,
            next: 0,
        }
    }

    /// When request `i` is meant to be sent.
    pub fn intended(&self, i: u64) -> Instant {
        self.start + Duration::from_nanos((i as f64 * self.period_ns).round() as u64)
    }

    /// When the next request is due; `None` once the schedule is over.
    pub fn next_at(&self) -> Option<Instant> {
        let t = self.intended(self.next);
        (t < self.until).then_some(t)
    }

    /// The next request if it is due by `now`. A sender that fell behind
    /// gets every request it missed, one call each, each with its own
    /// intended time (not `now`).
    pub fn pop_due(&mut self, now: Instant) -> Option<Request> {
        let intended = self.next_at().filter(|t| *t <= now)?;
        let r = Request {
            index: self.next,
            conn: (self.next % self.conns as u64) as usize,
            intended,
        };
        self.next += 1;
        Some(r)
    }

    /// Requests handed out so far.
    pub fn issued(&self) -> u64 {
        self.next
    }
}

/// A histogram of nanoseconds, from 1 ns to a minute at three significant
/// digits (0.1% resolution).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// `hist=VALUE:COUNT,...`: every recorded bucket, for the driver to merge
/// the histograms of several load generator processes.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut s = String::from("hist=");
    for (i, v) in h.iter_recorded().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(s, "{sep}{}:{}", v.value_iterated_to(), v.count_at_value());
    }
    s
}

/// Adds a `hist=` line (see [`encode`]) into `into`.
pub fn decode_into(line: &str, into: &mut Histogram<u64>) -> Result<(), String> {
    let body = line
        .strip_prefix("hist=")
        .ok_or_else(|| format!("not a hist= line: {line:.40}"))?;
    for pair in body.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("bad histogram entry {pair}");
        let (v, c) = pair.split_once(':').ok_or_else(bad)?;
        let (v, c): (u64, u64) = (v.parse().map_err(|_| bad())?, c.parse().map_err(|_| bad())?);
        into.saturating_record_n(v, c);
    }
    Ok(())
}

/// Nanoseconds of `h` at quantile `q`, in µs.
pub fn quantile_us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// The counts and histograms of one run, against its measuring window
/// `[from, to)` of intended times: requests meant to be sent before `from`
/// are warm-up, not counted.
pub struct Tally {
    from: Instant,
    to: Instant,
    /// Latency from intended send time to echo, of measured requests.
    pub latency: Histogram<u64>,
    /// How late the loop sent each measured request: its own lag, which
    /// says whether the load generator kept to the schedule.
    pub lag: Histogram<u64>,
    /// Measured requests sent, and answered.
    pub sent: u64,
    pub answered: u64,
    /// Every echo, warm-up included.
    pub echoes: u64,
    /// Measured requests never answered; each is recorded with the time
    /// it had waited when the run ended, a lower bound.
    pub unanswered: u64,
}

impl Tally {
    pub fn new(from: Instant, to: Instant) -> Tally {
        Tally {
            from,
            to,
            latency: histogram(),
            lag: histogram(),
            sent: 0,
            answered: 0,
            echoes: 0,
            unanswered: 0,
        }
    }

    fn measured(&self, intended: Instant) -> bool {
        intended >= self.from && intended < self.to
    }

    fn ns(d: Duration) -> u64 {
        d.as_nanos().min(u64::MAX as u128) as u64
    }

    /// A request meant for `intended` went out at `now`.
    pub fn sent(&mut self, intended: Instant, now: Instant) {
        if self.measured(intended) {
            self.sent += 1;
            self.lag.saturating_record(Self::ns(now - intended).max(1));
        }
    }

    /// The echo of a request meant for `intended` came back at `now`.
    pub fn answered(&mut self, intended: Instant, now: Instant) {
        self.echoes += 1;
        if self.measured(intended) {
            self.answered += 1;
            self.latency
                .saturating_record(Self::ns(now - intended).max(1));
        }
    }

    /// The run ended at `now` with the request meant for `intended` still
    /// unanswered.
    pub fn lost(&mut self, intended: Instant, now: Instant) {
        if self.measured(intended) {
            self.unanswered += 1;
            self.latency
                .saturating_record(Self::ns(now - intended).max(1));
        }
    }

    /// Measured requests sent and not answered yet.
    pub fn waiting(&self) -> u64 {
        self.sent - self.answered
    }

    /// The figures, as `key=value` for the driver; `secs` is the window.
    pub fn line(&self, target: f64, secs: f64, errors: u64) -> String {
        let l = &self.latency;
        format!(
            "msgs_per_s={:.0} offered_per_s={:.0} target_per_s={target:.0} p50_us={:.1} \
             p99_us={:.1} p999_us={:.1} max_us={:.1} lag_p99_us={:.1} lag_max_us={:.1} \
             sent={} answered={} unanswered={} errors={errors} total_msgs={}",
            self.answered as f64 / secs,
            self.sent as f64 / secs,
            quantile_us(l, 0.5),
            quantile_us(l, 0.99),
            quantile_us(l, 0.999),
            l.max() as f64 / 1000.0,
            quantile_us(&self.lag, 0.99),
            self.lag.max() as f64 / 1000.0,
            self.sent,
            self.answered,
            self.unanswered,
            self.echoes,
        )
    }
}

/// One open-loop run.
pub struct Config {
    pub addr: SocketAddr,
    pub conns: usize,
    pub size: usize,
    /// Requests per second, over all the connections.
    pub rate: f64,
    pub warmup: f64,
    pub secs: f64,
    /// How long to wait, after the last request, for the echoes still out.
    pub drain: f64,
}

/// What a run measured.
pub struct Outcome {
    pub tally: Tally,
    /// Echoed lines that differed from what was sent.
    pub errors: u64,
}

struct Conn {
    stream: TcpStream,
    output: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    next_send: u64,
    next_recv: u64,
    /// The intended times of the requests sent and not answered, oldest first.
    waiting: VecDeque<Instant>,
    /// In this turn's list of connections to flush.
    queued: bool,
}

impl Conn {
    fn flush(&mut self) -> io::Result<()> {
        write_pending(&mut self.stream, &mut self.output, &mut self.written)
    }
}

/// A `timerfd` that wakes the loop at the next request's time.
struct Timer {
    fd: std::os::fd::OwnedFd,
    armed: Option<Instant>,
}

impl Timer {
    fn arm(&mut self, at: Instant) -> io::Result<()> {
        if self.armed == Some(at) {
            return Ok(());
        }
        // Relative, at least 1 ns: a zero time would disarm it.
        let d = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: d.as_secs() as _,
                tv_nsec: d.subsec_nanos() as _,
            },
        };
        timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec)?;
        self.armed = Some(at);
        Ok(())
    }
}

/// Runs the open-loop load of `c` and measures it.
pub fn run(c: &Config) -> io::Result<Outcome> {
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(c.conns);
    for id in 0..c.conns {
        let s = std::net::TcpStream::connect(c.addr)?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(s);
        poll.registry().register(
            &mut stream,
            Token(id),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        conns.push(Conn {
            stream,
            output: Vec::new(),
            written: 0,
            input: Vec::new(),
            next_send: 0,
            next_recv: 0,
            waiting: VecDeque::new(),
            queued: false,
        });
    }
    let timer_token = Token(c.conns);
    let mut timer = Timer {
        fd: timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?,
        armed: None,
    };
    poll.registry().register(
        &mut SourceFd(&timer.fd.as_raw_fd()),
        timer_token,
        Interest::READABLE,
    )?;

    let start = Instant::now();
    let from = start + Duration::from_secs_f64(c.warmup);
    let to = from + Duration::from_secs_f64(c.secs);
    let give_up = to + Duration::from_secs_f64(c.drain);
    let mut schedule = Schedule::new(start, c.rate, c.conns, to);
    let mut tally = Tally::new(from, to);
    let mut errors = 0u64;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut expected = Vec::with_capacity(c.size);
    let mut dirty: Vec<usize> = Vec::with_capacity(c.conns);

    loop {
        // Send every request due by now, each stamped with its own time.
        let now = Instant::now();
        while let Some(r) = schedule.pop_due(now) {
            let conn = &mut conns[r.conn];
            push_line(&mut conn.output, r.conn, conn.next_send, c.size);
            conn.next_send += 1;
            conn.waiting.push_back(r.intended);
            tally.sent(r.intended, now);
            if !conn.queued {
                conn.queued = true;
                dirty.push(r.conn);
            }
        }
        for id in dirty.drain(..) {
            conns[id].queued = false;
            conns[id].flush()?;
        }
        let next = schedule.next_at();
        if next.is_none() && (tally.waiting() == 0 || now >= give_up) {
            break;
        }

        // Whatever is ready; else sleep until the next request is due (or,
        // once all are sent, until the echoes are given up on).
        poll.poll(&mut events, Some(Duration::ZERO))?;
        if events.is_empty() {
            timer.arm(next.unwrap_or(give_up))?;
            poll.poll(&mut events, None)?;
        }
        for event in events.iter() {
            if event.token() == timer_token {
                timer.armed = None;
                continue;
            }
            let id = event.token().0;
            let conn = &mut conns[id];
            if event.is_writable() {
                conn.flush()?;
            }
            if !(event.is_readable() || event.is_read_closed()) {
                continue;
            }
            read_available(
                &mut conn.stream,
                &mut buf,
                &mut conn.input,
                &format!("conn {id}"),
            )?;
            let now = Instant::now();
            let Conn {
                input,
                waiting,
                next_recv,
                ..
            } = conn;
            take_lines(input, |line| {
                expected.clear();
                push_line(&mut expected, id, *next_recv, c.size);
                if line != expected.as_slice() {
                    errors += 1;
                }
                *next_recv += 1;
                match waiting.pop_front() {
                    Some(intended) => tally.answered(intended, now),
                    // An echo of nothing sent: wrong bytes, counted above.
                    None => errors += 1,
                }
            });
        }
    }
    let end = Instant::now();
    for conn in &conns {
        for &intended in &conn.waiting {
            tally.lost(intended, end);
        }
    }
    Ok(Outcome { tally, errors })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn requests_are_due_at_their_time_round_robin() {
        let t0 = Instant::now();
        // 1000/s over 3 connections: one every ms, for 10 ms.
        let mut s = Schedule::new(t0, 1000.0, 3, t0 + 10 * MS);
        assert_eq!(s.next_at(), Some(t0));
        let first = s.pop_due(t0).unwrap();
        assert_eq!((first.index, first.conn, first.intended), (0, 0, t0));
        assert_eq!(s.pop_due(t0), None, "the next is 1 ms later");
        assert_eq!(s.next_at(), Some(t0 + MS));
        let conns: Vec<usize> = (1..=4)
            .map(|i| s.pop_due(t0 + i * MS).unwrap().conn)
            .collect();
        assert_eq!(conns, [1, 2, 0, 1]);
    }

    #[test]
    fn a_late_sender_still_stamps_each_intended_time() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 1000.0, 2, t0 + 100 * MS);
        // The loop woke 5.5 ms late: six requests are due, each keeps its
        // own intended time, none is stamped with the time it went out.
        let late = t0 + Duration::from_micros(5500);
        let due: Vec<Request> = std::iter::from_fn(|| s.pop_due(late)).collect();
        assert_eq!(due.len(), 6);
        for (i, r) in due.iter().enumerate() {
            assert_eq!(r.intended, t0 + i as u32 * MS);
        }
        // And their latency counts from then: 5.5 ms for the first, sent
        // late and answered at once.
        let mut tally = Tally::new(t0, t0 + 100 * MS);
        for r in &due {
            tally.sent(r.intended, late);
        }
        tally.answered(due[0].intended, late);
        assert_eq!(
            tally.latency.max(),
            tally.latency.highest_equivalent(5_500_000)
        );
        assert!((quantile_us(&tally.lag, 1.0) - 5500.0).abs() < 5500.0 * 0.001);
    }

    #[test]
    fn the_rate_holds_over_the_window_without_drift() {
        let t0 = Instant::now();
        // 30,000/s for 2 s: exactly 60,000 requests, whatever the period's
        // rounding (33,333.3 ns).
        let end = t0 + Duration::from_secs(2);
        let mut s = Schedule::new(t0, 30_000.0, 7, end);
        let mut per_conn = [0u64; 7];
        let mut last = t0;
        while let Some(r) = s.pop_due(end) {
            assert!(r.intended >= last);
            last = r.intended;
            per_conn[r.conn] += 1;
        }
        assert_eq!(s.issued(), 60_000);
        assert_eq!(s.next_at(), None, "nothing at or after the end");
        assert!(end - last <= Duration::from_nanos(33_334));
        // Spread evenly: 60,000 over 7 is 8,572 or 8,571.
        assert!(
            per_conn.iter().all(|&n| n == 8571 || n == 8572),
            "{per_conn:?}"
        );
    }

    #[test]
    fn only_the_window_is_counted_and_the_lost_are_latency() {
        let t0 = Instant::now();
        let (from, to) = (t0 + 10 * MS, t0 + 20 * MS);
        let mut t = Tally::new(from, to);
        // Warm-up: answered, not measured.
        t.sent(t0, t0);
        t.answered(t0, t0 + MS);
        // Measured: one answered after 2 ms, one lost at the end.
        t.sent(from, from);
        t.sent(from + MS, from + MS);
        t.answered(from, from + 2 * MS);
        assert_eq!((t.sent, t.answered, t.waiting(), t.echoes), (2, 1, 1, 2));
        t.lost(from + MS, from + 101 * MS);
        // After the window: not measured.
        t.sent(to, to);
        assert_eq!((t.sent, t.unanswered, t.latency.len()), (2, 1, 2));
        assert_eq!(t.latency.max(), t.latency.highest_equivalent(100_000_000));
        let line = t.line(200.0, 0.01, 0);
        let kv = crate::host::parse_kv(&line);
        assert_eq!(kv["offered_per_s"], 200.0);
        assert_eq!(kv["msgs_per_s"], 100.0);
        assert_eq!(kv["unanswered"], 1.0);
        assert_eq!(kv["total_msgs"], 2.0);
    }

    #[test]
    fn histograms_merge_through_their_lines() {
        let (mut a, mut b) = (histogram(), histogram());
        for v in [1_000, 2_000, 3_000] {
            a.record(v).unwrap();
        }
        b.record_n(1_000_000, 2).unwrap();
        let mut merged = histogram();
        decode_into(&encode(&a), &mut merged).unwrap();
        decode_into(&encode(&b), &mut merged).unwrap();
        assert_eq!(merged.len(), 5);
        assert_eq!(merged.max(), merged.highest_equivalent(1_000_000));
        assert_eq!(
            merged.value_at_quantile(0.5),
            merged.highest_equivalent(3_000)
        );
        assert!(decode_into("nope", &mut merged).is_err());
        decode_into("hist=", &mut merged).unwrap();
    }

    #[test]
    fn echoes_come_back_on_schedule_from_a_real_server() {
        let addr = crate::lines::echo_server_for_tests();
        let c = Config {
            addr,
            conns: 4,
            size: 32,
            rate: 2000.0,
            warmup: 0.05,
            secs: 0.25,
            drain: 1.0,
        };
        let out = run(&c).unwrap();
        let t = &out.tally;
        assert_eq!(out.errors, 0);
        assert_eq!(t.sent, 500, "2000/s for 0.25 s");
        assert_eq!((t.answered, t.unanswered), (500, 0));
        assert_eq!(t.latency.len(), 500);
        assert!(t.echoes >= 600, "warm-up too: {}", t.echoes);
    }
}
