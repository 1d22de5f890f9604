//! The seed's other two framings through the real binary: `fixed:N` and
//! `length` (4-byte big-endian length + body), split and coalesced, limits.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

fn length_frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

#[test]
fn fixed_frames_are_echoed_whole_split_or_coalesced() {
    let server = Server::start(&["--framing", "fixed:4"]);
    let mut c = server.connect();
    // Split: nothing until the 4th byte.
    c.write_all(b"ab").unwrap();
    assert_silent(&mut c, Duration::from_millis(300));
    roundtrip(&mut c, b"\n\0", b"ab\n\0");
    // Coalesced: three frames and a partial one.
    c.write_all(b"1234567890ab\xff\xfe").unwrap();
    assert_eq!(read_n(&mut c, 12), b"1234567890ab");
    assert_silent(&mut c, Duration::from_millis(300));
    // The partial frame is dropped at half-close.
    half_close(&c);
    assert_eq!(read_end(&mut c), End::Eof);
}

#[test]
fn fixed_frame_size_must_fit_max_frame() {
    let server = Server::start(&["--framing", "fixed:8", "--max-frame", "8"]);
    let mut c = server.connect();
    roundtrip(&mut c, b"12345678", b"12345678");
}

#[test]
fn length_frames_echo_header_and_body() {
    let server = Server::start(&["--framing", "length"]);
    let mut c = server.connect();
    let hello = length_frame(b"hello");
    roundtrip(&mut c, &hello, &hello);
    // A zero-length frame is a frame.
    roundtrip(&mut c, &length_frame(b""), &[0, 0, 0, 0]);
    // Split inside the header, then inside the body.
    let frame = length_frame(b"split across packets\n\r\0");
    c.write_all(&frame[..2]).unwrap();
    assert_silent(&mut c, Duration::from_millis(200));
    c.write_all(&frame[2..9]).unwrap();
    assert_silent(&mut c, Duration::from_millis(200));
    roundtrip(&mut c, &frame[9..], &frame);
    // Coalesced.
    let mut many = Vec::new();
    for k in 0..100 {
        many.extend(length_frame(&test_line(0, k, k + 1)));
    }
    roundtrip(&mut c, &many, &many);
}

#[test]
fn declared_length_over_max_frame_closes_at_once_echoing_nothing_of_it() {
    let server = Server::start(&["--framing", "length", "--max-frame", "1000"]);
    let mut other = server.connect();
    let mut c = server.connect();
    let ok = length_frame(b"fine");
    c.write_all(&ok).unwrap();
    // Declares 1001 bytes and sends only the header: the server must not
    // wait for the body.
    c.write_all(&1001u32.to_be_bytes()).unwrap();
    c.write_all(b"some of the body").unwrap();
    assert_eq!(read_to_eof(&mut c), ok);
    assert!(server.wait_for_log(&c.local_addr().unwrap().to_string(), PATIENCE));
    let at_limit = length_frame(&[7u8; 1000]);
    roundtrip(&mut other, &at_limit, &at_limit);
}

#[test]
fn partial_length_frame_is_dropped_at_eof() {
    let server = Server::start(&["--framing", "length"]);
    let mut c = server.connect();
    let whole = length_frame(b"whole");
    let mut msg = whole.clone();
    msg.extend_from_slice(&length_frame(b"cut short")[..7]);
    c.write_all(&msg).unwrap();
    half_close(&c);
    assert_eq!(read_to_eof(&mut c), whole);
}

#[test]
fn large_length_frame_arriving_slowly_is_echoed() {
    let server = Server::start(&["--framing", "length", "--max-frame", "2000000"]);
    let mut c = server.connect();
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let frame = length_frame(&body);
    let writer = std::thread::spawn({
        let mut w = c.try_clone().unwrap();
        let frame = frame.clone();
        move || {
            for chunk in frame.chunks(100_003) {
                w.write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    assert!(read_n(&mut c, frame.len()) == frame);
    writer.join().unwrap();
}
