//! Load generator for line-echo servers, used by `make bench`.
//!
//! ```text
//! loadgen ADDR --conns C --depth D --size BYTES --secs S [--warmup S]
//! loadgen ADDR --conns C --size BYTES --rate R --secs S [--warmup S] [--drain S]
//! loadgen ADDR --churn --conns C --size BYTES --secs S [--warmup S]
//! loadgen ADDR --idle N [--hold S]
//! ```
//!
//! The first form, the closed loop, keeps D lines in flight on each of C
//! connections: each echoed line is checked byte for byte against what was
//! sent, and answered with a new one. The second, the open loop, sends R
//! lines a second over the C connections on a fixed schedule whatever comes
//! back, and measures each from its intended send time
//! (`reactor_echo_bench::openloop`); it also prints its HdrHistogram's
//! buckets (`hist=`), for the driver to merge those of several processes.
//! The third connects, echoes one line and closes, C connections at a time
//! (`reactor_echo_bench::churn`). The last opens N connections, echoes one
//! line on each, and holds them open (for measuring memory per idle
//! connection).
//!
//! Prints one line of `key=value` figures on stdout, last, for the driver
//! to parse. A client, like the server it measures, on one mio event loop.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use reactor_echo_bench::lines::{push_line, read_available, take_lines, write_pending};
use reactor_echo_bench::{churn, openloop};

struct Args {
    addr: SocketAddr,
    conns: usize,
    depth: usize,
    size: usize,
    secs: f64,
    warmup: f64,
    idle: usize,
    hold: f64,
    /// Open loop: lines per second (0: the closed loop).
    rate: f64,
    drain: f64,
    churn: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().ok_or("usage: loadgen ADDR [--conns C --depth D --size B --secs S --warmup S | --rate R --drain S | --churn | --idle N --hold S]")?;
    let mut a = Args {
        addr: addr.parse().map_err(|e| format!("ADDR {addr}: {e}"))?,
        conns: 50,
        depth: 1,
        size: 64,
        secs: 4.0,
        warmup: 0.5,
        idle: 0,
        hold: 3.0,
        rate: 0.0,
        drain: 2.0,
        churn: false,
    };
    while let Some(flag) = args.next() {
        if flag == "--churn" {
            a.churn = true;
            continue;
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--conns" => a.conns = value.parse().map_err(|e| bad(&e))?,
            "--depth" => a.depth = value.parse().map_err(|e| bad(&e))?,
            "--size" => a.size = value.parse().map_err(|e| bad(&e))?,
            "--secs" => a.secs = value.parse().map_err(|e| bad(&e))?,
            "--warmup" => a.warmup = value.parse().map_err(|e| bad(&e))?,
            "--idle" => a.idle = value.parse().map_err(|e| bad(&e))?,
            "--hold" => a.hold = value.parse().map_err(|e| bad(&e))?,
            "--rate" => a.rate = value.parse().map_err(|e| bad(&e))?,
            "--drain" => a.drain = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.size < 16 {
        return Err("--size must be at least 16 bytes".into());
    }
    if a.rate < 0.0 || (a.rate > 0.0 && a.churn) {
        return Err("--rate must be positive, and is not for --churn".into());
    }
    Ok(a)
}

struct Conn {
    stream: TcpStream,
    output: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    next_send: u64,
    next_recv: u64,
    sent_at: VecDeque<Instant>,
}

impl Conn {
    fn send_line(&mut self, id: usize, size: usize, now: Instant) {
        push_line(&mut self.output, id, self.next_send, size);
        self.next_send += 1;
        self.sent_at.push_back(now);
    }

    /// Writes what is pending until done or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        write_pending(&mut self.stream, &mut self.output, &mut self.written)
    }
}

fn connect(addr: SocketAddr) -> io::Result<std::net::TcpStream> {
    let s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Lets this process hold as many sockets as the hard limit allows.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    lim.current = lim.maximum;
    let _ = setrlimit(Resource::Nofile, lim);
}

fn run_load(a: &Args) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(a.conns);
    let start = Instant::now();
    for id in 0..a.conns {
        let std_stream = connect(a.addr)?;
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry().register(
            &mut stream,
            Token(id),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut c = Conn {
            stream,
            output: Vec::new(),
            written: 0,
            input: Vec::new(),
            next_send: 0,
            next_recv: 0,
            sent_at: VecDeque::new(),
        };
        for _ in 0..a.depth {
            c.send_line(id, a.size, start);
        }
        c.flush()?;
        conns.push(c);
    }

    let measure_from = Instant::now() + Duration::from_secs_f64(a.warmup);
    let end = measure_from + Duration::from_secs_f64(a.secs);
    let mut latencies_ns: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut measured = 0u64;
    let mut total = 0u64;
    let mut errors = 0u64;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut expected = Vec::with_capacity(a.size);
    // Connections with new lines to send, written after each batch of events.
    let mut to_flush: Vec<usize> = Vec::with_capacity(a.conns);

    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        poll.poll(&mut events, Some(end - now))?;
        for event in events.iter() {
            let id = event.token().0;
            let c = &mut conns[id];
            if event.is_writable() {
                c.flush()?;
            }
            if !(event.is_readable() || event.is_read_closed()) {
                continue;
            }
            read_available(&mut c.stream, &mut buf, &mut c.input, &format!("conn {id}"))?;
            let now = Instant::now();
            let mut answered = 0;
            let Conn {
                input,
                next_recv,
                sent_at,
                ..
            } = &mut *c;
            take_lines(input, |line| {
                expected.clear();
                push_line(&mut expected, id, *next_recv, a.size);
                if line != expected.as_slice() {
                    errors += 1;
                    eprintln!("conn {id} line {}: echo differs", *next_recv);
                }
                answered += 1;
                *next_recv += 1;
                total += 1;
                let sent = sent_at.pop_front().unwrap_or(now);
                if now >= measure_from {
                    measured += 1;
                    latencies_ns.push((now - sent).as_nanos().min(u32::MAX as u128) as u32);
                }
            });
            // Answer each echo with a new line; all of a connection's new
            // lines go out in one write, after this batch of events (as a
            // client event loop writes before it polls again).
            for _ in 0..answered {
                c.send_line(id, a.size, now);
            }
            if answered > 0 {
                to_flush.push(id);
            }
        }
        for id in to_flush.drain(..) {
            conns[id].flush()?;
        }
    }

