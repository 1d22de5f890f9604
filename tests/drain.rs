//! Graceful drain on SIGTERM/SIGINT/SIGQUIT/SIGHUP: listener closed at once,
//! every echo owed delivered, a clean FIN (never RST) for every connection
//! that got all it was owed, prompt exit, one deadline, a second signal to
//! force, RST for connections cut off with output undelivered, and the exit
//! statuses.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// Opens a connection whose client writes lines without reading until the
/// server stops taking them: the server ends up holding output it cannot send.
fn stuck_client(
    server: &Server,
) -> (
    TcpStream,
    std::thread::JoinHandle<(TcpStream, std::io::Result<()>)>,
) {
    let c = server.connect();
    let junk: Vec<u8> = (0..200_000).flat_map(|k| test_line(9, k, 100)).collect();
    let writer = write_in_background(c.try_clone().unwrap(), junk);
    // Give it time to fill every buffer on the way.
    std::thread::sleep(Duration::from_millis(500));
    (c, writer)
}

#[test]
fn each_stop_signal_starts_a_drain_that_exits_zero() {
    for sig in [Signal::TERM, Signal::INT, Signal::QUIT, Signal::HUP] {
        let mut server = Server::start(&[]);
        let mut c = server.connect();
        roundtrip(&mut c, b"x\n", b"x\n");
        server.signal(sig);
        assert_eq!(read_end(&mut c), End::Eof, "{sig:?}");
        let status = server.wait_exit(PATIENCE).expect("exits");
        assert_eq!(status.code(), Some(0), "{sig:?}; log:\n{}", server.log());
        assert!(server.log().contains("draining"), "{sig:?}");
        assert!(
            server
                .log()
                .contains("drain complete: 1 connections closed cleanly, 0 cut off")
        );
    }
}

#[test]
fn drain_delivers_complete_lines_drops_partial_and_refuses_new_connects() {
    let mut server = Server::start(&[]);
    let addr = server.addr;
    let mut c = server.connect();
    let mut lines = Vec::new();
    for k in 0..500 {
        lines.extend(test_line(3, k, 64));
    }
    c.write_all(&lines).unwrap();
    c.write_all(b"partial line, never echoed").unwrap();
    // Let the server read all of it before the signal.
    std::thread::sleep(Duration::from_millis(300));
    server.signal(Signal::TERM);
    assert!(server.wait_for_log("draining", PATIENCE));
    assert!(connect_refused(addr), "listener must close at once");
    assert_eq!(read_to_eof(&mut c), lines);
    server.expect_exit(0);
}

#[test]
fn client_that_keeps_sending_during_drain_gets_echoes_then_fin_not_rst() {
    let mut server = Server::start(&[]);
    let mut c = server.connect();
    let sender = EndlessSender::start(&c, 5, 50);
    std::thread::sleep(Duration::from_millis(300));
    server.signal(Signal::TERM);

    let (got, end) = read_until_end(&mut c);
    sender.stop();
    assert_eq!(end, End::Eof, "a clean FIN, not a reset");
    // What came back is exactly the first lines sent, each whole.
    assert!(got.ends_with(b"\n"));
    let want: Vec<u8> = (0..)
        .map(|k| test_line(5, k, 50))
        .take(got.len() / 50)
        .flatten()
        .collect();
    assert_eq!(got, want);
    assert!(!got.is_empty());
    server.expect_exit(0);
}

