//! Framing: where one message ends on a TCP byte stream. Pure code, no I/O.
//!
//! TCP carries a stream of bytes, not messages. One `read` may return half a
//! message (拆包, a split packet) or several messages at once (粘包, coalesced
//! packets), and the boundaries the sender had in mind are gone. A *framing*
//! puts them back. The Go tutorial this project grows from names three:
//!
//! | mode             | a frame is                                           |
//! |------------------|------------------------------------------------------|
//! | `line`           | bytes up to and including `'\n'`                     |
//! | `fixed:N`        | exactly `N` bytes                                    |
//! | `length`         | a 4-byte big-endian length `L`, then `L` bytes       |
//!
//! Two types live here:
//! - [`Decoder`] answers one question about a buffer: "how long is the
//!   complete frame at its start, if there is one?"
//! - [`FrameAssembler`] feeds chunks of a stream through a decoder, hands out
//!   every complete frame, and keeps only the unfinished tail between chunks.
//!
//! Neither touches a socket, so both are tested on their own with random
//! split points (see the unit and property tests and `fuzz/`).
//!
//! To add a framing:
//! 1. a variant of [`Framing`], and its spelling in `Framing`'s `FromStr`
//!    and `Display` (that is the `--framing` flag: `main.rs` parses it
//!    with `FromStr`, and nothing else there changes);
//! 2. its arm in [`Decoder::next_frame`]: where the frame at the start of
//!    the buffer ends, or `Ok(None)`; reject an over-long one as early as
//!    its length is known;
//! 3. its cases in the tests below (the property test splits a stream at
//!    random points) and in `fuzz/fuzz_targets/framing.rs`;
//! 4. a row in the table above and in `docs/framing.md` (and
//!    `docs/zh/framing.md`).

use std::fmt;
use std::ops::ControlFlow;
use std::str::FromStr;

/// Bytes in the header of the `length` framing.
pub const LENGTH_HEADER: usize = 4;

/// How a byte stream is cut into frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// A frame is a line: everything up to and including `'\n'`.
    /// `--max-frame` limits the line without its `'\n'`.
    Line,
    /// A frame is exactly this many bytes.
    Fixed(usize),
    /// A frame is a 4-byte big-endian length, then that many bytes.
    /// `--max-frame` limits the declared length (the header is not counted).
    LengthPrefixed,
}

impl FromStr for Framing {
    type Err = String;

    /// Parses the command-line spelling: `line`, `fixed:N` or `length`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "line" => Ok(Framing::Line),
            "length" => Ok(Framing::LengthPrefixed),
            _ => match s.strip_prefix("fixed:") {
                Some(n) => match n.parse::<usize>() {
                    Ok(n) if n > 0 => Ok(Framing::Fixed(n)),
                    _ => Err(format!(
                        "in `{s}`, N must be a whole number of bytes, at least 1"
                    )),
                },
                None => Err(format!("`{s}` is not one of: line, fixed:N, length")),
            },
        }
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Framing::Line => write!(f, "line"),
            Framing::Fixed(n) => write!(f, "fixed:{n}"),
            Framing::LengthPrefixed => write!(f, "length"),
        }
    }
}

/// A frame is longer than the limit. The connection it came on cannot be
/// resynchronised (we would not know where the next frame starts), so the
/// caller closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTooLong {
    /// How long the frame is known to be so far (at least `max + 1`).
    pub len: usize,
    /// The limit it broke.
    pub max: usize,
}

impl fmt::Display for FrameTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame of {}+ bytes is over the limit of {} bytes",
            self.len, self.max
        )
    }
}

impl std::error::Error for FrameTooLong {}

