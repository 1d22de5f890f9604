//! `--workers N`: N event loops behind one acceptor. What only several
//! workers can show: connections spread over them (and the SIGUSR1 spread
//! says so), one port for all, one drain for all, and the flag itself.
//!
//! The rest of the suite also runs with workers: `make test` runs every
//! integration suite that starts its servers through the harness again with
//! `REACTOR_ECHO_TEST_WORKERS=2`, which the harness turns into `--workers 2`
//! for every server it starts (the Makefile's `WORKERS_AGAIN` lists them;
//! the last test here keeps that list whole).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn pipelining_clients_each_get_their_own_bytes_on_every_worker() {
    for workers in ["2", "4"] {
        let server = Server::start(&["--workers", workers]);
        pipelining_clients(server.addr, 300, 3);
        // Every worker served some, and the least-loaded choice kept the
        // connection counts level (the clients came and went at random).
        let line = spread_line(&server);
        let conns = per_worker(&line, "connections");
        assert_eq!(conns.len(), workers.parse::<usize>().unwrap(), "{line}");
        assert_eq!(conns.iter().sum::<u64>(), 300, "{line}");
        assert!(conns.iter().all(|&n| n > 0), "a worker got none: {line}");
        let frames = per_worker(&line, "frames");
        assert_eq!(frames.iter().sum::<u64>(), 300 * 3 * 40, "{line}");
    }
}

#[test]
fn held_connections_are_spread_evenly() {
    // 64 per worker, all held open at once: least-loaded hands them out
    // one by one, so every worker gets exactly its share.
    let server = Server::start(&["--workers", "4"]);
    let held = server.connect_echoed(256);
    let line = spread_line(&server);
    assert_eq!(per_worker(&line, "connections"), [64, 64, 64, 64], "{line}");
    assert!(line.contains("busiest/average: connections=1.00"), "{line}");
    assert!(server.log().contains("open=256"), "{}", server.log());
    drop(held);
}

