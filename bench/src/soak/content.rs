//! What a soak client sends, and the check of what comes back.
//!
//! A client's bytes are a pure function of its seed ([`Script`]): the
//! checker ([`Expect`]) runs a second copy of the same script and compares
//! each echoed byte with the byte it regenerates, so no client keeps a copy
//! of everything it sent (a long soak sends gigabytes).
//!
//! Every line starts `CLIENT.LINE:`, so an echo that is misrouted, repeated,
//! reordered or skipped never matches by accident.

use std::io::Write as _;
use std::sync::Arc;

use super::rng::Rng;

/// The bytes line bodies are cut from, made once per run: a body is a
/// slice at a random offset, so making and checking a line is a copy and a
/// compare, fast even in a debug build (the soak in `make test` is one).
#[derive(Debug)]
pub struct Pools {
    text: Vec<u8>,
    binary: Vec<u8>,
}

impl Pools {
    /// Long enough for an over-long line's body at any of 4096 offsets.
    pub fn new(seed: u64, max_frame: usize) -> Arc<Pools> {
        const TEXT: &[u8; 64] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -";
        let mut rng = Rng::new(seed ^ 0x706F_6F6C);
        let len = max_frame + 1 + 4096;
        let mut text = Vec::with_capacity(len);
        let mut binary = Vec::with_capacity(len);
        while binary.len() < len {
            for b in rng.next_u64().to_le_bytes() {
                text.push(TEXT[(b & 63) as usize]);
                // Every byte but the delimiter: 0x8A stands in for '\n'.
                binary.push(if b == b'\n' { 0x8A } else { b });
            }
        }
        Arc::new(Pools { text, binary })
    }
}

/// What [`Script::next`] appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// An ordinary line, '\n' included, at most `max_frame` bytes without it.
    Line,
    /// `max_frame + 1` bytes and no '\n': the server must close the
    /// connection after echoing every line before it, and echo none of it.
    OverLong,
    /// Nothing: the script ended with its over-long line.
    End,
}

/// One client's stream of lines.
#[derive(Clone, Debug)]
pub struct Script {
    rng: Rng,
    pools: Arc<Pools>,
    client: u64,
    line_no: u64,
    binary: bool,
    max_frame: usize,
    /// Comes after this many lines, when set; the script then ends.
    overlong_after: Option<u64>,
    ended: bool,
}

impl Script {
    /// `binary`: line bodies are any byte but '\n' (NUL, '\r', 0xFF, invalid
    /// UTF-8); otherwise printable ASCII.
    pub fn new(
        seed: u64,
        pools: &Arc<Pools>,
        client: u64,
        binary: bool,
        max_frame: usize,
        overlong_after: Option<u64>,
    ) -> Script {
        Script {
            rng: Rng::new(seed),
            pools: Arc::clone(pools),
            client,
            line_no: 0,
            binary,
            max_frame,
            overlong_after,
            ended: false,
        }
    }

    /// Appends the next line (or the over-long non-line) to `out`.
    pub fn next(&mut self, out: &mut Vec<u8>) -> Piece {
        if self.ended {
            return Piece::End;
        }
        let start = out.len();
        write!(out, "{}.{}:", self.client, self.line_no).expect("write to a Vec");
        let header = out.len() - start;
        if self.overlong_after == Some(self.line_no) {
            self.ended = true;
            self.body(out, self.max_frame + 1 - header);
            return Piece::OverLong;
        }
        self.line_no += 1;
        // Mostly short lines, as chat and RPC traffic are, with a tail of
        // long ones up to the frame limit (the limit itself is legal).
        let roll = self.rng.below(100);
        let most = self.max_frame.saturating_sub(header);
        let len = match roll {
            0..60 => self.rng.size(0, 60),
            60..85 => self.rng.size(61, 1000),
            85..97 => self.rng.size(1001, 8000),
            _ => self.rng.size(8001, most.max(8001)),
        }
        .min(most);
        self.body(out, len);
        out.push(b'\n');
        Piece::Line
    }

    /// Appends `len` body bytes (never a '\n'), from a random offset of a
    /// pool; `len` is at most `max_frame + 1`, so it always fits.
    fn body(&mut self, out: &mut Vec<u8>, len: usize) {
        let pool = if self.binary {
            &self.pools.binary
        } else {
            &self.pools.text
        };
        let at = self.rng.size(0, pool.len() - len);
        out.extend_from_slice(&pool[at..at + len]);
    }
}

