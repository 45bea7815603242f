//! [`Nodes`]: what the admin console shows of each node of the cluster (docs/protocol.md "Admin
//! console"). Every [`SAMPLE_EVERY`] a node takes a [`Sample`] of its own numbers, keeps it,
//! and sends it to the other nodes through the broker's broadcast; each node keeps the samples
//! of the others as they come. Samples are kept for [`KEEP`] (15 minutes), so the console's
//! charts have their history on first load; a node not heard from for [`FORGET_AFTER`] is
//! dropped, and at most [`MAX_NODES`] others are kept. With the memory broker there is no other
//! node: the console shows this one.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::metrics::Metrics;

/// How often a node samples its numbers and tells the others. 2 seconds.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// How long samples are kept: the span of the console's charts. 15 minutes.
pub const KEEP: Duration = Duration::from_secs(15 * 60);

/// A node not heard from for this long is dropped from the list. 30 seconds.
pub const FORGET_AFTER: Duration = Duration::from_secs(30);

/// A node heard from within this is `"live"`: three sampling periods. 6 seconds.
const LIVE_WITHIN: Duration = Duration::from_secs(6);

/// The most other nodes kept; a broadcast from one more is ignored until one is forgotten.
pub const MAX_NODES: usize = 64;

/// The most samples kept per node: [`KEEP`] / [`SAMPLE_EVERY`].
const MAX_SAMPLES: usize = (KEEP.as_secs() / SAMPLE_EVERY.as_secs()) as usize;

/// One node's numbers at one moment. Counters (`published`, …) are totals since the node
/// started: the console draws rates from two samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When, in milliseconds since the Unix epoch.
    pub time: u64,
    /// Client connections held open, by transport (`comet_connections_open`).
    pub connections: BTreeMap<String, i64>,
    /// Open subscriber connections, short polls in flight included (`comet_subscribers_open`).
    pub subscribers: i64,
    /// Open TCP connections (`comet_tcp_connections`).
    pub tcp_connections: i64,
    /// Messages published through this node (`comet_messages_published`).
    pub published: u64,
    /// Messages handed to this node's subscribers (`comet_messages_delivered`).
    pub delivered: u64,
    /// Gap notices sent (`comet_gaps`).
    pub gaps: u64,
    /// Subscribers that fell behind their queue (`comet_subscribers_lagged`).
    pub lagged: u64,
    /// Refusals by a limit (`comet_limit_refusals`, every limit).
    pub limit_refusals: u64,
    /// Connections refused: over `max_connections` or out of descriptors
    /// (`comet_connections_refused`).
    pub connections_refused: u64,
}

impl Sample {
    /// This node's numbers now.
    pub fn of(metrics: &Metrics, broker: &comet_core::StatsSnapshot) -> Self {
        use std::sync::atomic::Ordering;
        Self {
            time: comet_core::now_millis(),
            connections: metrics
                .connections_open()
                .into_iter()
                .map(|(name, n)| (name.to_owned(), n))
                .collect(),
            subscribers: metrics.subscribers_open(),
            tcp_connections: metrics.connections.load(Ordering::Relaxed),
            published: broker.published,
            delivered: broker.delivered,
            gaps: broker.gaps,
            lagged: broker.lagged,
            limit_refusals: metrics.limit_refusals_total(),
            connections_refused: metrics.refused.load(Ordering::Relaxed),
        }
    }
}

/// What a node tells the others every [`SAMPLE_EVERY`]: `{"node_stats":{"node","version",
/// "started_at","sample"}}` on the broker's broadcast channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStats {
    /// The node's id: random, new at each start.
    pub node: String,
    /// The node's Comet version.
    pub version: String,
    /// When the node started, in milliseconds since the Unix epoch.
    pub started_at: u64,
    /// Its latest numbers.
    pub sample: Sample,
}

/// The broadcast's wrapper, so that the other kinds of broadcast (the server API's orders) are
/// told apart.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeStatsBroadcast {
    /// The snapshot.
    pub node_stats: NodeStats,
}

/// One node's samples, oldest first.
#[derive(Debug)]
struct Series {
    version: String,
    started_at: u64,
    /// When the last sample came, on this node's monotonic clock (other nodes' wall clocks
    /// may differ from ours).
    heard: tokio::time::Instant,
    samples: VecDeque<Sample>,
}

impl Series {
    fn push(&mut self, sample: Sample) {
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
        self.heard = tokio::time::Instant::now();
    }
}

/// The nodes' samples, this node's and the others'.
#[derive(Debug)]
pub struct Nodes {
    me: String,
    started_at: u64,
    /// By node id. A `std` mutex: held to push a sample or copy a page of them, never across
    /// an `.await`.
    series: Mutex<BTreeMap<String, Series>>,
}

