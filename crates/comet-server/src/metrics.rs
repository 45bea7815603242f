//! [`Metrics`]: what `GET /metrics` reports, in the Prometheus text format.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use comet_core::Broker;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::kind::Kind;

/// Label set `transport="sse"` etc.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

/// Label set `limit="max_connections_per_ip"` etc.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct LimitLabel {
    limit: &'static str,
}

/// Label set `hook="connect"`, `outcome="allowed"` etc.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct HookLabel {
    hook: &'static str,
    outcome: &'static str,
}

/// Label set `hook="connect"` etc.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct HookNameLabel {
    hook: &'static str,
}

/// The server's metrics. Cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    open: Family<TransportLabel, Gauge>,
    /// Client connections held open (short polls are not): one per WebSocket, SSE, stream or
    /// iframe response, and per held long poll.
    connections_open: Family<TransportLabel, Gauge>,
    opened: Family<TransportLabel, Counter>,
    /// Each transport's series of the three families above, by [`Kind::ALL`]'s order: taken
    /// from the families at a transport's first subscriber (so `/metrics` still lists only the
    /// transports used) and kept, so that a subscribe does not hash its label three times and
    /// take three locks (S5 in bench/RESULTS.md).
    by_kind: [std::sync::OnceLock<KindSeries>; Kind::ALL.len()],
    publish_seconds: Histogram,
    limit_refusals: Family<LimitLabel, Counter>,
    hook_calls: Family<HookLabel, Counter>,
    hook_seconds: Family<HookNameLabel, Histogram, fn() -> Histogram>,
    /// Connections accepted and still open (all transports, plus plain HTTP requests).
    pub(crate) connections: Arc<AtomicI64>,
    /// Accepts refused because the process ran out of file descriptors or hit `max_connections`.
    pub(crate) refused: Arc<AtomicU64>,
    /// Occupancy webhooks (webhooks.rs): events queued, POSTs answered 2xx, attempts that
    /// failed, events dropped (queue full, or retries given up).
    pub(crate) webhook_events: Counter,
    pub(crate) webhook_deliveries: Counter,
    pub(crate) webhook_failures: Counter,
    pub(crate) webhook_dropped: Counter,
}

/// One transport's subscriber series (see [`Metrics::by_kind`](Metrics)).
#[derive(Debug)]
struct KindSeries {
    opened: Counter,
    open: Gauge,
    /// `None` for short polls, which hold no connection open.
    connections_open: Option<Gauge>,
}

/// Exports the broker's own counters at scrape time.
#[derive(Debug)]
struct BrokerCollector(Arc<dyn Broker>);

