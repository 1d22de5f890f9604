//! The raw epoll echo server (`examples/raw_epoll.rs`, explained in
//! `docs/tutorial/why-epoll.md`), run as a real process against real
//! loopback sockets: the same bytes back as the mio steps give, split and
//! coalesced lines, the FIN behind a line, backpressure, and EOF.
//!
//! `cargo test` builds the examples next to the test binaries; the test
//! finds it there, as `tests/tutorial.rs` finds the step programs.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;

fn start() -> Server {
    let mut cmd = Command::new(example("raw_epoll"));
    cmd.args(["--listen", "127.0.0.1:0"]);
    Server::spawn(cmd)
}

#[test]
fn echoes_every_byte_value_and_many_clients() {
    let server = start();
    let mut c = server.connect();
    let mut line = every_byte_but_newline();
    line.push(b'\n');
    roundtrip(&mut c, &line, &line);
    // Ten clients, each echoed on its own connection, interleaved.
    let mut clients: Vec<_> = (0..10).map(|_| server.connect()).collect();
    for k in 0..3 {
        for (i, c) in clients.iter_mut().enumerate() {
            let line = test_line(i, k, 40);
            roundtrip(c, &line, &line);
        }
    }
}

#[test]
fn echoes_lines_split_and_coalesced() {
    let server = start();
    let mut c = server.connect();
    // 拆包: half a line is kept, not echoed, until its '\n' arrives.
    c.write_all(b"abc").unwrap();
    assert_silent(&mut c, Duration::from_millis(300));
    roundtrip(&mut c, b"def\n", b"abcdef\n");
    // 粘包: two lines in one write, both back; a line and a half, then the rest.
    roundtrip(&mut c, b"abc\ndef\n", b"abc\ndef\n");
    c.write_all(b"one\ntw").unwrap();
    roundtrip(&mut c, b"o\nthree\n", b"one\ntwo\nthree\n");
    // An empty line is a line.
    roundtrip(&mut c, b"\n", b"\n");
}

#[test]
fn a_half_close_gets_the_whole_lines_then_eof() {
    let server = start();
    let mut c = server.connect();
    // At EOF an unfinished line is dropped, never echoed; FIN, not RST.
    c.write_all(b"bye\npartial").unwrap();
    half_close(&c);
    assert_eq!(read_until_end(&mut c), (b"bye\n".to_vec(), End::Eof));
}

#[test]
fn a_line_and_the_fin_behind_one_event_get_the_echo_then_eof() {
    let server = start();
    let mut c = server.connect();
    roundtrip(&mut c, b"hello\n", b"hello\n");
    // Both arrive while the server is stopped: one event with RDHUP, and a
    // short read that must not end the reading (EPOLLRDHUP, step 3).
    server.signal(Signal::STOP);
    c.write_all(b"last words\n").unwrap();
    half_close(&c);
    std::thread::sleep(Duration::from_millis(100));
    server.signal(Signal::CONT);
    assert_eq!(read_until_end(&mut c), (b"last words\n".to_vec(), End::Eof));
}

#[test]
fn a_client_that_does_not_read_is_paused_and_loses_nothing() {
    let server = start();
    let mut c = server.connect();
    roundtrip(&mut c, b"hello\n", b"hello\n");
    let baseline_kib = server.rss_kib();
    let data: Vec<u8> = (0..(32 << 20) / 128)
        .flat_map(|k| test_line(7, k, 128))
        .collect();
    // The writes block: the server stopped reading at 1 MiB of unsent echo.
    let (writer, written) = write_until_stalled(&c, data.clone());
    assert!(written < data.len(), "all {written} bytes went out unread");
    // What the server holds is bounded: 1 MiB of echo, and buffers.
    let grown_kib = server.rss_kib().saturating_sub(baseline_kib);
    assert!(grown_kib < 8 * 1024, "the server grew by {grown_kib} KiB");
    let mut r = c.try_clone().unwrap();
    let got = read_n(&mut r, data.len());
    writer.join().unwrap();
    assert!(got == data, "the echo differs from what was sent");
    half_close(&c);
    assert_eq!(read_end(&mut r), End::Eof);
}
