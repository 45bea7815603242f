//! The Comet server as a library (DESIGN §2, §4): configuration, the router with the publish
//! API and the six transports, metrics, and the accept loop with graceful shutdown.
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
mod body;
pub mod config;
pub mod demo;
pub mod error;
mod gate;
mod h1_stream;
mod joined;
pub mod limits;
pub mod metrics;
mod publish;
pub mod router;
pub mod server;
mod stall;
pub mod state;
pub mod tls;
pub mod transport;

pub use config::{Config, ConfigError};
pub use error::ApiError;
pub use router::app;
pub use server::{bind, raise_fd_limit, serve, serve_with_tls};
pub use state::AppState;
pub use tls::{Tls, TlsError};
