//! Running under a supervisor (`docs/restart.md`): socket activation
//! (`LISTEN_FDS`), from a launcher in this file and from the real
//! `systemd-socket-activate`; the refusal of a descriptor that is not a
//! listening TCP socket; readiness over `NOTIFY_SOCKET`; `--pid-file`.
//!
//! How the launcher passes a socket as fd 3 without `unsafe` and without a
//! race: the socket becomes the child's standard input (std's `Command`
//! puts it there with `dup2`, which leaves it inheritable), and a shell moves
//! it to 3 in the same breath as it execs the server:
//!
//! ```text
//! sh -c 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@" 3<&0 0</dev/null' reactor-echo ARGS...
//! ```
//!
//! `exec` keeps the shell's pid, so `$$` is the server's pid, as
//! `LISTEN_PID` must be; that is what `systemd-socket-activate` does too.
//! (Clearing close-on-exec on the listener in this process instead would
//! leak it into every child that the other tests start meanwhile.)

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The environment a correct launcher sets.
const FOR_US: &str = "LISTEN_PID=$$ LISTEN_FDS=1";

/// The server, started by `sh` with `env` (shell assignments, `$$` is the
/// server's pid) and `stdin` moved to fd 3.
fn launcher(env: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(r#"{env} exec "$0" "$@" 3<&0 4<&- 0</dev/null"#))
        .arg(BIN)
        .args(args);
    cmd
}

/// A listening socket on a free loopback port, as a supervisor makes one.
fn listening() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The server launched on `listener` with `args`; waits for it to listen.
fn activated(listener: impl Into<OwnedFd>, args: &[&str]) -> Server {
    Server::spawn_with_stdin(launcher(FOR_US, args), Stdio::from(listener.into()))
}

/// Runs a command that must exit on its own; its status and stderr.
fn run_to_exit(mut cmd: Command, stdin: Stdio) -> (ExitStatus, String) {
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let end = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not exit on its own");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

/// A path under the temp folder unique to this test process and `tag`.
fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("reactor-echo-test-{}-{tag}", std::process::id()))
}

#[test]
fn serves_on_an_inherited_listener_and_its_waiting_connects() {
    for workers in [&[][..], &["--workers", "2"][..]] {
        let (listener, addr) = listening();
        // Connected before the server exists: the kernel completes the
        // handshake and the connection waits in the socket's accept queue.
        let mut early = connect(addr);
        let line = b"sent before the server started\n";
        std::io::Write::write_all(&mut early, line).unwrap();

        // --listen names an address this machine does not have (TEST-NET-1):
        // binding it would fail, so starting at all shows it was not bound.
        let mut args = vec!["--listen", "192.0.2.1:9"];
        args.extend(workers);
        let mut server = activated(listener, &args);
        assert_eq!(
            server.addr, addr,
            "{workers:?}: the log names the inherited socket"
        );
        assert!(
            server
                .log()
                .contains("socket activation: serving on the inherited fd 3"),
            "{workers:?}; log:\n{}",
            server.log()
        );

        assert_eq!(
            read_n(&mut early, line.len()),
            line,
            "{workers:?}: the queued connect is served"
        );
        let mut late = server.connect();
        roundtrip(&mut late, b"after\n", b"after\n");

        server.signal(Signal::TERM);
        assert_eq!(read_end(&mut early), End::Eof, "{workers:?}");
        assert_eq!(read_end(&mut late), End::Eof, "{workers:?}");
        server.expect_exit(0);
        assert!(
            server
                .log()
                .contains("drain complete: 2 connections closed cleanly, 0 cut off"),
            "{workers:?}; log:\n{}",
            server.log()
        );
    }
}

