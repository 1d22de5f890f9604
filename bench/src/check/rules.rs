//! The checks, one per rule of the edge-triggered checklist
//! (docs/tutorial/checklist.md). Each runs against a fresh server and
//! returns what it saw: `Ok` with a note, or `Err` with what went wrong.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Ctx;
use super::net::{
    End, Flood, Writer, anything_within, connect, connect_small_window, first_difference, line,
    lines, read_for, read_n, read_to_end,
};
use super::queues::{self, Queues};
use super::server::{Server, Signal};

pub type Outcome = Result<String, String>;

pub struct Check {
    /// The check's name, as `--only` takes it.
    pub name: &'static str,
    /// The rule of the checklist it catches breaking.
    pub rule: &'static str,
    /// What breaking the rule looks like, said on failure.
    pub why: &'static str,
    /// Whether the server is expected to exit during the check.
    pub ends_server: bool,
    pub run: fn(&Ctx, &mut Server) -> Outcome,
}

pub const CHECKS: &[Check] = &[
    Check {
        name: "split-lines",
        rule: "拆包: a line arrives in pieces",
        why: "keep the unfinished line in a buffer of the connection and echo it when its '\\n' comes, not before",
        ends_server: false,
        run: split_lines,
    },
    Check {
        name: "coalesced-lines",
        rule: "粘包: many lines arrive in one read",
        why: "one read can hold many lines and part of the next: echo every complete line of it, keep the rest",
        ends_server: false,
        run: coalesced_lines,
    },
    Check {
        name: "accept-until-eagain",
        rule: "accept until EAGAIN",
        why: "connections that arrive together get one listener event: accept in a loop until EAGAIN",
        ends_server: false,
        run: accept_until_eagain,
    },
    Check {
        name: "read-until-eagain",
        rule: "read until EAGAIN",
        why: "an edge-triggered readable event is reported once: read until EAGAIN, or bytes left in the socket get no new event (step 3's lost wake-up)",
        ends_server: false,
        run: read_until_eagain,
    },
    Check {
        name: "keep-writable",
        rule: "write until EAGAIN, and keep the writable flag",
        why: "after a short write or EAGAIN, keep the rest of the output and write it on the next writable event (EPOLLOUT), even if no byte comes in",
        ends_server: false,
        run: keep_writable,
    },
    Check {
        name: "resume-read",
        rule: "read again at once after resuming",
        why: "input that queued while reading was paused had its edges already, and the client cannot send more: on resuming, read at once, without waiting for an event",
        ends_server: false,
        run: resume_read,
    },
    Check {
        name: "rdhup-short-read",
        rule: "RDHUP after a short read",
        why: "a line and the client's FIN can come in one event: read and echo the line, then see the EOF (EPOLLRDHUP, or read until 0) and close",
        ends_server: false,
        run: rdhup_short_read,
    },
    Check {
        name: "eintr",
        rule: "EINTR",
        why: "a signal can interrupt epoll_wait (and Linux makes it fail with EINTR after SIGSTOP and SIGCONT even with no handler, see signal(7)): retry, never give up",
        ends_server: false,
        run: eintr,
    },
    Check {
        name: "read-budget",
        rule: "a read budget, with the connection queued again",
        why: "reading one connection until EAGAIN while it keeps sending starves every other one: read at most a budget per turn, and queue the connection to be read again by the loop itself (no new edge will come)",
        ends_server: false,
        run: read_budget,
    },
    Check {
        name: "drain",
        rule: "close by shutdown, then drain, then wait",
        why: "on SIGTERM stop accepting, deliver every echo owed, shutdown(SHUT_WR) for a FIN, read and discard until the client closes (close() with unread input sends RST and destroys what is queued), then exit 0",
        ends_server: true,
        run: drain,
    },
];

// ------------------------------------------------------------ the checks

