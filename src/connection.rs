//! One client connection: its socket, where it is in its life, and its buffers.
//!
//! The event loop (`event_loop/`) decides *when* to read, write and close;
//! this file holds *what* a connection is and the two I/O primitives it needs
//! (write out what is pending, read and throw away). An idle connection costs
//! only this struct: both buffers are empty `Vec`s that own no memory.
//!
//! At `--log-level trace` both narrate each call they make (short writes and
//! `EAGAIN` included), naming the fd as strace does; below `trace` those
//! lines cost one comparison each and format nothing.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::Instant;

use log::trace;
use mio::Token;
use mio::net::TcpStream;

use crate::framing::FrameAssembler;
use crate::io_util::{interrupted, would_block};

/// Names one connection for its whole life, even after its slab slot is reused.
///
/// `key` is the slot in the loop's `Slab`; `serial` counts accepted
/// connections, so a `ConnId` kept by a handler (or sitting in an old event or
/// timer) for a connection that has since closed never matches the
/// connection that took over its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    pub(crate) key: u32,
    pub(crate) serial: u32,
}

impl ConnId {
    /// The poll token: the serial in the high 32 bits, the slab key in the low.
    /// Reserved tokens (listener, signals) use keys no slab ever reaches.
    pub(crate) fn token(self) -> Token {
        Token(((self.serial as usize) << 32) | self.key as usize)
    }

    pub(crate) fn from_token(token: Token) -> ConnId {
        ConnId {
            key: token.0 as u32,
            serial: (token.0 >> 32) as u32,
        }
    }

    pub(crate) fn key(self) -> usize {
        self.key as usize
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.serial)
    }
}

/// Why we are closing a connection that the peer has not closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The server is shutting down.
    Drain,
    /// The peer sent a frame over `--max-frame`.
    FrameTooLong,
    /// No traffic for `--idle-timeout`.
    IdleTimeout,
    /// The handler asked for it.
    Handler,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Drain => "drain",
            CloseReason::FrameTooLong => "frame too long",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::Handler => "handler",
        })
    }
}

/// Where a connection is in its life. Closed connections are not here: they
/// are removed from the slab.
///
/// ```text
/// Open ⇄ Backpressured          (our output above the high-water mark / drained below the low one)
/// Open → HalfClosed             (peer sent EOF: flush the replies, then close)
/// any  → Closing(reason)        (flush, send FIN, read and discard until the peer has it all)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Reading frames and sending replies.
    Open,
    /// Not reading: output it caused is waiting on a full socket. The kernel
    /// keeps its input queued (and its window closes), so memory stays bounded.
    Backpressured,
    /// The peer shut down its write side. We flush what we owe and close.
    HalfClosed,
    /// We are closing: no input is taken (it is read and discarded), output
    /// is flushed, then FIN; the socket is closed once the peer has every byte.
    Closing {
        /// Why.
        reason: CloseReason,
        /// `shutdown(Write)` done: FIN queued after the last byte.
        fin_sent: bool,
        /// The peer's EOF seen: nothing more can arrive.
        peer_eof: bool,
    },
}

impl State {
    /// Whether new output may be queued (a closing connection takes none).
    pub fn accepts_output(self) -> bool {
        matches!(self, State::Open | State::Backpressured)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Open => f.write_str("open"),
            State::Backpressured => f.write_str("backpressured"),
            State::HalfClosed => f.write_str("half-closed"),
            State::Closing {
                reason, fin_sent, ..
            } => {
                write!(
                    f,
                    "closing ({reason}{})",
                    if *fin_sent { ", FIN sent" } else { "" }
                )
            }
        }
    }
}

/// Bytes queued for the socket, and how many of them were already written.
///
/// Writing from an offset, instead of removing written bytes from the front
/// after every write, keeps a partial write free of `memmove`; `push`
/// removes them only when they outnumber the bytes still to write.
#[derive(Debug, Default)]
pub(crate) struct Output {
    buf: Vec<u8>,
    written: usize,
}

