//! Making room for `--max-connections` under the open-file limit.
//!
//! Every connection is a file descriptor. A server that may hold N
//! connections needs N plus a few of its own (epoll, listener, signal pipe,
//! the spare kept for running out, stdio), and with `--workers` two more per
//! worker (its epoll and its waker). Many systems start processes
//! with a soft limit of 1024 and a much higher hard limit; like nginx's
//! `worker_rlimit_nofile`, we raise the soft limit as far as needed.

use log::{debug, warn};

use crate::sys;

/// Descriptors the lone loop uses besides its connections, with slack for
/// ones inherited from whoever started us. It uses 8: stdin, stdout and
/// stderr, the listener, its epoll, the signal socketpair (2) and the spare.
const OWN_FDS: u64 = 16;
/// With `--workers`, the coordinator has one more: the eventfd on which the
/// workers wake it.
const COORDINATOR_FDS: u64 = 1;
/// And each worker has its own epoll and the eventfd of its waker.
///
/// Measured (`/proc/PID/fd`, idle, `tests/limits.rs`), 2 of them inherited
/// from the test runner: 10 for the lone loop, 43 with 16 workers, 139 with
/// 64; that is 8, then 9 + 2 per worker.
const FDS_PER_WORKER: u64 = 2;

/// Descriptors the server uses besides its connections, for `workers`
/// event loops (1: the lone loop).
fn own_fds(workers: usize) -> u64 {
    if workers <= 1 {
        OWN_FDS
    } else {
        OWN_FDS + COORDINATOR_FDS + FDS_PER_WORKER * workers as u64
    }
}

/// Raises the soft limit so `max_connections` fit beside the descriptors of
/// `workers` event loops (1: the lone loop), as far as the hard limit
/// allows, and warns when they cannot fit. Returns the limit in force.
pub fn fit_fd_limit(max_connections: usize, workers: usize) -> Option<u64> {
    let own = own_fds(workers);
    let (soft, hard) = match sys::nofile_limit() {
        Ok(limits) => limits,
        Err(e) => {
            warn!("cannot read the open-file limit: {e}");
            return None;
        }
    };
    let want = max_connections as u64 + own;
    let mut limit = soft;
    if soft < want {
        let target = want.min(hard);
        match sys::set_nofile_soft_limit(target, hard) {
            Ok(()) => {
                debug!("raised the open-file limit from {soft} to {target}");
                limit = target;
            }
            Err(e) => warn!("cannot raise the open-file limit from {soft} to {target}: {e}"),
        }
    }
    if limit < want {
        warn!(
            "--max-connections {max_connections} does not fit in the open-file limit of {limit} \
             (hard limit {hard}); at most about {} connections can be served",
            limit.saturating_sub(own)
        );
    }
    Some(limit)
}