#[test]
fn serves_under_systemd_socket_activate() {
    let tool = "systemd-socket-activate";
    if Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("skipped: {tool} is not installed (Debian package systemd)");
        return;
    }
    // Alone, and as a reuseport group: the tool's socket (without
    // SO_REUSEPORT) becomes its first member.
    for extra in [&[][..], &["--workers", "2", "--accept", "reuseport"][..]] {
        // A free port, for the tool to listen on. (Someone could take it in
        // between; on loopback in a test run, no one does.)
        let addr = listening().1;
        let mut cmd = Command::new(tool);
        cmd.args(["-l", &addr.to_string(), BIN, "--listen", "192.0.2.1:9"])
            .args(extra);
        // The tool starts the server at the first connect, and execs it in
        // its own process (so the pid we know is the server's) with
        // LISTEN_PID set to it. So connect first, from a thread: the harness
        // waits for the "listening on" line, which only comes after.
        let first = std::thread::spawn(move || {
            let end = Instant::now() + PATIENCE;
            let mut c = loop {
                match std::net::TcpStream::connect(addr) {
                    Ok(c) => break c,
                    Err(e) if Instant::now() >= end => {
                        panic!("{tool} never listened on {addr}: {e}")
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            c.set_read_timeout(Some(PATIENCE)).unwrap();
            roundtrip(&mut c, b"first\n", b"first\n");
            c
        });
        let mut server = Server::spawn(cmd);
        let mut first = first.join().expect("the first client is served");
        assert_eq!(server.addr, addr, "log:\n{}", server.log());
        assert!(
            server
                .log()
                .contains("socket activation: serving on the inherited fd 3")
        );
        wait_for_listeners(addr, 1 + extra.len() / 4);
        let mut second = server.connect();
        roundtrip(&mut second, b"second\n", b"second\n");

        server.signal(Signal::TERM);
        assert_eq!(read_end(&mut first), End::Eof);
        assert_eq!(read_end(&mut second), End::Eof);
        server.expect_exit(0);
    }
}

#[test]
fn refuses_a_descriptor_that_is_not_a_listening_tcp_socket() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let file = std::fs::File::open(BIN).unwrap();
    // A TCP socket on which listen() was never called (close-on-exec here,
    // as std makes its own, so that only the server inherits it).
    let unlistened = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let cases: [(&str, Stdio, &str); 3] = [
        (
            "a UDP socket",
            Stdio::from(OwnedFd::from(udp)),
            "is a datagram",
        ),
        ("a regular file", Stdio::from(file), "is not a socket"),
        (
            "a TCP socket that does not listen",
            Stdio::from(unlistened),
            "is a TCP socket that is not listening",
        ),
    ];
    for (what, stdin, says) in cases {
        let (status, err) = run_to_exit(launcher(FOR_US, &["--listen", "127.0.0.1:0"]), stdin);
        assert_eq!(status.code(), Some(2), "{what}; stderr:\n{err}");
        assert!(
            err.contains("fd 3 (from LISTEN_FDS)") && err.contains(says),
            "{what}; stderr:\n{err}"
        );
        assert!(!err.contains("listening on"), "{what}: it must not serve");
    }
}

#[test]
fn refuses_bad_listen_fds_values() {
    let cases = [
        // fd 4 is not open: only fd 3 was passed.
        (
            "LISTEN_PID=$$ LISTEN_FDS=2",
            "fds 3 to 4 cannot be taken over",
        ),
        (
            "LISTEN_PID=$$ LISTEN_FDS=many",
            "is not a number of descriptors",
        ),
        ("LISTEN_PID=self LISTEN_FDS=1", "is not a process id"),
    ];
    for (env, says) in cases {
        let stdin = Stdio::from(OwnedFd::from(listening().0));
        let (status, err) = run_to_exit(launcher(env, &["--listen", "127.0.0.1:0"]), stdin);
        assert_eq!(status.code(), Some(2), "{env}; stderr:\n{err}");
        assert!(err.contains(says), "{env}; stderr:\n{err}");
    }
    // LISTEN_FDS=1 with nothing at fd 3.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(r#"{FOR_US} exec "$0" "$@" 3<&-"#))
        .arg(BIN)
        .args(["--listen", "127.0.0.1:0"]);
    let (status, err) = run_to_exit(cmd, Stdio::null());
    assert_eq!(status.code(), Some(2), "stderr:\n{err}");
    assert!(err.contains("fd 3 cannot be taken over"), "stderr:\n{err}");
}

#[test]
fn listen_fds_for_another_process_is_ignored() {
    let (listener, inherited) = listening();
    // Pid 1 is never the server. The socket is really there at fd 3, so
    // taking it would show: the server would serve on `inherited`.
    let mut server = Server::spawn_with_stdin(
        launcher("LISTEN_PID=1 LISTEN_FDS=1", &["--listen", "127.0.0.1:0"]),
        Stdio::from(OwnedFd::from(listener)),
    );
    assert_ne!(server.addr, inherited, "it bound --listen instead");
    assert!(
        server.log().contains("LISTEN_PID=1 names another process"),
        "log:\n{}",
        server.log()
    );
    let mut c = server.connect();
    roundtrip(&mut c, b"x\n", b"x\n");
    server.stop_expecting(0);
}

#[test]
fn notifies_ready_status_and_stopping() {
    let path = scratch("notify.sock");
    let _ = std::fs::remove_file(&path);
    let abstract_name = format!("@reactor-echo-test-{}", std::process::id());
    let cases = [
        (path.to_str().unwrap().to_string(), &[][..]),
        (abstract_name, &["--workers", "2"][..]),
    ];
    for (address, workers) in cases {
        let socket = if let Some(name) = address.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
            UnixDatagram::bind_addr(&addr).unwrap()
        } else {
            UnixDatagram::bind(&address).unwrap()
        };
        socket.set_read_timeout(Some(PATIENCE)).unwrap();

        let mut cmd = Command::new(BIN);
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(workers)
            .env("NOTIFY_SOCKET", &address);
        let mut server = Server::spawn(cmd);
        assert_eq!(
            next_notification(&socket),
            format!(
                "READY=1\nSTATUS=listening on {}, 0 connections open",
                server.addr
            ),
            "{address}"
        );
        let _open = server.connect_echoed(2);
        server.signal(Signal::TERM);
        assert_eq!(
            next_notification(&socket),
            "STOPPING=1\nSTATUS=draining 2 connections",
            "{address}"
        );
        server.expect_exit(0);
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn pid_file_is_written_once_listening_and_removed_at_exit() {
    let path = scratch("server.pid");
    // Left by a process that died: no pid is this large (pid_max <= 2^22).
    std::fs::write(&path, "999999999\n").unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--pid-file"])
        .arg(&path)
        .args(workers_from_env());
    let mut server = Server::spawn(cmd);
    // The harness returns at the "listening on" line, which comes after
    // the file is written.
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", server.pid())
    );
    let mut c = server.connect();
    roundtrip(&mut c, b"x\n", b"x\n");
    server.stop_expecting(0);
    assert!(!path.exists(), "removed at a clean exit");
}

#[test]
fn a_pid_file_that_cannot_be_written_stops_the_start() {
    let path = scratch("no-such-folder").join("server.pid");
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--pid-file"])
        .arg(&path);
    let (status, err) = run_to_exit(cmd, Stdio::null());
    assert_eq!(status.code(), Some(1), "stderr:\n{err}");
    assert!(
        err.contains(&format!("cannot write the pid file {}", path.display())),
        "stderr:\n{err}"
    );
    assert!(!err.contains("listening on"), "it must not serve");
}

/// The value of `key=` in a systemd unit file's text (first occurrence).
fn unit_setting<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .trim()
}

