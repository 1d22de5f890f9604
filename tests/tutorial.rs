//! The tutorial's step programs (`examples/step*.rs`, explained in
//! `docs/tutorial/`), each run as a real process against real loopback
//! sockets. What a page says its step does, the step does, byte for byte;
//! step 3's deliberate bug included.
//!
//! `cargo test` builds the examples next to the test binaries; the tests
//! find them there, as `tests/chat.rs` finds `examples/chat`.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// How long "nothing more arrives" is watched for. The server is idle and
/// on loopback: had the bytes been sent, they would be here within 1 s even
/// on a loaded machine.
const STALL: Duration = Duration::from_secs(1);

/// Starts a step program on a free port; `Server` waits for its
/// "listening on ADDR" line and kills it when dropped.
fn start(name: &str, args: &[&str]) -> Server {
    let mut cmd = Command::new(example(name));
    cmd.args(["--listen", "127.0.0.1:0"]).args(args);
    Server::spawn(cmd)
}

/// The server's thread count, from /proc/PID/status.
fn threads(server: &Server) -> u64 {
    server.proc_status("Threads")
}

/// Waits until `server` has `n` threads.
fn wait_for_threads(server: &Server, n: u64) {
    let give_up = Instant::now() + PATIENCE;
    while threads(server) != n {
        assert!(
            Instant::now() < give_up,
            "{} threads, expected {n}",
            threads(server)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `send` while the server is stopped (SIGSTOP), so that everything it
/// sends is waiting in the kernel before the server looks: one readiness
/// edge for all of it, whatever the timing of the machine.
fn while_stopped(server: &Server, send: impl FnOnce()) {
    server.signal(Signal::STOP);
    send();
    // Loopback delivers during the send call; this is only for slack.
    std::thread::sleep(Duration::from_millis(200));
    server.signal(Signal::CONT);
}

/// A line as wide as can be: every byte value but '\n', then '\n'.
fn awkward_line() -> Vec<u8> {
    let mut line = every_byte_but_newline();
    line.push(b'\n');
    line
}

// ------------------------------------------------------------------ step 1

#[test]
fn step1_echoes_lines_with_one_thread_per_client() {
    let server = start("step1_blocking", &[]);
    let mut a = server.connect();
    let mut b = server.connect();
    roundtrip(&mut a, b"hello\n", b"hello\n");
    roundtrip(&mut b, &awkward_line(), &awkward_line());
    // The main thread accepting, and one per client.
    wait_for_threads(&server, 3);

    // a's thread waits inside read_until for the rest of its line; b's
    // thread is not held up by it.
    a.write_all(b"abc").unwrap();
    roundtrip(&mut b, b"x\ny\n", b"x\ny\n");
    roundtrip(&mut a, b"def\n", b"abcdef\n");

    // EOF in the middle of a line: the line is dropped, then EOF.
    a.write_all(b"bye\npartial").unwrap();
    half_close(&a);
    assert_eq!(read_to_eof(&mut a), b"bye\n");
    drop(a);
    drop(b);
    // Their threads end with them.
    wait_for_threads(&server, 1);
}

// ------------------------------------------------------------------ step 2

#[test]
fn step2_echoes_every_client_on_one_thread() {
    let server = start("step2_nonblocking", &[]);
    let mut clients: Vec<TcpStream> = (0..10).map(|_| server.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let line = test_line(i, 0, 40);
        roundtrip(c, &line, &line);
    }
    roundtrip(&mut clients[3], &awkward_line(), &awkward_line());
    assert_eq!(threads(&server), 1);
    // Bytes, not lines: half a line comes back at once (step 4 changes this).
    roundtrip(&mut clients[0], b"abc", b"abc");
}

#[test]
fn step2_accepts_every_client_that_arrived_behind_one_event() {
    let server = start("step2_nonblocking", &[]);
    let mut clients = Vec::new();
    // Twenty connects while the server is stopped: the kernel completes
    // them all, and the listener gets one edge for the lot.
    while_stopped(&server, || {
        for i in 0..20 {
            let mut c = server.connect();
            c.write_all(&test_line(i, 0, 20)).unwrap();
            clients.push(c);
        }
    });
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(read_n(c, 20), test_line(i, 0, 20), "client {i}");
    }
}

// ------------------------------------------------------------------ step 3

/// One write of 10000 bytes, while the server is stopped: one edge.
fn burst(server: &Server) -> (TcpStream, Vec<u8>) {
    let mut c = server.connect();
    roundtrip(&mut c, b"hi\n", b"hi\n");
    let mut data = vec![b'x'; 9999];
    data.push(b'\n');
    while_stopped(server, || c.write_all(&data).unwrap());
    (c, data)
}

#[test]
fn step3_buggy_reads_once_per_event_and_stalls() {
    let server = start("step3_edge_triggered", &["--buggy"]);
    let (mut c, data) = burst(&server);
    // One event, one read of 4096 bytes, and then nothing: the other 5904
    // bytes sit in the server's socket, and no event will come for them.
    assert_eq!(read_n(&mut c, 4096), data[..4096]);
    assert_silent(&mut c, STALL);
    // Only a new edge (any new byte) moves them, 4096 bytes at a time.
    c.write_all(b"!").unwrap();
    assert_eq!(read_n(&mut c, 4096), data[4096..8192]);
    assert_silent(&mut c, STALL);
}

#[test]
fn step3_reading_until_would_block_delivers_everything() {
    let server = start("step3_edge_triggered", &[]);
    let (mut c, data) = burst(&server);
    assert_eq!(read_n(&mut c, data.len()), data);
}

// ------------------------------------------------------------------ step 4

#[test]
fn step4_echoes_lines_split_and_coalesced() {
    let server = start("step4_framing", &[]);
    let mut c = server.connect();
    // 拆包: half a line is kept, not echoed, until its '\n' arrives.
    c.write_all(b"abc").unwrap();
    assert_silent(&mut c, Duration::from_millis(300));
    roundtrip(&mut c, b"def\n", b"abcdef\n");
    // 粘包: two lines in one packet, two lines back.
    roundtrip(&mut c, b"abc\ndef\n", b"abc\ndef\n");
    roundtrip(&mut c, &awkward_line(), &awkward_line());
    // A line split over three packets, the '\n' alone in the last.
    for part in [&b"sp"[..], b"lit"] {
        c.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    roundtrip(&mut c, b"\n", b"split\n");
    // At EOF an unfinished line is dropped, never echoed.
    c.write_all(b"bye\npartial").unwrap();
    half_close(&c);
    assert_eq!(read_to_eof(&mut c), b"bye\n");
}

#[test]
fn step4_closes_only_the_client_whose_line_never_ends() {
    let server = start("step4_framing", &[]);
    let mut other = server.connect();
    let mut c = server.connect();
    c.write_all(&vec![b'z'; 64 * 1024 + 1]).unwrap();
    // All of it was read before the limit was hit, so close() sends FIN.
    assert_eq!(read_end(&mut c), End::Eof);
    roundtrip(&mut other, b"still here\n", b"still here\n");
}

// ------------------------------------------------------------------ step 5

#[test]
fn step5_pauses_a_client_that_does_not_read_and_loses_nothing() {
    let server = start("step5_backpressure", &[]);
    let mut c = server.connect();
    roundtrip(&mut c, b"hello\n", b"hello\n");
    let baseline_kib = server.rss_kib();
    let data: Vec<u8> = (0..(32 << 20) / 128)
        .flat_map(|k| test_line(5, k, 128))
        .collect();
    let (writer, written) = write_until_stalled(&c, data.clone());
    assert!(
        written < data.len(),
        "the client sent all {written} bytes without reading: no backpressure?"
    );
    // Paused: the echoes wait in the kernel and in at most ~128 KiB of
    // output, not in server memory. Without the pause it would hold MiBs.
    let grown_kib = server.rss_kib().saturating_sub(baseline_kib);
    assert!(grown_kib < 4 * 1024, "server RSS grew by {grown_kib} KiB");

    // Resumed: reading drains the output, the server reads again by itself
    // (no new event comes for data queued during the pause), and every
    // byte comes back in order.
    assert!(read_n(&mut c, data.len()) == data, "echo differs");
    writer.join().unwrap();
    roundtrip(&mut c, b"done\n", b"done\n");
}

// ------------------------------------------------------------------ step 6

#[test]
fn step6_drain_delivers_every_echo_then_fin_and_exits_zero() {
    let mut server = start("step6_drain", &[]);
    let mut idle = server.connect();
    roundtrip(&mut idle, b"idle\n", b"idle\n");
    // A client that keeps sending and does not read: the server pauses it
    // with echoes pending, and its writes stall.
    let mut busy = server.connect();
    let sender = EndlessSender::start(&busy, 6, 128);
    std::thread::sleep(Duration::from_millis(500));

    server.signal(Signal::TERM);
    assert!(server.wait_for_log("SIGTERM: draining 2 connections", PATIENCE));
    assert!(connect_refused(server.addr), "still accepting");
    assert_eq!(read_end(&mut idle), End::Eof);

    // The client still sends (the server reads and discards it) while it
    // reads every echo of every line the server took, in order, then FIN:
    // not RST, which would throw away echoes not yet read.
    let (got, end) = read_until_end(&mut busy);
    assert_eq!(end, End::Eof);
    assert!(
        got.len() > 64 * 1024,
        "only {} bytes: pending echoes lost",
        got.len()
    );
    assert_eq!(got.len() % 128, 0, "a line cut short");
    let sent: Vec<u8> = (0..got.len() / 128)
        .flat_map(|k| test_line(6, k, 128))
        .collect();
    assert!(got == sent, "echo differs");

    // After its FIN the server still reads and discards: had it closed
    // the socket, the next line the client sends would draw an RST, and
    // the sender's writes would fail.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!sender.is_finished(), "the server closed before the client");

    // It closes each connection once its client has closed too (then
    // nothing can arrive to turn the close into RST), and exits 0.
    sender.stop();
    drop(idle);
    drop(busy);
    server.expect_exit(0);
    assert!(server.log().contains("drain complete"));
}

#[test]
fn step6_deadline_cuts_off_a_client_that_never_reads() {
    let mut server = start("step6_drain", &["--drain-timeout", "1"]);
    let c = server.connect();
    let junk: Vec<u8> = (0..100_000).flat_map(|k| test_line(7, k, 100)).collect();
    let _writer = write_in_background(c.try_clone().unwrap(), junk);
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    server.signal(Signal::TERM);
    server.expect_exit(3);
    assert!(
        signalled.elapsed() >= Duration::from_millis(900),
        "exited before the deadline"
    );
    assert!(server.log().contains("cutting off 1 connections"));
}
