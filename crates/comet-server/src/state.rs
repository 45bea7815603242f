//! [`AppState`]: what every handler shares.

use std::sync::{Arc, Mutex};

use comet_core::Broker;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::config::Config;
use crate::hooks::Hooks;
use crate::io::orders::{Order, Orders};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::nodes::{NodeStatsBroadcast, Nodes};
use crate::webhooks::Webhooks;

/// Shared by every request handler: its parts are [`Services`]' fields, reached through
/// `Deref`. One `Arc`, so a clone (axum makes one per request, and each long-lived response
/// keeps one) is one atomic increment, not one per part (bench/RESULTS.md, S5).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What an [`AppState`] holds.
#[derive(Debug)]
pub struct Services {
    /// Where messages are published and subscribed.
    pub broker: Arc<dyn Broker>,
    /// The settings.
    pub config: Arc<Config>,
    /// Who callers are and what they may do: the auth section of `config`, the token
    /// verifier, the outstanding tickets.
    pub auth: Arc<Auth>,
    /// Counters and histograms for `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// The occupancy webhooks (`webhook_url`), off when no URL is set.
    pub webhooks: Arc<Webhooks>,
    /// The back-end hooks (`connect_hook_url`, …; docs/protocol.md "Hooks").
    pub hooks: Arc<Hooks>,
    /// The nodes' samples the admin console shows: this node's, taken by
    /// [`report_nodes`](AppState::report_nodes), and those the other nodes broadcast.
    pub nodes: Arc<Nodes>,
    /// What pollers keep between their requests (their presence entries).
    pub(crate) leases: Arc<crate::io::lease::Leases>,
    /// The mailboxes of users' connections, for the server API's orders.
    pub(crate) orders: Arc<Orders>,
    /// Where `internal_listen` was bound, once it is.
    internal: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
    /// Per-client connection, long-poll and rate limits, and what each client holds.
    pub limits: Arc<Limits>,
    /// Cancelled when the server shuts down: every long-lived body (SSE, stream, iframe, held
    /// long-poll, WebSocket) watches it and ends itself, or graceful shutdown would hang.
    pub shutdown: CancellationToken,
    /// The current generation of subscriber connections: a child of `shutdown`, cancelled and
    /// replaced by [`disconnect_all`](AppState::disconnect_all). Long-lived responses watch the
    /// generation they started in. (A `std` mutex: held only to clone or swap the token.)
    generation: Arc<Mutex<CancellationToken>>,
}

impl AppState {
    /// State for `broker` and `config`, with a fresh shutdown token.
    pub fn new(broker: Arc<dyn Broker>, config: Config) -> Self {
        let shutdown = CancellationToken::new();
        let metrics = Arc::new(Metrics::new(Arc::clone(&broker)));
        let webhooks = Arc::new(Webhooks::new(config.webhooks(), Arc::clone(&metrics)));
        // Transitions the broker makes on its own (a dead node's members removed) are webhooks
        // too. Weak: the webhooks' metrics hold the broker.
        let weak = Arc::downgrade(&webhooks);
        broker.on_presence_change(Arc::new(move |change: comet_core::PresenceChange| {
            if let Some(webhooks) = weak.upgrade() {
                webhooks.presence(&change.channel, &change.entry.user, change.joined, change.transition);
            }
        }));
        // Other nodes' orders to users' connections (the server API, through the broker), and
        // their numbers for the admin console.
        let orders = Arc::new(Orders::default());
        let nodes = Arc::new(Nodes::default());
        let local = Arc::clone(&orders);
        let seen = Arc::clone(&nodes);
        broker.on_broadcast(Arc::new(move |payload: bytes::Bytes| {
            match serde_json::from_slice::<Broadcasts>(&payload) {
                Ok(Broadcasts::Order(broadcast)) => {
                    if let Some((user, order)) = broadcast.order() {
                        local.send(&user, &order);
                    }
                }
                Ok(Broadcasts::NodeStats(stats)) => seen.heard(stats.node_stats),
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed broadcast from another node"),
            }
        }));
        Self(Arc::new(Services {
            internal: Arc::default(),
            orders,
            limits: Arc::new(Limits::new(&config.limits(), Arc::clone(&metrics))),
            auth: Auth::new(config.auth()),
            webhooks,
            hooks: Arc::new(Hooks::new(config.hooks(), Arc::clone(&metrics))),
            leases: Arc::default(),
            nodes,
            metrics,
            broker,
            config: Arc::new(config),
            generation: Arc::new(Mutex::new(shutdown.child_token())),
            shutdown,
        }))
    }

