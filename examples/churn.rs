//! A churn client: connect, echo one line, close, in a loop, at a fixed
//! rate or as fast as the server answers; then the server's CPU per
//! connection from `/proc/PID/stat`, and its context switches per
//! connection from `/proc/PID/task/*/status`.
//!
//! ```text
//! taskset -c 1 target/release/reactor-echo --listen 127.0.0.1:9000 --workers 2 &
//! taskset -c 0 target/release/examples/churn 127.0.0.1:9000 $! 10 12000
//! ```
//!
//! Arguments: address, server pid, seconds, connections per second (0: as
//! fast as it goes), and optionally the number of client threads (1). One
//! line of results, `key=value` pairs, for scripts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/PID/stat` (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: churn ADDR SERVER_PID SECONDS RATE [THREADS]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("address");
    let pid: u32 = args[2].parse().expect("pid");
    let secs: f64 = args[3].parse().expect("seconds");
    let rate: f64 = args[4].parse().expect("rate");
    let threads: usize = args.get(5).map_or(1, |t| t.parse().expect("threads"));

    let cpu_before = cpu_ticks(pid);
    let switches_before = context_switches(pid);
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let per_thread = rate / threads as f64;
    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || churn(addr, until, per_thread)))
        .collect();
    let (mut done, mut failed) = (0u64, 0u64);
    for h in handles {
        let (d, f) = h.join().expect("client thread");
        done += d;
        failed += f;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid) - cpu_before) as f64 / TICKS;
    let (vol, invol) = context_switches(pid);
    let switches = (vol - switches_before.0) + (invol - switches_before.1);
    println!(
        "conns={done} failed={failed} secs={elapsed:.2} conns_per_s={:.0} server_cpu_s={cpu:.2} \
         cpu_us_per_conn={:.2} ctxsw_per_conn={:.3}",
        done as f64 / elapsed,
        cpu * 1e6 / done.max(1) as f64,
        switches as f64 / done.max(1) as f64
    );
}

/// One client: connect, send a line, read its echo, close; paced at
/// `rate` per second (0: unpaced). Returns (done, failed).
fn churn(addr: SocketAddr, until: Instant, rate: f64) -> (u64, u64) {
    let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
    let start = Instant::now();
    let (mut done, mut failed) = (0u64, 0u64);
    let mut buf = [0u8; 64];
    loop {
        let now = Instant::now();
        if now >= until {
            return (done, failed);
        }
        if let Some(interval) = interval {
            let due = start + interval.mul_f64((done + failed) as f64);
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let ok = (|| -> std::io::Result<()> {
            let mut s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            s.write_all(b"hello\n")?;
            let mut got = 0;
            while got < 6 {
                let n = s.read(&mut buf[got..])?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                got += n;
            }
            Ok(())
        })();
        match ok {
            Ok(()) => done += 1,
            Err(_) => failed += 1,
        }
    }
}

/// utime + stime of the whole process, in ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("server pid");
    // After the command name in parentheses: fields 3.. ; utime and stime
    // are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Voluntary and involuntary context switches, summed over every thread.
fn context_switches(pid: u32) -> (u64, u64) {
    let (mut vol, mut invol) = (0, 0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                vol += v.trim().parse::<u64>().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("nonvoluntary_ctxt_switches:") {
                invol += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    (vol, invol)
}