impl prometheus_client::collector::Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats().snapshot();
        for (name, help, value) in [
            ("comet_messages_published", "Messages accepted by publish.", s.published),
            (
                "comet_messages_delivered",
                "Messages handed to subscribers, one per subscriber per message.",
                s.delivered,
            ),
            (
                "comet_subscribers_lagged",
                "Times a subscriber fell more than queue_len behind and caught up from history.",
                s.lagged,
            ),
            (
                "comet_gaps",
                "Gap notices: a cursor older than history or of another epoch.",
                s.gaps,
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct AtomicCollector {
    connections: Arc<AtomicI64>,
    refused: Arc<AtomicU64>,
}

impl prometheus_client::collector::Collector for AtomicCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = prometheus_client::metrics::gauge::ConstGauge::new(self.connections.load(Ordering::Relaxed));
        let metric = encoder.encode_descriptor(
            "comet_tcp_connections",
            "Open TCP connections.",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)?;
        let counter = ConstCounter::new(self.refused.load(Ordering::Relaxed));
        let metric = encoder.encode_descriptor(
            "comet_connections_refused",
            "Connections refused: out of file descriptors or over max_connections.",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

impl Metrics {
    /// Metrics that also export `broker`'s counters.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        let mut registry = Registry::default();
        let open = Family::<TransportLabel, Gauge>::default();
        let opened = Family::<TransportLabel, Counter>::default();
        // 50 µs .. ~0.4 s.
        let publish_seconds = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.000_05, 2.0, 14,
        ));
        registry.register(
            "comet_subscribers_open",
            "Open subscriber connections by transport.",
            open.clone(),
        );
        let connections_open = Family::<TransportLabel, Gauge>::default();
        registry.register(
            "comet_connections_open",
            "Client connections held open by transport: one per WebSocket, SSE, stream or iframe response, and per held long poll (short polls are not).",
            connections_open.clone(),
        );
        registry.register(
            "comet_subscribers_opened",
            "Subscriber connections opened by transport.",
            opened.clone(),
        );
        registry.register(
            "comet_publish_duration_seconds",
            "Time to publish one message.",
            publish_seconds.clone(),
        );
        let limit_refusals = Family::<LimitLabel, Counter>::default();
        registry.register(
            "comet_limit_refusals",
            "Requests, connections, subscriptions and publishes refused by a limit (the setting's name).",
            limit_refusals.clone(),
        );
        let hook_calls = Family::<HookLabel, Counter>::default();
        registry.register(
            "comet_hook_calls",
            "Back-end hook calls by hook and outcome: allowed, refused (the back-end said no), failed (down, slow or a bad answer: the client got 503).",
            hook_calls.clone(),
        );
        let hook_seconds = Family::<HookNameLabel, Histogram>::new_with_constructor(
            (|| {
                Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                    0.000_1, 2.0, 16,
                ))
            }) as fn() -> Histogram,
        );
        registry.register(
            "comet_hook_duration_seconds",
            "Time a back-end hook took to answer (or to fail).",
            hook_seconds.clone(),
        );
        let webhook = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let webhook_events = webhook(
            &mut registry,
            "comet_webhook_events",
            "Occupancy webhook events queued.",
        );
        let webhook_deliveries = webhook(
            &mut registry,
            "comet_webhook_deliveries",
            "Occupancy webhook POSTs answered with a 2xx status.",
        );
        let webhook_failures = webhook(
            &mut registry,
            "comet_webhook_failures",
            "Occupancy webhook POSTs that failed (network error, timeout, non-2xx); each is retried.",
        );
        let webhook_dropped = webhook(
            &mut registry,
            "comet_webhook_dropped",
            "Occupancy webhook events dropped: the queue was full, or every retry failed.",
        );
        registry.register_collector(Box::new(BrokerCollector(broker)));
        let connections = Arc::new(AtomicI64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        registry.register_collector(Box::new(AtomicCollector {
            connections: Arc::clone(&connections),
            refused: Arc::clone(&refused),
        }));
        Self {
            registry,
            open,
            connections_open,
            opened,
            by_kind: Default::default(),
            publish_seconds,
            limit_refusals,
            hook_calls,
            hook_seconds,
            connections,
            refused,
            webhook_events,
            webhook_deliveries,
            webhook_failures,
            webhook_dropped,
        }
    }

    /// `kind`'s series, made at its first use.
    fn series(&self, kind: Kind) -> &KindSeries {
        self.by_kind[kind as usize].get_or_init(|| {
            let label = TransportLabel { transport: kind.name() };
            KindSeries {
                opened: self.opened.get_or_create(&label).clone(),
                open: self.open.get_or_create(&label).clone(),
                connections_open: (kind != Kind::Poll).then(|| self.connections_open.get_or_create(&label).clone()),
            }
        })
    }

    /// Counts a subscriber connection of `kind` open until the guard is dropped.
    pub fn subscriber(self: &Arc<Self>, kind: Kind) -> SubscriberGuard {
        let series = self.series(kind);
        series.opened.inc();
        series.open.inc();
        if let Some(connections) = &series.connections_open {
            connections.inc();
        }
        SubscriberGuard {
            metrics: Arc::clone(self),
            kind,
        }
    }

    /// Counts one refusal by `limit` in `comet_limit_refusals_total`.
    pub fn limit_refused(&self, limit: crate::limits::Limit) {
        self.limit_refusals
            .get_or_create(&LimitLabel { limit: limit.name() })
            .inc();
    }

    /// Refusals by `limit` so far.
    pub fn limit_refusals(&self, limit: crate::limits::Limit) -> u64 {
        self.limit_refusals
            .get_or_create(&LimitLabel { limit: limit.name() })
            .get()
    }

    /// Counts one call of `hook` with `outcome` (`allowed`, `refused`, `failed`).
    pub(crate) fn hook_call(&self, hook: &'static str, outcome: &'static str) {
        self.hook_calls.get_or_create(&HookLabel { hook, outcome }).inc();
    }

    /// Records one call of `hook` that took `seconds`.
    pub(crate) fn observe_hook(&self, hook: &'static str, seconds: f64) {
        self.hook_seconds
            .get_or_create(&HookNameLabel { hook })
            .observe(seconds);
    }

    /// Records one publish that took `seconds`.
    pub fn observe_publish(&self, seconds: f64) {
        self.publish_seconds.observe(seconds);
    }

    /// Open subscriber connections of `kind` right now.
    pub fn open_subscribers(&self, kind: Kind) -> i64 {
        self.open
            .get_or_create(&TransportLabel { transport: kind.name() })
            .get()
    }

    /// Client connections held open right now (`comet_connections_open`), by transport name,
    /// for every transport that holds one (short polls do not).
    pub fn connections_open(&self) -> Vec<(&'static str, i64)> {
        Kind::ALL
            .into_iter()
            .filter(|kind| *kind != Kind::Poll)
            .map(|kind| {
                let label = TransportLabel { transport: kind.name() };
                // `get`, not `get_or_create`: reading must not add series to `/metrics`.
                let open = self.connections_open.get(&label).map_or(0, |g| g.get());
                (kind.name(), open)
            })
            .collect()
    }

    /// Open subscriber connections of every transport right now (`comet_subscribers_open`
    /// summed).
    pub fn subscribers_open(&self) -> i64 {
        Kind::ALL
            .into_iter()
            .filter_map(|kind| {
                self.open
                    .get(&TransportLabel { transport: kind.name() })
                    .map(|g| g.get())
            })
            .sum()
    }

    /// Refusals by every limit so far (`comet_limit_refusals` summed).
    pub fn limit_refusals_total(&self) -> u64 {
        crate::limits::Limit::ALL
            .into_iter()
            .filter_map(|limit| {
                self.limit_refusals
                    .get(&LimitLabel { limit: limit.name() })
                    .map(|c| c.get())
            })
            .sum()
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Keeps a subscriber counted in `comet_subscribers_open` while alive.
#[derive(Debug)]
pub struct SubscriberGuard {
    metrics: Arc<Metrics>,
    kind: Kind,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        let series = self.metrics.series(self.kind);
        series.open.dec();
        if let Some(connections) = &series.connections_open {
            connections.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Kind, Metrics};

    /// The series kept per transport are the families' own: a subscriber counts in
    /// `/metrics` while it lives, a transport nobody used has no series, and every transport
    /// lands on its own label.
    #[test]
    fn subscribers_count_under_their_own_transport() {
        let config = crate::config::Config::default();
        let broker = Arc::new(comet_core::MemoryBroker::new(config.hub_config()));
        let metrics = Arc::new(Metrics::new(broker));
        let sse = metrics.subscriber(Kind::Sse);
        let polls: Vec<_> = (0..2).map(|_| metrics.subscriber(Kind::Poll)).collect();
        let text = metrics.encode();
        for line in [
            "comet_subscribers_open{transport=\"sse\"} 1",
            "comet_connections_open{transport=\"sse\"} 1",
            "comet_subscribers_opened_total{transport=\"sse\"} 1",
            "comet_subscribers_open{transport=\"poll\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("connections_open{transport=\"poll\"}"), "{text}");
        assert!(!text.contains("transport=\"ws\""), "{text}");
        assert_eq!(metrics.subscribers_open(), 3);
        drop(sse);
        drop(polls);
        let text = metrics.encode();
        assert!(text.contains("comet_subscribers_open{transport=\"sse\"} 0"), "{text}");
        assert!(text.contains("comet_connections_open{transport=\"sse\"} 0"), "{text}");
        assert!(
            text.contains("comet_subscribers_opened_total{transport=\"sse\"} 1"),
            "{text}"
        );
        assert_eq!(metrics.subscribers_open(), 0);
    }
}
