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
//! - Taking ownership of a descriptor we inherited by number (fd 3 and up,
//!   from `LISTEN_FDS`; the one after them, the readiness channel of a live
//!   upgrade), and
//!   clearing environment variables (`LISTEN_PID`, ...), which is only sound
//!   while no other thread can read the environment.
//! - `--accept reuseport` (`listener.rs`): a classic BPF program attached
//!   to a `SO_REUSEPORT` group (`SO_ATTACH_REUSEPORT_CBPF`), which picks the
//!   listener of the CPU that took the SYN; and `--pin-cpus`:
//!   `sched_getaffinity` and `sched_setaffinity` for one thread.
//! - The live upgrade's child (`upgrade.rs`): `posix_spawn` with the
//!   listener and the readiness channel placed at fds 3 and 4, and
//!   `kill`/`waitpid` for a child that is not a `std::process::Child`.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
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

/// Attaches to `listener`'s `SO_REUSEPORT` group (the program is the
/// group's, whichever member it is set on) a classic BPF program that
/// returns the number of the CPU handling the incoming SYN, modulo
/// `members`: so a connection goes to listener `cpu % members`, in the
/// order the listeners joined the group. The kernel falls back to its hash
/// when the index is out of range (a member closed).
pub fn steer_reuseport_by_cpu(listener: &impl AsRawFd, members: u32) -> io::Result<()> {
    if members == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no members"));
    }
    let op = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut program = [
        // A = the CPU this packet is processed on (an ancillary load).
        op(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
        ),
        // A = A % members
        op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, members),
        // return A: the index of the listener in the group
        op(libc::BPF_RET | libc::BPF_A, 0),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: setsockopt reads `size_of::<sock_fprog>()` bytes from `fprog`,
    // which is live for the call; the kernel copies the `len` instructions
    // `filter` points to (`program`, live and that long) before returning,
    // and keeps no pointer into our memory. A bad fd only makes it fail.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs the calling thread may run on, in increasing order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array, for which all-zero is valid.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most `size_of::<cpu_set_t>()`
    // bytes into `set`, which is live, writable and that large; pid 0 is
    // the calling thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET only reads the set, and `cpu` is below its size.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Pins the calling thread to `cpu`.
pub fn pin_this_thread(cpu: usize) -> io::Result<()> {
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no such CPU"));
    }
    // SAFETY: all-zero is a valid, empty cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit of `set`, which we own; `cpu` is
    // below the set's size (checked above).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: sched_setaffinity reads `size_of::<cpu_set_t>()` bytes from
    // `set`, live for the call; pid 0 is the calling thread only.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
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

/// Whether `take_listen_fds` has handed out the passed sockets already.
static LISTEN_FDS_TAKEN: AtomicBool = AtomicBool::new(false);

/// Whether `take_ready_fd` has handed out the readiness channel already.
static READY_FD_TAKEN: AtomicBool = AtomicBool::new(false);

/// The most sockets taken under `LISTEN_FDS`: one per worker of
/// `--accept reuseport`, and `--workers` is capped well below this.
pub const LISTEN_FDS_MAX: usize = 4096;

/// Takes ownership of fds 3 to `3 + count - 1`, the sockets a launcher
/// passed us under `LISTEN_FDS=count`: from now on, dropping each closes
/// it. Fails if one of them is not open, or if they were taken before.
pub fn take_listen_fds(count: usize) -> io::Result<Vec<OwnedFd>> {
    if count > LISTEN_FDS_MAX {
        return Err(io::Error::other(format!(
            "{count} descriptors is more than the {LISTEN_FDS_MAX} taken"
        )));
    }
    if LISTEN_FDS_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::other(
            "the passed sockets were taken over already",
        ));
    }
    (0..count as RawFd)
        .map(|i| take_fd(LISTEN_FDS_START + i))
        .collect()
}

/// Takes ownership of `fd`, the readiness channel that the process that
/// started us for a live upgrade passed (`REACTOR_ECHO_UPGRADE`), right
/// after the sockets. As [`take_listen_fds`].
pub fn take_ready_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if READY_FD_TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::other(format!("fd {fd} was taken over already")));
    }
    take_fd(fd)
}

fn take_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags; a closed fd makes
    // it fail with EBADF, which is how we find out.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (checked just above). Under the convention the
    // caller has checked (LISTEN_PID is our pid, or REACTOR_ECHO_UPGRADE
    // names our parent), it was opened for this process to own. Nothing
    // else in the process owns it: std and this crate never claim a
    // descriptor by its number (an fd they open gets the lowest free
    // number, and this one is not free while it is open), and the callers'
    // flags make this the only `OwnedFd` ever made for it (the sockets'
    // range and the channel's number do not overlap: the channel comes
    // after the last socket), so it is closed exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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

