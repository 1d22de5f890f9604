//! Backpressure: a client that sends without reading cannot grow the
//! server's memory without bound, and loses nothing when it reads at last.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn client_that_does_not_read_is_paused_then_gets_every_byte() {
    let server = Server::start(&[]);
    let baseline_kib = server.rss_kib();
    let mut c = server.connect();
    let data: Vec<u8> = (0..(64 << 20) / 128)
        .flat_map(|k| test_line(0, k, 128))
        .collect();

    let (writer, written) = write_until_stalled(&c, data.clone());
    assert!(
        written < data.len(),
        "the client could send everything without reading"
    );
    let grown_kib = server.rss_kib().saturating_sub(baseline_kib);
    // Without backpressure the server would hold tens of MiB of echoes.
    assert!(
        grown_kib < 16 * 1024,
        "server RSS grew by {grown_kib} KiB while the client did not read"
    );

    // Now read: every byte comes back, in order, and the writer finishes
    // (reading resumes although no new readable event arrives for data
    // already queued while paused).
    assert!(read_n(&mut c, data.len()) == data, "echo differs");
    writer.join().unwrap();
    roundtrip(&mut c, b"done\n", b"done\n");
}

#[test]
fn paused_connection_does_not_hold_up_others() {
    let server = Server::start(&[]);
    let c = server.connect();
    let junk: Vec<u8> = (0..100_000).flat_map(|k| test_line(1, k, 100)).collect();
    let _writer = write_in_background(c.try_clone().unwrap(), junk);
    std::thread::sleep(Duration::from_millis(500));
    let mut other = server.connect();
    for k in 0..100 {
        let line = test_line(2, k, 60);
        roundtrip(&mut other, &line, &line);
    }
}
