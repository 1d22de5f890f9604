//! The soak's clients: a few hundred connections on one mio loop, each
//! with its own seeded behaviour, and the checks of what each one got back.
//!
//! Three kinds of client:
//!
//! - **workers** (the bulk) mix, op by op: pipelined writes of many lines,
//!   1-byte fragmentation, huge coalesced bursts and pauses; some read
//!   slowly, some stop reading for a while, some have a small `SO_RCVBUF`,
//!   some send binary lines; each ends by closing after its last echo,
//!   half-closing, sending an over-long line, or an RST (`SO_LINGER` 0), or
//!   stays on until SIGTERM;
//! - **idlers** connect, maybe echo one line, and sit idle;
//! - **burst** connections arrive 50 to 200 at once, echo one line, and go.
//!
//! About 40% of workers and idlers go through the fault-injecting relay.
//!
//! Every byte echoed is compared with the byte the client's script says it
//! sent ([`Expect`]). What else must hold is written down in
//! [`Client::judge`]: each rule, and why the server's semantics make it hold.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::content::{Expect, Piece, Pools, Script};
use super::net::{self, Connect};
use super::rng::{Rng, derive};
use super::throttle::{self, Spell, Watch};

/// A worker stops starting new writes while this much of what it sent is
/// not yet echoed (a burst already started still finishes): bounds the
/// bytes in flight, so a stalled reader backs the server up without
/// filling the machine's socket memory.
const MAX_OUTSTANDING: u64 = 256 * 1024;
/// `SO_RCVBUF` of the small-buffer clients (the kernel doubles it): the
/// server's writes to them come up short, the condition of issue 9's defect 1.
const SMALL_RCVBUF: usize = 4096;
/// A client that closes after its last echo waits this long for it.
const ECHO_PATIENCE: Duration = Duration::from_secs(30);
/// A connect that takes this long was dropped and retried by the kernel: the
/// listen backlog overflowed (the first SYN retransmission is at 1 s).
const CONNECT_STALL: Duration = Duration::from_millis(900);
/// After SIGTERM, stalled readers resume by then, and slow readers read at
/// full speed from then: well inside the drain deadline, so every
/// well-behaved client can be owed a clean end.
const STALL_CAP_AFTER_TERM: Duration = Duration::from_millis(1500);
const SLOW_CAP_AFTER_TERM: Duration = Duration::from_millis(1000);
/// The server's promise to a connection it closes itself (after an
/// over-long line): it delivers what it owes and closes within this, or
/// gives up and resets it (reactor-echo's `CLOSE_TIMEOUT`; its log names
/// each one it resets so: `throttle::AT_CLOSE_DEADLINE`).
const SERVER_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// A slow reader reads `chunk` bytes (this range) every 1 to 10 ms, at
/// least 51.2 KB/s. What the server can owe a client when it starts to
/// close it is its output queue (64 KiB high-water mark plus one read's
/// replies, 64 KiB) and its send buffer (the soak's 32 KiB, doubled): 192
/// KiB, read in under 4 s at the slowest pace. With a read stall of up to
/// 3 s before it, that is 7 s of the server's 10: the rest is the slack
/// for the soak's own loop. (At 256 bytes, 25.6 KB/s, it took 7.7 s, and
/// with a stall 10.7: the soak could break the deadline by itself.)
const SLOW_CHUNK: (usize, usize) = (512, 4096);
/// A client's turns further apart than this: the soak's own loop kept it
/// from reading (its turns are 10 ms apart at most when it keeps up). The
/// relay's own late turns are counted with the same tolerance.
pub const LAG_TOLERANCE: Duration = Duration::from_millis(100);
/// What a reader that reads all there is takes at the least, through the
/// relay too, on a loop that keeps up (it takes tens of MB/s): for the
/// judge of a reset at the server's close deadline.
const FAST_READER_RATE: f64 = 1e6;
/// Turns under `LAG_TOLERANCE` apart count as served time, but on a loaded
/// machine they come slower than on an idle one: the judge of a reset at
/// the close deadline asks the soak to have left a client this much more
/// than it needed at its pace.
const SERVED_MARGIN: Duration = Duration::from_secs(1);
/// The most of a late slow reader's missed reads that one turn makes up.
const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// A slow reader's pace: `chunk` bytes every `every`, as a rate. A turn
/// that comes late reads what the turns it missed would have (up to
/// [`MAX_CATCH_UP`]), so the rate holds however long the loop's turns
/// take; when nothing is waiting, no credit is saved up. (It used to read
/// one chunk per turn: with 100 ms turns, a 256-byte reader took 2.5 KB/s.)
#[derive(Clone, Copy, Debug)]
struct Pace {
    chunk: usize,
    every: Duration,
    /// When the next chunk is due.
    next: Instant,
}

impl Pace {
    fn new(chunk: usize, every: Duration, now: Instant) -> Pace {
        Pace {
            chunk,
            every,
            next: now,
        }
    }

    /// Bytes it may read now (0 before the next chunk is due).
    fn allowance(&self, now: Instant) -> usize {
        if now < self.next {
            return 0;
        }
        let late = (now - self.next).min(MAX_CATCH_UP);
        let chunks = 1 + (late.as_nanos() / self.every.as_nanos().max(1)) as usize;
        chunks * self.chunk
    }

    /// It read `read` bytes of `allowance(now)`; `drained`: it found
    /// nothing more waiting.
    fn read(&mut self, now: Instant, read: usize, drained: bool) {
        if drained || now.saturating_duration_since(self.next) > MAX_CATCH_UP {
            self.next = now + self.every;
        } else {
            let chunks = read.div_ceil(self.chunk).max(1) as u32;
            self.next += self.every * chunks;
        }
    }

    /// Bytes a second.
    fn rate(&self) -> f64 {
        self.chunk as f64 / self.every.as_secs_f64().max(1e-9)
    }
}

/// What the soak drives: where, how many, how long.
#[derive(Clone, Debug)]
pub struct Plan {
    pub server: SocketAddr,
    pub relay: SocketAddr,
    pub seed: u64,
    pub workers: usize,
    pub idlers: usize,
    pub max_frame: usize,
    /// After SIGTERM, clients still without their end by then are hung.
    pub patience_after_term: Duration,
    /// The connections the server's log says it cut off at their close deadline.
    pub cut_offs: Arc<throttle::DeadlineCutOffs>,
}

/// Shared with the main thread: the SIGTERM moment (set just *before* the
/// signal is sent, so an EOF read while it is unset came before the drain),
/// and live counters for the progress lines.
#[derive(Debug, Default)]
pub struct Shared {
    pub term: OnceLock<Instant>,
    pub sent: AtomicU64,
    pub echoed: AtomicU64,
    pub started: AtomicU64,
    pub open: AtomicU64,
    pub violations: AtomicU64,
}