/// Finds the end of the frame at the start of a buffer.
///
/// The decoder is called again and again with the *same* unfinished frame as
/// more bytes arrive. In `line` mode it remembers how far it has already
/// looked for `'\n'` (as Netty's `LineBasedFrameDecoder` does), so a 4 MiB line
/// arriving one byte at a time costs 4 Mi byte comparisons, not 8 Ti.
#[derive(Clone, Debug)]
pub struct Decoder {
    framing: Framing,
    max_frame: usize,
    /// Line mode: the first `scanned` bytes of the current frame hold no `'\n'`.
    scanned: usize,
}

impl Decoder {
    /// A decoder for `framing` that rejects frames over `max_frame` bytes.
    pub fn new(framing: Framing, max_frame: usize) -> Self {
        Decoder {
            framing,
            max_frame,
            scanned: 0,
        }
    }

    /// The framing this decoder cuts by.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The length of the complete frame at the start of `buf`, `Ok(None)` if
    /// `buf` holds only the beginning of one, or an error as soon as the frame
    /// is known to be over the limit (without waiting for the rest of it).
    ///
    /// Contract: after `Ok(None)`, the next call passes the same bytes again,
    /// possibly with more after them. After `Ok(Some(n))`, the next call
    /// starts at the first byte after that frame.
    pub fn next_frame(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameTooLong> {
        let max = self.max_frame;
        match self.framing {
            Framing::Line => {
                // `min`: a caller that breaks the contract gets a rescan, not a panic.
                let from = self.scanned.min(buf.len());
                match memchr::memchr(b'\n', &buf[from..]) {
                    Some(at) => {
                        let content = from + at;
                        self.scanned = 0;
                        if content > max {
                            return Err(FrameTooLong { len: content, max });
                        }
                        Ok(Some(content + 1))
                    }
                    None => {
                        self.scanned = buf.len();
                        if buf.len() > max {
                            return Err(FrameTooLong {
                                len: buf.len(),
                                max,
                            });
                        }
                        Ok(None)
                    }
                }
            }
            Framing::Fixed(n) => Ok((buf.len() >= n).then_some(n)),
            Framing::LengthPrefixed => {
                let Some(header) = buf.first_chunk::<LENGTH_HEADER>() else {
                    return Ok(None);
                };
                let declared = u32::from_be_bytes(*header) as usize;
                if declared > max {
                    return Err(FrameTooLong { len: declared, max });
                }
                let total = LENGTH_HEADER + declared;
                Ok((buf.len() >= total).then_some(total))
            }
        }
    }

    /// Forgets the frame in progress (its bytes were thrown away).
    pub fn reset(&mut self) {
        self.scanned = 0;
    }
}

/// Turns chunks of a byte stream into complete frames.
///
/// Frames that lie wholly inside a chunk are handed out straight from it, with
/// no copy. Only an unfinished frame at the end of a chunk is kept, in a
/// buffer that is freed again as soon as that frame is complete: an idle
/// connection holds no input memory at all. The kept tail never exceeds
/// `max_frame + LENGTH_HEADER` bytes, plus one chunk while it is being joined.
#[derive(Clone, Debug)]
pub struct FrameAssembler {
    decoder: Decoder,
    /// The beginning of a frame whose end has not arrived yet.
    partial: Vec<u8>,
}

impl FrameAssembler {
    /// An assembler with nothing buffered.
    pub fn new(framing: Framing, max_frame: usize) -> Self {
        FrameAssembler {
            decoder: Decoder::new(framing, max_frame),
            partial: Vec::new(),
        }
    }

    /// Bytes of an unfinished frame held from earlier chunks.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Drops the unfinished frame, if any, and its memory.
    pub fn discard(&mut self) {
        self.partial = Vec::new();
        self.decoder.reset();
    }

