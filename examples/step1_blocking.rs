//! Step 1 of the tutorial (docs/tutorial/01-blocking.md): the Go tutorial's
//! echo server, in Rust. Blocking sockets, one thread per connection.
//!
//! ```text
//! cargo run --example step1_blocking                    # listens on 127.0.0.1:8001
//! cargo run --example step1_blocking -- --listen 127.0.0.1:0   # any free port
//! nc 127.0.0.1 8001                                     # type lines, get them back
//! ```
//!
//! The Go original, for comparison:
//!
//! ```text
//! for { conn, _ := listener.Accept(); go Handle(conn) }
//! ... reader := bufio.NewReader(conn)
//! for { msg, err := reader.ReadString('\n'); if err != nil { return }; conn.Write([]byte(msg)) }
//! ```
//!
//! Every call here blocks: `accept` until a client connects, `read_until`
//! until a whole line (or EOF) is in, `write_all` until the kernel has taken
//! every byte. A blocked call holds up only its own thread, so each client
//! gets a thread. That is simple and correct; what it costs (a thread and
//! its stack per client, however idle) is why the later steps exist.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `--listen ADDR`; port 0 asks the kernel for any free port.
    let addr = std::env::args()
        .skip_while(|arg| arg != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8001".to_string());
    let listener = TcpListener::bind(addr.parse::<SocketAddr>()?)?;
    // The real address (with the real port when asked for port 0), on stderr.
    eprintln!("listening on {}", listener.local_addr()?);

    // net.Listen + Accept in a loop: accept(2) sleeps until a client arrives.
    for stream in listener.incoming() {
        match stream {
            // `go Handle(conn)`: a thread of its own, so that this one can
            // go straight back to accepting.
            Ok(stream) => {
                thread::spawn(move || {
                    let peer = stream.peer_addr().ok();
                    if let Err(e) = handle(stream) {
                        eprintln!("{peer:?}: {e}");
                    }
                });
            }
            // A client that gave up before we accepted it (ECONNABORTED),
            // or no file descriptor left for it (EMFILE): say so and go on.
            // (Out of fds, this loop spins until one is freed; the real
            // server has an answer for that, out_of_fds.)
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    Ok(())
}

/// Echoes every line of one client until it closes. Runs on its own thread.
/// Returning drops `reader` and `writer`, which closes both file
/// descriptors, and with the last one the socket.
fn handle(stream: TcpStream) -> io::Result<()> {
    // A second handle to the same socket for writing, so that the
    // BufReader can own the first one.
    let mut writer = stream.try_clone()?;
    // bufio.NewReader(conn): reads up to 8 KiB per system call, hands out
    // one line at a time from what it has. So lines that came in one
    // packet (粘包) cost one read, and a line split across packets (拆包)
    // is simply waited for: read_until blocks until its '\n' arrives.
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        // ReadString('\n'). `read_line` would be the literal translation,
        // but it insists on UTF-8 and fails on other bytes; a Go string is
        // any bytes, and so is this line.
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(()); // EOF: the client closed its side.
        }
        if !line.ends_with(b"\n") {
            // EOF in the middle of a line: that line will never be
            // complete. Drop it, as ReadString's error return does.
            return Ok(());
        }
        // conn.Write(b). write_all loops until the kernel took every byte;
        // if the client does not read, this thread just sleeps here.
        writer.write_all(&line)?;
    }
}
