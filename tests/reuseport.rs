//! `--accept reuseport`: each worker accepts from a listener of its own, in
//! one `SO_REUSEPORT` group steered by the CPU that took the SYN. What it
//! must keep from the coordinator's mode: one cap for the process, a second
//! instance refused, one drain that ends in FIN and exit 0; and what it
//! must do: spread clients that come and go over the workers.

mod common;

use std::process::{Command, Stdio};

use common::*;

const REUSEPORT: [&str; 4] = ["--workers", "2", "--accept", "reuseport"];

/// Runs `reactor-echo ARGS` to its exit: the status and stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_connection_cap_is_one_for_the_process() {
    let server = Server::start(&[&REUSEPORT[..], &["--max-connections", "6"]].concat());
    let mut served = server.connect_echoed(6);
    // The seventh is over the cap for the process, whichever worker's
    // listener the kernel put it in.
    for _ in 0..3 {
        let mut extra = server.connect();
        assert_eq!(read_end(&mut extra), End::Eof);
    }
    let line = spread_line(&server);
    assert_eq!(per_worker(&line, "connections").iter().sum::<u64>(), 6);
    assert!(server.log().contains("rejected=3"), "{}", server.log());
    // A place freed on either worker lets the next one in.
    drop(served.pop());
    connect_until_served(&server, "the freed place never came back");
}

#[test]
fn a_second_instance_is_refused_in_either_order() {
    // A reuseport group first: a second group would join it silently
    // without the lock; a plain listener is refused by the kernel.
    let server = Server::start(&REUSEPORT);
    let addr = server.addr.to_string();
    for second in [
        &[&REUSEPORT[..], &["--listen", &addr]].concat()[..],
        &["--workers", "2", "--listen", &addr],
        &["--listen", &addr],
    ] {
        let (code, err) = run_to_exit(second);
        assert_eq!(code, Some(1), "{second:?}: {err}");
        assert!(err.to_lowercase().contains("in use"), "{second:?}: {err}");
    }
    let mut c = server.connect();
    roundtrip(&mut c, b"still mine\n", b"still mine\n");
    // A plain listener first: the bind probe refuses the group.
    let plain = Server::start(&["--workers", "2"]);
    let addr = plain.addr.to_string();
    let (code, err) = run_to_exit(&[&REUSEPORT[..], &["--listen", &addr]].concat());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.to_lowercase().contains("in use"), "{err}");
}

#[test]
fn one_drain_ends_every_connection_with_fin_and_exit_0() {
    let mut server = Server::start(&REUSEPORT);
    let mut idle = server.connect_echoed(100);
    server.signal(Signal::TERM);
    let status = server.wait_exit(PATIENCE).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", server.log());
    for c in &mut idle {
        assert_eq!(read_end(c), End::Eof);
    }
    let log = server.log();
    assert!(
        log.contains("drain complete: 100 connections closed cleanly, 0 cut off"),
        "{log}"
    );
    // The listeners are closed: new connects are refused.
    assert!(connect_refused(server.addr));
}

#[test]
fn churning_clients_are_spread_by_their_cpu() {
    let cpus = allowed_cpus();
    let server = Server::start(&[&REUSEPORT[..], &["--pin-cpus"]].concat());
    // One client thread per CPU, each pinned there: its SYNs are handled on
    // that CPU (loopback), so listener `cpu % 2` takes them.
    let threads: Vec<_> = cpus
        .iter()
        .take(2)
        .map(|&cpu| {
            let addr = server.addr;
            std::thread::spawn(move || {
                pin_this_thread(cpu);
                for i in 0..200 {
                    let mut c = connect(addr);
                    let line = test_line(cpu, i, 24);
                    roundtrip(&mut c, &line, &line);
                    half_close(&c);
                    assert_eq!(read_end(&mut c), End::Eof);
                }
            })
        })
        .collect();
    let clients = threads.len() as u64;
    for t in threads {
        t.join().unwrap();
    }
    let line = spread_line(&server);
    let conns = per_worker(&line, "connections");
    assert_eq!(conns.iter().sum::<u64>(), 200 * clients, "{line}");
    if clients == 2 {
        // Generous: a SYN may now and then be handled on the other CPU.
        assert!(conns.iter().all(|&n| n >= 100), "uneven: {line}");
    }
}
