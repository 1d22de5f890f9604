//! The lines every load sends: unique, of an asked size, so that a
//! misrouted, lost or reordered echo shows when it is checked byte for byte.

use std::io::{self, ErrorKind, Read, Write as _};

/// Appends line `k` of connection `conn`: `conn:k:` then letters, then
/// '\n', `size` bytes in all (at least 16).
pub fn push_line(out: &mut Vec<u8>, conn: usize, k: u64, size: usize) {
    let start = out.len();
    write!(out, "{conn}:{k}:").expect("write to Vec");
    let mut i = 0;
    while out.len() - start < size - 1 {
        out.push(b'a' + ((k as usize + i) % 26) as u8);
        i += 1;
    }
    out.push(b'\n');
}

/// Takes every complete line off the front of `input`, calling `each` with
/// it ('\n' included), and keeps the partial rest.
pub fn take_lines(input: &mut Vec<u8>, mut each: impl FnMut(&[u8])) {
    let mut consumed = 0;
    while let Some(nl) = input[consumed..].iter().position(|&b| b == b'\n') {
        each(&input[consumed..consumed + nl + 1]);
        consumed += nl + 1;
    }
    input.drain(..consumed);
}

/// Reads everything `stream` has now (edge-triggered: until `WouldBlock`)
/// onto the end of `input`. The server closing is an error: a load's
/// connections never expect it. `what` names the connection in that error.
pub fn read_available(
    stream: &mut impl Read,
    buf: &mut [u8],
    input: &mut Vec<u8>,
    what: &dyn std::fmt::Display,
) -> io::Result<()> {
    loop {
        match stream.read(buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("{what}: server closed"),
                ));
            }
            Ok(n) => input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes `output[*written..]` to `stream` until it is all written (then
/// empties `output`) or the socket is full; the rest waits for the next
/// writable event.
pub fn write_pending(
    stream: &mut impl io::Write,
    output: &mut Vec<u8>,
    written: &mut usize,
) -> io::Result<()> {
    while *written < output.len() {
        match stream.write(&output[*written..]) {
            Ok(n) => *written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    output.clear();
    *written = 0;
    Ok(())
}

/// A thread-per-connection echo server on a free loopback port, for the
/// tests of the loads (it runs until the test process ends).
#[cfg(test)]
pub(crate) fn echo_server_for_tests() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let mut s = s.unwrap();
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_asked_size_and_are_unique() {
        let mut a = Vec::new();
        push_line(&mut a, 3, 7, 64);
        assert_eq!(a.len(), 64);
        assert!(a.starts_with(b"3:7:") && a.ends_with(b"\n"));
        assert_eq!(a.iter().filter(|&&b| b == b'\n').count(), 1);
        let mut b = Vec::new();
        push_line(&mut b, 3, 8, 64);
        assert_ne!(a, b);
    }

    #[test]
    fn partial_lines_wait() {
        let mut input = b"ab\ncd\nef".to_vec();
        let mut got = Vec::new();
        take_lines(&mut input, |l| got.push(l.to_vec()));
        assert_eq!(got, vec![b"ab\n".to_vec(), b"cd\n".to_vec()]);
        assert_eq!(input, b"ef");
    }
}
