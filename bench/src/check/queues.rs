//! What the kernel holds for one connection, read from /proc/net/tcp (and
//! tcp6): bytes the server has not read yet, and bytes it has written that
//! have not been acknowledged. Any user may read these, for any process, so
//! the checker can say *where* a stalled echo is stuck without knowing
//! anything of the server's code.

use std::net::{IpAddr, SocketAddr};

/// The kernel's queues of one TCP socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queues {
    /// Bytes received and not yet read by the socket's owner (`rx_queue`).
    pub unread: u64,
    /// Bytes written and not yet acknowledged by the peer (`tx_queue`).
    pub unsent: u64,
    /// Whether a process holds the socket: one still in the listen backlog,
    /// never accepted, has no inode.
    pub accepted: bool,
}

/// The queues of the socket whose local address is `local` and whose peer
/// is `remote`; `None` if there is none (or /proc cannot be read).
pub fn of(local: SocketAddr, remote: SocketAddr) -> Option<Queues> {
    let file = match local.ip() {
        IpAddr::V4(_) => "/proc/net/tcp",
        IpAddr::V6(_) => "/proc/net/tcp6",
    };
    let table = std::fs::read_to_string(file).ok()?;
    let (want_local, want_remote) = (hex(local), hex(remote));
    table.lines().skip(1).find_map(|row| {
        let f: Vec<&str> = row.split_whitespace().collect();
        if f.len() < 10 || f[1] != want_local || f[2] != want_remote {
            return None;
        }
        let (tx, rx) = f[4].split_once(':')?;
        Some(Queues {
            unsent: u64::from_str_radix(tx, 16).ok()?,
            unread: u64::from_str_radix(rx, 16).ok()?,
            accepted: f[9] != "0",
        })
    })
}

/// An address as /proc/net/tcp writes it: the address's bytes as 32-bit
/// words in the machine's byte order, then the port, all in upper-case hex.
fn hex(addr: SocketAddr) -> String {
    let bytes: Vec<u8> = match addr.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    let mut out = String::new();
    for word in bytes.chunks(4) {
        let w = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]);
        out.push_str(&format!("{w:08X}"));
    }
    out.push_str(&format!(":{:04X}", addr.port()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn sees_unread_bytes_of_a_real_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(&[7; 1000]).unwrap();
        let (local, peer) = (server.local_addr().unwrap(), server.peer_addr().unwrap());
        let server_side = || of(local, peer);
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while server_side().map(|q| q.unread) != Some(1000) {
            assert!(std::time::Instant::now() < give_up, "{:?}", server_side());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut buf = [0; 1000];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(server_side().map(|q| q.unread), Some(0));
    }
}
