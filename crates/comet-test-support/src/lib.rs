//! What Comet's tests share, in one crate (not published): a real server on a free loopback
//! port over any broker, the unlimited configuration, bounded waits and body readers, a test
//! PKI and JWTs, raw HTTP/1.1 and WebSocket bytes, memory measurements, and the bystander
//! check that nothing else broke.
//!
//! Everything here talks to 127.0.0.1 only, and every wait is bounded.

pub mod bystanders;
pub mod config;
pub mod jwt;
pub mod memory;
pub mod pki;
pub mod presence;
pub mod raw;
pub mod server;
pub mod wait;
pub mod webhooks;
pub mod ws;

pub use config::unlimited;
pub use server::{
    TestServer, serve_tls_on, start_server, start_server_on, start_server_with, subscribers, wait_subscribers,
};
pub use wait::{BodyReader, SOON, expect_error, get_json, recv_timeout};
pub use webhooks::WebhookReceiver;