/// Starts `program` with `argv` (`argv[0]` included) and exactly the
/// environment `env`, with `fds[i]` at descriptor `3 + i` in the child and
/// inheritable there; returns the child's pid. Every other descriptor of
/// ours is close-on-exec (std, mio and socket2 open them so), so the child
/// gets those and its standard input, output and error, nothing else.
///
/// Why `posix_spawn` rather than `std::process::Command` with a `pre_exec`
/// that calls `dup2`: `Command` reports a failed `exec` through a pipe of
/// its own, made just before `fork` at the lowest free numbers, which may be
/// 3 or 4; a `dup2` onto 3 or 4 in `pre_exec` could then close that pipe
/// in the child. `posix_spawn` does the `dup2`s itself (its file actions),
/// reports a failed `exec` as its return value (glibc's child shares the
/// parent's memory until `exec`; musl moves its own pipe out of the way),
/// and runs no code of ours between `fork` and `exec`, which in a process
/// with worker threads is the only safe kind.
pub fn spawn_with_fds(
    program: &Path,
    argv: &[OsString],
    env: &[(OsString, OsString)],
    fds: &[BorrowedFd<'_>],
) -> io::Result<u32> {
    let path = c_string(program.as_os_str())?;
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| c_string(a))
        .collect::<io::Result<_>>()?;
    let env: Vec<CString> = env
        .iter()
        .map(|(k, v)| {
            let mut kv = k.clone();
            kv.push("=");
            kv.push(v);
            c_string(&kv)
        })
        .collect::<io::Result<_>>()?;
    let mut argv_ptrs: Vec<*mut libc::c_char> =
        argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut env_ptrs: Vec<*mut libc::c_char> = env.iter().map(|e| e.as_ptr().cast_mut()).collect();
    env_ptrs.push(std::ptr::null_mut());

    // First, copies of the sources above every target number: a `dup2` onto
    // 3 must not close a source that happens to be 3 or 4 before it is
    // copied, and `dup2(fd, fd)` would leave close-on-exec set. The copies
    // are close-on-exec themselves, so the child does not keep them.
    let first_free = LISTEN_FDS_START + fds.len() as RawFd;
    let mut copies = Vec::with_capacity(fds.len());
    for fd in fds {
        // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor for an open one
        // (`fd` is borrowed, so open) and touches no memory of ours.
        let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, first_free) };
        if copy == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `copy` was just made by fcntl and is owned by no one else.
        copies.push(unsafe { OwnedFd::from_raw_fd(copy) });
    }

    // SAFETY: zeroed storage for the two opaque structs, which the _init
    // calls below initialise before any other use.
    let mut actions: libc::posix_spawn_file_actions_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut attr: libc::posix_spawnattr_t = unsafe { std::mem::zeroed() };
    // Both are used through these pointers only, from here on.
    let actions_ptr: *mut libc::posix_spawn_file_actions_t = &mut actions;
    let attr_ptr: *mut libc::posix_spawnattr_t = &mut attr;
    // SAFETY: _init writes the struct we own; on success it must be
    // destroyed once, which the guard below does.
    check(unsafe { libc::posix_spawn_file_actions_init(actions_ptr) })?;
    let _actions = Destroy(move || {
        // SAFETY: initialised above, destroyed exactly once, here; `actions`
        // outlives the guard (declared before it).
        unsafe { libc::posix_spawn_file_actions_destroy(actions_ptr) };
    });
    // SAFETY: as for the file actions.
    check(unsafe { libc::posix_spawnattr_init(attr_ptr) })?;
    let _attr = Destroy(move || {
        // SAFETY: as for the file actions.
        unsafe { libc::posix_spawnattr_destroy(attr_ptr) };
    });
    for (i, copy) in copies.iter().enumerate() {
        // SAFETY: `actions_ptr` points at initialised file actions that
        // outlive the call; the descriptors are plain numbers to record.
        check(unsafe {
            libc::posix_spawn_file_actions_adddup2(
                actions_ptr,
                copy.as_raw_fd(),
                LISTEN_FDS_START + i as RawFd,
            )
        })?;
    }
    // The child starts with no signal blocked (the thread that spawns may
    // block some: a worker's mask is not ours to pass on) and with SIGPIPE
    // back at its default, which Rust's runtime set to "ignore" here (std's
    // `Command` does the same).
    // SAFETY: zeroed sigset_t storage, initialised by sigemptyset.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut default: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the sig*set calls write only the sets we own; the spawnattr
    // calls write only the initialised attributes and read the sets.
    unsafe {
        libc::sigemptyset(&mut empty);
        libc::sigemptyset(&mut default);
        libc::sigaddset(&mut default, libc::SIGPIPE);
        check(libc::posix_spawnattr_setsigmask(attr_ptr, &empty))?;
        check(libc::posix_spawnattr_setsigdefault(attr_ptr, &default))?;
        check(libc::posix_spawnattr_setflags(
            attr_ptr,
            (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
        ))?;
    }
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is valid for the call: `path` and the strings
    // behind `argv_ptrs` and `env_ptrs` live until the end of this function,
    // both arrays end with a null pointer, and the file actions and
    // attributes are initialised. posix_spawn writes only `pid`.
    check(unsafe {
        libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            actions_ptr,
            attr_ptr,
            argv_ptrs.as_ptr(),
            env_ptrs.as_ptr(),
        )
    })?;
    // `copies` are closed here: the child has its own at 3, 4, ...
    Ok(pid as u32)
}

/// Runs a closure when dropped: the cleanup of a C struct on every path.
struct Destroy<F: FnMut()>(F);

impl<F: FnMut()> Drop for Destroy<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// posix_spawn and its helpers return the error number instead of setting
/// errno.
fn check(rc: libc::c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} holds a NUL byte"),
        )
    })
}

/// Sends `signal` to the process `pid`.
pub fn signal_process(pid: u32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reaps our child `pid` if it has exited: its status, or `None` if it is
/// still running.
pub fn try_wait(pid: u32) -> io::Result<Option<ExitStatus>> {
    wait_pid(pid, libc::WNOHANG)
}

/// Waits for our child `pid` to exit, and reaps it.
pub fn wait(pid: u32) -> io::Result<ExitStatus> {
    loop {
        match wait_pid(pid, 0) {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn wait_pid(pid: u32, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes one c_int into `status`, which is live and
    // writable for the call.
    let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
    match rc {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        _ => Ok(Some(ExitStatus::from_raw(status))),
    }
}