impl Default for Nodes {
    /// This node, listed from the start (with no sample until the first is taken).
    fn default() -> Self {
        let me = format!("{:016x}", rand::random::<u64>());
        let started_at = comet_core::now_millis();
        let mine = Series {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at,
            heard: tokio::time::Instant::now(),
            samples: VecDeque::new(),
        };
        Self {
            series: Mutex::new(BTreeMap::from([(me.clone(), mine)])),
            me,
            started_at,
        }
    }
}

impl Nodes {
    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Series>> {
        self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, stats: NodeStats) {
        let mut series = self.lock();
        let now = tokio::time::Instant::now();
        series.retain(|node, s| *node == self.me || now.duration_since(s.heard) < FORGET_AFTER);
        let others = series.len() - usize::from(series.contains_key(&self.me));
        if !series.contains_key(&stats.node) && stats.node != self.me && others >= MAX_NODES {
            return;
        }
        let entry = series.entry(stats.node).or_insert_with(|| Series {
            version: stats.version.clone(),
            started_at: stats.started_at,
            heard: now,
            samples: VecDeque::new(),
        });
        // A node that restarted under the same id (it does not: ids are random) or a newer
        // version: its latest word counts.
        entry.version = stats.version;
        entry.started_at = stats.started_at;
        entry.push(stats.sample);
    }

    /// Keeps `sample` as this node's and returns the broadcast that tells the others.
    pub fn sample(&self, sample: Sample) -> Vec<u8> {
        let stats = NodeStats {
            node: self.me.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: self.started_at,
            sample,
        };
        let payload = serde_json::to_vec(&NodeStatsBroadcast {
            node_stats: stats.clone(),
        })
        .unwrap_or_default();
        self.record(stats);
        payload
    }

    /// Keeps another node's broadcast snapshot; one from this node (a broker that echoes) is
    /// ignored.
    pub fn heard(&self, stats: NodeStats) {
        if stats.node != self.me {
            self.record(stats);
        }
    }

    /// `{"node","nodes":[{"node","version","started_at","uptime_secs","live","samples":[…]}]}`:
    /// every node known (this one first), each with its samples taken after `since`
    /// (milliseconds since the Unix epoch; all kept when `None`).
    pub fn to_json(&self, since: Option<u64>) -> Value {
        let now = tokio::time::Instant::now();
        let wall = comet_core::now_millis();
        let series = self.lock();
        let mut nodes: Vec<(&String, &Series)> = series
            .iter()
            .filter(|(node, s)| **node == self.me || now.duration_since(s.heard) < FORGET_AFTER)
            .collect();
        nodes.sort_by_key(|(node, _)| **node != self.me);
        let list: Vec<Value> = nodes
            .into_iter()
            .map(|(node, s)| {
                let samples: Vec<&Sample> = s
                    .samples
                    .iter()
                    .filter(|sample| since.is_none_or(|since| sample.time > since))
                    .collect();
                json!({
                    "node": node,
                    "version": s.version,
                    "started_at": s.started_at,
                    "uptime_secs": wall.saturating_sub(s.started_at) / 1000,
                    "live": **node == self.me || now.duration_since(s.heard) < LIVE_WITHIN,
                    "samples": samples,
                })
            })
            .collect();
        json!({"node": self.me, "nodes": list})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(node: &str, time: u64) -> NodeStats {
        NodeStats {
            node: node.into(),
            version: "0.0.1".into(),
            started_at: 1,
            sample: Sample {
                time,
                ..Sample::default()
            },
        }
    }

    #[test]
    fn samples_are_bounded_and_paged_by_time() {
        let nodes = Nodes::default();
        for t in 0..(MAX_SAMPLES as u64 + 10) {
            nodes.sample(Sample {
                time: t,
                ..Sample::default()
            });
        }
        let all = nodes.to_json(None);
        assert_eq!(all["nodes"][0]["samples"].as_array().unwrap().len(), MAX_SAMPLES);
        let recent = nodes.to_json(Some(MAX_SAMPLES as u64 + 7));
        assert_eq!(recent["nodes"][0]["samples"].as_array().unwrap().len(), 2);
        assert_eq!(recent["nodes"][0]["node"], nodes.me());
    }

    #[test]
    fn other_nodes_are_kept_up_to_a_bound_and_our_own_echo_is_ignored() {
        let nodes = Nodes::default();
        nodes.sample(Sample::default());
        nodes.heard(stats(nodes.me(), 5));
        for i in 0..(MAX_NODES + 3) {
            nodes.heard(stats(&format!("node-{i:03}"), 1));
        }
        let json = nodes.to_json(None);
        let list = json["nodes"].as_array().unwrap();
        assert_eq!(list.len(), MAX_NODES + 1);
        assert_eq!(list[0]["node"], nodes.me(), "this node first");
        assert_eq!(list[0]["samples"].as_array().unwrap().len(), 1, "its echo was not kept");
        let payload = nodes.sample(Sample::default());
        let back: NodeStatsBroadcast = serde_json::from_slice(&payload).unwrap();
        assert_eq!(back.node_stats.node, nodes.me());
    }
}