    /// The token a new long-lived response watches: cancelled on shutdown or by
    /// [`disconnect_all`](Self::disconnect_all), whichever comes first.
    pub fn connection_token(&self) -> CancellationToken {
        self.generation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The address `internal_listen` is bound to, once the server serves it.
    pub fn internal_addr(&self) -> Option<std::net::SocketAddr> {
        self.internal.get().copied()
    }

    pub(crate) fn set_internal_addr(&self, addr: std::net::SocketAddr) {
        let _ = self.internal.set(addr);
    }

    /// Sends `order` to every connection of `user`: on this node, and through the broker on
    /// every other (docs/protocol.md "Server API"). Returns how many connections here got it.
    ///
    /// # Errors
    /// The broker's, when the other nodes cannot be told (this node's connections got it).
    pub(crate) async fn order_user(&self, user: &str, order: Order) -> Result<usize, comet_core::BrokerError> {
        let here = self.orders.send(user, &order);
        let broadcast = Broadcast::of(user, &order);
        let payload = serde_json::to_vec(&broadcast).unwrap_or_default();
        self.broker.broadcast(bytes::Bytes::from(payload)).await?;
        Ok(here)
    }

    /// Until shutdown, every [`SAMPLE_EVERY`](crate::nodes::SAMPLE_EVERY): samples this node's
    /// numbers for the admin console and tells the other nodes (through the broker's
    /// broadcast). Spawned by the server when `admin_api_key` is set.
    pub async fn report_nodes(self) {
        let mut tick = tokio::time::interval(crate::nodes::SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let sample = crate::nodes::Sample::of(&self.metrics, &self.broker.stats().snapshot());
            let payload = self.nodes.sample(sample);
            if let Err(e) = self.broker.broadcast(bytes::Bytes::from(payload)).await {
                tracing::debug!(error = %e, "could not send this node's numbers to the others");
            }
        }
    }

    /// Ends every open subscriber connection the way shutdown does (clients get their reconnect
    /// hint and resume by cursor), while the server keeps running and accepting. Backs
    /// `POST /admin/disconnect` (for tests and for operators moving clients to other nodes).
    pub fn disconnect_all(&self) {
        let mut generation = self
            .generation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        generation.cancel();
        *generation = self.shutdown.child_token();
    }
}

/// What travels on the broker's broadcast: an order, or a node's numbers.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum Broadcasts {
    Order(Broadcast),
    NodeStats(NodeStatsBroadcast),
}

/// An order as it travels between nodes: `{"user","disconnect":{"reconnect"}}` or
/// `{"user","unsubscribe":"<channel>"}`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Broadcast {
    user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    disconnect: Option<Reconnect>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unsubscribe: Option<String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Reconnect {
    reconnect: bool,
}

impl Broadcast {
    fn of(user: &str, order: &Order) -> Self {
        let (disconnect, unsubscribe) = match order {
            Order::Disconnect { reconnect } => (Some(Reconnect { reconnect: *reconnect }), None),
            Order::Unsubscribe(channel) => (None, Some(channel.to_string())),
        };
        Self {
            user: user.to_owned(),
            disconnect,
            unsubscribe,
        }
    }

    fn order(self) -> Option<(String, Order)> {
        let order = match (self.disconnect, self.unsubscribe) {
            (Some(Reconnect { reconnect }), None) => Order::Disconnect { reconnect },
            (None, Some(channel)) => Order::Unsubscribe(comet_core::ChannelName::new(&channel).ok()?),
            _ => return None,
        };
        Some((self.user, order))
    }
}
