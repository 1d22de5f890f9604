//! CPU lists: `taskset`-style lists ("1,0", "8-15"), the CPUs this process
//! may run on, and the default split of them between the server and the
//! load generators.
//!
//! Order matters in a server list: with N server cores the server gets the
//! first N CPUs of it, so "1,0" gives one core CPU 1 and two cores CPUs 1
//! and 0.

/// Parses "1,0" or "0-3,8": the CPUs in the order written, ranges upwards.
pub fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("`{s}` is not a CPU list (like 1,0 or 0-3,8)");
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let n = part.parse().map_err(|_| bad())?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(bad());
        }
        for cpu in lo..=hi {
            if cpus.contains(&cpu) {
                return Err(format!("CPU {cpu} is named twice in `{s}`"));
            }
            cpus.push(cpu);
        }
    }
    if cpus.is_empty() {
        return Err(format!("`{s}` names no CPU"));
    }
    Ok(cpus)
}

/// The list as `taskset -c` takes it, in its own order: "1,0".
pub fn format_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses "1 2 4" or "1,2,4": server core counts, each at least 1.
pub fn parse_counts(s: &str) -> Result<Vec<usize>, String> {
    let counts: Vec<usize> = s
        .split([' ', ','])
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().ok().filter(|&n| n > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("`{s}` is not a list of core counts (like \"1 2 4\")"))?;
    if counts.is_empty() {
        return Err("no core counts given".into());
    }
    Ok(counts)
}

/// The CPUs this process may run on (its affinity mask, as `taskset`
/// narrowed it), lowest first.
pub fn allowed() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let listed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|l| parse_list(l.trim()).ok());
    let mut cpus = listed.unwrap_or_else(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n).collect()
    });
    cpus.sort_unstable();
    cpus
}

/// Default server core counts: powers of two up to half the CPUs (the
/// other half drives the load), and at least 1 and 2 where there are two
/// CPUs at all, as the issue asks of a 2-core machine.
pub fn default_counts(allowed: usize) -> Vec<usize> {
    let top = (allowed / 2).max(2).min(allowed.max(1));
    let mut counts = vec![1];
    while counts.last().is_some_and(|&n| n * 2 <= top) {
        counts.push(counts.last().unwrap() * 2);
    }
    counts
}

/// Default split: the server takes the highest `max_n` CPUs, highest first
/// (so one core is the last CPU, as `make bench` pins it), and the load
/// generators the rest. Where that leaves the load generators nothing
/// (2 CPUs, 2 server cores), they get the lowest CPU, which the server's
/// largest sets then share: the report says so.
pub fn default_split(allowed: &[usize], max_n: usize) -> (Vec<usize>, Vec<usize>) {
    let take = max_n.min(allowed.len());
    let server: Vec<usize> = allowed.iter().rev().take(take).copied().collect();
    let mut client: Vec<usize> = allowed
        .iter()
        .filter(|c| !server.contains(c))
        .copied()
        .collect();
    if client.is_empty() {
        client = allowed.iter().take(1).copied().collect();
    }
    (server, client)
}

/// The CPUs of `server` that the load generators also run on.
pub fn shared(server: &[usize], client: &[usize]) -> Vec<usize> {
    server
        .iter()
        .filter(|c| client.contains(c))
        .copied()
        .collect()
}

/// Whether `taskset` can be run: without it nothing can be pinned, and a
/// run whose server and load generators fight over the same CPUs measures
/// the scheduler.
pub fn have_taskset() -> bool {
    std::process::Command::new("taskset")
        .args(["-c", "0", "true"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_keep_their_order() {
        assert_eq!(parse_list("1,0").unwrap(), vec![1, 0]);
        assert_eq!(parse_list("0-3,8").unwrap(), vec![0, 1, 2, 3, 8]);
        assert_eq!(format_list(&[1, 0]), "1,0");
        assert!(parse_list("3-1").is_err());
        assert!(parse_list("1,1").is_err());
        assert!(parse_list("x").is_err());
        assert!(parse_list("").is_err());
    }

    #[test]
    fn counts() {
        assert_eq!(parse_counts("1 2").unwrap(), vec![1, 2]);
        assert_eq!(parse_counts("1,2,4").unwrap(), vec![1, 2, 4]);
        assert!(parse_counts("0").is_err());
        assert!(parse_counts(" ").is_err());
        assert_eq!(default_counts(1), vec![1]);
        assert_eq!(default_counts(2), vec![1, 2]);
        assert_eq!(default_counts(4), vec![1, 2]);
        assert_eq!(default_counts(16), vec![1, 2, 4, 8]);
    }

    #[test]
    fn split_on_two_and_sixteen_cpus() {
        let (server, client) = default_split(&[0, 1], 2);
        assert_eq!((server.clone(), client.clone()), (vec![1, 0], vec![0]));
        assert_eq!(shared(&server[..1], &client), Vec::<usize>::new());
        assert_eq!(shared(&server, &client), vec![0]);
        let all: Vec<usize> = (0..16).collect();
        let (server, client) = default_split(&all, 8);
        assert_eq!(server, vec![15, 14, 13, 12, 11, 10, 9, 8]);
        assert_eq!(client, (0..8).collect::<Vec<_>>());
    }
}
