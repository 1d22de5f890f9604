//! The handler seam, proved by a second application: `examples/chat.rs`, a
//! chat room whose handler writes to other connections, with the loop's
//! backpressure and drain.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

fn chat_binary() -> PathBuf {
    // `cargo test` builds the examples next to the test binaries' target.
    let path = PathBuf::from(BIN).parent().unwrap().join("examples/chat");
    assert!(
        path.exists(),
        "{} missing: plain `cargo test` builds it (`--all-targets` builds it as a test), or `cargo build --example chat`",
        path.display()
    );
    path
}

fn start_chat() -> Server {
    let mut cmd = Command::new(chat_binary());
    cmd.args(["--listen", "127.0.0.1:0"]);
    Server::spawn(cmd)
}

/// Joins the room; returns the stream and the id the room gave it.
fn join(server: &Server) -> (TcpStream, String) {
    let mut c = server.connect();
    let line = read_line(&mut c);
    let id = line
        .strip_prefix("welcome ")
        .expect("welcome line")
        .trim()
        .to_string();
    (c, id)
}

fn read_line(c: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        let b = read_n_into(c, &mut byte);
        line.push(b);
    }
    String::from_utf8(line).unwrap()
}

fn read_n_into(c: &mut TcpStream, byte: &mut [u8; 1]) -> u8 {
    std::io::Read::read_exact(c, byte).expect("read");
    byte[0]
}

#[test]
fn lines_go_to_every_other_member_and_leaving_is_announced() {
    let server = start_chat();
    let (mut a, ida) = join(&server);
    let (mut b, idb) = join(&server);
    assert_eq!(read_line(&mut a), format!("{idb}: joined\n"));
    let (mut c, idc) = join(&server);
    assert_eq!(read_line(&mut a), format!("{idc}: joined\n"));
    assert_eq!(read_line(&mut b), format!("{idc}: joined\n"));

    a.write_all(b"hello room\n").unwrap();
    assert_eq!(read_line(&mut b), format!("{ida}: hello room\n"));
    assert_eq!(read_line(&mut c), format!("{ida}: hello room\n"));
    assert_silent(&mut a, Duration::from_millis(200));

    // Split and coalesced input from b.
    b.write_all(b"spl").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    b.write_all(b"it\none\ntwo\n").unwrap();
    for want in ["split", "one", "two"] {
        assert_eq!(read_line(&mut a), format!("{idb}: {want}\n"));
        assert_eq!(read_line(&mut c), format!("{idb}: {want}\n"));
    }

    drop(c);
    assert_eq!(read_line(&mut a), format!("{idc}: left\n"));
    assert_eq!(read_line(&mut b), format!("{idc}: left\n"));
}

#[test]
fn a_member_who_does_not_read_pauses_the_sender_and_loses_nothing() {
    let server = start_chat();
    let baseline_kib = server.rss_kib();
    let (sender, ids) = join(&server);
    let (mut slow, _) = join(&server);
    let mut sender_reader = BufReader::new(sender.try_clone().unwrap());
    let mut joined = String::new();
    sender_reader.read_line(&mut joined).unwrap();

    let lines: Vec<Vec<u8>> = (0..200_000).map(|k| test_line(1, k, 100)).collect();
    let (writer, written) = write_until_stalled(&sender, lines.concat());
    assert!(written < lines.len() * 100, "the sender was never paused");
    let grown_kib = server.rss_kib().saturating_sub(baseline_kib);
    assert!(grown_kib < 16 * 1024, "chat server grew by {grown_kib} KiB");

    // The slow member reads at last: every line, in order.
    let mut reader = BufReader::new(slow.try_clone().unwrap());
    for (k, line) in lines.iter().enumerate() {
        let mut got = String::new();
        reader.read_line(&mut got).unwrap();
        let want = format!("{ids}: {}", String::from_utf8_lossy(line));
        assert!(got == want, "line {k}: {got:?}");
    }
    writer.join().unwrap();
    slow.write_all(b"caught up\n").unwrap();
    let mut got = String::new();
    sender_reader.read_line(&mut got).unwrap();
    assert!(got.ends_with(": caught up\n"), "{got:?}");
}

#[test]
fn drain_delivers_what_was_said_then_fin() {
    let mut server = start_chat();
    let (mut a, ida) = join(&server);
    let (mut b, _) = join(&server);
    let _ = read_line(&mut a); // b joined
    a.write_all(b"last words\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal(Signal::TERM);
    assert_eq!(
        read_to_eof(&mut b),
        format!("{ida}: last words\n").into_bytes()
    );
    assert_eq!(read_end(&mut a), End::Eof);
    server.expect_exit(0);
}

#[test]
fn the_room_refuses_several_workers() {
    let out = Command::new(chat_binary())
        .args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("one loop"), "{err}");
}