/// Everything the clients did and found, for the summary.
#[derive(Debug, Default)]
pub struct Tally {
    pub workers: u64,
    pub idlers: u64,
    pub burst_conns: u64,
    pub bursts: u64,
    pub relayed: u64,
    pub steady: u64,
    pub small_rcvbuf: u64,
    pub binary: u64,
    pub slow_readers: u64,
    pub nodelay: u64,
    pub sent: u64,
    pub echoed: u64,
    pub lines: u64,
    pub pipelined_ops: u64,
    pub fragmented_ops: u64,
    pub fragment_writes: u64,
    pub burst_ops: u64,
    pub burst_bytes: u64,
    pub stalls: u64,
    pub pauses: u64,
    pub closes: u64,
    pub half_closes: u64,
    pub partial_last_lines: u64,
    pub aborts: u64,
    pub overlongs: u64,
    pub idle_silent: u64,
    pub idle_hello: u64,
    /// Clients connected before SIGTERM and done after it.
    pub active_at_term: u64,
    /// Of those, how many had written in the second before it, and how
    /// many were in a read stall at that moment.
    pub writing_at_term: u64,
    pub stalled_at_term: u64,
    /// Ends checked and found right.
    pub clean_fins: u64,
    pub exact_echoes: u64,
    pub self_closed: u64,
    /// Legitimate after SIGTERM: refused, or reset before the server served them.
    pub refused_at_drain: u64,
    pub reset_unserved_at_drain: u64,
    /// Clients that ended late, or not in time, while the connection that
    /// sent to them was throttled by the kernel (`throttle.rs`): not the
    /// server's doing, counted by what they saw: no end by the end of the
    /// drain, an RST when the server cut them off at its deadline, their
    /// last echoes later than `ECHO_PATIENCE`.
    pub throttled_no_end: u64,
    pub throttled_reset: u64,
    pub throttled_echo_late: u64,
    /// The first few, with the sender's `TCP_INFO`.
    pub throttled_examples: Vec<String>,
    /// Clients reset by the server at its close deadline that, at their
    /// own pace, could not have read what they were owed in the time the
    /// soak's own loop left them (`Client::judge_reset`): the soak broke
    /// its side of the promise, not the server. The first few, in full.
    pub lagged_resets: u64,
    pub lagged_examples: Vec<String>,
    pub max_connect: Duration,
    /// The longest turn of the client loop: a connect or an echo measured
    /// across it looks that much slower than the server made it.
    pub longest_turn: Duration,
    /// Violations by kind, and the first few in full.
    pub violations: BTreeMap<&'static str, u64>,
    pub examples: Vec<String>,
}

impl Tally {
    /// Adds the tally of another client loop to this one.
    pub fn merge(&mut self, other: Tally) {
        self.workers += other.workers;
        self.idlers += other.idlers;
        self.burst_conns += other.burst_conns;
        self.bursts += other.bursts;
        self.relayed += other.relayed;
        self.steady += other.steady;
        self.small_rcvbuf += other.small_rcvbuf;
        self.binary += other.binary;
        self.slow_readers += other.slow_readers;
        self.nodelay += other.nodelay;
        self.sent += other.sent;
        self.echoed += other.echoed;
        self.lines += other.lines;
        self.pipelined_ops += other.pipelined_ops;
        self.fragmented_ops += other.fragmented_ops;
        self.fragment_writes += other.fragment_writes;
        self.burst_ops += other.burst_ops;
        self.burst_bytes += other.burst_bytes;
        self.stalls += other.stalls;
        self.pauses += other.pauses;
        self.closes += other.closes;
        self.half_closes += other.half_closes;
        self.partial_last_lines += other.partial_last_lines;
        self.aborts += other.aborts;
        self.overlongs += other.overlongs;
        self.idle_silent += other.idle_silent;
        self.idle_hello += other.idle_hello;
        self.active_at_term += other.active_at_term;
        self.writing_at_term += other.writing_at_term;
        self.stalled_at_term += other.stalled_at_term;
        self.clean_fins += other.clean_fins;
        self.exact_echoes += other.exact_echoes;
        self.self_closed += other.self_closed;
        self.refused_at_drain += other.refused_at_drain;
        self.reset_unserved_at_drain += other.reset_unserved_at_drain;
        self.throttled_no_end += other.throttled_no_end;
        self.throttled_reset += other.throttled_reset;
        self.throttled_echo_late += other.throttled_echo_late;
        for e in other.throttled_examples {
            if self.throttled_examples.len() < 6 {
                self.throttled_examples.push(e);
            }
        }
        self.lagged_resets += other.lagged_resets;
        for e in other.lagged_examples {
            if self.lagged_examples.len() < 6 {
                self.lagged_examples.push(e);
            }
        }
        self.max_connect = self.max_connect.max(other.max_connect);
        self.longest_turn = self.longest_turn.max(other.longest_turn);
        for (kind, n) in other.violations {
            *self.violations.entry(kind).or_default() += n;
        }
        for e in other.examples {
            if self.examples.len() < 12 {
                self.examples.push(e);
            }
        }
    }

    pub fn violation_count(&self) -> u64 {
        self.violations.values().sum()
    }

    /// Counts a client that ended late because the kernel throttled its
    /// connection (see `throttled_no_end`).
    fn throttled(&mut self, what: &'static str, who: &str, spell: &Spell) {
        match what {
            "no end" => self.throttled_no_end += 1,
            "reset" => self.throttled_reset += 1,
            _ => self.throttled_echo_late += 1,
        }
        if self.throttled_examples.len() < 6 {
            self.throttled_examples
                .push(format!("{what}: {who}: {}", throttle::describe(spell)));
        }
    }

