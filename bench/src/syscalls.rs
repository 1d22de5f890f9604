//! The one syscall counter: `perf stat` on the syscall tracepoints where
//! perf may read them, else `strace -c -f`, attached to the server while a
//! scenario runs, its output read back as the total and four kinds.
//!
//! `make bench` and `make bench-compare` once each had a copy of the two
//! parsers, and the copies had drifted. What is kept is the stricter one:
//! perf's total is the `raw_syscalls:sys_enter` count, and without it there
//! is no figure (the per-syscall tracepoints alone would undercount);
//! strace's total is the sum of its rows, not its own `total` row (older
//! straces leave a column out of it), and a table with no rows is no
//! figure, not zero.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;

/// How the server's syscalls are counted on this machine.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Counter {
    Perf,
    Strace,
}

/// The figures, in this order: the total, then its kinds (reads, writes,
/// waits, `epoll_ctl`).
pub const NAMES: [&str; 5] = ["syscalls", "reads", "writes", "epoll_wait", "epoll_ctl"];

/// The kinds the total is broken into, and the syscalls of each.
const KINDS: [&[&str]; 4] = [
    &["read", "recvfrom", "readv", "recvmsg"],
    &["write", "sendto", "writev", "sendmsg"],
    &["epoll_wait", "epoll_pwait", "epoll_pwait2"],
    &["epoll_ctl"],
];

const PERF_EVENTS: &str = "raw_syscalls:sys_enter,syscalls:sys_enter_read,\
syscalls:sys_enter_recvfrom,syscalls:sys_enter_write,syscalls:sys_enter_sendto,\
syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait,\
syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_epoll_ctl";

/// Syscalls by [`NAMES`]: counts, or counts per message.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Syscalls(pub [f64; 5]);

impl Syscalls {
    /// From the total and the counts by syscall name.
    fn of(total: u64, by_name: &[(&str, u64)]) -> Syscalls {
        let mut s = [total as f64, 0.0, 0.0, 0.0, 0.0];
        for (kind, names) in KINDS.iter().enumerate() {
            s[kind + 1] = by_name
                .iter()
                .filter(|(n, _)| names.contains(n))
                .map(|(_, c)| *c as f64)
                .sum();
        }
        Syscalls(s)
    }

    pub fn per(self, msgs: f64) -> Syscalls {
        Syscalls(self.0.map(|v| v / msgs))
    }

    pub fn total(&self) -> f64 {
        self.0[0]
    }

    pub fn epoll_ctl(&self) -> f64 {
        self.0[4]
    }
}

/// perf where it may read the syscall tracepoints, else strace, else none.
pub fn pick() -> Option<Counter> {
    let works = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(Command::new("perf").args(["stat", "-e", PERF_EVENTS, "true"])) {
        Some(Counter::Perf)
    } else if works(Command::new("strace").args(["-c", "-o", "/dev/null", "true"])) {
        Some(Counter::Strace)
    } else {
        None
    }
}

/// How the report names the counter.
pub fn how(counter: Counter) -> &'static str {
    match counter {
        Counter::Perf => "perf stat on the syscall tracepoints",
        Counter::Strace => "strace -c -f",
    }
}

/// perf or strace attached to the server while a scenario runs.
pub struct Counting {
    child: Child,
    counter: Counter,
}

impl Counting {
    /// Attaches to `pid`, and gives it a moment to attach before the load starts.
    pub fn start(counter: Counter, pid: u32) -> Option<Counting> {
        let pid = pid.to_string();
        let mut cmd = match counter {
            Counter::Perf => Command::new("perf"),
            Counter::Strace => Command::new("strace"),
        };
        match counter {
            Counter::Perf => cmd.args(["stat", "-x,", "-e", PERF_EVENTS, "-p", &pid]),
            Counter::Strace => cmd.args(["-c", "-f", "-p", &pid]),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        std::thread::sleep(Duration::from_millis(300));
        Some(Counting { child, counter })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops counting; the counts, if it could tell.
    pub fn finish(self) -> Option<Syscalls> {
        crate::host::signal(self.child.id(), Signal::INT);
        let out = self.child.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        match self.counter {
            Counter::Perf => parse_perf(&text),
            Counter::Strace => parse_strace(&text),
        }
    }
}

/// `perf stat -x,` lines: `count,unit,event,...`.
pub fn parse_perf(out: &str) -> Option<Syscalls> {
    let mut total = None;
    let mut by_name = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(Ok(count)), Some(event)) = (f.first().map(|c| c.parse::<u64>()), f.get(2)) else {
            continue;
        };
        if *event == "raw_syscalls:sys_enter" {
            total = Some(count);
        } else if let Some(name) = event.strip_prefix("syscalls:sys_enter_") {
            by_name.push((name, count));
        }
    }
    Some(Syscalls::of(total?, &by_name))
}

/// `strace -c` table rows: `% time  seconds  usecs/call  calls  [errors]  syscall`.
pub fn parse_strace(out: &str) -> Option<Syscalls> {
    let rows: Vec<(&str, u64)> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.last()?;
            (f.len() >= 5 && f[0].parse::<f64>().is_ok() && name != "total")
                .then(|| Some((name, f[3].parse().ok()?)))
                .flatten()
        })
        .collect();
    let total = rows.iter().map(|r| r.1).sum();
    (!rows.is_empty()).then(|| Syscalls::of(total, &rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_total_and_kinds() {
        let perf = "735522,,raw_syscalls:sys_enter,3003,100.00,,\n\
                    348742,,syscalls:sys_enter_recvfrom,3003,100.00,,\n\
                    10,,syscalls:sys_enter_read,3003,100.00,,\n\
                    348000,,syscalls:sys_enter_sendto,3003,100.00,,\n\
                    20,,syscalls:sys_enter_epoll_wait,3003,100.00,,\n\
                    30,,syscalls:sys_enter_epoll_pwait,3003,100.00,,\n\
                    12,,syscalls:sys_enter_epoll_ctl,3003,100.00,,\n";
        let s = parse_perf(perf).unwrap();
        assert_eq!(s.0, [735522.0, 348752.0, 348000.0, 50.0, 12.0]);
        assert_eq!(s.per(2.0).epoll_ctl(), 6.0);
    }

    #[test]
    fn perf_without_its_total_is_no_figure() {
        // The per-syscall tracepoints alone would undercount.
        let perf = "<not counted>,,raw_syscalls:sys_enter,0,100.00,,\n\
                    348742,,syscalls:sys_enter_recvfrom,3003,100.00,,\n";
        assert_eq!(parse_perf(perf), None);
        assert_eq!(parse_perf("garbage"), None);
    }

    #[test]
    fn strace_sums_its_rows_not_its_total_row() {
        // The total row (its usecs/call column left out, as older straces
        // do) says 1; the rows say 600008.
        let strace = "% time     seconds  usecs/call     calls    errors syscall\n\
------ ----------- ----------- --------- --------- ----------------\n \
60.00    0.600000           2    300000           sendto\n \
40.00    0.400000           1    300001        12 recvfrom\n  \
0.01    0.000100           1         7           epoll_ctl\n\
100.00    1.000000                     1        12 total\n";
        let s = parse_strace(strace).unwrap();
        assert_eq!(s.0, [600008.0, 300001.0, 300000.0, 0.0, 7.0]);
        assert_eq!(
            parse_strace("strace: attach: ptrace(PTRACE_SEIZE, 1): No such process"),
            None
        );
    }
}
