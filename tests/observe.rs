//! Watching the loop work: trace narration and the SIGUSR1 stats line.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

/// Narration names one loop's tokens, so these tests run one loop.
const TRACE: &[&str] = &["--log-level", "trace", "--workers", "1"];

#[test]
fn trace_level_narrates_each_event() {
    let server = Server::start(TRACE);
    let mut c = server.connect();
    c.write_all(b"abc").unwrap();
    // The first connection: serial 1, slab key 0, so token 1 << 32, as
    // strace shows it in epoll_wait's data.u64.
    assert!(
        server.wait_for_log(
            "#1 (key 0, token 4294967296) R|W: read 3 B, 0 frames, wrote 0 B; 0 B pending, open",
            PATIENCE
        ),
        "{}",
        server.log()
    );
    roundtrip(&mut c, b"def\n", b"abcdef\n");
    assert!(
        server.wait_for_log("read 4 B, 1 frames, wrote 7 B; 0 B pending, open", PATIENCE),
        "{}",
        server.log()
    );
    roundtrip(&mut c, b"x\ny\n", b"x\ny\n");
    assert!(server.wait_for_log("read 4 B, 2 frames, wrote 4 B", PATIENCE));
    let log = server.log();
    assert!(
        log.contains("listener (token 18446744073709551615) R: accepted 1"),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("TRACE") && l.contains("turn ") && l.contains(" events")),
        "{log}"
    );
    // One line per read and per write call, naming the fd as strace does.
    for call in [
        "read 3 B (short: the queue is empty; stop, the next byte makes a new edge)",
        "wrote 7 of 7 B",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("#1 fd ") && l.ends_with(call)),
            "no `#1 fd N: {call}` in\n{log}"
        );
    }
}

#[test]
fn narration_is_silent_below_trace() {
    let server = Server::start(&["--log-level", "debug", "--idle-timeout", "0.2"]);
    let mut c = server.connect();
    roundtrip(&mut c, b"quiet\n", b"quiet\n");
    // The idle timer fires and closes it: timer work is narrated only at trace.
    assert_eq!(read_end(&mut c), End::Eof);
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log();
    for narration in ["frames", " fd ", "timer", "token"] {
        assert!(!log.contains(narration), "`{narration}` in\n{log}");
    }
}

#[test]
fn trace_level_narrates_short_writes_pauses_and_resumed_reads() {
    // A 4 KiB send buffer makes writes come up short early.
    let mut args = TRACE.to_vec();
    args.extend(["--send-buffer", "4096"]);
    let server = Server::start(&args);
    let mut c = server.connect();
    let data: Vec<u8> = (0..(8 << 20) / 128)
        .flat_map(|k| test_line(0, k, 128))
        .collect();
    let (writer, _) = write_until_stalled(&c, data.clone());
    assert!(
        server.wait_for_log("backpressured", PATIENCE),
        "{}",
        server.log()
    );
    // Reading lets the output drain: the loop resumes the connection and
    // reads what queued up meanwhile by itself, in `resume_readers`.
    assert!(read_n(&mut c, data.len()) == data, "echo differs");
    writer.join().unwrap();
    assert!(
        server.wait_for_log("resume #1 (key 0, token 4294967296): read ", PATIENCE),
        "{}",
        server.log()
    );
    let log = server.log();
    let short_write = log.lines().any(|l| {
        l.contains("#1 fd ")
            && (l.contains(" B (short: the send buffer is full; the rest waits for EPOLLOUT)")
                || l.contains(": write: EAGAIN ("))
    });
    assert!(short_write, "no short write or EAGAIN narrated:\n{log}");
    assert!(
        log.contains("B not written: the last write came up short, so wait for EPOLLOUT"),
        "{log}"
    );
    // After a pause the loop reads until EAGAIN, as a short read is not
    // trusted: the last resume, once the client has read everything, ends so.
    assert!(
        server.wait_for_log(": read: EAGAIN", PATIENCE),
        "{}",
        server.log()
    );
}

#[test]
fn trace_level_narrates_timers() {
    let mut args = TRACE.to_vec();
    args.extend(["--idle-timeout", "0.2"]);
    let server = Server::start(&args);
    let mut c = server.connect();
    roundtrip(&mut c, b"hi\n", b"hi\n");
    // Idle: the timer closes it with a FIN, after reading and discarding
    // input (there is none: EAGAIN). The socket is closed in that same
    // timer if the client's kernel has already acknowledged the FIN.
    assert_eq!(read_end(&mut c), End::Eof);
    drop(c);
    // The first idle timer may come up early and be set again (the line
    // then ends "open"); the one that closes it ends as below.
    let line = "timer idle #1 (key 0, token 4294967296): read 0 B, 0 frames, wrote 0 B; ";
    let closed_by_timer = |log: &str| {
        log.lines()
            .filter_map(|l| l.split_once(line))
            .any(|(_, after)| {
                after == "closed" || after == "0 B pending, closing (idle timeout, FIN sent)"
            })
    };
    let give_up = Instant::now() + PATIENCE;
    while !closed_by_timer(&server.log()) {
        assert!(Instant::now() < give_up, "{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = server.log();
    assert!(log.contains("#1 closing: idle timeout"), "{log}");
}

#[test]
fn usr1_logs_a_stats_line_and_exit_logs_it_again() {
    let mut server = Server::start(&[]);
    let mut a = server.connect();
    let mut b = server.connect();
    roundtrip(&mut a, b"one\ntwo\n", b"one\ntwo\n");
    roundtrip(&mut b, b"three\n", b"three\n");
    drop(b);
    std::thread::sleep(Duration::from_millis(200));
    server.signal(Signal::USR1);
    let want = "stats: open=1 accepted=2 rejected=0 closed=1 bytes_in=14 bytes_out=14 frames=3 ";
    assert!(server.wait_for_log(want, PATIENCE), "{}", server.log());
    let line = server
        .log()
        .lines()
        .find(|l| l.contains(want))
        .unwrap()
        .to_string();
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        line.contains("loop_turns=")
            && line.contains("events_per_poll=")
            && line.ends_with("backpressured=0"),
        "{line}"
    );
    // USR1 does not stop the server.
    roundtrip(&mut a, b"four\n", b"four\n");
    server.stop_expecting(0);
    let at_exit = server
        .log()
        .lines()
        .filter(|l| l.contains("stats: open=0 accepted=2"))
        .count();
    assert_eq!(at_exit, 1, "{}", server.log());
}
