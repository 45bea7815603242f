//! A Rust client for [Comet](https://example.invalid/comet), the real-time server-push server,
//! over every transport of its wire protocol (`docs/protocol.md`): short polling, long polling,
//! HTTP streaming (NDJSON), iframe (htmlfile) streaming, Server-Sent Events and WebSocket.
//!
//! Every transport yields the same [`Event`]s, tracks each channel's last cursor (so
//! [`Subscription::position`] can resume it), drops duplicates, and reconnects by itself.
//!
//! ```no_run
//! # async fn demo() -> Result<(), comet_client::Error> {
//! use comet_client::{Client, Event, Transport};
//!
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let mut sub = client
//!     .subscribe(&["chat:lobby"], Transport::Sse { envelope: true }, None)
//!     .await?;
//! client.publish("chat:lobby", "hello", None).await?;
//! while let Some(event) = sub.next().await {
//!     match event? {
//!         Event::Message(m) => println!("{}: {}", m.id, m.data),
//!         Event::Gap { channel } => eprintln!("missed messages on {channel}"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Requires a Tokio runtime (timers and sockets are Tokio's). TLS is not compiled in:
//! `https`/`wss` servers are not reachable yet.

mod client;
mod cursor;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod subscription;
mod transport;
mod types;

pub use client::{Client, Reconnect};
pub use error::{ApiError, Error};
pub use subscription::Subscription;
pub use transport::{ParseTransportError, Transport};
pub use types::{BatchMessage, ChannelInfo, Envelope, Event, Published};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn thread_safety() {
        assert_send::<Subscription>();
        assert_send_sync::<Client>();
        assert_send_sync::<Error>();
        assert_send_sync::<Event>();
    }
}