    pub fn violate(&mut self, kind: &'static str, detail: String) {
        *self.violations.entry(kind).or_default() += 1;
        if self.examples.len() < 12 {
            self.examples.push(format!("{kind}: {detail}"));
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Worker,
    Idler,
    Burst,
}

/// How a client ends, if it ends before SIGTERM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Wait for every echo, then close (FIN).
    Close,
    /// `shutdown(Write)` (maybe after a partial line), then read to EOF.
    HalfClose,
    /// Send an over-long line at some point; read to the server's FIN.
    OverLong,
    /// `SO_LINGER` 0 and close, mid-stream, with whatever is in flight.
    Abort,
    /// Stay until SIGTERM.
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Connecting,
    Running,
    /// Writing the last bytes of a half-close or an over-long line.
    Ending,
    /// Closing after the last echo: waiting for it.
    AwaitEcho {
        until: Instant,
    },
    /// Reading to the end; no more writes.
    AwaitEof,
    Done,
}

/// How a client's connection ended, as the client saw it.
#[derive(Debug, Default)]
struct Outcome {
    /// EOF read; `true` if SIGTERM had been sent by then.
    eof: Option<bool>,
    /// The first failed read / write, and whether SIGTERM had been sent.
    read_error: Option<(io::Error, bool)>,
    write_error: Option<(io::Error, bool)>,
    connect_error: Option<(io::Error, bool)>,
    /// Closed by this client: after its last echo, or with RST.
    closed: bool,
    aborted: bool,
    /// The echo was wrong (first difference).
    bad_echo: Option<String>,
    /// Still waiting for its last echo at its deadline.
    echo_timeout: bool,
    hung: bool,
}

struct Client {
    id: u64,
    kind: Kind,
    end: End,
    via_relay: bool,
    stream: Option<TcpStream>,
    readable: bool,
    writable: bool,
    rng: Rng,
    tx: Script,
    rx: Expect,
    stage: Stage,
    /// Generated, not yet written.
    pending: Vec<u8>,
    pending_at: usize,
    /// Writes left to do one to three bytes at a time.
    fragment_left: u32,
    /// When to start the next op (`None`: no more ops: idlers, bursts).
    next_op: Option<Instant>,
    /// While fragmenting: when to write the next piece.
    next_piece: Instant,
    /// A slow reader's pace.
    slow: Option<Pace>,
    /// The reader's rate before SIGTERM ended slowness, for the judge.
    pace: Option<Pace>,
    stall_until: Option<Instant>,
    /// The time the soak took from this client: its last turn, and each
    /// gap between turns over `LAG_TOLERANCE` and each read stall, as
    /// (from, until); and the bytes it read, with when (the last 20 s).
    last_turn: Option<Instant>,
    lost: Vec<(Instant, Instant)>,
    reads: std::collections::VecDeque<(Instant, u64)>,
    /// When its over-long line was all written, and what it was owed then.
    overlong_written: Option<(Instant, u64)>,
    lifetime_end: Option<Instant>,
    created: Instant,
    connected_at: Option<Instant>,
    /// This socket's address, once connected.
    local: Option<SocketAddr>,
    /// Stream offsets: generated, written, written up to the last '\n',
    /// echoed; where the over-long line starts.
    generated: u64,
    sent: u64,
    sent_complete: u64,
    echoed: u64,
    overlong_at: Option<u64>,
    /// Our FIN is sent (`shutdown(Write)` done).
    half_closed: bool,
    /// For the "at SIGTERM" counts: the last write, the last read stall
    /// (from, until), and when the client was done.
    last_write: Option<Instant>,
    last_stall: Option<(Instant, Instant)>,
    done_at: Option<Instant>,
    outcome: Outcome,
}

/// What one read attempt found.
#[derive(PartialEq, Eq)]
enum ReadResult {
    /// Not tried (stalled, slow and not yet due, nothing signalled).
    Skipped,
    /// Read until `WouldBlock`: nothing is waiting right now.
    Drained,
    /// Read some; there may be more.
    More,
    /// The connection is over (EOF, error or a bad echo).
    Over,
}

impl Client {
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: u64,
        kind: Kind,
        first_cohort: bool,
        plan: &Plan,
        pools: &Arc<Pools>,
        now: Instant,
        term: Option<Instant>,
        tally: &mut Tally,
    ) -> Client {
        let mut rng = Rng::new(derive(plan.seed, id * 2 + 1));
        let via_relay = kind != Kind::Burst && rng.percent(40);
        let binary = rng.percent(40);
        // Only the first cohort of workers may stay until SIGTERM: were
        // refills allowed to, the slots would fill up with them in a long
        // run and the churn of ends would stop.
        let end = match kind {
            Kind::Worker if first_cohort && rng.percent(20) => End::Never,
            Kind::Worker => match rng.below(100) {
                0..35 => End::Close,
                35..60 => End::HalfClose,
                60..75 => End::OverLong,
                _ => End::Abort,
            },
            Kind::Idler => End::Close,
            Kind::Burst => match rng.below(100) {
                0..80 => End::Close,
                80..90 => End::HalfClose,
                _ => End::Abort,
            },
        };
        let lifetime = match kind {
            Kind::Worker if end == End::Never || end == End::OverLong => None,
            Kind::Worker => Some(rng.millis(300, 15_000)),
            Kind::Idler => Some(rng.millis(1_000, 30_000)),
            Kind::Burst => Some(rng.millis(0, 1_500)),
        };
        let overlong_after = (end == End::OverLong).then(|| rng.between(0, 400));
        let script = Script::new(
            derive(plan.seed, id * 2),
            pools,
            id,
            binary,
            plan.max_frame,
            overlong_after,
        );
        // Slow, but not so slow that a client waiting for its last echo
        // (at most MAX_OUTSTANDING + a burst) waits longer than ECHO_PATIENCE:
        // at least 256 bytes every 10 ms.
        let slow = (kind == Kind::Worker && rng.percent(15))
            .then(|| Pace::new(rng.size(SLOW_CHUNK.0, SLOW_CHUNK.1), rng.millis(1, 10), now));
        let small = kind == Kind::Worker && rng.percent(25);
        let mut c = Client {
            id,
            kind,
            end,
            via_relay,
            stream: None,
            readable: false,
            writable: false,
            rx: Expect::new(script.clone()),
            tx: script,
            stage: Stage::Connecting,
            pending: Vec::new(),
            pending_at: 0,
            fragment_left: 0,
            next_op: Some(now),
            next_piece: now,
            slow,
            pace: slow,
            stall_until: None,
            last_turn: None,
            lost: Vec::new(),
            reads: std::collections::VecDeque::new(),
            overlong_written: None,
            lifetime_end: None,
            created: now,
            connected_at: None,
            local: None,
            generated: 0,
            sent: 0,
            sent_complete: 0,
            echoed: 0,
            overlong_at: None,
            half_closed: false,
            last_write: None,
            last_stall: None,
            done_at: None,
            outcome: Outcome::default(),
            rng,
        };
        c.lifetime_end = lifetime.map(|l| now + l);
        match kind {
            Kind::Worker => tally.workers += 1,
            Kind::Idler => tally.idlers += 1,
            Kind::Burst => tally.burst_conns += 1,
        }
        tally.relayed += via_relay as u64;
        tally.binary += binary as u64;
        tally.slow_readers += c.slow.is_some() as u64;
        tally.small_rcvbuf += small as u64;
        let addr = if via_relay { plan.relay } else { plan.server };
        match net::connect(addr, small.then_some(SMALL_RCVBUF)) {
            Ok(s) => c.stream = Some(s),
            Err(e) => {
                c.outcome.connect_error = Some((e, term.is_some()));
                c.stage = Stage::Done;
            }
        }
        c
    }

    fn stream(&mut self) -> &mut TcpStream {
        self.stream
            .as_mut()
            .expect("a client that is not done has a stream")
    }

