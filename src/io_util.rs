//! Two tiny helpers that name the `io::Error`s an event loop expects.

use std::io;

/// "Would block" is the OS's way of saying: nothing more to do on this socket
/// right now. With edge-triggered readiness it is also the signal that the
/// next change will produce a new event.
pub(crate) fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

/// A signal arrived during the call; it did nothing and can simply be retried.
pub(crate) fn interrupted(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Interrupted
}