fn split_lines(ctx: &Ctx, srv: &mut Server) -> Outcome {
    let mut c = connect(srv.addr, ctx.patience)?;
    c.set_nodelay(true).ok();
    // Every byte value but '\n': nothing in a line is special but its end.
    let mut whole = b"split:".to_vec();
    whole.extend((0u8..=255).filter(|&b| b != b'\n'));
    whole.push(b'\n');
    let body = &whole[..whole.len() - 1];
    for &b in body {
        write(&mut c, &[b])?;
        std::thread::sleep(Duration::from_millis(1));
    }
    if anything_within(&c, Duration::from_millis(300)) {
        let (early, _) = read_n(&mut c, body.len(), Duration::from_millis(300));
        return Err(format!(
            "{} bytes came back before the line's '\\n' was sent: the server echoes bytes, not lines",
            early.len()
        ));
    }
    write(&mut c, b"\n")?;
    expect_echo(
        srv,
        &mut c,
        &whole,
        ctx.stall,
        "a line sent one byte per write",
    )?;
    // Two lines cut at every point: the cut falls inside a line, next to
    // a '\n', and between the two.
    let two = b"ab\ncd\n";
    for cut in 1..two.len() {
        write(&mut c, &two[..cut])?;
        std::thread::sleep(Duration::from_millis(20));
        write(&mut c, &two[cut..])?;
        expect_echo(
            srv,
            &mut c,
            two,
            ctx.stall,
            &format!("\"ab\\ncd\\n\" cut after byte {cut}"),
        )?;
    }
    Ok(format!(
        "a {}-byte line (every byte value) sent one byte per write came back whole, once its '\\n' came; two lines cut at every point too",
        whole.len()
    ))
}

fn coalesced_lines(ctx: &Ctx, srv: &mut Server) -> Outcome {
    let mut c = connect(srv.addr, ctx.patience)?;
    // 2000 lines of 1 to 300 bytes (every 100th an empty line), one write.
    let data: Vec<u8> = (0..2000)
        .flat_map(|k| match k % 100 {
            0 => b"\n".to_vec(),
            _ => line("glued", k, 12 + (k * 37) % 290),
        })
        .collect();
    let writer = Writer::start(&c, data.clone(), data.len());
    expect_echo(srv, &mut c, &data, ctx.stall, "2000 lines in one write")?;
    writer
        .join()
        .map_err(|e| format!("the write failed: {e}"))?;
    // A line and a half, then the other half with a whole line.
    write(&mut c, b"one\ntw")?;
    std::thread::sleep(Duration::from_millis(50));
    write(&mut c, b"o\nthree\n")?;
    expect_echo(
        srv,
        &mut c,
        b"one\ntwo\nthree\n",
        ctx.stall,
        "\"one\\ntw\" + \"o\\nthree\\n\"",
    )?;
    Ok(format!(
        "2000 lines ({} bytes) in one write came back in order; a line and a half, then the rest, too",
        data.len()
    ))
}

fn accept_until_eagain(ctx: &Ctx, srv: &mut Server) -> Outcome {
    const N: usize = 100;
    // Every connect while the server is stopped: the kernel completes them
    // from the listen backlog, and the listener gets one edge for the lot.
    let clients = srv.while_stopped(|| {
        let mut clients = Vec::new();
        for i in 0..N {
            let Ok(mut c) = TcpStream::connect_timeout(&srv.addr, Duration::from_secs(1)) else {
                break; // the backlog is full
            };
            if c.write_all(&line("accept", i, 32)).is_err() {
                break;
            }
            clients.push(c);
        }
        clients
    });
    if clients.len() < 2 {
        return Err(format!(
            "only {} connects completed while the server was stopped: is its listen backlog that small?",
            clients.len()
        ));
    }
    let deadline = Instant::now() + ctx.stall;
    let mut served = 0;
    for (i, mut c) in clients.iter().enumerate() {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        c.set_read_timeout(Some(left)).ok();
        let mut got = [0u8; 32];
        if c.read_exact(&mut got).is_ok() && got[..] == line("accept", i, 32)[..] {
            served += 1;
        }
    }
    let n = clients.len();
    if served < n {
        return Err(format!(
            "{served} of {n} clients that connected while the server was stopped (one listener event for all) were served within {} s of SIGCONT",
            ctx.stall.as_secs_f64()
        ));
    }
    Ok(format!(
        "{n} connects behind one listener event (made while the server was stopped) were all served"
    ))
}

