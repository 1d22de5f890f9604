//! The server under test: a shell command line, started fresh for each
//! check in a process group of its own, found on its port, signalled,
//! waited for and killed.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use rustix::process::Signal;

/// How many of the server's last output lines are kept, for messages.
const LOG_LINES: usize = 40;

pub struct Server {
    child: Child,
    pgid: rustix::process::Pid,
    pub addr: SocketAddr,
    log: Arc<Mutex<VecDeque<String>>>,
    status: Option<ExitStatus>,
}

impl Server {
    /// Runs `template` with `{addr}` and `{port}` replaced by a free
    /// loopback port (or, with neither, finds the address in a `listening
    /// on ADDR` line of its output), and waits until it accepts.
    pub fn start(template: &str, patience: Duration) -> Result<Server, String> {
        let placeholder = template.contains("{addr}") || template.contains("{port}");
        let (command, mut addr) = if placeholder {
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let command = template
                .replace("{addr}", &addr.to_string())
                .replace("{port}", &port.to_string());
            (command, Some(addr))
        } else {
            (template.to_string(), None)
        };
        // `exec`: the shell becomes the server, so its exit status is the
        // server's. Its own process group: signals reach the server even
        // when the command is a wrapper that starts it as a child.
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run /bin/sh -c {command:?}: {e}"))?;
        let pgid = rustix::process::Pid::from_raw(child.id() as i32).expect("a child's pid");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().expect("piped"));
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().expect("piped"));
        for pipe in [out, err] {
            let log = log.clone();
            let tx = tx.clone();
            // Always read the pipes: a server that logs a lot must not block.
            std::thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    match reader.read_until(b'\n', &mut raw) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let line = String::from_utf8_lossy(&raw).trim_end().to_string();
                    if let Some(addr) = listening_on(&line) {
                        let _ = tx.send(addr);
                    }
                    let mut log = log.lock().unwrap();
                    if log.len() == LOG_LINES {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        let mut server = Server {
            child,
            pgid,
            addr: addr.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            log,
            status: None,
        };
        let give_up = Instant::now() + patience;
        loop {
            if let Some(status) = server.exit_status() {
                return Err(format!(
                    "the server exited ({status}) before it accepted a connection{}",
                    server.last_words()
                ));
            }
            if addr.is_none()
                && let Ok(found) = rx.try_recv()
            {
                addr = Some(found);
                server.addr = found;
            }
            if let Some(addr) = addr
                && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            {
                return Ok(server);
            }
            if Instant::now() >= give_up {
                let what = match addr {
                    Some(addr) => format!("accept on {addr}"),
                    None => "print `listening on ADDR` (or use {addr} / {port} in the command)"
                        .to_string(),
                };
                return Err(format!(
                    "the server did not {what} within {} s{}",
                    patience.as_secs(),
                    server.last_words()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the server's process group.
    pub fn signal(&self, sig: Signal) {
        let _ = rustix::process::kill_process_group(self.pgid, sig);
    }

    /// Stops the server (SIGSTOP), runs `f`, lets the kernel deliver what
    /// `f` sent, and continues it (SIGCONT): everything `f` sent is then
    /// waiting before the server looks, behind one readiness edge.
    pub fn while_stopped<T>(&self, f: impl FnOnce() -> T) -> T {
        self.signal(Signal::STOP);
        // The stop takes effect at the next return to user space: give a
        // busy server a moment to get there.
        std::thread::sleep(Duration::from_millis(100));
        let out = f();
        std::thread::sleep(Duration::from_millis(200));
        self.signal(Signal::CONT);
        out
    }

    /// The exit status, once the server has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the server to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let give_up = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                // Let the pipe readers catch its last lines.
                std::thread::sleep(Duration::from_millis(50));
                return Some(status);
            }
            if Instant::now() >= give_up {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// "; its last output: ..." with the server's last non-empty output
    /// line, or nothing if it printed none.
    pub fn last_words(&self) -> String {
        let log = self.log.lock().unwrap();
        match log.iter().rev().find(|l| !l.trim().is_empty()) {
            Some(line) => format!("; its last output: {}", shorten(line, 200)),
            None => String::new(),
        }
    }

    /// The server's last output lines.
    pub fn log_tail(&self) -> Vec<String> {
        self.log.lock().unwrap().iter().cloned().collect()
    }

    /// If the server has exited: a sentence saying so, for a failure message.
    pub fn died(&mut self) -> Option<String> {
        let status = self.exit_status()?;
        Some(format!("the server exited ({status}){}", self.last_words()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The whole group: a wrapper's children too. SIGKILL ends stopped
        // processes as well.
        let _ = rustix::process::kill_process_group(self.pgid, Signal::KILL);
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// The address in a `listening on ADDR` line (any case); an unspecified
/// address (0.0.0.0, [::]) is reached on loopback.
fn listening_on(line: &str) -> Option<SocketAddr> {
    let at = line.to_ascii_lowercase().find("listening on ")?;
    let word = line[at + "listening on ".len()..]
        .split_whitespace()
        .next()?;
    let word = word.trim_end_matches([',', '.', ';', ')']);
    let word = word
        .strip_prefix("http://")
        .or_else(|| word.strip_prefix("tcp://"))
        .unwrap_or(word);
    let mut addr: SocketAddr = word.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Some(addr)
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_a_listening_line() {
        let at = |s: &str| listening_on(s).map(|a| a.to_string());
        assert_eq!(
            at("listening on 127.0.0.1:8003").as_deref(),
            Some("127.0.0.1:8003")
        );
        assert_eq!(
            at("2026-01-01 INFO Listening on 0.0.0.0:9000, 2 workers").as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(at("listening on [::]:7").as_deref(), Some("[::1]:7"));
        assert_eq!(at("listening on a socket"), None);
    }
}
