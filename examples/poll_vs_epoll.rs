//! What "poll works on every registered socket, epoll on the ready ones"
//! costs (docs/tutorial/why-epoll.md): N idle loopback connections and one
//! active one; the active one gets a byte, and the wait call that reports it
//! is timed. The same sockets, the same byte, under `poll` and `epoll_wait`.
//!
//! ```text
//! cargo run --release --example poll_vs_epoll                        # 10 and 10000 idle
//! cargo run --release --example poll_vs_epoll -- --idle 10,100,1000,10000 --active first
//! ```
//!
//! Each round makes `--calls` waits with each mechanism (poll and epoll
//! rounds alternate, so that noise from other work on the machine falls on
//! both) and keeps the median time of one call; the table gives the median
//! of the rounds, and their range. Every call returns exactly one ready
//! socket, so the time of a call is the time per event. The idle
//! connections' client ends live in a child process (this program, run with
//! `--hold`), so that each process needs only N + a few fds; the soft
//! RLIMIT_NOFILE is raised to what is needed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, epoll, poll};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().skip_while(|a| *a != name).nth(1).cloned();
    if let Some(port) = arg("--hold") {
        return hold(&port, arg("--n").unwrap_or_default().parse()?);
    }
    let idle: Vec<usize> = arg("--idle")
        .unwrap_or("10,10000".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let calls: usize = arg("--calls").map_or(Ok(500), |s| s.parse())?;
    let rounds: usize = arg("--rounds").map_or(Ok(7), |s| s.parse())?;
    // Where the active socket sits in poll's array: last (the default), the
    // kernel has queued a wait entry on every idle socket before it finds
    // the ready one; first, it stops queueing at once and only asks each.
    let first = arg("--active").is_some_and(|a| a == "first");
    raise_nofile(idle.iter().max().copied().unwrap_or(0) as u64 + 64)?;

    let cpus = std::thread::available_parallelism()?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    println!(
        "{cpus} CPUs, Linux {}; active socket {} in poll's array; {calls} calls per round, {rounds} rounds; µs per event: median of the rounds (min–max)",
        kernel.trim(),
        if first { "first" } else { "last" }
    );
    println!("| idle connections | poll | epoll | poll / epoll |");
    println!("|---:|---:|---:|---:|");
    let listener = TcpListener::bind("127.0.0.1:0")?;
    for &n in &idle {
        // The idle connections: the child connects, this process accepts.
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--hold", &listener.local_addr()?.port().to_string()])
            .args(["--n", &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let idle_socks: Vec<TcpStream> = (0..n)
            .map(|_| listener.accept().map(|(s, _)| s))
            .collect::<Result<_, _>>()?;
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut ready)?;
        let mut client = TcpStream::connect(listener.local_addr()?)?;
        let (active, _) = listener.accept()?;
        client.set_nodelay(true)?;

        // poll: the array of every socket is handed to the kernel each call.
        let mut fds: Vec<PollFd> = idle_socks
            .iter()
            .chain([&active])
            .map(|s| PollFd::new(s, PollFlags::IN))
            .collect();
        if first {
            fds.rotate_right(1);
        }
        // epoll: registered once; the kernel keeps the list (level-triggered).
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        for (i, s) in idle_socks.iter().chain([&active]).enumerate() {
            epoll::add(
                &ep,
                s,
                epoll::EventData::new_u64(i as u64),
                epoll::EventFlags::IN,
            )?;
        }
        let mut events = Vec::with_capacity(64);

        let (mut by_poll, mut by_epoll) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            by_poll.push(round(calls, &mut client, &active, || {
                let got = poll(&mut fds, None).expect("poll");
                assert_eq!(got, 1, "one ready socket");
            }));
            by_epoll.push(round(calls, &mut client, &active, || {
                events.clear();
                let got = epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None);
                assert_eq!(got.expect("epoll_wait"), 1, "one ready socket");
            }));
        }
        let (p, e) = (median(&mut by_poll), median(&mut by_epoll));
        println!(
            "| {n} | {} | {} | {:.0}× |",
            summary(p, &by_poll),
            summary(e, &by_epoll),
            p / e
        );
        drop(child.stdin.take()); // the child closes its ends and exits
        child.wait()?;
    }
    Ok(())
}

/// `calls` waits, each for one byte sent just before it on the active
/// connection; the median time of one wait, in µs.
fn round(calls: usize, client: &mut TcpStream, active: &TcpStream, mut wait: impl FnMut()) -> f64 {
    let mut times = Vec::with_capacity(calls);
    let mut byte = [0u8; 1];
    for _ in 0..calls {
        client.write_all(b"x").expect("send");
        let start = Instant::now();
        wait();
        times.push(start.elapsed());
        (&mut &*active)
            .read_exact(&mut byte)
            .expect("read the byte");
    }
    times.sort();
    times[calls / 2].as_secs_f64() * 1e6
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn summary(median: f64, sorted: &[f64]) -> String {
    let (lo, hi) = (sorted[0], sorted[sorted.len() - 1]);
    format!("{median:.2} ({lo:.2}–{hi:.2})")
}

/// The child: connects `n` times and holds the connections until its stdin
/// closes.
fn hold(port: &str, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    raise_nofile(n as u64 + 64)?;
    let conns: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", port.parse::<u16>()?)).map_err(Into::into))
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    println!("ready {}", conns.len());
    std::io::stdout().flush()?;
    std::io::stdin().read_to_end(&mut Vec::new())?;
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}

/// Raises the soft limit on open files to `need`, up to the hard limit.
fn raise_nofile(need: u64) -> Result<(), Box<dyn std::error::Error>> {
    let limit = getrlimit(Resource::Nofile);
    let (soft, hard) = (
        limit.current.unwrap_or(u64::MAX),
        limit.maximum.unwrap_or(u64::MAX),
    );
    if soft >= need {
        return Ok(());
    }
    if hard < need {
        return Err(
            format!("{need} open files needed, the hard limit is {hard}: ulimit -Hn").into(),
        );
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(need),
            maximum: limit.maximum,
        },
    )?;
    Ok(())
}
