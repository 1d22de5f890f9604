//! Line echo over real loopback sockets: framing at the byte level
//! (拆包/粘包), EOF and half-close, resets, and frame limits.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

#[test]
fn echoes_a_line() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    roundtrip(&mut c, b"hello\n", b"hello\n");
}

#[test]
fn split_packet_is_joined_before_echo() {
    // 拆包: "abc" then "def\n" is one line; nothing comes back after "abc".
    let server = Server::start(&[]);
    let mut c = server.connect();
    c.write_all(b"abc").unwrap();
    assert_silent(&mut c, Duration::from_millis(300));
    roundtrip(&mut c, b"def\n", b"abcdef\n");
}

#[test]
fn coalesced_packet_gives_every_line() {
    // 粘包: two lines in one write.
    let server = Server::start(&[]);
    let mut c = server.connect();
    roundtrip(&mut c, b"abc\ndef\n", b"abc\ndef\n");
}

#[test]
fn every_byte_value_comes_back_unchanged() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    let mut msg = every_byte_but_newline();
    msg.extend_from_slice(b"\r\n\n\0\xff\n\n");
    roundtrip(&mut c, &msg, &msg);
}

#[test]
fn partial_line_is_dropped_at_half_close() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    c.write_all(b"one\ntwo\nthree-without-newline").unwrap();
    half_close(&c);
    assert_eq!(read_to_eof(&mut c), b"one\ntwo\n");
}

#[test]
fn partial_line_alone_gets_nothing_then_eof() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    c.write_all(b"no newline").unwrap();
    half_close(&c);
    assert_eq!(read_end(&mut c), End::Eof);
}

#[test]
fn half_close_gets_every_echo_then_eof() {
    let server = Server::start(&[]);
    let mut c = server.connect();
    let mut sent = Vec::new();
    for k in 0..2000 {
        sent.extend(test_line(0, k, 100));
    }
    let writer = write_in_background(c.try_clone().unwrap(), sent.clone());
    let (w, result) = writer.join().unwrap();
    result.unwrap();
    half_close(&w);
    assert_eq!(read_to_eof(&mut c), sent);
}

#[test]
fn reset_mid_stream_leaves_the_server_healthy() {
    let server = Server::start(&[]);
    let mut bystander = server.connect();
    roundtrip(&mut bystander, b"before\n", b"before\n");

    // A client resets with a partial line buffered on the server.
    let mut c = server.connect();
    roundtrip(&mut c, b"x\n", b"x\n");
    c.write_all(b"partial").unwrap();
    reset(c);

    // A client resets while the server holds output it never read.
    let c = server.connect();
    let junk: Vec<u8> = (0..20_000).flat_map(|k| test_line(1, k, 200)).collect();
    let writer = write_in_background(c.try_clone().unwrap(), junk);
    std::thread::sleep(Duration::from_millis(300));
    reset(c);
    let _ = writer.join();

    // A burst of connect-and-reset clients.
    for _ in 0..200 {
        let c = server.connect();
        let _ = (&c).write_all(b"abc\n");
        reset(c);
    }

    roundtrip(&mut bystander, b"after\n", b"after\n");
    let mut fresh = server.connect();
    roundtrip(&mut fresh, b"fresh\n", b"fresh\n");
    let mut server = server;
    assert!(server.is_running());
    assert!(!server.log().contains("panicked"));
}

#[test]
fn line_over_max_frame_closes_only_that_connection() {
    let server = Server::start(&["--max-frame", "1024"]);
    let mut other = server.connect();
    roundtrip(&mut other, b"other\n", b"other\n");

    let mut c = server.connect();
    let mut msg = b"first\nsecond\n".to_vec();
    msg.extend(vec![b'x'; 5000]);
    c.write_all(&msg).unwrap();
    // The complete lines before it are echoed in full, then a clean FIN.
    assert_eq!(read_to_eof(&mut c), b"first\nsecond\n");

    let peer = c.local_addr().unwrap().to_string();
    assert!(
        server.wait_for_log(&peer, PATIENCE),
        "warning names the peer: {}",
        server.log()
    );
    assert!(
        server
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains(&peer))
    );

    roundtrip(&mut other, b"still here\n", b"still here\n");
    let mut fresh = server.connect();
    roundtrip(&mut fresh, b"new\n", b"new\n");
}

