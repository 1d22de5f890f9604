//! What the benchmark drivers read about the machine and its processes:
//! the line naming the machine, the time of a run, and a process's CPU time.
//! Shared by `bench.rs` and `compare.rs` (included with `#[path]`).

use std::process::Command;

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

/// The `stat` fields after the command name, from index `from`, summed
/// and turned into seconds.
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