    latencies_ns.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies_ns.is_empty() {
            return 0.0;
        }
        let i = ((latencies_ns.len() - 1) as f64 * p).round() as usize;
        latencies_ns[i] as f64 / 1000.0
    };
    println!(
        "msgs_per_s={:.0} p50_us={:.1} p99_us={:.1} p999_us={:.1} errors={errors} total_msgs={total} conns={} depth={} size={}",
        measured as f64 / a.secs,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        a.conns,
        a.depth,
        a.size
    );
    Ok(())
}

fn run_open(a: &Args) -> io::Result<()> {
    let out = openloop::run(&openloop::Config {
        addr: a.addr,
        conns: a.conns,
        size: a.size,
        rate: a.rate,
        warmup: a.warmup,
        secs: a.secs,
        drain: a.drain,
    })?;
    println!("{}", openloop::encode(&out.tally.latency));
    println!("{}", out.tally.line(a.rate, a.secs, out.errors));
    Ok(())
}

fn run_churn(a: &Args) -> io::Result<()> {
    let tally = churn::run(&churn::Config {
        addr: a.addr,
        slots: a.conns,
        size: a.size,
        warmup: a.warmup,
        secs: a.secs,
    })?;
    println!("{}", tally.line(a.secs));
    Ok(())
}

fn run_idle(a: &Args) -> io::Result<()> {
    let mut held = Vec::with_capacity(a.idle);
    let mut ok = 0;
    for i in 0..a.idle {
        let mut s = connect(a.addr)?;
        let msg = format!("idle {i}\n");
        let mut back = vec![0; msg.len()];
        s.write_all(msg.as_bytes())?;
        s.read_exact(&mut back)?;
        if back == msg.as_bytes() {
            ok += 1;
        }
        held.push(s);
    }
    println!("idle_ok={ok} idle_wanted={}", a.idle);
    io::stdout().flush()?;
    std::thread::sleep(Duration::from_secs_f64(a.hold));
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("loadgen: {msg}");
            return ExitCode::from(2);
        }
    };
    raise_fd_limit();
    let result = if args.idle > 0 {
        run_idle(&args)
    } else if args.churn {
        run_churn(&args)
    } else if args.rate > 0.0 {
        run_open(&args)
    } else {
        run_load(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
