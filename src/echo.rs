//! The echo application: every frame goes back, byte for byte, to its sender.

use crate::connection::ConnId;
use crate::handler::{Context, Handler};

/// Sends every frame back to the connection it came from, unchanged.
#[derive(Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    fn on_frame(&mut self, ctx: &mut Context<'_>, conn: ConnId, frame: &[u8]) {
        ctx.send(conn, frame);
    }
}