    /// Does what is due; returns when it next wants a turn by itself
    /// (events give it turns too).
    /// `lag`: how long the loop's last turn worked; an event that came
    /// during it was seen that much late.
    fn progress(
        &mut self,
        now: Instant,
        lag: Duration,
        shared: &Shared,
        watch: &Watch,
        scratch: &mut [u8],
        tally: &mut Tally,
    ) -> Option<Instant> {
        let term = shared.term.get().copied();
        if let Some(last) = self.last_turn
            && now - last > LAG_TOLERANCE
        {
            self.lost.push((last, now));
        }
        self.last_turn = Some(now);
        if self.stage == Stage::Connecting {
            if !self.writable {
                return None;
            }
            match net::connect_state(self.stream()) {
                Connect::Pending => {
                    self.writable = false;
                    return None;
                }
                Connect::Failed(e) => {
                    self.outcome.connect_error = Some((e, shared.term.get().is_some()));
                    self.finish();
                    return None;
                }
                Connect::Done => {
                    self.connected_at = Some(now);
                    self.local = self.stream().local_addr().ok();
                    let took = now - self.created;
                    // Judged for direct connects only: through the relay,
                    // the connect is to the relay's own listener.
                    if !self.via_relay {
                        tally.max_connect = tally.max_connect.max(took);
                    }
                    if took.saturating_sub(lag) >= CONNECT_STALL
                        && term.is_none()
                        && !self.via_relay
                    {
                        tally.violate(
                            "connect stalled",
                            format!(
                                "client {} took {took:?} to connect (listen backlog overflow?)",
                                self.id
                            ),
                        );
                    }
                    self.stage = Stage::Running;
                    // Without TCP_NODELAY, Nagle merges small writes: some
                    // clients keep it, so both shapes reach the server.
                    if self.rng.percent(70) {
                        let _ = net::set_nodelay(self.stream());
                        tally.nodelay += 1;
                    }
                }
            }
        }
        if let Some(t) = term {
            // Bounded after SIGTERM, so every client can still read its end.
            if let Some(until) = self.stall_until {
                self.stall_until = Some(until.min(t + STALL_CAP_AFTER_TERM));
            }
            if self.slow.is_some() && now >= t + SLOW_CAP_AFTER_TERM {
                self.slow = None;
            }
        }
        if self.end == End::Abort
            && self.lifetime_end.is_some_and(|l| now >= l)
            && matches!(self.stage, Stage::Running)
        {
            // Mid-stream, with whatever is queued either way: the server
            // gets an RST at any point of its work on this connection.
            tally.aborts += 1;
            if let Some(s) = self.stream.take() {
                net::abort(s);
            }
            self.outcome.aborted = true;
            self.finish();
            return None;
        }

        let read = self.read(now, term.is_some(), shared, scratch, tally);
        if read == ReadResult::Over {
            self.finish();
            return None;
        }
        if let Stage::AwaitEcho { until } = self.stage {
            if self.echoed == self.sent_complete {
                // Every line came back: an orderly close from our side.
                tally.closes += 1;
                self.outcome.closed = true;
                self.stream = None;
                self.finish();
                return None;
            }
            // Its patience counts the time the client was served: what
            // the soak's own loop or a read stall took from it is added.
            let since = until - ECHO_PATIENCE;
            if now >= until + self.lost_between(watch, since, now) && term.is_none() {
                self.outcome.echo_timeout = true;
                self.finish();
                return None;
            }
        }
        // After SIGTERM a client writes only right after a read that found
        // nothing waiting, one write at a time, so a FIN that has arrived is
        // always read before the next write: a write that then fails can
        // only mean an RST without a FIN (see `judge`).
        let may_write = term.is_none() || (read == ReadResult::Drained && self.slow.is_none());
        if may_write {
            self.write(now, term, shared, tally);
        }
        if self.stage == Stage::Done {
            return None;
        }
        self.next_wake(now, term)
    }

    fn read(
        &mut self,
        now: Instant,
        after_term: bool,
        shared: &Shared,
        scratch: &mut [u8],
        tally: &mut Tally,
    ) -> ReadResult {
        if matches!(self.stage, Stage::Connecting | Stage::Done) {
            return ReadResult::Skipped;
        }
        if let Some(until) = self.stall_until {
            if now < until {
                return ReadResult::Skipped;
            }
            self.stall_until = None;
            // Data may have been waiting since an edge we ignored.
            self.readable = true;
        }
        let (mut budget, reads) = match self.slow {
            Some(pace) => match pace.allowance(now) {
                0 => return ReadResult::Skipped,
                n => (n, usize::MAX),
            },
            // After SIGTERM, read before every write even without an event.
            // A few reads a turn, so one busy client cannot hold up the rest.
            None if self.readable || after_term => (usize::MAX, 4),
            None => return ReadResult::Skipped,
        };
        let allowed = budget;
        let result = self.read_some(&mut budget, reads, shared, scratch, tally);
        if let Some(pace) = &mut self.slow {
            pace.read(now, allowed - budget, result == ReadResult::Drained);
        }
        let read = (allowed - budget) as u64;
        if read > 0 {
            self.reads.push_back((now, read));
            while self
                .reads
                .front()
                .is_some_and(|&(t, _)| now - t > 2 * ECHO_PATIENCE / 3)
            {
                self.reads.pop_front();
            }
        }
        result
    }

    /// Up to `reads` reads, of `budget` bytes in all (what is left of it
    /// is left there).
    fn read_some(
        &mut self,
        budget: &mut usize,
        reads: usize,
        shared: &Shared,
        scratch: &mut [u8],
        tally: &mut Tally,
    ) -> ReadResult {
        for _ in 0..reads {
            if *budget == 0 {
                return ReadResult::More;
            }
            let len = (*budget).min(scratch.len());
            let buf = &mut scratch[..len];
            let result = self.stream().read(buf);
            match result {
                Ok(0) => {
                    self.outcome.eof = Some(shared.term.get().is_some());
                    return ReadResult::Over;
                }
                Ok(n) => {
                    *budget -= n;
                    if let Err(e) = self.rx.check(&buf[..n]) {
                        self.outcome.bad_echo = Some(e);
                        return ReadResult::Over;
                    }
                    self.echoed += n as u64;
                    tally.echoed += n as u64;
                    shared.echoed.fetch_add(n as u64, Ordering::Relaxed);
                    if self.echoed > self.sent_complete {
                        self.outcome.bad_echo = Some(format!(
                            "{} bytes echoed but only {} sent up to a '\\n' (a partial line came back)",
                            self.echoed, self.sent_complete
                        ));
                        return ReadResult::Over;
                    }
                }
                Err(ref e) if net::would_block(e) => {
                    self.readable = false;
                    return ReadResult::Drained;
                }
                Err(ref e) if net::interrupted(e) => {}
                Err(e) => {
                    self.outcome.read_error = Some((e, shared.term.get().is_some()));
                    return ReadResult::Over;
                }
            }
        }
        ReadResult::More
    }

