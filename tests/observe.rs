//! Watching the loop work: trace narration and the SIGUSR1 stats line.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

#[test]
fn trace_level_narrates_each_event() {
    let server = Server::start(&["--log-level", "trace"]);
    let mut c = server.connect();
    c.write_all(b"abc").unwrap();
    assert!(
        server.wait_for_log("read 3 B, 0 frames, wrote 0 B; 0 B pending, open", PATIENCE),
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
    assert!(log.contains("listener R: accepted 1"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("TRACE") && l.contains("turn ") && l.contains(" events")),
        "{log}"
    );
}

#[test]
fn narration_is_silent_below_trace() {
    let server = Server::start(&["--log-level", "debug"]);
    let mut c = server.connect();
    roundtrip(&mut c, b"quiet\n", b"quiet\n");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!server.log().contains("frames"), "{}", server.log());
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
