//! A chat room on the reactor-echo event loop: every line a client sends goes
//! to every other client, prefixed with the sender's id.
//!
//! ```text
//! cargo run --release --example chat -- --listen 127.0.0.1:9000
//! nc 127.0.0.1 9000        # in two or more terminals
//! ```
//!
//! It proves the handler seam: the loop knows nothing about chat, and the
//! handler writes to connections other than the one that sent the frame.
//! Backpressure and the graceful drain come from the loop unchanged: a
//! member who does not read pauses whoever writes to them (the room waits
//! for its slowest reader, and memory stays bounded), and SIGTERM delivers
//! every line already said before closing each connection with a FIN.
//!
//! The room stays on one loop: `--workers` above 1 is refused, because a
//! handler reaches only the connections of its own loop.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use clap::Parser;
use log::{LevelFilter, info};
use reactor_echo::{Config, ConnId, Context, Handler, Server};

/// A line-based chat room: each line is sent to every other member.
#[derive(Parser)]
struct Args {
    /// Address to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    listen: String,

    /// Event loops; the room needs every member on one loop, so only 1
    #[arg(long, value_name = "N", default_value_t = 1)]
    workers: usize,
}

#[derive(Default)]
struct ChatRoom {
    members: Vec<ConnId>,
    /// Reused for every message, so broadcasting does not allocate.
    message: Vec<u8>,
}

impl ChatRoom {
    /// Sends `"{from}: {text}"` to every member but `from`.
    fn broadcast(&mut self, ctx: &mut Context<'_>, from: ConnId, text: &[u8]) {
        self.message.clear();
        self.message
            .extend_from_slice(format!("{from}: ").as_bytes());
        self.message.extend_from_slice(text);
        // O(members) per line: a chat room is about everyone hearing it.
        for &member in &self.members {
            if member != from {
                ctx.send(member, &self.message);
            }
        }
    }
}

impl Handler for ChatRoom {
    fn on_open(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        ctx.send(conn, format!("welcome {conn}\n").as_bytes());
        self.broadcast(ctx, conn, b"joined\n");
        self.members.push(conn);
    }

    fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, line: &[u8]) {
        self.broadcast(ctx, conn, line);
    }

    fn on_close(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        self.members.retain(|&m| m != conn);
        self.broadcast(ctx, conn, b"left\n");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.workers != 1 {
        // Its members talk to each other, and a handler reaches only the
        // connections of its own loop. Sharing the room between workers
        // would take messages between loops (as Seastar does), never a lock.
        eprintln!(
            "error: --workers {}: the chat room runs on one loop, so that every member \
             can reach every other; use --workers 1",
            args.workers
        );
        return ExitCode::from(2);
    }
    simple_logger::SimpleLogger::new()
        .with_utc_timestamps()
        .with_level(LevelFilter::Info)
        .env()
        .init()
        .ok();
    let addrs: Vec<SocketAddr> = match args.listen.to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            eprintln!("error: bad --listen {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    let server = match Server::bind(&addrs, Config::default(), ChatRoom::default()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(1);
        }
    };
    info!("chat room listening on {}", server.local_addr());
    match server.run() {
        Ok(report) if report.is_complete() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(3),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