    fn write(&mut self, now: Instant, term: Option<Instant>, shared: &Shared, tally: &mut Tally) {
        let one_write_only = term.is_some();
        loop {
            if !matches!(self.stage, Stage::Running | Stage::Ending) {
                return;
            }
            if self.pending_at == self.pending.len() {
                self.pending.clear();
                self.pending_at = 0;
                if self.stage == Stage::Ending {
                    self.ended(shared);
                    return;
                }
                if term.is_some() {
                    // No new work after SIGTERM: read to the end.
                    return;
                }
                // (An abort is done in `progress`, whatever is in flight.)
                if self.end != End::Abort && self.lifetime_end.is_some_and(|l| now >= l) {
                    self.lifetime_end = None;
                    self.begin_end(now, tally);
                    continue;
                }
                if self.next_op.is_none_or(|at| now < at)
                    || self.sent - self.echoed > MAX_OUTSTANDING
                {
                    return;
                }
                self.plan_op(now, tally);
                continue;
            }
            if !self.writable {
                return;
            }
            let left = self.pending.len() - self.pending_at;
            let n = if self.fragment_left > 0 {
                if now < self.next_piece {
                    return;
                }
                self.rng.size(1, 3).min(left)
            } else {
                left
            };
            let at = self.pending_at;
            let Some(stream) = self.stream.as_mut() else {
                return;
            };
            let result = stream.write(&self.pending[at..at + n]);
            match result {
                Ok(k) => {
                    let written = &self.pending[at..at + k];
                    if let Some(nl) = written.iter().rposition(|&b| b == b'\n') {
                        self.sent_complete = self.sent + nl as u64 + 1;
                    }
                    self.sent += k as u64;
                    self.pending_at += k;
                    self.last_write = Some(now);
                    tally.sent += k as u64;
                    shared.sent.fetch_add(k as u64, Ordering::Relaxed);
                    if self.fragment_left > 0 {
                        self.fragment_left -= 1;
                        tally.fragment_writes += 1;
                        // Apart in time, so they leave as separate segments.
                        self.next_piece =
                            now + self.rng.millis(0, 2).max(Duration::from_micros(200));
                        return;
                    }
                    if one_write_only {
                        return;
                    }
                }
                Err(ref e) if net::would_block(e) => {
                    self.writable = false;
                    return;
                }
                Err(ref e) if net::interrupted(e) => {}
                Err(e) => {
                    // Keep reading: whether a FIN came first decides (in
                    // `judge`) whether this is a violation.
                    self.outcome.write_error = Some((e, shared.term.get().is_some()));
                    self.stage = Stage::AwaitEof;
                    return;
                }
            }
        }
    }

    /// Appends lines to `pending` until it holds `bytes`, or the script
    /// reaches its over-long line (which then ends the client).
    fn generate(&mut self, bytes: usize, tally: &mut Tally) {
        debug_assert!(self.pending.is_empty());
        while self.pending.len() < bytes {
            let before = self.pending.len();
            match self.tx.next(&mut self.pending) {
                Piece::Line => tally.lines += 1,
                Piece::OverLong => {
                    self.overlong_at = Some(self.generated + before as u64);
                    tally.overlongs += 1;
                    self.stage = Stage::Ending;
                    break;
                }
                Piece::End => break,
            }
        }
        self.generated += self.pending.len() as u64;
    }

    fn plan_op(&mut self, now: Instant, tally: &mut Tally) {
        if matches!(self.kind, Kind::Idler | Kind::Burst) {
            // Idlers and burst connections: one line or none, then nothing.
            let hello = self.kind == Kind::Burst || self.rng.percent(70);
            if hello {
                self.generate(1, tally);
            }
            if self.kind == Kind::Idler {
                if hello {
                    tally.idle_hello += 1;
                } else {
                    tally.idle_silent += 1;
                }
            }
            self.next_op = None;
            return;
        }
        match self.rng.below(100) {
            // Pipelined: many lines in one write.
            0..40 => {
                tally.pipelined_ops += 1;
                let bytes = self.rng.size(1, 8 * 1024);
                self.generate(bytes, tally);
            }
            // 1-byte fragmentation: the first writes are 1 to 3 bytes each.
            40..55 => {
                tally.fragmented_ops += 1;
                let bytes = self.rng.size(1, 600);
                self.generate(bytes, tally);
                self.fragment_left = self.rng.between(8, 64) as u32;
                self.next_piece = now;
            }
            // A huge coalesced burst, written as fast as the socket takes it
            // (slow readers skip these: see `Client::new`).
            55..63 if self.slow.is_none() => {
                tally.burst_ops += 1;
                let bytes = self.rng.size(32 * 1024, 1024 * 1024);
                self.generate(bytes, tally);
                tally.burst_bytes += self.pending.len() as u64;
            }
            // Stop reading for a while (and keep writing).
            63..68 => {
                tally.stalls += 1;
                let until = now + self.rng.millis(100, 3_000);
                self.stall_until = Some(until);
                self.last_stall = Some((now, until));
                self.lost.push((now, until));
            }
            // Think time.
            _ => {
                tally.pauses += 1;
                self.next_op = Some(now + self.rng.millis(1, 100));
            }
        }
    }

    /// The client's lifetime is over: start its end.
    fn begin_end(&mut self, now: Instant, tally: &mut Tally) {
        match self.end {
            End::Close => {
                self.stage = Stage::AwaitEcho {
                    until: now + ECHO_PATIENCE,
                }
            }
            End::HalfClose => {
                tally.half_closes += 1;
                if self.rng.percent(40) {
                    // A partial last line: never echoed, not even at EOF.
                    let mut line = Vec::new();
                    self.tx.next(&mut line);
                    let keep = self.rng.size(1, line.len() - 1);
                    self.pending.extend_from_slice(&line[..keep]);
                    tally.partial_last_lines += 1;
                }
                self.stage = Stage::Ending;
            }
            // Aborts happen in `progress`; over-long ends come from the script.
            End::Abort | End::OverLong | End::Never => {}
        }
        self.generated += self.pending.len() as u64;
    }

    /// The last bytes of a half-close or an over-long line are written.
    fn ended(&mut self, shared: &Shared) {
        if let Some(at) = self.overlong_at {
            self.overlong_written = Some((Instant::now(), at.saturating_sub(self.echoed)));
        }
        if self.end == End::HalfClose && self.overlong_at.is_none() {
            match self.stream().shutdown(Shutdown::Write) {
                Ok(()) => self.half_closed = true,
                Err(e) => self.outcome.write_error = Some((e, shared.term.get().is_some())),
            }
        }
        self.stage = Stage::AwaitEof;
    }