fn read_until_eagain(ctx: &Ctx, srv: &mut Server) -> Outcome {
    let mut c = connect(srv.addr, ctx.patience)?;
    roundtrip(srv, &mut c, b"hi\n", ctx.stall)?;
    let data = lines("burst", 0, 8192, 128); // 1 MiB
    // One write of all of it, while the server is stopped: what fits in
    // the buffers is there before the server looks, behind one edge.
    let (writer, queued) = srv.while_stopped(|| {
        let writer = Writer::start(&c, data.clone(), data.len());
        std::thread::sleep(Duration::from_millis(300));
        (writer, server_side(srv, &c).map_or(0, |q| q.unread))
    });
    let (got, end) = read_n(&mut c, data.len(), ctx.stall);
    if got.len() < data.len() {
        return Err(format!(
            "{} of {} bytes sent in one write ({queued} of them waiting in the server's socket before it looked) came back, {}{}",
            got.len(),
            data.len(),
            end.describe(ctx.stall),
            unread_note(srv, &c)
        ));
    }
    same(&got, &data, "the burst's echo")?;
    writer
        .join()
        .map_err(|e| format!("the write failed: {e}"))?;
    Ok(format!(
        "{} bytes in one write, {queued} of them waiting in the server's socket before it looked (one edge), came back whole",
        data.len()
    ))
}

fn keep_writable(ctx: &Ctx, srv: &mut Server) -> Outcome {
    // A small receive window: the client's side holds little, so the
    // server's socket fills up and its writes come up short.
    let mut c = connect_small_window(srv.addr, ctx.patience)?;
    roundtrip(srv, &mut c, b"hi\n", ctx.stall)?;
    let me = c.local_addr().map_err(|e| e.to_string())?;
    // Send in steps, without reading, until the server holds echo in its
    // own memory: bytes neither the client's socket nor the server's took.
    // Then stop. The rest can leave only on writable events.
    const STEP: usize = 256; // lines of 128 bytes: 32 KiB
    let (mut sent, mut k, mut held) = (0usize, 0usize, 0u64);
    let give_up = Instant::now() + ctx.patience;
    while held < 1024 {
        if sent >= 64 << 20 || Instant::now() >= give_up {
            return Err(format!(
                "the kernel took {sent} bytes of echo without the server ever holding any: its writes could not be made to come up short, so this was not checked"
            ));
        }
        write(&mut c, &lines("slow", k, STEP, 128))?;
        k += STEP;
        sent += STEP * 128;
        let (server, client) = settle(srv.addr, me)?;
        held = (sent as u64).saturating_sub(client.unread + server.unsent + server.unread);
    }
    // Read slowly: 4 KiB, a pause, 4 KiB...
    let want = lines("slow", 0, k, 128);
    let (got, end) = read_for(
        &mut c,
        Some(want.len()),
        ctx.stall,
        4096,
        Duration::from_millis(1),
    );
    if got.len() < want.len() {
        let inside = match server_side(srv, &c) {
            Some(q) if q.unread > 0 => format!(
                "; {} bytes of input sit unread in the server's socket: the server is not reading them (a lost wake-up: see read-until-eagain and resume-read)",
                q.unread
            ),
            Some(q) => format!(
                "; the server's socket holds {} unsent bytes and no unread input: the {} bytes missing are in the server's memory, and it does not write them",
                q.unsent,
                want.len() - got.len() - q.unsent as usize
            ),
            None => String::new(),
        };
        return Err(format!(
            "sent {sent} bytes and stopped; {} bytes of echo came back, read slowly, {}{inside}",
            got.len(),
            end.describe(ctx.stall)
        ));
    }
    same(&got, &want, "the echo")?;
    Ok(format!(
        "{sent} bytes sent, then none: {held} bytes of echo waited in the server's memory behind a full socket; read slowly, all of it came back"
    ))
}