#[test]
fn client_that_keeps_sending_and_reads_late_loses_nothing() {
    // When the drain starts the server owes this client megabytes it has not
    // read yet, and the client never stops sending. The server must discard
    // its input and wait until every byte is acknowledged before it closes:
    // closing with unread input sends RST, which discards unsent output.
    let mut server = Server::start(&["--drain-timeout", "30"]);
    let mut c = server.connect();
    let sender = EndlessSender::start(&c, 6, 100);
    std::thread::sleep(Duration::from_millis(500));
    server.signal(Signal::TERM);
    assert!(server.wait_for_log("draining", PATIENCE));
    std::thread::sleep(Duration::from_millis(500));
    let (got, end) = read_until_end(&mut c);
    sender.stop();
    assert_eq!(end, End::Eof, "after {} bytes", got.len());
    assert!(got.len() > 1 << 20, "only {} bytes came back", got.len());
    let want: Vec<u8> = (0..got.len() / 100)
        .flat_map(|k| test_line(6, k, 100))
        .collect();
    assert!(got == want, "echo is not the lines sent, in order");
    server.expect_exit(0);
}

#[test]
fn hundred_idle_connections_drain_promptly() {
    let mut server = Server::start(&[]);
    let mut clients = server.connect_echoed(100);
    let t0 = Instant::now();
    server.signal(Signal::TERM);
    let status = server.wait_exit(PATIENCE).expect("exits");
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    // The default deadline is 10 s; an idle drain must not wait for it.
    assert!(
        took < Duration::from_secs(2),
        "drain of idle connections took {took:?}"
    );
    for c in &mut clients {
        assert_eq!(read_end(c), End::Eof);
    }
    assert!(
        server
            .log()
            .contains("100 connections closed cleanly, 0 cut off")
    );
}

#[test]
fn drain_deadline_cuts_off_and_exits_three() {
    let mut server = Server::start(&["--drain-timeout", "1"]);
    let (_c, writer) = stuck_client(&server);
    let t0 = Instant::now();
    server.signal(Signal::TERM);
    let status = server.wait_exit(PATIENCE).expect("exits at the deadline");
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(3), "{}", server.log());
    assert!(
        took >= Duration::from_millis(900),
        "cut off before the deadline: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "deadline overrun: {took:?}");
    assert!(
        server
            .log()
            .contains("0 connections closed cleanly, 1 cut off"),
        "{}",
        server.log()
    );
    drop(_c);
    let _ = writer.join();
}

#[test]
fn second_signal_exits_at_once() {
    let mut server = Server::start(&["--drain-timeout", "60"]);
    let (_c, writer) = stuck_client(&server);
    server.signal(Signal::TERM);
    assert!(server.wait_for_log("draining", PATIENCE));
    assert!(server.is_running(), "the stuck client holds the drain open");
    let t0 = Instant::now();
    server.signal(Signal::INT);
    let status = server
        .wait_exit(PATIENCE)
        .expect("exits on the second signal");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(3), "{}", server.log());
    drop(_c);
    let _ = writer.join();
}