    fn next_wake(&self, now: Instant, term: Option<Instant>) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        if let Some(t) = self.stall_until {
            at(t);
        }
        if let Some(pace) = &self.slow {
            at(pace.next);
        }
        if let Some(t) = self.lifetime_end {
            at(t);
        }
        if let Stage::AwaitEcho { until } = self.stage {
            at(until);
        }
        let writing = matches!(self.stage, Stage::Running | Stage::Ending);
        if writing && self.pending_at < self.pending.len() {
            if self.fragment_left > 0 {
                at(self.next_piece);
            }
            if term.is_some() && self.writable {
                // One write per turn after SIGTERM: come back soon.
                at(now + Duration::from_millis(1));
            }
        } else if writing
            && term.is_none()
            && let Some(t) = self.next_op
        {
            at(t);
        }
        if let (Some(t), Some(s)) = (term, self.stall_until) {
            at(s.min(t + STALL_CAP_AFTER_TERM));
        }
        if let (Some(t), true) = (term, self.slow.is_some()) {
            at(t + SLOW_CAP_AFTER_TERM);
        }
        wake
    }

    /// How much of `from..to` the soak kept this client from reading: its
    /// loop's late turns and its read stalls, overlaps counted once.
    ///
    /// Through the relay, the relay's own late turns count too: it runs
    /// in the soak's process, and what it does not move the client cannot
    /// read.
    fn lost_between(&self, watch: &Watch, from: Instant, to: Instant) -> Duration {
        if self.via_relay {
            let mut spans = watch.relay_lag(from, to);
            spans.extend_from_slice(&self.lost);
            time_within(&spans, from, to)
        } else {
            time_within(&self.lost, from, to)
        }
    }

    /// What the client saw of its own side: its pace, what it read in
    /// the last 10 s, the time the soak took from it.
    fn own_side(&self, watch: &Watch, at: Instant) -> String {
        let from = at.checked_sub(SERVER_CLOSE_TIMEOUT).unwrap_or(at);
        let read: u64 = self
            .reads
            .iter()
            .filter(|&&(t, _)| t >= from)
            .map(|&(_, n)| n)
            .sum();
        let longest = self
            .lost
            .iter()
            .filter(|&&(a, b)| b >= from && a <= at)
            .map(|&(a, b)| b - a)
            .max()
            .unwrap_or_default();
        format!(
            "{}; read {read} B in its last 10 s, of which the soak's loop and read stalls took {:.1} s (longest {:.1} s)",
            self.pace.map_or_else(
                || "reads all there is".to_string(),
                |p| format!(
                    "paced at {} B every {:?} ({:.1} KB/s)",
                    p.chunk,
                    p.every,
                    p.rate() / 1e3
                )
            ),
            self.lost_between(watch, from, at).as_secs_f64(),
            longest.as_secs_f64(),
        )
    }

    /// Where this client's bytes were when it was judged: the queues of
    /// every socket on its path (`ss`'s Recv-Q and Send-Q, with the
    /// sender's window), and, through the relay, what the relay held.
    fn path_state(&self, plan: &Plan, watch: &Watch) -> String {
        let Some(local) = self.local else {
            return "not connected".to_string();
        };
        let leg = self.via_relay.then(|| watch.leg_of(local)).flatten();
        let ports: Vec<u16> = [Some(local), leg]
            .into_iter()
            .flatten()
            .map(|a| a.port())
            .collect();
        let mut out = Vec::new();
        match throttle::sockets(&ports) {
            Ok(all) => {
                let name = |a: SocketAddr| {
                    if a == local {
                        "client".to_string()
                    } else if Some(a) == leg {
                        "relay leg".to_string()
                    } else if a == plan.server {
                        "server".to_string()
                    } else if a == plan.relay {
                        "relay".to_string()
                    } else {
                        a.to_string()
                    }
                };
                for s in all.iter().filter(|s| {
                    Some(s.local) == Some(local)
                        || Some(s.peer) == Some(local)
                        || Some(s.local) == leg
                        || Some(s.peer) == leg
                }) {
                    let wnd = s.info.map_or_else(String::new, |i| {
                        format!(
                            ", snd_wnd {} mss {} notsent {}",
                            i.snd_wnd, i.snd_mss, i.notsent
                        )
                    });
                    out.push(format!(
                        "{}->{}: Recv-Q {} Send-Q {}{wnd}{}",
                        name(s.local),
                        name(s.peer),
                        s.recv_q,
                        s.send_q,
                        if s.persist { ", persist timer" } else { "" }
                    ));
                }
                if out.is_empty() {
                    out.push("no socket left on its path".to_string());
                }
            }
            Err(e) => out.push(format!("sock_diag: {e}")),
        }
        if self.via_relay {
            out.push(
                watch
                    .ask_relay(local, Duration::from_millis(500))
                    .unwrap_or_else(|| "relay: no answer".to_string()),
            );
        }
        out.join("; ")
    }

    fn finish(&mut self) {
        self.stage = Stage::Done;
        self.done_at = Some(Instant::now());
    }

    /// Counts this client in the "at SIGTERM" figures if it was busy then.
    fn count_at_term(&self, term: Option<Instant>, tally: &mut Tally) {
        let Some(t) = term else { return };
        let busy_then =
            self.connected_at.is_some_and(|c| c < t) && self.done_at.is_some_and(|d| d > t);
        if !busy_then {
            return;
        }
        tally.active_at_term += 1;
        if self
            .last_write
            .is_some_and(|w| w + Duration::from_secs(1) > t)
        {
            tally.writing_at_term += 1;
        }
        if self
            .last_stall
            .is_some_and(|(from, until)| from <= t && t < until)
        {
            tally.stalled_at_term += 1;
        }
    }

    /// Whether SIGTERM's listener close may have met this connection before
    /// the server ever served it: clients in the accept backlog are reset
    /// and connects are refused, by design. Only if it got no echo at all,
    /// and connected (if at all) less than a second before SIGTERM.
    fn maybe_unserved(&self, term: Option<Instant>) -> bool {
        let Some(t) = term else { return false };
        self.echoed == 0
            && self
                .connected_at
                .is_none_or(|c| c + Duration::from_secs(1) > t)
    }

    /// Whether the connection that sends this client its echoes (the
    /// server's, or the relay's and then the relay's own connection to the
    /// server) was seen throttled by the kernel while this client was
    /// connected: see `throttle.rs`.
    fn throttled(&self, plan: &Plan, watch: &Watch) -> Option<Spell> {
        let (local, from) = (self.local?, self.connected_at?);
        let to = self.done_at.unwrap_or_else(Instant::now);
        let mut conns = Vec::new();
        if self.via_relay {
            conns.push((plan.relay, local));
            if let Some(leg) = watch.leg_of(local) {
                conns.push((plan.server, leg));
            }
        } else {
            conns.push((plan.server, local));
        }
        watch.throttled(&conns, from, to)
    }

    /// The rules every client's end is held to. `term` is when SIGTERM was sent.
    ///
    /// One thing excuses an end that came late or not at all, and only
    /// that: the kernel throttled the connection (`throttle.rs`). Then
    /// the bytes the server owed were in the kernel, held back by a window
    /// smaller than the sender's MSS, and the drain deadline is allowed to
    /// cut them off. Wrong bytes, a FIN too early or inside a line, or an
    /// RST before SIGTERM are never excused.
    fn judge(&self, term: Option<Instant>, plan: &Plan, watch: &Watch, tally: &mut Tally) {
        let o = &self.outcome;
        let who = format!(
            "client {} ({:?}, end {:?}{}{}, sent {}, echoed {})",
            self.id,
            self.kind,
            self.end,
            if self.via_relay { ", via relay" } else { "" },
            if self.slow.is_some() { ", slow" } else { "" },
            self.sent,
            self.echoed,
        );
        // 1. The echo is the exact byte stream sent, cut after a whole line:
        //    checked byte by byte as it arrived.
        if let Some(e) = &o.bad_echo {
            tally.violate("wrong echo", format!("{who}: {e}"));
            return;
        }
        if let Some((e, after_term)) = &o.connect_error {
            // Before SIGTERM the server must accept everyone (the cap is
            // far above the soak's count); after it, refusal is the design.
            if *after_term {
                tally.refused_at_drain += 1;
            } else {
                tally.violate("connect failed", format!("{who}: {e}"));
            }
            return;
        }
        if o.aborted {
            return;
        }
        let throttled = || self.throttled(plan, watch);
        if o.hung
            && let Some(spell) = throttled()
        {
            tally.throttled("no end", &who, &spell);
            return;
        }
        if o.hung {
            tally.violate(
                "no end after drain",
                format!("{who}: neither FIN nor RST by the end of the drain"),
            );
            return;
        }
        if o.echo_timeout
            && let Some(spell) = throttled()
        {
            tally.throttled("echo late", &who, &spell);
            return;
        }
        if o.echo_timeout {
            let at = self.done_at.unwrap_or_else(Instant::now);
            tally.violate(
                "echo missing",
                format!(
                    "{who}: its last echoes did not come within {ECHO_PATIENCE:?} (plus the {:.1} s the soak took from it); {}; {}",
                    self.lost_between(watch, at - ECHO_PATIENCE * 2, at).as_secs_f64(),
                    self.own_side(watch, at),
                    self.path_state(plan, watch)
                ),
            );
            return;
        }
        if o.closed {
            // 2. It closed after reading every echo of every line it sent.
            tally.self_closed += 1;
            tally.exact_echoes += 1;
            return;
        }
        // 3. No RST for a well-behaved client: the server ends every
        //    connection it serves with its echoes and a FIN. A failed write
        //    counts too: writes after SIGTERM follow a read that found no
        //    FIN (see `progress`), and before SIGTERM the server closes no
        //    well-behaved connection, so a failed write means an RST
        //    without a FIN. (Through the relay, one case of RST-after-its-
        //    own-failed-write reaches the client as a FIN: see relay.rs. A
        //    cut-off still fails the run by the server's exit status.)
        let error = o.read_error.as_ref().or(o.write_error.as_ref());
        if let Some((e, after_term)) = error {
            if *after_term && self.maybe_unserved(term) {
                tally.reset_unserved_at_drain += 1;
            } else if *after_term
                && e.kind() == ErrorKind::ConnectionReset
                && let Some(spell) = throttled()
            {
                // Cut off at the deadline with output still owed: the RST
                // that the server's exit status 3 reports, checked there.
                tally.throttled("reset", &who, &spell);
            } else if e.kind() == ErrorKind::ConnectionReset {
                self.judge_reset(&who, e, plan, watch, tally);
            } else {
                tally.violate("socket error", format!("{who}: {e}"));
            }
            return;
        }
        let Some(after_term) = o.eof else {
            tally.violate("no end", format!("{who}: ended without EOF or error"));
            return;
        };
        // 4. The FIN comes after a whole line, never inside one.
        if !self.rx.at_line_end() {
            tally.violate(
                "FIN inside a line",
                format!("{who}: EOF after a partial echoed line"),
            );
            return;
        }
        if !after_term {
            // 5. Before SIGTERM the server closes a connection only after
            //    the client's own FIN or an over-long line, and then only
            //    after echoing every line before it, exactly.
            let owed = if let Some(at) = self.overlong_at {
                at
            } else if self.half_closed {
                self.sent_complete
            } else {
                tally.violate(
                    "FIN before SIGTERM",
                    format!("{who}: the server closed a connection it had no reason to close"),
                );
                return;
            };
            if self.echoed != owed {
                tally.violate(
                    "echo missing",
                    format!(
                        "{who}: closed with {} bytes echoed of {owed} owed",
                        self.echoed
                    ),
                );
                return;
            }
            tally.exact_echoes += 1;
        }
        tally.clean_fins += 1;
    }
}

