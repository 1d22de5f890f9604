//! The only `unsafe` in the crate: Linux calls that std does not wrap, and
//! two things std marks `unsafe` that socket activation needs.
//!
//! - `SIOCOUTQ`: how many bytes of a TCP socket's output the peer has not yet
//!   acknowledged. After `shutdown(Write)`, 0 means the peer holds every byte
//!   and our FIN, so closing cannot lose anything.
//! - `RLIMIT_NOFILE`: how many file descriptors (so connections) we may hold.
//! - `pthread_sigmask`: keeps signals away from a worker thread of `--workers`.
//! - `TCP_INFO`: the send window and MSS of a connection, for the log line
//!   of a connection the drain cuts off.
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

/// Blocks `signals` in the calling thread (and in threads it starts from
/// now on), so that the kernel delivers them to another thread.
pub fn block_signals(signals: &[libc::c_int]) -> io::Result<()> {
    // SAFETY: an all-zero sigset_t is a valid value to hand to sigemptyset,
    // which initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigemptyset and sigaddset only write the set we own; sigaddset
    // fails with EINVAL for a bad signal number, which we report.
    unsafe {
        libc::sigemptyset(&mut set);
        for &signal in signals {
            if libc::sigaddset(&mut set, signal) == -1 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    // SAFETY: pthread_sigmask reads the set we pass and changes only this
    // thread's mask; the old mask is not asked for (null is allowed).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        // pthread_sigmask returns the error rather than setting errno.
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// What `TCP_INFO` says about the sending side of a TCP socket.
#[derive(Clone, Copy, Debug)]
pub struct SendState {
    /// The peer's receive window, as last advertised (`tcpi_snd_wnd`), in
    /// bytes; `None` on kernels older than 5.4, which do not report it.
    pub window: Option<u32>,
    /// The largest segment we send (`tcpi_snd_mss`), in bytes.
    pub mss: u32,
    /// Segments sent and not yet acknowledged (`tcpi_unacked`).
    pub unacked_segments: u32,
}

/// `TCP_INFO` for `socket`: see [`SendState`].
pub fn send_state(socket: &impl AsRawFd) -> io::Result<SendState> {
    // SAFETY: tcp_info is plain integers, for which all-zero is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is
    // live, writable and that large, and stores in `len` how many it wrote;
    // a bad fd only makes the call fail.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    // An older kernel fills a shorter struct; what it did not write is
    // still zero, which for the window would read as "closed".
    let window_end = std::mem::offset_of!(libc::tcp_info, tcpi_snd_wnd) + 4;
    Ok(SendState {
        window: (len as usize >= window_end).then_some(info.tcpi_snd_wnd),
        mss: info.tcpi_snd_mss,
        unacked_segments: info.tcpi_unacked,
    })
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
