//! The only `unsafe` in the crate: three Linux calls that std does not wrap,
//! and two things std marks `unsafe` that socket activation needs.
//!
//! - `SIOCOUTQ`: how many bytes of a TCP socket's output the peer has not yet
//!   acknowledged. After `shutdown(Write)`, 0 means the peer holds every byte
//!   and our FIN, so closing cannot lose anything.
//! - `RLIMIT_NOFILE`: how many file descriptors (so connections) we may hold.
//! - Taking ownership of a descriptor we inherited by number (fd 3, from
//!   `LISTEN_FDS`), and clearing environment variables (`LISTEN_PID`, ...),
//!   which is only sound while no other thread can read the environment.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes written to `socket` that the peer has not acknowledged yet (the FIN
/// counts as one).
pub fn unacked_bytes(socket: &impl AsRawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // libc names the request TIOCOUTQ; SIOCOUTQ is the same number.
    // SAFETY: SIOCOUTQ reads the socket's send-queue length into the c_int we
    // pass; `n` is a live, writable c_int for the duration of the call, and a
    // bad fd only makes the call fail with EBADF.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// The soft and hard limits on open file descriptors.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct into `lim`, which is live and
    // writable for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Sets the soft limit on open file descriptors (at most the hard limit).
pub fn set_nofile_soft_limit(soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit only reads the rlimit struct we pass by reference.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The first descriptor of the `sd_listen_fds` convention: systemd passes
/// sockets as 3, 4, ... (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Whether `take_listen_fd` has handed out fd 3 already.
static LISTEN_FD_TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes ownership of fd 3, the socket a launcher passed us under
/// `LISTEN_FDS`: from now on, dropping the result closes it. Fails if fd 3
/// is not open, or if it was taken before.
pub fn take_listen_fd() -> io::Result<OwnedFd> {
    if LISTEN_FD_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::other("fd 3 was taken over already"));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; a closed fd makes
    // it fail with EBADF, which is how we find out.
    if unsafe { libc::fcntl(LISTEN_FDS_START, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd 3 is open (checked just above). Under the LISTEN_FDS
    // convention, which the caller has checked (LISTEN_PID is our pid), it
    // was opened for this process to own. Nothing else in the process owns
    // it: std and this crate never claim a descriptor by its number (an fd
    // they open gets the lowest free number, and 3 is not free while it is
    // open), and the flag above makes this the only `OwnedFd` ever made for
    // it, so it is closed exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) })
}

/// Removes `names` from the environment if this process has one thread
/// only; returns whether it did.
///
/// `std::env::remove_var` is `unsafe` since Rust 2024 because another thread
/// could be reading the environment (libc's `getenv` takes no lock) while it
/// changes. With one thread there is no other reader; and no thread can
/// start meanwhile, since only this thread could start one. The count comes
/// from `/proc/self/task`, one entry per thread; if it cannot be read, the
/// variables are left alone.
pub fn remove_env_if_single_threaded(names: &[&str]) -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    if tasks.count() != 1 {
        return false;
    }
    for name in names {
        // SAFETY: this process has exactly one thread (counted just above),
        // the one running this loop, so nothing reads the environment
        // concurrently; see the doc comment.
        unsafe { std::env::remove_var(name) };
    }
    true
}
