//! Line echo on tokio: a peer of reactor-echo in `make bench-compare`.
//!
//! ```text
//! tokio-echo ADDR current               # one thread: the current-thread runtime
//! tokio-echo ADDR multi [--threads N]   # the work-stealing runtime, N workers
//! ```
//!
//! How it answers, the same as the other peers so that they are compared
//! fairly: one task per connection reads into a 64 KiB buffer, finds the
//! last `'\n'` of what it holds, and writes every complete line back in one
//! `write_all`; a partial line waits for the rest. No frame is cut or
//! copied one by one (reactor-echo does cut frames, for its handler seam).
//!
//! `multi` without `--threads` takes tokio's default, one worker per CPU
//! this process may run on; the benchmark passes `--threads N` so that the
//! runtime matches the N CPUs it is pinned to whatever tokio's default does.
//! SIGTERM ends it at once (no handler: a peer needs no drain).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn serve(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0usize;
    loop {
        // A line longer than the buffer: grow it rather than cut the line.
        if have == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match s.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        have += n;
        if let Some(last) = buf[..have].iter().rposition(|&b| b == b'\n') {
            if s.write_all(&buf[..=last]).await.is_err() {
                return;
            }
            buf.copy_within(last + 1..have, 0);
            have -= last + 1;
        }
    }
}

async fn run(addr: String) {
    let listener = TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    loop {
        if let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: tokio-echo ADDR [current | multi [--threads N]]";
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:7001".into());
    let mode = args.get(2).map_or("current", String::as_str);
    let threads: Option<usize> = match args.get(3).map(String::as_str) {
        Some("--threads") => Some(
            args.get(4)
                .and_then(|n| n.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| panic!("{usage}")),
        ),
        Some(_) => panic!("{usage}"),
        None => None,
    };
    let rt = match mode {
        "multi" => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = threads {
                b.worker_threads(n);
            }
            b.enable_all().build()
        }
        "current" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => panic!("{usage}"),
    }
    .expect("tokio runtime");
    rt.block_on(run(addr));
}