fn resume_read(ctx: &Ctx, srv: &mut Server) -> Outcome {
    let mut c = connect(srv.addr, ctx.patience)?;
    roundtrip(srv, &mut c, b"hi\n", ctx.stall)?;
    let data = lines("pause", 0, (16 << 20) / 128, 128); // 16 MiB
    // Send without reading until the writes block: the server has stopped
    // reading (backpressure) and every buffer on the way is full.
    let writer = Writer::start(&c, data.clone(), 64 * 1024);
    let finished = writer.wait_done_or_blocked(Duration::from_millis(500), ctx.patience);
    let paused = server_side(srv, &c);
    let how = if finished {
        format!(
            "the server took all {} bytes without pausing (no backpressure: not checked here, but its memory grows with what a client sends)",
            data.len()
        )
    } else {
        format!(
            "the client's writes blocked after {} bytes{}",
            writer.written(),
            match paused {
                Some(q) if q.unread > 0 => format!(
                    " with {} bytes unread in the server's socket (paused)",
                    q.unread
                ),
                _ => String::new(),
            }
        )
    };
    // Now read everything. No new byte can arrive until the server reads
    // what is queued: it must do so on its own.
    let (got, end) = read_n(&mut c, data.len(), ctx.stall);
    if got.len() < data.len() {
        let inside = match server_side(srv, &c) {
            Some(q) if q.unread > 0 => format!(
                "; {} bytes sit unread in the server's socket, and no new byte can come: the server does not read them (did it resume without reading? see also read-until-eagain)",
                q.unread
            ),
            Some(q) => format!(
                "; the server's socket has no unread input and {} unsent bytes: the server stopped writing (see keep-writable)",
                q.unsent
            ),
            None => String::new(),
        };
        return Err(format!(
            "{how}; then the client read: {} of {} bytes came back, {}{inside}",
            got.len(),
            data.len(),
            end.describe(ctx.stall)
        ));
    }
    same(&got, &data, "the echo")?;
    writer
        .join()
        .map_err(|e| format!("the write failed: {e}"))?;
    Ok(format!(
        "{how}; then read: all {} bytes came back",
        data.len()
    ))
}

fn rdhup_short_read(ctx: &Ctx, srv: &mut Server) -> Outcome {
    let expect_line_then_fin = |c: &mut TcpStream, last: &[u8], how: &str| -> Outcome {
        let (got, end) = read_to_end(c, ctx.stall);
        if got == last && end == End::Eof {
            return Ok(String::new());
        }
        let what = if got.is_empty() && end == End::Eof {
            "the server closed without echoing the line that came with the FIN: it acted on the hang-up (EPOLLRDHUP/EPOLLHUP or EOF) before reading what came before it".to_string()
        } else if got == last && end == End::Stalled {
            format!(
                "the echo came but no FIN within {} s: the server missed the EOF behind the line (one read returned less than the buffer, and no new event comes for the FIN: look at EPOLLRDHUP, or read until 0 or EAGAIN)",
                ctx.stall.as_secs_f64()
            )
        } else {
            format!(
                "got {:?}, {}",
                String::from_utf8_lossy(&got),
                end.describe(ctx.stall)
            )
        };
        Err(format!("{how}: {what}"))
    };
    // The line and the FIN, both there before the server looks: one event.
    let mut c = connect(srv.addr, ctx.patience)?;
    roundtrip(srv, &mut c, b"hi\n", ctx.stall)?;
    srv.while_stopped(|| {
        let r = c.write_all(b"last words\n");
        c.shutdown(Shutdown::Write).ok();
        r
    })
    .map_err(|e| format!("write: {e}"))?;
    expect_line_then_fin(
        &mut c,
        b"last words\n",
        "\"last words\\n\" and the FIN in one event",
    )?;
    // The same on a live server, as it comes.
    let mut d = connect(srv.addr, ctx.patience)?;
    write(&mut d, b"bye\n")?;
    d.shutdown(Shutdown::Write).ok();
    expect_line_then_fin(&mut d, b"bye\n", "\"bye\\n\" then at once the FIN")?;
    Ok("a line followed at once by the client's FIN (both before the server looked, and live) came back, then FIN".into())
}

