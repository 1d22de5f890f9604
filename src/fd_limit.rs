//! Making room for `--max-connections` under the open-file limit.
//!
//! Every connection is a file descriptor. A server that may hold N
//! connections needs N plus a few of its own (epoll, listener, signal pipe,
//! the spare kept for running out, stdio). Many systems start processes
//! with a soft limit of 1024 and a much higher hard limit; like nginx's
//! `worker_rlimit_nofile`, we raise the soft limit as far as needed.

use log::{debug, warn};

use crate::sys;

/// Descriptors the server uses besides its connections, with some slack.
const OWN_FDS: u64 = 16;

/// Raises the soft limit so `max_connections` fit, as far as the hard limit
/// allows, and warns when they cannot fit. Returns the limit in force.
pub fn fit_fd_limit(max_connections: usize) -> Option<u64> {
    let (soft, hard) = match sys::nofile_limit() {
        Ok(limits) => limits,
        Err(e) => {
            warn!("cannot read the open-file limit: {e}");
            return None;
        }
    };
    let want = max_connections as u64 + OWN_FDS;
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
            limit.saturating_sub(OWN_FDS)
        );
    }
    Some(limit)
}