impl Client {
    /// An RST where a FIN was owed. One is the soak's own doing: the
    /// server cut the client off at its close deadline (its log says so)
    /// after its over-long line, and the client, at its own pace, could
    /// not have read what it was owed in the time the soak left it (10 s
    /// less what its loop's and the relay's late turns and its read stalls
    /// took), with [`SERVED_MARGIN`] to spare. Any other RST is a
    /// violation, named with the server's line and the client's side.
    fn judge_reset(&self, who: &str, e: &io::Error, plan: &Plan, watch: &Watch, tally: &mut Tally) {
        let at = self.done_at.unwrap_or_else(Instant::now);
        let mut peers = vec![];
        if let Some(local) = self.local {
            peers.push(local);
            if let Some(leg) = self.via_relay.then(|| watch.leg_of(local)).flatten() {
                peers.push(leg);
            }
        }
        let server_says = plan.cut_offs.find(&peers, Duration::from_millis(500));
        let evidence = format!(
            "{}; {}",
            server_says.as_deref().map_or_else(
                || "the server's log names no close-deadline cut-off of it".to_string(),
                |l| format!("the server: {l}")
            ),
            self.own_side(watch, at)
        );
        if let (Some(_), Some((written, owed))) = (&server_says, self.overlong_written) {
            let from = at
                .checked_sub(SERVER_CLOSE_TIMEOUT)
                .unwrap_or(at)
                .max(written);
            let served = (at - from).saturating_sub(self.lost_between(watch, from, at));
            let rate = self.pace.map_or(FAST_READER_RATE, |p| p.rate());
            let needed = Duration::from_secs_f64(owed as f64 / rate);
            if served < needed + SERVED_MARGIN {
                tally.lagged_resets += 1;
                if tally.lagged_examples.len() < 6 {
                    tally.lagged_examples.push(format!(
                        "{who}: owed {owed} B when its over-long line was written, which takes {:.1} s at its pace; the soak left it {:.1} s of the server's {SERVER_CLOSE_TIMEOUT:?}; {evidence}",
                        needed.as_secs_f64(),
                        served.as_secs_f64()
                    ));
                }
                return;
            }
        }
        tally.violate("RST instead of FIN", format!("{who}: {e}; {evidence}"));
    }
}

/// How much of `from..to` the `spans` cover, overlaps counted once.
fn time_within(spans: &[(Instant, Instant)], from: Instant, to: Instant) -> Duration {
    let mut spans: Vec<(Instant, Instant)> = spans
        .iter()
        .map(|&(a, b)| (a.max(from), b.min(to)))
        .filter(|(a, b)| a < b)
        .collect();
    spans.sort();
    let (mut total, mut reach) = (Duration::ZERO, from);
    for (a, b) in spans {
        let a = a.max(reach);
        if b > a {
            total += b - a;
            reach = b;
        }
    }
    total
}