#[test]
fn client_still_sending_an_oversized_line_gets_every_echo_and_eof() {
    // The client sends 1 MiB of lines, then an endless line, and reads only
    // later: when the server gives up on the connection it still owes most of
    // the echoes. Closing then, with the client's bytes unread, would send
    // RST and throw away what the kernel had not yet sent.
    let server = Server::start(&["--max-frame", "1024"]);
    let mut c = server.connect();
    let lines: Vec<u8> = (0..(1 << 20) / 128)
        .flat_map(|k| test_line(4, k, 128))
        .collect();
    let mut msg = lines.clone();
    msg.extend(vec![b'y'; 16 << 20]);
    // The writer fails once the server has closed; that is expected.
    let writer = write_in_background(c.try_clone().unwrap(), msg);
    std::thread::sleep(Duration::from_millis(1000));
    let (got, end) = read_until_end(&mut c);
    assert!(
        got == lines,
        "got {} of {} bytes of echoes",
        got.len(),
        lines.len()
    );
    assert_eq!(end, End::Eof);
    let _ = writer.join();
}

#[test]
fn a_closing_client_that_does_not_read_is_reset_at_the_close_deadline_and_named() {
    // An over-long line closes the connection, and the server still owes
    // the echoes of the lines before it; the client does not read them
    // (its 4 KiB receive buffer, set before connect, and the server's
    // 32 KiB send buffer keep most of them in the server). After the close
    // deadline (10 s) the server gives up on it: an RST, since a FIN would
    // say the echo was complete, and a line at info that names the peer
    // with what it was still owed, as a drain's cut-off does. (A soak
    // client reset this way was once a mystery: the line was at debug.)
    let server = Server::start(&["--max-frame", "1024", "--send-buffer", "32768"]);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut c: std::net::TcpStream = socket.into();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    // 80 KB of echoes: more than the kernel holds on the way, less than
    // the output over which the server would stop reading before it saw
    // the over-long line.
    let lines: Vec<u8> = (0..80_000 / 100)
        .flat_map(|k| test_line(5, k, 100))
        .collect();
    let mut msg = lines.clone();
    msg.extend(vec![b'z'; 1025]);
    c.write_all(&msg).unwrap();
    let peer = c.local_addr().unwrap();
    let named =
        format!(" from {peer} cut off at its close deadline (10s): closing (frame too long");
    let started = std::time::Instant::now();
    assert!(
        server.wait_for_log(&named, PATIENCE),
        "no close-deadline line for {peer}: {}",
        server.log()
    );
    assert!(started.elapsed() >= Duration::from_secs(9), "cut off early");
    let log = server.log();
    let line = log.lines().find(|l| l.contains(&named)).unwrap();
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains(" bytes unsent, "), "{line}");
    assert!(
        line.contains(" sent but not acknowledged; TCP_INFO: "),
        "{line}"
    );
    assert!(number_after(line, ", ") > 0, "{line}");
    // The client sees an RST, not a FIN, and not all of its echoes.
    let (got, end) = read_until_end(&mut c);
    assert_eq!(
        end,
        End::Reset,
        "after {} of {} bytes",
        got.len(),
        lines.len()
    );
    assert!(got.len() < lines.len());
    assert!(lines.starts_with(&got), "the echo it got is wrong");
}

#[test]
fn line_exactly_at_max_frame_is_echoed_one_more_byte_is_not() {
    let server = Server::start(&["--max-frame", "100"]);
    let mut c = server.connect();
    let mut at_limit = vec![b'a'; 100];
    at_limit.push(b'\n');
    roundtrip(&mut c, &at_limit, &at_limit);

    let mut over = vec![b'b'; 101];
    over.push(b'\n');
    c.write_all(&over).unwrap();
    assert_eq!(read_end(&mut c), End::Eof);
}

#[test]
fn three_mebibyte_line_is_echoed_intact() {
    let server = Server::start(&["--max-frame", "4194304"]);
    let mut c = server.connect();
    let mut line: Vec<u8> = (0..3 << 20)
        .map(|i| (i % 251) as u8)
        .map(|b| if b == b'\n' { 0 } else { b })
        .collect();
    line.push(b'\n');
    let writer = write_in_background(c.try_clone().unwrap(), line.clone());
    assert_eq!(read_n(&mut c, line.len()), line);
    writer.join().unwrap().1.unwrap();
}