#[test]
fn drain_is_concurrent_across_connections() {
    // Several slow readers: each needs a while to take its output, and all
    // of them must finish within one deadline (the seed gave each its own).
    let mut server = Server::start(&["--drain-timeout", "8"]);
    let mut readers = Vec::new();
    for i in 0..4 {
        let c = server.connect();
        let data: Vec<u8> = (0..20_000).flat_map(|k| test_line(i, k, 100)).collect();
        let writer = write_in_background(c.try_clone().unwrap(), data.clone());
        readers.push((c, writer, data));
    }
    std::thread::sleep(Duration::from_millis(500));
    server.signal(Signal::TERM);
    assert!(server.wait_for_log("draining", PATIENCE));
    let t0 = Instant::now();
    let handles: Vec<_> = readers
        .into_iter()
        .map(|(mut c, writer, data)| {
            std::thread::spawn(move || {
                // Read slowly: ~1 s for everything this client is owed.
                let mut got = Vec::new();
                let mut buf = [0u8; 64 * 1024];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) => panic!("read: {e}"),
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = writer.join();
                // A prefix of whole lines: those the server had read.
                assert!(!got.is_empty() && got.ends_with(b"\n"));
                assert_eq!(&data[..got.len()], &got[..]);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let status = server.wait_exit(PATIENCE).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(t0.elapsed() < Duration::from_secs(8));
}

#[test]
fn one_deadline_covers_all_connections() {
    // Three clients that never read: with a deadline per connection, one
    // after another (as the seed does), this would take 3 × 2 s.
    let mut server = Server::start(&["--drain-timeout", "2"]);
    let stuck: Vec<_> = (0..3).map(|_| stuck_client(&server)).collect();
    let t0 = Instant::now();
    server.signal(Signal::TERM);
    let status = server.wait_exit(PATIENCE).expect("exits");
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(3));
    assert!(took < Duration::from_millis(4500), "took {took:?}");
    assert!(server.log().contains("3 cut off"), "{}", server.log());
    drop(stuck);
}

#[test]
fn two_stop_signals_sent_back_to_back_both_count() {
    // Sent this close, both land in one read of the signal pipe: the second
    // must still force the exit rather than merge into the first.
    for second in [Signal::INT, Signal::HUP] {
        let mut server = Server::start(&["--drain-timeout", "60"]);
        let (c, writer) = stuck_client(&server);
        server.signal(Signal::TERM);
        server.signal(second);
        let status = server
            .wait_exit(PATIENCE)
            .expect("the second signal forces the exit, long before the deadline");
        assert_eq!(status.code(), Some(3), "{second:?}: {}", server.log());
        assert!(server.log().contains("during the drain: exiting now"));
        drop(c);
        let _ = writer.join();
    }
}

#[test]
fn cut_off_connections_are_reset_and_finished_ones_get_fin() {
    // At the deadline and on a second signal alike: a connection still owed
    // output is reset (a FIN after a truncated echo would claim the stream
    // ended normally), while one that got everything keeps its clean FIN.
    for force in [false, true] {
        let timeout = if force { "60" } else { "1" };
        let mut server = Server::start(&["--drain-timeout", timeout, "--log-level", "debug"]);
        let mut done = server.connect_echoed(1).remove(0);
        let (mut stuck, writer) = stuck_client(&server);
        // Owed output must be waiting in the server itself, not only in the
        // kernel (that part is still delivered, with a FIN): wait until the
        // stuck client is paused for backpressure.
        let give_up = Instant::now() + PATIENCE;
        while !server.log().contains("backpressured=1") {
            assert!(Instant::now() < give_up, "never backpressured");
            server.signal(Signal::USR1);
            std::thread::sleep(Duration::from_millis(200));
        }
        server.signal(Signal::TERM);
        assert!(server.wait_for_log("draining", PATIENCE));
        assert_eq!(read_end(&mut done), End::Eof, "force: {force}");
        drop(done);
        assert!(server.wait_for_log("#1 closed", PATIENCE));
        if force {
            server.signal(Signal::INT);
        }
        let status = server.wait_exit(PATIENCE).expect("exits");
        assert_eq!(status.code(), Some(3), "{}", server.log());
        assert!(
            server
                .log()
                .contains("1 connections closed cleanly, 1 cut off"),
            "{}",
            server.log()
        );
        // The log names the one given up on, and what it was still owed.
        assert!(
            server.log().contains(" cut off: closing (drain), "),
            "{}",
            server.log()
        );
        // With the socket's send window and MSS from TCP_INFO: this client
        // stopped reading, so its window is shut.
        let log = server.log();
        let line = log.lines().find(|l| l.contains(" cut off: ")).unwrap();
        assert!(line.contains(" bytes unsent, "), "{line}");
        assert!(
            line.contains(" sent but not acknowledged; TCP_INFO: "),
            "{line}"
        );
        assert!(
            line.contains("; TCP_INFO: send window 0 B, MSS ")
                && line.contains(" segments in flight: the peer is not reading"),
            "{line}"
        );
        assert!(number_after(line, "MSS ") > 0, "{line}");
        let (echoed, end) = read_until_end(&mut stuck);
        assert_eq!(
            end,
            End::Reset,
            "force: {force}; after {} echoed bytes",
            echoed.len()
        );
        let _ = writer.join();
    }
}