/// Runs every client until SIGTERM (`shared.term`) and the end of the
/// drain; returns the tally. Stops by itself: no new client after SIGTERM,
/// and each one left is judged hung after `plan.patience_after_term`.
pub fn run(plan: &Plan, shared: &Arc<Shared>, watch: &Watch) -> io::Result<Tally> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(4096);
    let mut tally = Tally::default();
    let mut clients: Vec<Option<Client>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut rng = Rng::new(derive(plan.seed, u64::MAX - 1));
    let mut next_id: u64 = 0;
    let start = Instant::now();
    // Slots refill a little after their client ends; at the start they
    // are staggered over 2 s, so the start is not itself one huge burst.
    let mut worker_refills: Vec<Instant> = (0..plan.workers)
        .map(|i| start + Duration::from_millis(2000 * i as u64 / plan.workers.max(1) as u64))
        .collect();
    let mut idler_refills: Vec<Instant> = (0..plan.idlers)
        .map(|_| start + rng.millis(0, 2000))
        .collect();
    let mut next_burst = start + rng.millis(1000, 4000);
    let mut burst_open: u64 = 0;
    let mut first_workers = plan.workers;
    let pools = Pools::new(plan.seed, plan.max_frame);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut lag = Duration::ZERO;
    loop {
        let now = Instant::now();
        let turn_start = now;
        let term = shared.term.get().copied();
        // New clients, until SIGTERM.
        let mut spawn = |kind: Kind, clients: &mut Vec<Option<Client>>, tally: &mut Tally| {
            let id = next_id;
            next_id += 1;
            let first_cohort = kind == Kind::Worker && first_workers > 0;
            if first_cohort {
                first_workers -= 1;
            }
            let mut c = Client::new(id, kind, first_cohort, plan, &pools, now, term, tally);
            let slot = free.pop().unwrap_or_else(|| {
                clients.push(None);
                clients.len() - 1
            });
            if let Some(s) = c.stream.as_mut() {
                let both = Interest::READABLE | Interest::WRITABLE;
                if let Err(e) = poll.registry().register(s, Token(slot), both) {
                    c.outcome.connect_error = Some((e, term.is_some()));
                    c.finish();
                }
            }
            clients[slot] = Some(c);
            shared.started.fetch_add(1, Ordering::Relaxed);
        };
        if term.is_none() {
            for kind in [Kind::Worker, Kind::Idler] {
                let refills = if kind == Kind::Worker {
                    &mut worker_refills
                } else {
                    &mut idler_refills
                };
                let due: Vec<Instant> = refills.iter().copied().filter(|&t| t <= now).collect();
                refills.retain(|&t| t > now);
                for _ in due {
                    spawn(kind, &mut clients, &mut tally);
                }
            }
            if now >= next_burst && burst_open == 0 {
                // Back to back in one turn: a SYN flood from one host.
                let n = rng.between(50, 200);
                tally.bursts += 1;
                for _ in 0..n {
                    spawn(Kind::Burst, &mut clients, &mut tally);
                }
                burst_open = n;
                next_burst = now + rng.millis(2000, 6000);
            }
        }

        let mut wake: Option<Instant> = None;
        let mut open = 0;
        for (slot, entry) in clients.iter_mut().enumerate() {
            let Some(c) = entry else { continue };
            if c.stage != Stage::Done
                && let Some(t) = c.progress(now, lag, shared, watch, &mut scratch, &mut tally)
            {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
            if term.is_some_and(|t| now > t + plan.patience_after_term) && c.stage != Stage::Done {
                c.outcome.hung = true;
                c.finish();
            }
            if c.stage == Stage::Done {
                let before = tally.violation_count();
                let term = shared.term.get().copied();
                c.count_at_term(term, &mut tally);
                c.judge(term, plan, watch, &mut tally);
                shared
                    .violations
                    .fetch_add(tally.violation_count() - before, Ordering::Relaxed);
                match c.kind {
                    Kind::Worker => worker_refills.push(now + rng.millis(0, 200)),
                    Kind::Idler => idler_refills.push(now + rng.millis(0, 1000)),
                    Kind::Burst => burst_open -= 1,
                }
                // Dropping the stream closes it (FIN: no unread input is
                // left by a client that read to its end).
                *entry = None;
                free.push(slot);
            } else {
                open += 1;
            }
        }
        shared.open.store(open, Ordering::Relaxed);
        if term.is_some() && open == 0 {
            return Ok(tally);
        }
        // At most 10 ms: new clients and SIGTERM are noticed promptly.
        let now = Instant::now();
        lag = now - turn_start;
        tally.longest_turn = tally.longest_turn.max(lag);
        let timeout = wake.map_or(Duration::from_millis(10), |w| {
            w.saturating_duration_since(now)
                .min(Duration::from_millis(10))
        });
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if net::interrupted(&e) {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            // A stale event for a reused slot only makes a client try a
            // syscall that says WouldBlock.
            if let Some(Some(c)) = clients.get_mut(event.token().0) {
                c.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
                c.writable |= event.is_writable() || event.is_write_closed() || event.is_error();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A slow reader whose loop turns come late still reads at its pace:
    /// with 100 ms turns, a reader of 512 B every 10 ms takes 5120 B a
    /// turn. It used to take one chunk a turn, 512 B: a tenth of its pace,
    /// and under a loaded machine's longer turns less still, so that it
    /// missed the server's close deadline (and its own echo patience).
    #[test]
    fn a_late_slow_reader_keeps_its_pace() {
        let t0 = Instant::now();
        let mut pace = Pace::new(512, 10 * MS, t0);
        let mut read = 0;
        for turn in 1..=50u32 {
            let now = t0 + 100 * MS * turn;
            let n = pace.allowance(now);
            read += n;
            pace.read(now, n, false);
        }
        // 5 s at 51.2 KB/s, give or take a chunk.
        assert!(
            (read as i64 - 256_000).abs() <= 512 * 11,
            "read {read} B in 5 s"
        );
        assert!((pace.rate() - 51_200.0).abs() < 1.0);
        // Not due yet: nothing; a turn 10 ms later: one chunk.
        let now = t0 + 5000 * MS;
        assert_eq!(pace.allowance(now), 0);
        assert_eq!(pace.allowance(now + 10 * MS), 512);
    }

    /// Nothing waiting: no credit saved up, so a reader that was ahead
    /// does not swallow what comes next at once; and a stall of the
    /// loop is made up for one second at most.
    #[test]
    fn a_slow_reader_saves_no_credit_and_catches_up_a_second_at_most() {
        let t0 = Instant::now();
        let mut pace = Pace::new(1000, 10 * MS, t0);
        pace.read(t0, 0, true);
        assert_eq!(pace.allowance(t0 + 10 * MS), 1000);
        let later = t0 + 4000 * MS;
        assert_eq!(pace.allowance(later), 101 * 1000);
        pace.read(later, 101 * 1000, false);
        assert_eq!(pace.allowance(later), 0);
        assert_eq!(pace.allowance(later + 10 * MS), 1000);
    }

    #[test]
    fn lost_time_counts_overlaps_once_and_only_inside_the_window() {
        let t0 = Instant::now();
        let at = |ms: u32| t0 + MS * ms;
        // A 3 s read stall, a 4 s loop turn inside and past it, a 200 ms one.
        let spans = [
            (at(1000), at(4000)),
            (at(3000), at(7000)),
            (at(9000), at(9200)),
        ];
        assert_eq!(time_within(&spans, at(0), at(10_000)), 6200 * MS);
        assert_eq!(time_within(&spans, at(5000), at(10_000)), 2200 * MS);
        assert_eq!(time_within(&spans, at(7000), at(9000)), Duration::ZERO);
    }
}