#[test]
fn the_systemd_units_fit_the_server() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/systemd");
    let service = std::fs::read_to_string(format!("{dir}/reactor-echo.service")).unwrap();
    let socket = std::fs::read_to_string(format!("{dir}/reactor-echo.socket")).unwrap();
    assert_eq!(unit_setting(&service, "Type"), "notify");
    assert_eq!(unit_setting(&service, "KillSignal"), "SIGTERM");
    // systemd must not kill the server before its drain deadline passes.
    let exec: Vec<&str> = unit_setting(&service, "ExecStart")
        .split_whitespace()
        .collect();
    let drain: f64 = exec
        .iter()
        .position(|a| *a == "--drain-timeout")
        .and_then(|i| exec.get(i + 1))
        .expect("ExecStart passes --drain-timeout")
        .parse()
        .unwrap();
    let stop: f64 = unit_setting(&service, "TimeoutStopSec").parse().unwrap();
    assert!(
        stop > drain,
        "TimeoutStopSec {stop} must exceed --drain-timeout {drain}"
    );
    // One socket, passed as a listener (not one connection per process).
    assert_eq!(socket.matches("\nListenStream=").count(), 1);
    assert!(!socket.contains("Accept=yes"));
}

#[test]
fn several_sockets_are_served_by_a_reuseport_group_only() {
    // Listening sockets at fds 3, 4, ... (the same socket each time: enough
    // to be counted, and refused by the modes with one listener).
    let several = |count: usize, args: &[&str]| {
        let copies: String = (4..3 + count).map(|fd| format!(" {fd}<&0")).collect();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                r#"LISTEN_PID=$$ LISTEN_FDS={count} exec "$0" "$@" 3<&0{copies} 0</dev/null"#
            ))
            .arg(BIN)
            .args(args);
        run_to_exit(cmd, Stdio::from(OwnedFd::from(listening().0)))
    };
    for args in [&["--workers", "1"][..], &["--workers", "2"][..]] {
        let (status, err) = several(2, args);
        assert_eq!(status.code(), Some(2), "{args:?}; stderr:\n{err}");
        assert!(
            err.contains("LISTEN_FDS=2: this mode serves one listening socket")
                && err.contains("--accept reuseport"),
            "{args:?}; stderr:\n{err}"
        );
        assert!(!err.contains("listening on"), "it must not serve");
    }
    // A reuseport group needs a worker for each socket passed.
    let (status, err) = several(3, &["--workers", "2", "--accept", "reuseport"]);
    assert_eq!(status.code(), Some(2), "stderr:\n{err}");
    assert!(
        err.contains("LISTEN_FDS=3: a reuseport group of 3 listeners, and only 2 workers")
            && err.contains("--workers 3 or more"),
        "stderr:\n{err}"
    );
}

