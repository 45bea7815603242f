//! [`WsConfig`]: the WebSocket section of the configuration.

use std::time::Duration;

/// The WebSocket section of the configuration (made by `Config::ws` from the `ws_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsConfig {
    /// `ws_ping_interval_secs`: between the server's pings (RFC 6455 §5.5.2).
    pub ping_interval: Duration,
    /// `ws_pong_timeout_secs`: how long a peer may take to answer one (else close 4001), and the
    /// longest wait for the peer's close at the end.
    pub pong_timeout: Duration,
    /// `ws_auth_timeout_secs`: how long an anonymous bare `/ws` may go without an `auth` on a
    /// server with JWT verification (else close 1008).
    pub auth_timeout: Duration,
    /// `ws_max_message_size`: the largest message a client may send, in bytes, after
    /// reassembly and inflation (else close 1009).
    pub max_message_size: usize,
    /// `ws_compression`: whether permessage-deflate (RFC 7692) is accepted when offered.
    pub compression: bool,
}

impl WsConfig {
    /// How long a peer may take no bytes while the server has some queued before it is closed
    /// with 4000 (slow consumer): a ping interval plus a pong timeout.
    pub fn stall(&self) -> Duration {
        self.ping_interval + self.pong_timeout
    }
}
