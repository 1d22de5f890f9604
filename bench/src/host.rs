//! What the tool reads about the machine and its processes (the machine
//! line, the time, CPU time, RSS, other work), and the small helpers every
//! part shares: where the built binaries are, a free port, `key=value`
//! lines and the thousands separator.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;

use rustix::process::{Pid, Signal, kill_process};

/// "CPU model, N CPUs, Linux version": the machine a table came from.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
        .max(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cpus} CPUs, Linux {}", kernel.trim())
}

/// The date and time now, in UTC, to the minute.
pub fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// User + system CPU time of every thread of `pid`, live or exited, in s.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_seconds(
        &std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default(),
        11,
        13,
    )
}

/// The `stat` fields after the command name, from index `from` to `to`,
/// summed and turned into seconds.
pub fn stat_seconds(stat: &str, from: usize, to: usize) -> f64 {
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 = fields
        .get(from..to)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    // USER_HZ is 100 on every Linux ABI this runs on.
    ticks as f64 / 100.0
}

/// The resident set of `pid`, in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// CPU time, in s, of every process on the machine but this one and
/// `ours` (the server, the syscall counter), by pid: `utime + stime +
/// cutime + cstime`, so that the work of children that came and went (a
/// build's compilers) is counted in their parent. Kernel threads are left
/// out: on loopback much of their work (`ksoftirqd`) is the benchmark's own
/// TCP.
pub fn others_cpu(ours: &[u32]) -> HashMap<u32, f64> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let me = std::process::id();
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if pid == me || ours.contains(&pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let flags: u64 = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(6)?.parse().ok())
            .unwrap_or(0);
        if flags & PF_KTHREAD == 0 {
            out.insert(pid, stat_seconds(&stat, 11, 15));
        }
    }
    out
}

/// The CPU time other processes used between two `others_cpu` snapshots.
pub fn others_delta(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, t)| (t - before.get(pid).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

/// Sends `sig` to `pid`, if it is still there.
pub fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = kill_process(pid, sig);
    }
}

/// Where the built binaries are: beside this one.
pub fn sibling(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("own path");
    me.parent().expect("a directory").join(name)
}

/// A free port on loopback, for the next server.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
}

/// A `loadgen` line, `msgs_per_s=1500 p99_us=12.5 ...`, as numbers by key.
pub fn parse_kv(line: &str) -> BTreeMap<String, f64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// `x` rounded, with a comma every three digits: 1,234,567.
pub fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::from(if x <= -0.5 { "-" } else { "" });
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadgen_line() {
        let kv = parse_kv("msgs_per_s=1500 p99_us=12.5 errors=0 total_msgs=6000 junk");
        assert_eq!(kv["msgs_per_s"], 1500.0);
        assert_eq!(kv["p99_us"], 12.5);
        assert_eq!(kv.len(), 4);
    }

    #[test]
    fn numbers() {
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1234.0), "-1,234");
        assert_eq!(thousands(0.2), "0");
        // pid (comm with spaces) state ppid ... utime stime cutime cstime
        let stat = "42 (a b) S 1 1 1 0 -1 0 0 0 0 0 150 50 7 3 20";
        assert_eq!(stat_seconds(stat, 11, 13), 2.0);
        assert_eq!(stat_seconds(stat, 11, 15), 2.1);
    }
}