#[test]
fn accept_reuseport_makes_a_group_of_an_inherited_socket() {
    // A supervisor's socket, made without SO_REUSEPORT: the server turns
    // it on, and a second listener joins the first in one group.
    let (listener, addr) = listening();
    let mut server = activated(
        listener,
        &[
            "--workers",
            "2",
            "--accept",
            "reuseport",
            "--listen",
            "192.0.2.1:9",
        ],
    );
    assert_eq!(server.addr, addr);
    wait_for_listeners(addr, 2);
    let mut clients = server.connect_echoed(20);
    server.signal(Signal::TERM);
    for c in &mut clients {
        assert_eq!(read_end(c), End::Eof);
    }
    server.expect_exit(0);
}

#[test]
fn a_group_cannot_join_a_socket_of_another_user() {
    // Linux groups only one user's sockets: a socket made by root (as
    // systemd makes it) cannot take listeners of a server that runs as
    // another user (`User=`, `DynamicUser=`). Refused, saying so, and the
    // socket is left as it was found.
    let tool = "setpriv";
    if !rustix::process::getuid().is_root() {
        println!("skipped: starting the server as another user needs root");
        return;
    }
    if Command::new(tool).arg("--version").output().is_err() {
        println!("skipped: {tool} is not installed (Debian package util-linux)");
        return;
    }
    let (listener, _) = listening();
    let ours = listener.try_clone().unwrap();
    let mut cmd = Command::new(tool);
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sh",
        "-c",
    ])
    .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@" 3<&0 4<&- 0</dev/null"#)
    .arg(BIN)
    .args(["--workers", "2", "--accept", "reuseport"]);
    let (status, err) = run_to_exit(cmd, Stdio::from(OwnedFd::from(listener)));
    assert_eq!(status.code(), Some(1), "stderr:\n{err}");
    assert!(
        err.contains("only the sockets of one user") && err.contains("--accept coordinator"),
        "stderr:\n{err}"
    );
    assert!(
        !socket2::SockRef::from(&ours).reuse_port().unwrap(),
        "SO_REUSEPORT was turned off again"
    );
    // The same socket, served by the same user's coordinator.
    let mut server = activated(ours, &["--workers", "2", "--listen", "192.0.2.1:9"]);
    let mut c = server.connect();
    roundtrip(&mut c, b"coordinator\n", b"coordinator\n");
    server.signal(Signal::TERM);
    server.expect_exit(0);
}
