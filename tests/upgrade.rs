//! The live upgrade (SIGUSR2, `src/upgrade.rs`, `docs/restart.md`), against
//! the real binary: the listener handed to a new process three times in a
//! row while clients connect, echo and close without a pause, with
//! `--pid-file` and `NOTIFY_SOCKET` followed; a new binary that fails in
//! every way leaves the old process serving, its child reaped and the pid
//! file its own; a stop signal during the wait gives the upgrade up.
//!
//! The new process is the old one's child; when the old one exits, the
//! kernel hands it to the nearest subreaper. This test process makes itself
//! one, so that it can reap each new process and read its exit status.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use common::*;
use rustix::process::{Pid, WaitOptions};

/// Orphaned descendants (each new process, once its parent exits) become
/// our children, so that we can reap them and read their exit status.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .expect("PR_SET_CHILD_SUBREAPER");
    });
}

/// Every server process a test started, directly or by an upgrade: killed
/// and reaped at the end if still there, so that a failing test leaves
/// nothing running.
#[derive(Default)]
struct Processes {
    seen: BTreeSet<u32>,
    reaped: BTreeSet<u32>,
}

impl Processes {
    fn saw(&mut self, pid: u32) {
        self.seen.insert(pid);
    }

    /// Waits for `pid` (our child, or an orphan handed to us) to exit and
    /// reaps it: its exit code, or the signal that ended it as `128 + N`.
    fn wait_exit(&mut self, pid: u32, timeout: Duration) -> i32 {
        let end = Instant::now() + timeout;
        let p = Pid::from_raw(pid as i32).unwrap();
        loop {
            // ECHILD while it is still the child of its parent.
            if let Ok(Some((_, status))) = rustix::process::waitpid(Some(p), WaitOptions::NOHANG) {
                self.reaped.insert(pid);
                return status
                    .exit_status()
                    .or(status.terminating_signal().map(|s| 128 + s))
                    .unwrap();
            }
            assert!(Instant::now() < end, "pid {pid} did not exit in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for &pid in self.seen.difference(&self.reaped) {
            let p = Pid::from_raw(pid as i32).unwrap();
            let _ = rustix::process::kill_process(p, Signal::KILL);
            let _ = rustix::process::waitpid(Some(p), WaitOptions::empty());
        }
    }
}

fn is_gone(pid: u32) -> bool {
    // A zombie still has a /proc entry: gone means reaped.
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn signal(pid: u32, sig: Signal) {
    rustix::process::kill_process(Pid::from_raw(pid as i32).unwrap(), sig).expect("kill");
}

/// A path under the temp folder unique to this test process and `tag`.
fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("reactor-echo-upgrade-{}-{tag}", std::process::id()))
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Waits until the pid file names a process other than `old`.
fn wait_for_new_pid(path: &Path, old: u32, server: &Server) -> u32 {
    let end = Instant::now() + PATIENCE;
    loop {
        if let Some(pid) = read_pid(path).filter(|&p| p != old) {
            return pid;
        }
        assert!(
            Instant::now() < end,
            "the pid file still names {old}; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Clients that connect, echo one line and close, without a pause, until
/// stopped; each failure is kept, as text.
struct Churn {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    done: Arc<Mutex<(u64, Vec<String>)>>,
}

impl Churn {
    fn start(addr: SocketAddr, clients: usize) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new((0, Vec::new())));
        let threads = (0..clients)
            .map(|i| {
                let (stop, done) = (stop.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut k = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let line = test_line(i, k, 24);
                        k += 1;
                        let result = echo_once(addr, &line);
                        let mut done = done.lock().unwrap();
                        match result {
                            Ok(()) => done.0 += 1,
                            Err(e) => done.1.push(format!("client {i}, round {k}: {e}")),
                        }
                    }
                })
            })
            .collect();
        Churn {
            stop,
            threads,
            done,
        }
    }

