//! The command line and start-up: addresses, bad input, exit statuses, logging.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn run_to_exit(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A bad invocation must fail at once; never let it serve forever.
    for _ in 0..400 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    panic!("reactor-echo {args:?} did not exit");
}

#[test]
fn listening_line_reports_the_real_port() {
    let server = Server::start(&[]);
    assert_ne!(server.addr.port(), 0);
    assert_eq!(server.log().matches("listening on").count(), 1);
    let mut c = server.connect();
    roundtrip(&mut c, b"port\n", b"port\n");
}

#[test]
fn listens_on_ipv6_and_host_names() {
    // IPv6 loopback, where the machine has it.
    if TcpListener::bind("[::1]:0").is_ok() {
        let mut cmd = Command::new(BIN);
        cmd.args(["--listen", "[::1]:0"]);
        let server = Server::spawn(cmd);
        assert!(server.addr.is_ipv6());
        let mut c = server.connect();
        roundtrip(&mut c, b"six\n", b"six\n");
    }
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "localhost:0"]);
    let server = Server::spawn(cmd);
    assert!(server.addr.ip().is_loopback());
    let mut c = server.connect();
    roundtrip(&mut c, b"name\n", b"name\n");
}

#[test]
fn address_in_use_is_a_one_line_error_and_exit_one() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_to_exit(&["--listen", &addr]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&addr) && err.to_lowercase().contains("in use"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn bad_command_lines_exit_two_without_panic() {
    let cases: &[&[&str]] = &[
        &["--max-frame", "abc"],
        &["--max-frame", "0"],
        &["--max-frame", "-5"],
        &["--max-frame", "99999999999"],
        &["--listen", "not-an-address"],
        &["--listen", "127.0.0.1"],
        &["--listen", "127.0.0.1:99999"],
        &["--drain-timeout", "soon"],
        &["--drain-timeout", "-1"],
        &["--idle-timeout", "-3"],
        &["--idle-timeout", "1e300"],
        &["--drain-timeout", "inf"],
        &["--max-connections", "0"],
        &["--max-connections", "many"],
        &["--framing", "xml"],
        &["--framing", "fixed:0"],
        &["--framing", "fixed:100", "--max-frame", "10"],
        &["--log-level", "loud"],
        &["--backlog", "0"],
        &["--backlog", "lots"],
        &["--backlog", "3000000000"],
        &["--send-buffer", "-1"],
        &["--send-buffer", "big"],
        &["--send-buffer", "9999999999"],
        &["--no-such-flag"],
        &["stray-argument"],
    ];
    for args in cases {
        let out = run_to_exit(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error:"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn help_lists_every_flag_with_default_and_unit() {
    let out = run_to_exit(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--listen <ADDR>",
        "[default: 127.0.0.1:8000]",
        "--framing <MODE>",
        "[default: line]",
        "--max-frame <BYTES>",
        "[default: 65536]",
        "--max-connections <N>",
        "[default: 10000]",
        "--drain-timeout <SECONDS>",
        "[default: 10]",
        "--idle-timeout <SECONDS>",
        "[default: 0]",
        "--log-level <LEVEL>",
        "--backlog <N>",
        "--send-buffer <BYTES>",
        "--version",
        "Exit status",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn version_prints_the_crate_version() {
    let out = run_to_exit(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("reactor-echo {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Runs one connection through a server started with `cmd`, stops it and
/// returns its log.
fn log_of_one_connection(cmd: Command) -> String {
    let mut server = Server::spawn(cmd);
    let mut c = server.connect();
    roundtrip(&mut c, b"log me\n", b"log me\n");
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    server.stop_expecting(0);
    server.log()
}

#[test]
fn connection_events_are_debug_not_info() {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0"]).env_remove("RUST_LOG");
    let log = log_of_one_connection(cmd);
    assert!(log.lines().all(|l| !l.contains("accepted from")), "{log}");
    assert!(
        log.lines()
            .all(|l| !l.contains("DEBUG") && !l.contains("TRACE")),
        "{log}"
    );
    assert!(log.contains(" INFO "), "{log}");

    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--log-level", "debug"]);
    let log = log_of_one_connection(cmd);
    assert!(
        log.lines()
            .any(|l| l.contains("DEBUG") && l.contains("accepted from 127.0.0.1:")),
        "{log}"
    );
}

#[test]
fn rust_log_sets_the_level_and_the_flag_wins() {
    for spec in ["debug", "reactor_echo=debug", "warn,reactor_echo=debug"] {
        let mut cmd = Command::new(BIN);
        cmd.args(["--listen", "127.0.0.1:0"]).env("RUST_LOG", spec);
        let log = log_of_one_connection(cmd);
        assert!(log.contains("accepted from"), "RUST_LOG={spec}: {log}");
    }
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--log-level", "info"])
        .env("RUST_LOG", "trace");
    let log = log_of_one_connection(cmd);
    assert!(
        !log.contains("accepted from"),
        "--log-level overrides RUST_LOG: {log}"
    );
}

#[test]
fn logs_go_to_stderr_not_stdout() {
    let child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, Signal::TERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listening on 127.0.0.1:"));
}

#[test]
fn a_closed_stderr_does_not_take_the_server_down() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--max-frame", "10"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no listening line"
        );
    }
    let addr: std::net::SocketAddr = line.rsplit(' ').next().unwrap().trim().parse().unwrap();
    // The log's reader goes away: writing a log line now fails with EPIPE.
    drop(stderr);
    let mut bad = connect(addr);
    bad.write_all(b"this line is far too long\n").unwrap();
    assert_eq!(read_end(&mut bad), End::Eof);
    let mut good = connect(addr);
    roundtrip(&mut good, b"serving\n", b"serving\n");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, Signal::TERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