#[test]
fn churning_clients_are_spread_evenly() {
    // Clients that connect, echo one line and close, one after another:
    // most of the time every worker serves none, so each choice is a tie.
    // Ties must not all go to the same worker.
    let server = Server::start(&["--workers", "4"]);
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let addr = server.addr;
            std::thread::spawn(move || {
                for i in 0..200 {
                    let mut c = connect(addr);
                    let line = test_line(t, i, 24);
                    roundtrip(&mut c, &line, &line);
                    // Our FIN first, then the server's: a clean close.
                    half_close(&c);
                    assert_eq!(read_end(&mut c), End::Eof);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let line = spread_line(&server);
    let conns = per_worker(&line, "connections");
    assert_eq!(conns.iter().sum::<u64>(), 400, "{line}");
    // Busiest ÷ average: 1.00 is perfect; ties all to worker 0 gave 2.6.
    let max = *conns.iter().max().unwrap() as f64;
    assert!(max / 100.0 <= 1.3, "uneven: {line}");
    // Held connections after the churn still come out level.
    let held = server.connect_echoed(64);
    let after = per_worker(&spread_line(&server), "connections");
    let added: Vec<u64> = after.iter().zip(&conns).map(|(a, b)| a - b).collect();
    assert_eq!(added, [16, 16, 16, 16], "{line}");
    drop(held);
}

#[test]
fn port_zero_gives_one_port_and_a_second_instance_is_refused() {
    let server = Server::start(&["--workers", "2"]);
    let mut clients: Vec<_> = (0..8).map(|_| server.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let line = test_line(i, 0, 30);
        roundtrip(c, &line, &line);
    }
    // No SO_REUSEPORT: a second copy cannot silently join the first.
    let out = Command::new(BIN)
        .args(["--workers", "2", "--listen", &server.addr.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("in use"), "{err}");
}

#[test]
fn one_drain_for_all_workers() {
    let mut server = Server::start(&["--workers", "2"]);
    let mut idle = server.connect_echoed(100);
    let t0 = Instant::now();
    server.signal(Signal::TERM);
    let status = server.wait_exit(PATIENCE).expect("exits");
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(
        took < Duration::from_secs(1),
        "100 idle connections took {took:?}"
    );
    for c in &mut idle {
        assert_eq!(read_end(c), End::Eof);
    }
    let log = server.log();
    // One line for the process, not one per worker.
    assert_eq!(
        log.matches("draining 100 connections on 2 workers").count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("drain complete: 100 connections closed cleanly, 0 cut off"),
        "{log}"
    );
    let spread = log.lines().rfind(|l| l.contains("workers: ")).unwrap();
    assert_eq!(per_worker(spread, "connections"), [50, 50], "{spread}");
}

#[test]
fn the_workers_flag() {
    // auto: one per CPU this process may use; it serves like any other.
    let server = Server::start(&["--workers", "auto"]);
    let mut c = server.connect();
    roundtrip(&mut c, b"auto\n", b"auto\n");
    for bad in ["0", "-1", "many", "1.5", "99999"] {
        let out = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", &format!("--workers={bad}")])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--workers {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--workers"), "--workers {bad}: {err}");
    }
}

#[test]
fn workers_1_is_the_lone_loop_with_no_extra_thread() {
    let server = Server::start(&["--workers", "1"]);
    let mut c = server.connect();
    roundtrip(&mut c, b"one\n", b"one\n");
    assert_eq!(server.proc_status("Threads"), 1);
    let two = Server::start(&["--workers", "2"]);
    // Served once, so every worker has been started.
    let mut c = two.connect();
    roundtrip(&mut c, b"two\n", b"two\n");
    // The coordinator and two workers.
    assert_eq!(two.proc_status("Threads"), 3);
}

#[test]
fn only_the_coordinator_takes_signals() {
    // The stop signals and SIGUSR1 are blocked in every worker thread, so
    // the kernel delivers them to the coordinator, which reads them; a
    // worker's epoll_wait is never interrupted by one.
    let server = Server::start(&["--workers", "2"]);
    let mut c = server.connect();
    roundtrip(&mut c, b"up\n", b"up\n");
    // Bit n-1 for signal n: HUP 1, INT 2, QUIT 3, USR1 10, TERM 15.
    let stop_and_usr1: u64 = [1, 2, 3, 10, 15].iter().map(|n| 1 << (n - 1)).sum();
    let tasks = format!("/proc/{}/task", server.pid());
    let names = || -> Vec<(std::path::PathBuf, String)> {
        std::fs::read_dir(&tasks)
            .unwrap()
            .map(|t| {
                let t = t.unwrap().path();
                let name = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
                (t, name)
            })
            .collect()
    };
    // A thread names itself (and sets its signal mask) only once it runs:
    // a worker that has not yet run shows the process's name, with the
    // all-blocked mask glibc starts every new thread with. One echo does
    // not wait for that, so wait here until both workers have named
    // themselves.
    let give_up = Instant::now() + PATIENCE;
    while names()
        .iter()
        .filter(|(_, n)| n.starts_with("worker-"))
        .count()
        < 2
    {
        assert!(
            Instant::now() < give_up,
            "the workers never named themselves"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut workers = 0;
    for (task, name) in names() {
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
            .unwrap();
        if name.starts_with("worker-") {
            workers += 1;
            assert_eq!(
                blocked & stop_and_usr1,
                stop_and_usr1,
                "{name}: {blocked:x}"
            );
        } else {
            assert_eq!(blocked & stop_and_usr1, 0, "{name}: {blocked:x}");
        }
    }
    assert_eq!(workers, 2);
    // And the signals still work: SIGUSR1 answers, SIGTERM drains.
    spread_line(&server);
}

#[test]
fn the_connection_cap_counts_every_worker() {
    let server = Server::start(&["--workers", "2", "--max-connections", "6"]);
    let mut served = server.connect_echoed(6);
    // The seventh is over the cap for the process, not for one worker.
    let mut extra = server.connect();
    assert_eq!(read_end(&mut extra), End::Eof);
    let line = spread_line(&server);
    assert_eq!(per_worker(&line, "connections"), [3, 3], "{line}");
    assert!(server.log().contains("rejected=1"), "{}", server.log());
    // A slot freed on either worker lets the next one in.
    drop(served.pop());
    connect_until_served(&server, "the freed slot never came back");
}

/// Every suite that starts servers through the harness (`Server::start`)
/// is in the Makefile's `WORKERS_AGAIN`, so that `make test` runs it again
/// with `--workers 2`; a new suite cannot be left out of that pass.
#[test]
fn make_test_runs_every_harness_suite_again_with_workers() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let makefile = std::fs::read_to_string(root.join("Makefile")).unwrap();
    let listed: Vec<&str> = makefile
        .lines()
        .find_map(|l| l.strip_prefix("WORKERS_AGAIN = "))
        .expect("WORKERS_AGAIN in the Makefile")
        .split_whitespace()
        .collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root.join("tests")).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
            continue;
        };
        let is_suite = path.extension().is_some_and(|e| e == "rs");
        // This suite and reuseport.rs start several workers themselves.
        if !is_suite || name == "workers" || name == "reuseport" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("Server::start(") && !listed.contains(&name) {
            missing.push(name.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "suites that start servers through the harness but are not in the Makefile's WORKERS_AGAIN: {missing:?}"
    );
    assert!(listed.len() >= 8, "the list looks cut short: {listed:?}");
}