    /// Stops the clients: how many echoes they got, and their failures.
    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.done.lock().unwrap())
    }
}

/// Connect, send `line`, read its echo, close; the failure as text.
fn echo_once(addr: SocketAddr, line: &[u8]) -> Result<(), String> {
    let started = Instant::now();
    let mut c = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    if started.elapsed() > Duration::from_secs(1) {
        return Err(format!("connect took {:?}", started.elapsed()));
    }
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.write_all(line).map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0; line.len()];
    c.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    if got != line {
        return Err(format!("echo {got:?} for {line:?}"));
    }
    Ok(())
}

#[test]
fn three_upgrades_in_a_row_lose_no_connect_and_no_echo() {
    become_subreaper();
    // The three modes at once, each on a port, a pid file and a notify
    // socket of its own: most of a round is the old process's 1 s grace,
    // spent waiting.
    let modes: [&'static [&'static str]; 3] = [
        &[],
        &["--workers", "2"],
        // A reuseport group: both listeners go, in order.
        &["--workers", "2", "--accept", "reuseport"],
    ];
    let runs: Vec<_> = modes
        .into_iter()
        .map(|workers| std::thread::spawn(move || three_upgrades(workers)))
        .collect();
    for run in runs {
        // A failure has printed its message already (the panic hook).
        assert!(run.join().is_ok(), "a mode failed: see its panic above");
    }
}

/// `three_upgrades_in_a_row_lose_no_connect_and_no_echo` for one mode.
fn three_upgrades(workers: &[&str]) {
    let mut procs = Processes::default();
    let pid_file = scratch(&format!("three{}.pid", workers.len()));
    let notify_name = format!(
        "reactor-echo-upgrade-{}-{}",
        std::process::id(),
        workers.len()
    );
    let notify = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&notify_name).unwrap();
        UnixDatagram::bind_addr(&addr).unwrap()
    };
    notify.set_read_timeout(Some(PATIENCE)).unwrap();

    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--pid-file"])
        .arg(&pid_file)
        .args(workers)
        .env("NOTIFY_SOCKET", format!("@{notify_name}"));
    let mut server = Server::spawn(cmd);
    let addr = server.addr;
    let first = server.pid();
    procs.saw(first);
    assert!(next_notification(&notify).starts_with("READY=1\n"));
    let listeners = listeners_on(addr);
    assert_eq!(listeners, 1 + workers.len() / 4, "{workers:?}");

    let churn = Churn::start(addr, 2);
    let mut pid = first;
    for round in 0..3 {
        // Served by the process about to be replaced: one idle, one
        // whose line is on its way at the instant of the handover.
        let mut idle = connect(addr);
        roundtrip(&mut idle, b"idle\n", b"idle\n");
        let mut in_flight = connect(addr);
        roundtrip(&mut in_flight, b"warm\n", b"warm\n");

        signal(pid, Signal::USR2);
        in_flight.write_all(b"in flight\n").unwrap();
        let new = wait_for_new_pid(&pid_file, pid, &server);
        procs.saw(new);
        // A connect right at the handover, served by one or the other.
        let mut at_handover = connect(addr);
        roundtrip(&mut at_handover, b"at handover\n", b"at handover\n");

        assert_eq!(
            next_notification(&notify),
            format!("MAINPID={new}\nSTATUS=handed over to pid {new}; draining"),
            "{workers:?} round {round}: the supervisor is told, and nothing else"
        );
        // Every echo owed, then a FIN, from the old process's drain.
        assert_eq!(read_n(&mut in_flight, 10), b"in flight\n");
        assert_eq!(read_end(&mut in_flight), End::Eof, "{workers:?}");
        assert_eq!(read_end(&mut idle), End::Eof, "{workers:?}");
        let status = if pid == first {
            server.wait_exit(PATIENCE).expect("exits").code().unwrap()
        } else {
            procs.wait_exit(pid, PATIENCE)
        };
        assert_eq!(
            status,
            0,
            "{workers:?} round {round}; log:\n{}",
            server.log()
        );
        assert!(is_gone(pid), "pid {pid} reaped");
        // The new process serves on the same sockets, no more.
        assert_eq!(listeners_on(addr), listeners, "{workers:?} round {round}");
        let mut after = connect(addr);
        roundtrip(&mut after, b"after\n", b"after\n");
        assert!(
            server
                .log()
                .contains(&format!("upgrade: pid {new} is ready and serving")),
            "log:\n{}",
            server.log()
        );
        pid = new;
    }
    let (echoed, failures) = churn.stop();
    assert!(
        failures.is_empty(),
        "{workers:?}: {} of {} short connections failed: {failures:#?}",
        failures.len(),
        echoed + failures.len() as u64
    );
    assert!(echoed > 0);

    signal(pid, Signal::TERM);
    assert_eq!(procs.wait_exit(pid, PATIENCE), 0, "log:\n{}", server.log());
    // The last process is the service's main one: it says STOPPING=1.
    assert!(next_notification(&notify).starts_with("STOPPING=1\n"));
    assert!(!pid_file.exists(), "removed by the last process");
    assert!(
        procs.seen.iter().all(|&p| is_gone(p)),
        "nothing left running"
    );
}

