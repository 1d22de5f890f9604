//! What a server is told at start: limits, framing, timeouts.

use std::time::Duration;

use crate::framing::Framing;

/// Settings for a [`crate::Server`]. `Config::default()` matches the
/// command line's defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// How input is cut into frames.
    pub framing: Framing,
    /// Longest frame accepted, in bytes (for `line`, not counting the `'\n'`;
    /// for `length`, not counting the header). A longer one closes its connection.
    pub max_frame: usize,
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// How long a graceful shutdown may take before connections are cut off.
    pub drain_timeout: Duration,
    /// Close connections with no traffic either way for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// The `listen` backlog: connections the kernel completes while the loop
    /// is busy (capped by `net.core.somaxconn`).
    pub backlog: u32,
    /// `SO_SNDBUF` for every connection, in bytes (`None`: the kernel's
    /// autotuning). Small values make writes come up short.
    pub send_buffer: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            framing: Framing::Line,
            max_frame: 64 * 1024,
            max_connections: 10_000,
            drain_timeout: Duration::from_secs(10),
            idle_timeout: None,
            backlog: crate::listener::DEFAULT_BACKLOG,
            send_buffer: None,
        }
    }
}

impl Config {
    /// Largest `max_connections`: slab keys must stay clear of the reserved tokens.
    pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 30;

    /// Longest timeout: deadlines are `Instant`s, which must not overflow.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(1_000_000_000);

    /// [`Config::validate`], as the `InvalidInput` error that `bind` returns.
    pub(crate) fn check(&self) -> std::io::Result<()> {
        self.validate()
            .map_err(|msg| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg))
    }

    /// Checks the settings fit together; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_frame == 0 {
            return Err("--max-frame must be at least 1 byte".into());
        }
        if self.max_frame > u32::MAX as usize {
            return Err(format!("--max-frame must be at most {} bytes", u32::MAX));
        }
        if let Framing::Fixed(n) = self.framing
            && n > self.max_frame
        {
            return Err(format!(
                "--framing fixed:{n} is longer than --max-frame ({} bytes)",
                self.max_frame
            ));
        }
        for (flag, timeout) in [
            ("--drain-timeout", Some(self.drain_timeout)),
            ("--idle-timeout", self.idle_timeout),
        ] {
            if timeout.is_some_and(|t| t > Self::MAX_TIMEOUT) {
                return Err(format!(
                    "{flag} must be at most {} seconds",
                    Self::MAX_TIMEOUT.as_secs()
                ));
            }
        }
        if self.max_connections == 0 || self.max_connections > Self::MAX_CONNECTIONS_LIMIT {
            return Err(format!(
                "--max-connections must be between 1 and {}",
                Self::MAX_CONNECTIONS_LIMIT
            ));
        }
        if self.backlog == 0 || self.backlog > i32::MAX as u32 {
            return Err(format!("--backlog must be between 1 and {}", i32::MAX));
        }
        if self.send_buffer.is_some_and(|b| b > i32::MAX as usize) {
            return Err(format!("--send-buffer must be at most {} bytes", i32::MAX));
        }
        Ok(())
    }
}
