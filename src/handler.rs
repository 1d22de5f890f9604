//! The seam between the event loop and the application.
//!
//! The loop owns sockets, buffers, readiness and shutdown; it knows nothing
//! about what the bytes mean. It cuts input into frames (see `framing.rs`)
//! and hands each one to a [`Handler`], which answers by queueing bytes on
//! any connection through the [`Context`]. Echo ([`crate::Echo`]) is one
//! handler; `examples/chat.rs` is another that writes to other connections.

use slab::Slab;

use crate::connection::{ConnId, Connection, Flush};

/// Application logic, called by the event loop. All calls happen on the
/// loop's thread, one at a time: a handler needs no locks.
///
/// ```
/// use reactor_echo::{ConnId, Context, Handler};
///
/// /// Replies to every frame with its length in bytes, as a line.
/// struct Measure;
///
/// impl Handler for Measure {
///     fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, frame: &[u8]) {
///         ctx.send(conn, format!("{}\n", frame.len()).as_bytes());
///     }
/// }
/// ```
pub trait Handler {
    /// A connection was accepted.
    fn on_open(&mut self, _ctx: &mut Context<'_>, _conn: ConnId) {}

    /// A complete frame arrived on `conn` (header or delimiter included).
    fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, frame: &[u8]);

    /// `conn` is closed and gone; sends to it are ignored from now on.
    fn on_close(&mut self, _ctx: &mut Context<'_>, _conn: ConnId) {}
}

/// The loop's bookkeeping for output queued by handlers.
#[derive(Default)]
pub(crate) struct Outgoing {
    /// The flush list: connections with newly queued output or a close
    /// asked for (their `flags.flush` says which), flushed after each piece
    /// of the loop's work, before it moves on.
    pub dirty: Vec<ConnId>,
    /// One reusable output buffer, lent to whichever connection needs one.
    pub spare: Vec<u8>,
}

/// What a handler may do: queue bytes on connections, and close them.
pub struct Context<'a> {
    conns: &'a mut Slab<Connection>,
    outgoing: &'a mut Outgoing,
}

impl<'a> Context<'a> {
    pub(crate) fn new(conns: &'a mut Slab<Connection>, outgoing: &'a mut Outgoing) -> Self {
        Context { conns, outgoing }
    }

    /// Queues `bytes` to be written to `conn`. They go out before the loop
    /// waits for events again. Returns `false` (and drops the bytes) if `conn`
    /// is closed or closing.
    ///
    /// Queueing never blocks. If `conn`'s output backs up past the high-water
    /// mark, the loop stops reading from the connection whose frame is being
    /// handled until that output drains: backpressure flows from a slow
    /// reader to whoever is writing to it.
    pub fn send(&mut self, conn: ConnId, bytes: &[u8]) -> bool {
        let Outgoing { dirty, spare } = &mut *self.outgoing;
        let Some(c) = self.conns.get_mut(conn.key()).filter(|c| c.id == conn) else {
            return false;
        };
        match (c.state.accepts_output(), c.flags.flush) {
            (false, _) | (true, Flush::ThenClose) => return false,
            (true, Flush::Output) => {}
            (true, Flush::No) => {
                c.flags.flush = Flush::Output;
                dirty.push(conn);
            }
        }
        c.output.push(bytes, spare);
        true
    }

    /// Closes `conn` once the output already queued for it is written. No
    /// further frames from it are delivered.
    pub fn close(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(conn.key()).filter(|c| c.id == conn) else {
            return;
        };
        if c.flags.flush == Flush::No {
            self.outgoing.dirty.push(conn);
        }
        c.flags.flush = Flush::ThenClose;
    }

    /// Whether `conn` is open and takes output.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conns.get(conn.key()).is_some_and(|c| {
            c.id == conn && c.state.accepts_output() && c.flags.flush != Flush::ThenClose
        })
    }

    pub(crate) fn close_requested(&self, conn: ConnId) -> bool {
        self.conns
            .get(conn.key())
            .is_some_and(|c| c.id == conn && c.flags.flush == Flush::ThenClose)
    }
}