/// Replaces the file at `path` as an installer does: a new file renamed
/// over it (the running binary's inode stays, unlinked).
fn install(path: &Path, contents: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let temp = path.with_extension("new");
    std::fs::write(&temp, contents).unwrap();
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// A copy of the server binary in a folder of its own, and a pid file
/// path next to it.
fn private_copy(tag: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(tag);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("reactor-echo");
    install(&bin, &std::fs::read(BIN).unwrap());
    (bin, dir.join("server.pid"))
}

/// The server started from `bin`, with a pid file, `--upgrade-timeout`
/// `timeout` (seconds) and `args`.
fn start_copy(bin: &Path, pid_file: &Path, timeout: u32, args: &[impl AsRef<OsStr>]) -> Server {
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0", "--pid-file"])
        .arg(pid_file)
        .args(["--upgrade-timeout", &timeout.to_string()])
        .args(args);
    Server::spawn(cmd)
}

/// The pid that the log says the upgrade started (the last such line).
fn started_pid(server: &Server) -> u32 {
    let log = server.log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("SIGUSR2: started"))
        .unwrap_or_else(|| panic!("no start in the log:\n{log}"));
    let at = line.find(" as pid ").unwrap() + " as pid ".len();
    line[at..]
        .split(',')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_failed_upgrade_leaves_the_old_process_serving() {
    become_subreaper();
    let mut procs = Processes::default();
    let (bin, pid_file) = private_copy("failed");
    let mut server = start_copy(&bin, &pid_file, 1, &workers_from_env());
    let old = server.pid();
    procs.saw(old);
    let mut open = server.connect();
    roundtrip(&mut open, b"before\n", b"before\n");

    // Each new "binary" at the path, and what the old process must log.
    let writes_pid_file = format!(
        "#!/bin/sh\necho $$ > '{}'\nexec sleep 30\n",
        pid_file.display()
    );
    let cases: [(&str, Option<String>, &[&str]); 4] = [
        (
            "a binary that exits at once",
            Some("#!/bin/sh\necho 'the new binary is broken' >&2\nexit 7\n".to_string()),
            &[
                "closed its readiness channel without READY=1",
                "ended (exit status: 7); reaped",
            ],
        ),
        (
            "a binary that never reports ready",
            Some("#!/bin/sh\nexec sleep 30\n".to_string()),
            &[
                "did not report ready within 1s",
                "ended (signal: 9 (SIGKILL)); reaped",
            ],
        ),
        (
            "one that writes the pid file, then hangs",
            Some(writes_pid_file),
            &["did not report ready within 1s", "names this process again"],
        ),
        ("no file at the path", None, &["cannot start"]),
    ];
    for (what, script, says) in cases {
        match &script {
            Some(text) => install(&bin, text.as_bytes()),
            None => std::fs::remove_file(&bin).unwrap(),
        }
        let before = server.log().len();
        server.signal(Signal::USR2);
        let end = Instant::now() + PATIENCE;
        while !says.iter().all(|s| server.log()[before..].contains(s)) {
            assert!(Instant::now() < end, "{what}; log:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(server.log()[before..].contains("this process serves on"));
        if script.is_some() {
            let child = started_pid(&server);
            assert!(is_gone(child), "{what}: pid {child} was reaped");
        }
        assert_eq!(read_pid(&pid_file), Some(old), "{what}: the pid file");
        assert!(server.is_running(), "{what}");
        // Still serving, the old connection and new ones alike.
        roundtrip(&mut open, b"still\n", b"still\n");
        let mut fresh = server.connect();
        roundtrip(&mut fresh, b"fresh\n", b"fresh\n");
    }

    // Nothing was left half-done: with the real binary back, it works.
    install(&bin, &std::fs::read(BIN).unwrap());
    server.signal(Signal::USR2);
    let new = wait_for_new_pid(&pid_file, old, &server);
    procs.saw(new);
    assert_eq!(read_end(&mut open), End::Eof);
    server.expect_exit(0);
    let mut c = connect(server.addr);
    roundtrip(&mut c, b"new\n", b"new\n");
    signal(new, Signal::TERM);
    assert_eq!(read_end(&mut c), End::Eof);
    assert_eq!(procs.wait_exit(new, PATIENCE), 0, "log:\n{}", server.log());
    assert!(!pid_file.exists());
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}

#[test]
fn a_stop_signal_while_the_new_process_starts_gives_the_upgrade_up() {
    become_subreaper();
    let mut procs = Processes::default();
    let (bin, pid_file) = private_copy("abandoned");
    let mut server = start_copy(&bin, &pid_file, 1, &workers_from_env());
    procs.saw(server.pid());
    install(&bin, b"#!/bin/sh\nexec sleep 30\n");
    let mut c = server.connect();
    roundtrip(&mut c, b"x\n", b"x\n");
    server.signal(Signal::USR2);
    assert!(server.wait_for_log("SIGUSR2: started", PATIENCE));
    let child = started_pid(&server);
    procs.saw(child);
    // A second SIGUSR2 while one is under way is refused.
    server.signal(Signal::USR2);
    assert!(server.wait_for_log("an upgrade is already under way", PATIENCE));
    server.signal(Signal::TERM);
    assert_eq!(read_end(&mut c), End::Eof);
    server.expect_exit(0);
    assert!(
        server.log().contains(&format!(
            "SIGTERM: giving up the upgrade; stopping pid {child}"
        )),
        "log:\n{}",
        server.log()
    );
    assert!(is_gone(child), "pid {child} was reaped");
    assert!(!pid_file.exists());
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}

#[test]
fn a_connect_refused_would_show() {
    // The check of the churn clients is not blind: with nothing listening,
    // a connect fails, and says so.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = echo_once(addr, b"x\n").unwrap_err();
    assert!(err.starts_with("connect: "), "{err}");
}

/// Installs at `at` a script that starts the real binary (a copy next to
/// it, `AT.next`) with `args` instead of the old process's: a new version
/// deployed with another configuration. `exec` keeps the script's pid, so
/// the upgrade's variables and descriptors reach the server as they would.
/// Returns the copy's path: the program that a process it started runs on
/// *its* SIGUSR2 (its `argv[0]`).
fn install_with_args(at: &Path, pid_file: &Path, args: &[&str]) -> PathBuf {
    let real = PathBuf::from(format!("{}.next", at.display()));
    install(&real, &std::fs::read(BIN).unwrap());
    let script = format!(
        "#!/bin/sh\nexec '{}' --listen 127.0.0.1:1 --pid-file '{}' {}\n",
        real.display(),
        pid_file.display(),
        args.join(" ")
    );
    install(at, script.as_bytes());
    real
}

/// Waits until `server`'s log (which the processes that it starts write
/// to as well) holds `needle` `times` times.
fn wait_for_log_count(server: &Server, needle: &str, times: usize) {
    let end = Instant::now() + PATIENCE;
    while server.log().matches(needle).count() < times {
        assert!(
            Instant::now() < end,
            "{times} × {needle:?} never came; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_reuseport_group_may_grow_on_an_upgrade_but_not_shrink() {
    become_subreaper();
    let mut procs = Processes::default();
    let (bin, pid_file) = private_copy("group");
    let mut server = start_copy(
        &bin,
        &pid_file,
        5,
        &["--workers", "3", "--accept", "reuseport"],
    );
    let old = server.pid();
    procs.saw(old);
    let addr = server.addr;
    assert_eq!(listeners_on(addr), 3);
    let mut open = server.connect();
    roundtrip(&mut open, b"before\n", b"before\n");

    // Fewer workers than listeners passed: a listener would be left with
    // nobody to accept from it. The new process refuses (exit 2), and the
    // old one serves on with its three.
    install_with_args(
        &bin,
        &pid_file,
        &["--workers", "2", "--accept", "reuseport"],
    );
    server.signal(Signal::USR2);
    wait_for_log_count(&server, "closed its readiness channel without READY=1", 1);
    wait_for_log_count(&server, "); reaped", 1);
    assert!(
        server
            .log()
            .contains("error: LISTEN_FDS=3: a reuseport group of 3 listeners, and only 2 workers"),
        "log:\n{}",
        server.log()
    );
    assert_eq!(listeners_on(addr), 3);
    roundtrip(&mut open, b"still\n", b"still\n");
    let mut fresh = server.connect();
    roundtrip(&mut fresh, b"fresh\n", b"fresh\n");

    // More workers: the three listeners passed, and one more joins them.
    install_with_args(
        &bin,
        &pid_file,
        &["--workers", "4", "--accept", "reuseport"],
    );
    server.signal(Signal::USR2);
    let new = wait_for_new_pid(&pid_file, old, &server);
    procs.saw(new);
    assert_eq!(read_end(&mut open), End::Eof);
    assert_eq!(read_end(&mut fresh), End::Eof);
    server.expect_exit(0);
    wait_for_listeners(addr, 4);
    for i in 0..8 {
        let mut c = connect(addr);
        let line = test_line(i, 0, 16);
        roundtrip(&mut c, &line, &line);
    }
    signal(new, Signal::TERM);
    assert_eq!(procs.wait_exit(new, PATIENCE), 0);
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}

#[test]
fn an_upgrade_may_change_the_accept_mode_only_towards_reuseport() {
    become_subreaper();
    let mut procs = Processes::default();
    let (bin, pid_file) = private_copy("modes");
    let mut server = start_copy(&bin, &pid_file, 5, &["--workers", "2"]);
    let old = server.pid();
    procs.saw(old);
    let addr = server.addr;
    assert_eq!(listeners_on(addr), 1);

    // The coordinator's one listener becomes the first of a group of two.
    let group = install_with_args(
        &bin,
        &pid_file,
        &["--workers", "2", "--accept", "reuseport"],
    );
    let mut open = server.connect();
    roundtrip(&mut open, b"old\n", b"old\n");
    server.signal(Signal::USR2);
    let new = wait_for_new_pid(&pid_file, old, &server);
    procs.saw(new);
    assert_eq!(read_end(&mut open), End::Eof);
    server.expect_exit(0);
    wait_for_listeners(addr, 2);
    let mut c = connect(addr);
    roundtrip(&mut c, b"group\n", b"group\n");

    // Back to one listener would close the group's other: refused, by the
    // lone loop as by the coordinator, and the group serves on. (The new
    // processes write to the same standard error as the first, so their
    // lines are in its log too.)
    for (k, args) in [&["--workers", "1"][..], &["--workers", "2"][..]]
        .into_iter()
        .enumerate()
    {
        install_with_args(&group, &pid_file, args);
        signal(new, Signal::USR2);
        wait_for_log_count(&server, "); reaped", k + 1);
        let refused = "error: LISTEN_FDS=2: this mode serves one listening socket";
        assert_eq!(server.log().matches(refused).count(), k + 1, "{args:?}");
        assert_eq!(read_pid(&pid_file), Some(new), "{args:?}");
        assert_eq!(listeners_on(addr), 2, "{args:?}");
        roundtrip(&mut c, b"still\n", b"still\n");
    }
    signal(new, Signal::TERM);
    assert_eq!(read_end(&mut c), End::Eof);
    assert_eq!(procs.wait_exit(new, PATIENCE), 0);
    let _ = std::fs::remove_dir_all(bin.parent().unwrap());
}

/// Sends SIGUSR1 to `pid` and returns the `workers:` line it logs into
/// `server`'s log (which the processes `server` started write to as well).
fn spread_of(server: &Server, pid: u32) -> String {
    let before = server.log().matches("workers: ").count();
    signal(pid, Signal::USR1);
    wait_for_log_count(server, "workers: ", before + 1);
    let log = server.log();
    log.lines()
        .rfind(|l| l.contains("workers: "))
        .unwrap()
        .to_string()
}

#[test]
fn a_reuseport_group_keeps_its_order_across_an_upgrade() {
    // The group steers a connect to member `cpu % 2`, where `cpu` handled
    // its SYN (on loopback, the CPU of the thread that connects). Clients
    // on an even CPU then reach worker 0, on an odd one worker 1, as long
    // as worker `i` holds member `i`: in the old process, and in the new
    // one if the members were passed in their order.
    let cpus = allowed_cpus();
    let (Some(&even), Some(&odd)) = (
        cpus.iter().find(|&&c| c % 2 == 0),
        cpus.iter().find(|&&c| c % 2 == 1),
    ) else {
        println!("skipped: this test needs an even and an odd CPU; it may use {cpus:?}");
        return;
    };
    become_subreaper();
    let mut procs = Processes::default();
    let pid_file = scratch("order.pid");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--accept",
        "reuseport",
    ])
    .arg("--pid-file")
    .arg(&pid_file);
    let mut server = Server::spawn(cmd);
    let old = server.pid();
    procs.saw(old);
    let addr = server.addr;
    // 10 clients from the even CPU, 30 from the odd one, each echoed once
    // and closed: the spread tells which worker took which. (Generous: a
    // SYN may now and then be handled on the other CPU.)
    let clients = || {
        for (cpu, n) in [(even, 10), (odd, 30)] {
            std::thread::spawn(move || {
                pin_this_thread(cpu);
                for i in 0..n {
                    let mut c = connect(addr);
                    let line = test_line(cpu, i, 16);
                    roundtrip(&mut c, &line, &line);
                }
            })
            .join()
            .unwrap();
        }
    };
    let odd_side = |line: &str| {
        let conns = per_worker(line, "connections");
        assert!(
            conns[1] >= conns[0] + 10,
            "worker 1 took the odd CPU's: {line}"
        );
    };
    clients();
    odd_side(&spread_of(&server, old));

    server.signal(Signal::USR2);
    let new = wait_for_new_pid(&pid_file, old, &server);
    procs.saw(new);
    server.expect_exit(0);
    clients();
    odd_side(&spread_of(&server, new));
    signal(new, Signal::TERM);
    assert_eq!(procs.wait_exit(new, PATIENCE), 0);
}