fn eintr(ctx: &Ctx, srv: &mut Server) -> Outcome {
    let mut a = connect(srv.addr, ctx.patience)?;
    roundtrip(srv, &mut a, b"before\n", ctx.stall)?;
    for _ in 0..5 {
        srv.signal(Signal::STOP);
        std::thread::sleep(Duration::from_millis(50));
        srv.signal(Signal::CONT);
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(died) = srv.died() {
        return Err(format!(
            "stopped and continued 5 times while idle (SIGSTOP, SIGCONT), {died}"
        ));
    }
    roundtrip(srv, &mut a, b"after\n", ctx.stall)?;
    let mut b = connect(srv.addr, ctx.patience)?;
    roundtrip(srv, &mut b, b"new\n", ctx.stall)?;
    Ok("stopped and continued 5 times while idle (epoll_wait fails with EINTR each time): still echoing, still accepting. Only this EINTR can be caused from outside: the checker does not know the server's own signal handlers".into())
}

fn read_budget(ctx: &Ctx, srv: &mut Server) -> Outcome {
    let mut probe = connect(srv.addr, ctx.patience)?;
    roundtrip(srv, &mut probe, b"probe\n", ctx.stall)?;
    let flooder = connect(srv.addr, ctx.patience)?;
    // One client sends as fast as it can and reads its echoes as fast:
    // 2-byte lines, which cost a server far more to frame than the client
    // to send, so its socket never runs dry; the client reads faster than
    // the server echoes, so its output never backs up either.
    let block: Vec<u8> = b"x\n".repeat(32 * 1024);
    let flood = {
        let block = block.clone();
        Flood::start(&flooder, move |_| block.clone())
    };
    let received = Arc::new(AtomicUsize::new(0));
    let reader = {
        let mut r = flooder.try_clone().map_err(|e| e.to_string())?;
        let (block, received) = (block.clone(), received.clone());
        std::thread::spawn(move || -> Result<(), String> {
            r.set_read_timeout(None).ok();
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0usize;
            loop {
                let n = match r.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("reading the flood's echo: {e}")),
                };
                // The flood repeats one block: compare with it where we are.
                for (i, b) in buf[..n].iter().enumerate() {
                    if *b != block[(total + i) % block.len()] {
                        return Err(format!("the flood's echo differs at byte {}", total + i));
                    }
                }
                total += n;
                received.store(total, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // Meanwhile, another client's lines: each must come back promptly.
    let bound = ctx.latency;
    let mut worst = Duration::ZERO;
    let mut starved = None;
    for i in 0..10 {
        let msg = line("probe", i, 32);
        let sent_at = Instant::now();
        write(&mut probe, &msg)?;
        let (got, end) = read_n(&mut probe, msg.len(), bound);
        worst = worst.max(sent_at.elapsed());
        if got.len() < msg.len() {
            starved = Some(format!(
                "while one client kept sending 2-byte lines and reading their echoes, line {} of another client got {} of {} bytes back within {} s{}",
                i + 1,
                got.len(),
                msg.len(),
                bound.as_secs_f64(),
                match end {
                    End::Stalled => String::new(),
                    other => format!(", {}", other.describe(bound)),
                }
            ));
            break;
        }
        same(&got, &msg, "a line of the other client")?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let flooded = flood.sent();
    // Stop the flood; everything it sent must come back: a connection set
    // aside by the budget must be read again without a new edge.
    let stopped = flood.stop(ctx.stall);
    let mut tail = String::new();
    if let Some((result, sent)) = stopped {
        result.map_err(|e| format!("the flood's write failed: {e}"))?;
        let mut last = (usize::MAX, Instant::now());
        loop {
            let now = received.load(Ordering::Relaxed);
            if now >= sent || reader.is_finished() {
                break;
            }
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() >= ctx.stall {
                let inside = match server_side(srv, &flooder) {
                    Some(q) if q.unread > 0 => format!(
                        "; {} bytes sit unread in the server's socket: the connection was set aside and not read again",
                        q.unread
                    ),
                    _ => String::new(),
                };
                tail = format!(
                    "the flooding client sent {sent} bytes and stopped; {now} came back, then nothing for {} s{inside}",
                    ctx.stall.as_secs_f64()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    } else {
        tail = format!(
            "the flooding client's writes stayed blocked for {} s: the server stopped reading it{}",
            ctx.stall.as_secs_f64(),
            unread_note(srv, &flooder)
        );
    }
    // Unblock the reader (and a blocked writer) and collect it.
    flooder.shutdown(Shutdown::Both).ok();
    let read_result = reader.join().expect("the flood reader");
    match (starved, tail.is_empty()) {
        (Some(s), true) => return Err(s),
        (Some(s), false) => return Err(format!("{s}; and {tail}")),
        (None, false) => return Err(tail),
        (None, true) => {}
    }
    read_result?;
    Ok(format!(
        "while another client sent and read {} MiB, 10 lines of this client came back, the slowest in {} ms (bound {} s); then all of the flood came back",
        flooded >> 20,
        worst.as_millis(),
        bound.as_secs_f64()
    ))
}

fn drain(ctx: &Ctx, srv: &mut Server) -> Outcome {
    let mut idle = connect(srv.addr, ctx.patience)?;
    roundtrip(srv, &mut idle, b"idle\n", ctx.stall)?;
    // A client that keeps sending and does not read: echoes are owed.
    let mut busy = connect(srv.addr, ctx.patience)?;
    let sender = Flood::start(&busy, |k| line("drain", k, 128));
    std::thread::sleep(Duration::from_millis(500));
    // What the server has read so far: sent, less what is still in either
    // socket. Every complete line of it is owed. The estimate can only be
    // low if it is taken in this order: the count first, then the client's
    // socket, then the server's. Bytes that move from the client's socket
    // to the server's between the two looks are then counted twice, not
    // missed (the other order made a server that lost nothing look as if
    // it had, on a busy machine).
    let sent = sender.sent();
    let client = client_side(srv, &busy);
    let server = server_side(srv, &busy);
    let read = match (server, client) {
        (Some(s), Some(c)) => sent.saturating_sub((s.unread + c.unsent) as usize),
        _ => 0,
    };
    let owed = read / 128 * 128;
    let signalled = Instant::now();
    srv.signal(Signal::TERM);

    // The idle client: FIN, nothing else.
    let (got, end) = read_to_end(&mut idle, ctx.patience);
    if end != End::Eof || !got.is_empty() {
        sender.stop(Duration::ZERO);
        busy.shutdown(Shutdown::Both).ok();
        return Err(format!(
            "after SIGTERM an idle client got {} bytes, {}{}",
            got.len(),
            end.describe(ctx.patience),
            killed(srv)
        ));
    }
    // A server that SIGTERM killed outright has no drain at all: say so,
    // whatever its clients happened to see.
    if let Some(status) = srv.wait_exit(Duration::from_millis(100))
        && status.signal() == Some(Signal::TERM.as_raw())
    {
        sender.stop(Duration::ZERO);
        busy.shutdown(Shutdown::Both).ok();
        return Err(format!(
            "SIGTERM killed the server ({status}): it does not handle the signal, so nothing is drained (use --no-drain if it does not claim a graceful drain)"
        ));
    }
    // No new connections.
    let give_up = Instant::now() + ctx.patience;
    loop {
        match TcpStream::connect_timeout(&srv.addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ if Instant::now() >= give_up => {
                sender.stop(Duration::ZERO);
                busy.shutdown(Shutdown::Both).ok();
                return Err(format!(
                    "still accepting new connections {} s after SIGTERM: close the listener first",
                    ctx.patience.as_secs()
                ));
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    // The busy client, still sending, reads every echo owed, then FIN.
    let (got, end) = read_to_end(&mut busy, ctx.stall);
    let whole = got.len() / 128;
    let want = lines("drain", 0, whole, 128);
    let stopped = sender.stop(Duration::from_millis(200));
    busy.shutdown(Shutdown::Both).ok();
    if stopped.is_none() {
        // It was blocked; the shutdown just now has ended it.
    }
    let bad = if end != End::Eof {
        Some(format!(
            "{} bytes of echo, {}",
            got.len(),
            end.describe(ctx.stall)
        ))
    } else if got.is_empty() {
        Some("no echo at all, then FIN: the echoes owed were thrown away".to_string())
    } else if got.len() < owed {
        Some(format!(
            "{} bytes of echo, then FIN, but the server had read {owed} bytes of whole lines before the signal: {} bytes owed were lost",
            got.len(),
            owed - got.len()
        ))
    } else if got.len() % 128 != 0 {
        Some(format!("{} bytes: the last line was cut short", got.len()))
    } else {
        first_difference(&got, &want)
            .map(|at| format!("the echo differs from what was sent at byte {at}"))
    };
    if let Some(bad) = bad {
        return Err(format!(
            "a client that kept sending got, after SIGTERM, {bad}{}",
            killed(srv)
        ));
    }
    drop(idle);
    drop(busy);
    let Some(status) = srv.wait_exit(ctx.patience) else {
        return Err(format!(
            "every client got its echoes and FIN and closed, and the server had not exited {} s later",
            ctx.patience.as_secs()
        ));
    };
    if !status.success() {
        return Err(format!(
            "every client got its echoes and FIN, but the server exited with {status}, not 0{}",
            srv.last_words()
        ));
    }
    Ok(format!(
        "on SIGTERM: an idle client got FIN; new connects were refused; a client that kept sending got {} bytes of echoes (whole lines, in order; at least {owed} were owed), then FIN, not RST; exit 0 after {:.1} s",
        got.len(),
        signalled.elapsed().as_secs_f64()
    ))
}

// ------------------------------------------------------------ helpers

/// "; the server exited (...)" if it has.
fn killed(srv: &mut Server) -> String {
    srv.died().map(|d| format!("; {d}")).unwrap_or_default()
}

fn write(c: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    c.write_all(bytes).map_err(|e| format!("write: {e}"))
}

fn roundtrip(srv: &Server, c: &mut TcpStream, msg: &[u8], stall: Duration) -> Result<(), String> {
    write(c, msg)?;
    let what = format!("{:?}", String::from_utf8_lossy(msg));
    expect_echo(srv, c, msg, stall, &what)
}

/// Reads `want.len()` bytes and compares; the message says what `what` got.
fn expect_echo(
    srv: &Server,
    c: &mut TcpStream,
    want: &[u8],
    stall: Duration,
    what: &str,
) -> Result<(), String> {
    let (got, end) = read_n(c, want.len(), stall);
    if got.len() < want.len() {
        return Err(format!(
            "{what}: {} of {} bytes came back, {}{}",
            got.len(),
            want.len(),
            end.describe(stall),
            unread_note(srv, c)
        ));
    }
    same(&got, want, what)
}

/// "; N bytes sit unread in the server's socket" when they do.
fn unread_note(srv: &Server, c: &TcpStream) -> String {
    match server_side(srv, c) {
        Some(q) if !q.accepted => format!(
            "; the server never accepted this connection ({} bytes wait in its socket, in the listen backlog)",
            q.unread
        ),
        Some(q) if q.unread > 0 => format!(
            "; {} bytes sit unread in the server's socket, and the server does not read them",
            q.unread
        ),
        _ => String::new(),
    }
}

fn same(got: &[u8], want: &[u8], what: &str) -> Result<(), String> {
    match first_difference(got, want) {
        None => Ok(()),
        Some(at) => Err(format!(
            "{what}: the echo differs from what was sent at byte {at}"
        )),
    }
}

/// The server's socket for the client `c`.
fn server_side(srv: &Server, c: &TcpStream) -> Option<Queues> {
    queues::of(srv.addr, c.local_addr().ok()?)
}

/// The client's own socket to the server.
fn client_side(srv: &Server, c: &TcpStream) -> Option<Queues> {
    queues::of(c.local_addr().ok()?, srv.addr)
}

/// Waits until the server has read all the client sent and the queues
/// stop moving; returns (server's socket, client's socket).
fn settle(server: SocketAddr, client: SocketAddr) -> Result<(Queues, Queues), String> {
    let give_up = Instant::now() + Duration::from_secs(2);
    let mut last = None;
    loop {
        let s = queues::of(server, client);
        let c = queues::of(client, server);
        let (Some(s), Some(c)) = (s, c) else {
            return Err(
                "cannot see the kernel's socket queues in /proc/net/tcp: this check needs Linux"
                    .into(),
            );
        };
        let now = (s, c);
        if (last == Some(now) && s.unread == 0 && c.unsent == 0) || Instant::now() >= give_up {
            return Ok(now);
        }
        last = Some(now);
        std::thread::sleep(Duration::from_millis(5));
    }
}