/// The checker: what the echo of a [`Script`] must be, byte by byte.
#[derive(Debug)]
pub struct Expect {
    script: Script,
    line: Vec<u8>,
    at: usize,
    overlong: bool,
    checked: u64,
}

impl Expect {
    /// `script` must be a fresh copy of the sender's script.
    pub fn new(script: Script) -> Expect {
        Expect {
            script,
            line: Vec::new(),
            at: 0,
            overlong: false,
            checked: 0,
        }
    }

    /// Checks the next `data` echoed. An error describes the first byte
    /// that is wrong; after one, the connection's echo is not trusted.
    pub fn check(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            if self.at == self.line.len() {
                self.line.clear();
                self.at = 0;
                match self.script.next(&mut self.line) {
                    Piece::Line => {}
                    Piece::OverLong => self.overlong = true,
                    Piece::End => {
                        return Err(format!(
                            "{} bytes echoed past the end of the script at byte {}",
                            data.len(),
                            self.checked
                        ));
                    }
                }
            }
            if self.overlong {
                return Err(format!(
                    "the over-long line (from byte {}) was echoed",
                    self.checked
                ));
            }
            let n = data.len().min(self.line.len() - self.at);
            let want = &self.line[self.at..self.at + n];
            // A slice compare first (memcmp, fast in a debug build); the
            // byte-by-byte search only to describe a difference.
            if data[..n] != *want
                && let Some(i) = (0..n).find(|&i| data[i] != want[i])
            {
                let line_start = self.checked - self.at as u64;
                return Err(format!(
                    "echo differs at byte {} (offset {} in the line starting at byte {} \
                     that begins {:?}): expected {:?}, got {:?}",
                    self.checked + i as u64,
                    self.at + i,
                    line_start,
                    show(&self.line[..self.line.len().min(24)]),
                    show(&want[i..n.min(i + 16)]),
                    show(&data[i..n.min(i + 16)]),
                ));
            }
            self.at += n;
            self.checked += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Whether the echo so far ends exactly at the end of a line.
    pub fn at_line_end(&self) -> bool {
        self.at == self.line.len()
    }
}

/// Bytes as an escaped string, for messages.
fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(overlong_after: Option<u64>) -> Script {
        Script::new(42, &Pools::new(1, 1000), 7, true, 1000, overlong_after)
    }

    #[test]
    fn lines_are_unique_bounded_and_newline_free_inside() {
        let mut s = script(None);
        for _ in 0..500 {
            let mut line = Vec::new();
            assert_eq!(s.next(&mut line), Piece::Line);
            assert_eq!(line.last(), Some(&b'\n'));
            assert!(!line[..line.len() - 1].contains(&b'\n'));
            assert!(line.len() - 1 <= 1000);
        }
    }

    #[test]
    fn the_echo_of_the_script_passes_and_anything_else_fails() {
        let mut sent = Vec::new();
        let mut s = script(Some(30));
        let mut overlong_at = None;
        loop {
            let before = sent.len();
            match s.next(&mut sent) {
                Piece::Line => {}
                Piece::OverLong => {
                    overlong_at = Some(before);
                    assert_eq!(sent.len() - before, 1001);
                    assert!(!sent[before..].contains(&b'\n'));
                }
                Piece::End => break,
            }
        }
        let overlong_at = overlong_at.expect("an over-long line");

        // The exact echo, in odd-sized pieces, passes and ends on a line.
        let mut e = Expect::new(script(Some(30)));
        for piece in sent[..overlong_at].chunks(7) {
            e.check(piece).expect("the true echo");
        }
        assert!(e.at_line_end());
        // One byte of the over-long line is an error.
        assert!(e.check(&sent[overlong_at..overlong_at + 1]).is_err());

        // A changed byte, a dropped line, a partial line are caught.
        let mut wrong = sent[..overlong_at].to_vec();
        wrong[100] ^= 1;
        assert!(Expect::new(script(Some(30))).check(&wrong).is_err());
        let first_nl = sent.iter().position(|&b| b == b'\n').unwrap();
        assert!(
            Expect::new(script(Some(30)))
                .check(&sent[first_nl + 1..overlong_at])
                .is_err()
        );
        let mut e = Expect::new(script(Some(30)));
        e.check(&sent[..first_nl]).unwrap();
        assert!(!e.at_line_end());
    }
}
