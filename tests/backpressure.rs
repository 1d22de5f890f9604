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

#[test]
fn memory_stays_bounded_when_every_write_comes_up_short() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    // Clients that write and read at the same time while the server's
    // writes are short: its output rarely
    // empties, and reading resumes before it does. Bytes already written
    // must be released then too, not only when the output empties.
    // A small send buffer (as under TCP memory pressure, or with
    // net.ipv4.tcp_wmem capped) makes every write to these clients short.
    let server = Server::start(&["--send-buffer", "32768"]);
    let baseline_kib = server.rss_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for tag in 0..20 {
        let c = server.connect();
        let mut w = c.try_clone().unwrap();
        let stop_w = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut k = 0;
            while !stop_w.load(Ordering::Relaxed) {
                if w.write_all(&test_line(tag, k, 200)).is_err() {
                    break;
                }
                k += 1;
            }
            let _ = w.shutdown(std::net::Shutdown::Write);
        }));
        let mut r = c;
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
        }));
    }
    let mut peak_kib = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(250));
        peak_kib = peak_kib.max(server.rss_kib().saturating_sub(baseline_kib));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    // Bounded: 20 connections × (water marks + one read's replies) is a few
    // MiB. Unbounded, every byte ever echoed stays: hundreds of MiB.
    assert!(
        peak_kib < 48 * 1024,
        "server RSS grew by {peak_kib} KiB with short writes"
    );
}
