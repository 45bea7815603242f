//! The Comet server as a library: configuration, the accept loop with graceful shutdown, the
//! HTTP routes with the publish API, the six transports, auth, limits and metrics
//! (docs/protocol.md is the wire contract).
//!
//! Layers, each using only those below it (tests/layers.rs checks the imports):
//!
//! 1. [`conn`]: accept, admit or refuse, TLS handshake, the first request head, then hyper or
//!    a connection of its own;
//! 2. [`http`]: the router, the publish API, CORS, the request trace, tickets, the demo;
//! 3. [`transport`]: the dispatcher that chooses a transport, the streaming toolkit, the six
//!    transports;
//! 4. below them all: [`auth`] (identity and policy), [`limits`], [`metrics`], [`nodes`] (each
//!    node's numbers for the admin console), `publish` (one message published for a caller),
//!    [`state`], [`config`], [`error`], `kind` (the transports' names) and `io` (gates, stall
//!    timeouts, bodies, the holds of places in the connection limits).
//!
//! One message, followed from `POST /pub/chat` to an SSE socket and to a WebSocket:
//!
//! - in: `conn/connection.rs` hands the request to hyper, which runs the router
//!   (`http/mod.rs`); `http/publish.rs` reads the body and calls `publish.rs` `publish_one`
//!   (grants, the publish rate, the namespace's size, the idempotency key), which appends it to
//!   the broker's history and wakes every subscription of the channel (comet-core);
//! - out over SSE: the subscriber's `GET /sub/chat` (`Accept: text/event-stream`) was read by
//!   `conn/head.rs`, which asked `http::takeover` (the dispatcher's own choice,
//!   `transport/mod.rs` `choose`) and gave it to `conn/h1.rs`; the dispatcher's `subscribe`
//!   handed it to `transport/sse.rs`, whose framer `transport/streaming.rs` runs; the woken body
//!   yields the message's shared SSE encoding, and `conn/h1.rs` writes it as one chunk;
//! - out over WebSocket: the upgrade was read the same way and answered by
//!   `transport/websocket/handshake.rs` (its `101` written by `conn/h1.rs`, the `TcpStream`
//!   handed over through `io/upgrade.rs`); `transport/websocket/session.rs` reads the message
//!   from its subscriptions and queues its shared frame, which `direct.rs` writes in one `send`.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use comet_server::{AppState, Config, serve};
//! let config = Config::default();
//! let broker = Arc::new(comet_core::MemoryBroker::new(config.hub_config()));
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! serve(listener, AppState::new(broker, config)).await
//! # }
//! ```

pub mod auth;
mod client_id;
pub mod config;
pub mod conn;
pub mod error;
pub mod hooks;
pub mod http;
mod io;
mod kind;
pub mod limits;
pub mod metrics;
pub mod nodes;
mod publish;
pub mod state;
pub mod transport;
pub mod webhooks;

pub use self::http::{app, demo};
pub use config::{Config, ConfigError};
pub use conn::tls::{self, Tls, TlsError};
pub use conn::{DEFER_ACCEPT, bind, raise_fd_limit, serve, serve_with_tls};
pub use error::ApiError;
pub use state::{AppState, Services};