    /// Adds `chunk` to the stream and calls `on_frame` for every frame it
    /// completes, in order. `on_frame` may return `Break` to stop: the rest of
    /// the chunk is then dropped (the caller is closing the connection).
    ///
    /// On `Err`, every frame before the oversized one has been delivered and
    /// nothing of the oversized one has; the assembler is left empty.
    pub fn push(
        &mut self,
        chunk: &[u8],
        mut on_frame: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), FrameTooLong> {
        // 粘包: with no unfinished frame, cut frames straight out of the chunk.
        if self.partial.is_empty() {
            let consumed = match self.deliver_all(chunk, &mut on_frame) {
                Ok(ControlFlow::Continue(consumed)) => consumed,
                Ok(ControlFlow::Break(())) => return Ok(()),
                Err(e) => return Err(e),
            };
            // 拆包: keep the tail; its frame ends in a later chunk.
            // In bounds: `deliver_all` never consumes more than it was given.
            self.partial.extend_from_slice(&chunk[consumed..]);
            return Ok(());
        }
        // The tail of an earlier chunk continues here: join them first.
        let mut joined = std::mem::take(&mut self.partial);
        joined.extend_from_slice(chunk);
        match self.deliver_all(&joined, &mut on_frame) {
            Ok(ControlFlow::Continue(consumed)) if consumed < joined.len() => {
                joined.drain(..consumed);
                self.partial = joined;
            }
            // Everything was consumed (the buffer is freed) or the caller stopped.
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Delivers every complete frame at the start of `buf`; returns how many
    /// bytes they took, or `Break` if `on_frame` asked to stop.
    fn deliver_all(
        &mut self,
        buf: &[u8],
        on_frame: &mut impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<ControlFlow<(), usize>, FrameTooLong> {
        let mut start = 0;
        loop {
            match self.decoder.next_frame(&buf[start..]) {
                Ok(Some(len)) => {
                    // In bounds: the decoder only reports frames `buf[start..]` holds whole.
                    let frame = &buf[start..start + len];
                    start += len;
                    if on_frame(frame).is_break() {
                        self.discard();
                        return Ok(ControlFlow::Break(()));
                    }
                }
                Ok(None) => return Ok(ControlFlow::Continue(start)),
                Err(e) => {
                    self.discard();
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `chunks` through an assembler and collects frames and the outcome.
    fn assemble(
        framing: Framing,
        max: usize,
        chunks: &[&[u8]],
    ) -> (Vec<Vec<u8>>, Result<(), FrameTooLong>) {
        let mut asm = FrameAssembler::new(framing, max);
        let mut frames = Vec::new();
        for chunk in chunks {
            let r = asm.push(chunk, |f| {
                frames.push(f.to_vec());
                ControlFlow::Continue(())
            });
            if r.is_err() {
                return (frames, r);
            }
        }
        (frames, Ok(()))
    }

    #[test]
    fn split_line_is_joined() {
        let (frames, r) = assemble(Framing::Line, 100, &[b"abc", b"def\n"]);
        assert_eq!(r, Ok(()));
        assert_eq!(frames, vec![b"abcdef\n".to_vec()]);
    }

    #[test]
    fn coalesced_lines_are_cut() {
        let (frames, _) = assemble(Framing::Line, 100, &[b"abc\ndef\n"]);
        assert_eq!(frames, vec![b"abc\n".to_vec(), b"def\n".to_vec()]);
    }

    #[test]
    fn empty_line_is_a_frame_and_bytes_are_kept() {
        let (frames, _) = assemble(Framing::Line, 100, &[b"\n\r\0\xff\n"]);
        assert_eq!(frames, vec![b"\n".to_vec(), b"\r\0\xff\n".to_vec()]);
    }

    #[test]
    fn partial_line_is_not_a_frame() {
        let mut asm = FrameAssembler::new(Framing::Line, 100);
        let mut n = 0;
        asm.push(b"a\nbc", |_| {
            n += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!((n, asm.buffered()), (1, 2));
    }

    #[test]
    fn line_at_the_limit_passes_and_one_more_byte_fails() {
        let ok = [vec![b'x'; 10], vec![b'\n']].concat();
        assert_eq!(assemble(Framing::Line, 10, &[&ok]).0, vec![ok.clone()]);
        // Fails as soon as the 11th byte arrives, before any '\n'.
        let (frames, r) = assemble(Framing::Line, 10, &[b"ok\n", &[b'y'; 5], &[b'y'; 6]]);
        assert_eq!(frames, vec![b"ok\n".to_vec()]);
        assert_eq!(r, Err(FrameTooLong { len: 11, max: 10 }));
        // A too-long line that arrives whole, newline included, fails too.
        let (_, r) = assemble(Framing::Line, 10, &[&[b'z'; 12], b"\n"]);
        assert!(r.is_err());
    }

    #[test]
    fn line_scan_resumes_where_it_stopped() {
        let mut d = Decoder::new(Framing::Line, 1 << 20);
        let mut buf = Vec::new();
        for _ in 0..1000 {
            buf.push(b'a');
            assert_eq!(d.next_frame(&buf), Ok(None));
            assert_eq!(d.scanned, buf.len());
        }
        buf.push(b'\n');
        assert_eq!(d.next_frame(&buf), Ok(Some(1001)));
        assert_eq!(d.scanned, 0);
    }

    #[test]
    fn fixed_frames() {
        let (frames, _) = assemble(Framing::Fixed(3), 10, &[b"ab", b"cdef", b"gh"]);
        assert_eq!(frames, vec![b"abc".to_vec(), b"def".to_vec()]);
    }

    #[test]
    fn length_frames_include_the_header_and_may_be_empty() {
        let (frames, _) = assemble(
            Framing::LengthPrefixed,
            10,
            &[b"\0\0", b"\0\x02h", b"i\0\0\0\0"],
        );
        assert_eq!(frames, vec![b"\0\0\0\x02hi".to_vec(), b"\0\0\0\0".to_vec()]);
    }

    #[test]
    fn length_over_the_limit_fails_on_the_header_alone() {
        let (frames, r) = assemble(
            Framing::LengthPrefixed,
            10,
            &[b"\0\0\0\x01a", b"\0\0\0\x0b"],
        );
        assert_eq!(frames, vec![b"\0\0\0\x01a".to_vec()]);
        assert_eq!(r, Err(FrameTooLong { len: 11, max: 10 }));
        let (_, r) = assemble(Framing::LengthPrefixed, 10, &[b"\xff\xff\xff\xff"]);
        assert!(r.is_err());
    }

    #[test]
    fn break_stops_delivery_and_drops_the_rest() {
        let mut asm = FrameAssembler::new(Framing::Line, 100);
        let mut seen = Vec::new();
        asm.push(b"a\nb\nc", |f| {
            seen.push(f.to_vec());
            ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!(seen, vec![b"a\n".to_vec()]);
        assert_eq!(asm.buffered(), 0);
    }

    #[test]
    fn idle_assembler_frees_its_buffer() {
        let mut asm = FrameAssembler::new(Framing::Line, 100);
        asm.push(b"abc", |_| ControlFlow::Continue(())).unwrap();
        assert!(asm.partial.capacity() > 0);
        asm.push(b"\n", |_| ControlFlow::Continue(())).unwrap();
        assert_eq!(asm.partial.capacity(), 0);
    }

    #[test]
    fn parse_framing() {
        assert_eq!("line".parse(), Ok(Framing::Line));
        assert_eq!("fixed:16".parse(), Ok(Framing::Fixed(16)));
        assert_eq!("length".parse(), Ok(Framing::LengthPrefixed));
        for bad in [
            "", "fixed", "fixed:", "fixed:0", "fixed:-1", "fixed:x", "lines",
        ] {
            assert!(
                bad.parse::<Framing>().is_err(),
                "{bad:?} should be rejected"
            );
        }
        for f in [Framing::Line, Framing::Fixed(7), Framing::LengthPrefixed] {
            assert_eq!(f.to_string().parse(), Ok(f));
        }
    }
}
