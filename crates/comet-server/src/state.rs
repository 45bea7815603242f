//! [`AppState`]: what every handler shares.

use std::sync::Arc;

use comet_core::Broker;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;

/// Shared by every request handler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Where messages are published and subscribed.
    pub broker: Arc<dyn Broker>,
    /// The settings.
    pub config: Arc<Config>,
    /// Counters and histograms for `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down: every long-lived body (SSE, stream, iframe, held
    /// long-poll, WebSocket) watches it and ends itself, or graceful shutdown would hang.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// State for `broker` and `config`, with a fresh shutdown token.
    pub fn new(broker: Arc<dyn Broker>, config: Config) -> Self {
        Self {
            metrics: Arc::new(Metrics::new(Arc::clone(&broker))),
            broker,
            config: Arc::new(config),
            shutdown: CancellationToken::new(),
        }
    }
}
