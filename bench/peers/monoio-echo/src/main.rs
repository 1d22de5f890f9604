//! Line echo on monoio: io_uring, one runtime per thread, a peer of
//! reactor-echo in `make bench-compare`.
//!
//! ```text
//! monoio-echo ADDR [--threads N]   # N threads (1 by default), each its own
//!                                  # runtime, ring and SO_REUSEPORT listener
//! monoio-echo --probe              # exit 0 if this kernel lets us set up a ring
//! ```
//!
//! How it answers, the same as the other peers so that they are compared
//! fairly: one task per connection reads into a 64 KiB buffer, finds the
//! last `'\n'` of what it holds, and writes every complete line back in one
//! `write_all`; a partial line waits for the rest.
//!
//! io_uring is a completion API: the kernel writes into the buffer after
//! the read was submitted, so monoio takes the buffer by value for the
//! whole operation and hands it back with the result ("owned buffers").
//! A read into `vec.slice_mut(len..)` fills the spare capacity after what
//! is held, and the length grows by what was read.
//!
//! Where the kernel refuses io_uring (`io_uring_setup` fails with EPERM,
//! ENOSYS or EACCES: a seccomp filter, `kernel.io_uring_disabled`, an old
//! kernel), it prints `io_uring unavailable: ...` and exits with status 75
//! (EX_TEMPFAIL), which the bench maps to "left out", never to a failure.
//! SIGTERM ends it at once (no handler: a peer needs no drain).

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

/// The exit status that says "this kernel refuses io_uring".
const UNAVAILABLE: i32 = 75;

async fn serve(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        // A line longer than the buffer: grow it rather than cut the line.
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity());
        }
        // Read after what is held: into the spare capacity, from len on.
        let at = buf.len();
        let (res, slice) = s.read(buf.slice_mut(at..)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(last) = buf.iter().rposition(|&c| c == b'\n') {
            // The kernel owns the slice until the write completes.
            let (res, slice) = s.write_all(buf.slice(..=last)).await;
            buf = slice.into_inner();
            if res.is_err() {
                return;
            }
            buf.drain(..=last);
        }
    }
}

/// One thread's ring, or why the kernel would not give one.
fn runtime() -> std::io::Result<monoio::Runtime<monoio::IoUringDriver>> {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .build()
}

/// Exits with [`UNAVAILABLE`] where the error says io_uring is refused;
/// any other error is a plain failure.
fn refused(e: std::io::Error) -> ! {
    let errno = e.raw_os_error().unwrap_or(0);
    if [libc_eperm(), libc_enosys(), libc_eacces()].contains(&errno) {
        eprintln!("io_uring unavailable: io_uring_setup: {e}");
        std::process::exit(UNAVAILABLE);
    }
    eprintln!("monoio-echo: io_uring runtime: {e}");
    std::process::exit(1);
}

// The three errnos, without a libc dependency (Linux values on every arch
// this runs on).
const fn libc_eperm() -> i32 {
    1
}
const fn libc_eacces() -> i32 {
    13
}
const fn libc_enosys() -> i32 {
    38
}

fn run(addr: String) {
    let mut rt = runtime().unwrap_or_else(|e| refused(e));
    rt.block_on(async move {
        let opts = ListenerOpts::default().reuse_port(true).backlog(1024);
        let listener = TcpListener::bind_with_config(&addr, &opts)
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        loop {
            if let Ok((s, _)) = listener.accept().await {
                monoio::spawn(serve(s));
            }
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: monoio-echo ADDR [--threads N] | monoio-echo --probe";
    if args.get(1).map(String::as_str) == Some("--probe") {
        let _ = runtime().unwrap_or_else(|e| refused(e));
        println!("io_uring available");
        return;
    }
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:7001".into());
    let threads: usize = match args.get(2).map(String::as_str) {
        Some("--threads") => args
            .get(3)
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("{usage}")),
        Some(_) => panic!("{usage}"),
        None => 1,
    };
    // Check the ring on this thread first, so that a refusal exits once
    // with its status rather than from N threads at once.
    drop(runtime().unwrap_or_else(|e| refused(e)));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let a = addr.clone();
            std::thread::spawn(move || run(a))
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}