impl Output {
    /// Bytes still to write.
    pub fn len(&self) -> usize {
        self.buf.len() - self.written
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `bytes`. An empty queue borrows the loop's `spare` buffer
    /// instead of allocating: in steady state no message allocates.
    ///
    /// Bytes already written are dropped from the front first once they
    /// outnumber the unsent ones. Without that, a connection whose writes
    /// keep coming up short (a small send buffer) and whose output never
    /// quite empties would hold every byte ever sent on it. With it, the
    /// buffer holds at most twice its unsent bytes plus `bytes`, and the
    /// unsent bytes are bounded by backpressure. The move costs no more than
    /// the bytes written since the last one: O(1) per byte, amortized.
    pub fn push(&mut self, bytes: &[u8], spare: &mut Vec<u8>) {
        if self.buf.capacity() == 0 {
            self.buf = std::mem::take(spare);
        }
        if self.written > 0 && self.written >= self.len() {
            self.buf.drain(..self.written);
            self.written = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Once everything is written, hands the buffer back to the loop's
    /// `spare` (or frees it if the spare is taken or it grew large), so an
    /// idle connection owns no output memory.
    fn reclaim(&mut self, spare: &mut Vec<u8>) {
        const KEEP_AT_MOST: usize = 64 * 1024;
        self.written = 0;
        let mut buf = std::mem::take(&mut self.buf);
        if spare.capacity() == 0 && buf.capacity() <= KEEP_AT_MOST {
            buf.clear();
            *spare = buf;
        }
    }
}

pub(crate) struct Connection {
    pub stream: TcpStream,
    pub id: ConnId,
    pub state: State,
    pub input: FrameAssembler,
    pub output: Output,
    /// Last time bytes moved either way (the loop's clock, read once per turn).
    pub last_active: Instant,
    /// Connections paused because they wrote into our full output; they are
    /// resumed when it drains below the low-water mark.
    pub waiters: Vec<ConnId>,
    /// The loop's bookkeeping beside `state`: its work lists, write space.
    pub flags: Flags,
}

/// The loop's bookkeeping about one connection, beside its [`State`]:
/// which of the loop's two work lists it is on, and whether its socket may
/// take more output.
///
/// One type rather than loose bools, so that what cannot happen cannot be
/// written: a close the handler asked for always rides on the flush list
/// ([`Flush::ThenClose`]), never apart from it; and each list membership
/// has exactly one flag, set when the id is pushed and cleared when it is
/// taken off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flags {
    /// Whether it is on `Outgoing::dirty`, the list flushed after each
    /// piece of the loop's work, and what is owed there.
    pub flush: Flush,
    /// On the loop's `resume` list: read again before the loop sleeps.
    pub resume_queued: bool,
    /// The socket may take more output (nginx's `wev->ready`). Cleared when
    /// a write comes up short; set again by the next writable event. While
    /// it is clear, trying to write would only return `EAGAIN`.
    pub write_ready: bool,
}

impl Flags {
    /// A new connection: on no list, and its send buffer is empty.
    fn new() -> Self {
        Flags {
            flush: Flush::No,
            resume_queued: false,
            write_ready: true,
        }
    }
}

/// A connection's place on the flush list (`Outgoing::dirty`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Not on it.
    No,
    /// On it: a handler queued output.
    Output,
    /// On it, and the handler asked to close the connection once the
    /// output queued before is written. It takes no more output.
    ThenClose,
}

impl Connection {
    pub fn new(stream: TcpStream, id: ConnId, input: FrameAssembler, now: Instant) -> Self {
        Connection {
            stream,
            id,
            state: State::Open,
            input,
            output: Output::default(),
            last_active: now,
            waiters: Vec::new(),
            flags: Flags::new(),
        }
    }

    /// Writes pending output until it is all written or the socket is full;
    /// the rest goes out after the next writable event. Returns the bytes
    /// written.
    ///
    /// A short write means the send buffer filled up during the call, which
    /// arms the next writable edge just as `WouldBlock` would: so we stop
    /// there instead of making the call that would only return `EAGAIN`.
    pub fn write_out(&mut self, spare: &mut Vec<u8>) -> io::Result<usize> {
        if !self.flags.write_ready && !self.output.is_empty() {
            trace!(
                "    {} fd {}: {} B not written: the last write came up short, so wait for EPOLLOUT",
                self.id,
                self.stream.as_raw_fd(),
                self.output.len()
            );
        }
        let mut total = 0;
        while !self.output.is_empty() && self.flags.write_ready {
            // In bounds: `written` only grows by what `write` took of `pending`.
            let pending = &self.output.buf[self.output.written..];
            let len = pending.len();
            match self.stream.write(pending) {
                // A zero-length write of a non-empty buffer: the socket is unusable.
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.output.written += n;
                    total += n;
                    self.flags.write_ready = n == len;
                    trace!(
                        "    {} fd {}: wrote {n} of {len} B{}",
                        self.id,
                        self.stream.as_raw_fd(),
                        if n < len {
                            " (short: the send buffer is full; the rest waits for EPOLLOUT)"
                        } else {
                            ""
                        }
                    );
                }
                Err(ref e) if would_block(e) => {
                    self.flags.write_ready = false;
                    trace!(
                        "    {} fd {}: write: EAGAIN ({len} B wait for EPOLLOUT)",
                        self.id,
                        self.stream.as_raw_fd()
                    );
                }
                Err(ref e) if interrupted(e) => continue,
                Err(e) => return Err(e),
            }
        }
        if self.output.is_empty() && self.output.buf.capacity() > 0 {
            self.output.reclaim(spare);
        }
        Ok(total)
    }

    /// Reads and throws away input until the socket is empty. Returns `true`
    /// once the peer's EOF has been read.
    ///
    /// A closing connection must keep reading: closing a socket with unread
    /// input makes the kernel send RST, and a peer blocked writing to us
    /// would never read our last bytes.
    pub fn discard_input(&mut self, scratch: &mut [u8]) -> io::Result<bool> {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => {
                    trace!(
                        "    {} fd {}: read 0 B: EOF",
                        self.id,
                        self.stream.as_raw_fd()
                    );
                    return Ok(true);
                }
                Ok(n) => {
                    trace!(
                        "    {} fd {}: read {n} B, discarded (closing)",
                        self.id,
                        self.stream.as_raw_fd()
                    );
                }
                Err(ref e) if would_block(e) => {
                    trace!(
                        "    {} fd {}: read: EAGAIN",
                        self.id,
                        self.stream.as_raw_fd()
                    );
                    return Ok(false);
                }
                Err(ref e) if interrupted(e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_bytes_are_released_before_the_buffer_grows() {
        let mut spare = Vec::new();
        let mut out = Output::default();
        // Each turn: 1000 bytes queued, 900 written (a short write), so the
        // output never empties. Held memory must track the unsent bytes.
        for _ in 0..1000 {
            out.push(&[b'x'; 1000], &mut spare);
            out.written += 900;
        }
        assert_eq!(out.len(), 100_000);
        assert!(
            out.buf.len() <= 2 * out.len() + 1000,
            "holds {} bytes for {} unsent",
            out.buf.len(),
            out.len()
        );
    }
}
