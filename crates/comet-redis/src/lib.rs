//! [`RedisBroker`]: the [`Broker`] trait over Redis, so that several `comet` nodes share channels,
//! history and cursors (docs/protocol.md "Delivery").
//!
//! - Publish is one Lua call (`scripts::publish`): it checks that Redis has not come back with
//!   older data since the channel was last written (else it moves the channel to a new epoch),
//!   assigns the channel's epoch (on first use) and next offset, appends to the channel's stream
//!   (`XADD … MAXLEN ~ N`, TTL), remembers the publish's idempotency key, and notifies every node
//!   with `PUBLISH`. The ack goes back only once Redis holds the message.
//! - Every publish carries an idempotency key (the publisher's, or one made here), so a publish
//!   whose answer was lost (a timeout, a dropped connection) is sent again until Redis answers:
//!   the outcome is known, and the message stored once.
//! - Each node holds one RESP3 pub/sub connection, subscribed only to channels with local
//!   subscribers, and fans out through the same [`Hub`] as the memory broker.
//! - One task per node, the *reader*, owns every Redis-side decision: subscribing a channel,
//!   reading its stream tail into the hub, applying notifications, unsubscribing idle channels,
//!   and resynchronising after a disconnection. Because it is the only writer of the hub and
//!   works in order, a notification that does not follow what the hub holds (a hole after lost
//!   notifications, or a new epoch after Redis lost its data) is never applied blindly: the reader
//!   reads the stream instead, so subscribers get every message or an explicit gap notice.

mod link;
pub use link::redacted_url;
mod presence;
mod reader;
mod scripts;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use comet_core::{
    BoxFuture, Broker, BrokerError, BrokerStats, ChannelInfo, ChannelName, ChannelSubscription, Cursor, Hub, HubConfig,
    Idempotency, Message, PresenceEntry, PresenceSink, Publish, Published, SharedStore, Since, TOMBSTONE_TTL,
    Transition, now_millis,
};
use redis::RedisError;
use tokio::sync::{mpsc, oneshot};

use crate::link::{Conn, DataLink, Source};

/// Settings of a [`RedisBroker`].
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or with Redis Sentinel
    /// `redis+sentinel://[[user]:password@]HOST:PORT[,HOST:PORT…]/MASTER_NAME[/db]` (the
    /// sentinels' addresses; the password is the master's): connections go to the master the
    /// sentinels name, and follow it after a failover; or with Redis Cluster (7 or newer)
    /// `redis+cluster://[[user]:password@]HOST:PORT[,HOST:PORT…]` (seed nodes): commands go to
    /// the master of each channel's slot, notifications by sharded pub/sub.
    pub url: String,
    /// Prefix of every key and pub/sub channel. Defaults to `comet`.
    pub prefix: String,
    /// Local fan-out and history bounds; a channel's `history_for` is also its stream's
    /// `MAXLEN ~` and TTL (refreshed by each publish).
    pub hub: HubConfig,
    /// How long a channel with no local subscriber stays subscribed in Redis, so that pollers
    /// coming back do not resubscribe every time. Defaults to 5 seconds.
    pub idle_unsubscribe: Duration,
    /// How long a publish whose outcome is unknown (its answer timed out, or the connection
    /// dropped after it was sent) is sent again with its idempotency key before the publisher
    /// gets `503`. Defaults to 5 seconds.
    pub publish_retry: Duration,
    /// How often the pub/sub connection is sent a `PING`; one unanswered within 2 s marks the
    /// link down (`/readyz` fails) and replaces the connection. Defaults to 1 second.
    pub pubsub_ping_interval: Duration,
    /// How long a presence entry lives in Redis without being renewed by its node (each node
    /// renews its own every third of it), and how long a node's subscriber count is believed:
    /// the entries and counts of a node that died go within it. At least 1 second. Defaults
    /// to 30 seconds (`presence_ttl_secs`).
    pub presence_ttl: Duration,
}

impl RedisConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>, hub: HubConfig) -> Self {
        Self {
            url: url.into(),
            prefix: "comet".to_owned(),
            hub,
            idle_unsubscribe: Duration::from_secs(5),
            publish_retry: Duration::from_secs(5),
            pubsub_ping_interval: Duration::from_secs(1),
            presence_ttl: Duration::from_secs(30),
        }
    }

    /// How long a channel's metadata (epoch, newest offset) outlives its last publish: at least
    /// [`TOMBSTONE_TTL`], as the memory broker remembers a forgotten channel, so a channel quiet
    /// for longer than its history's TTL goes on in its epoch (no false gap notice). 0 (keep
    /// for ever) when history has no TTL.
    pub(crate) fn meta_ttl_secs(&self, channel: &ChannelName) -> u64 {
        let ttl = self.hub.history_for(channel).max_age;
        if ttl.is_zero() {
            0
        } else {
            ttl.max(TOMBSTONE_TTL).as_secs()
        }
    }
}

/// Keys and the notification channel of one channel.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    meta: String,
    stream: String,
    notify: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, channel: &ChannelName) -> Self {
        Self {
            meta: format!("{prefix}:{{{channel}}}:m"),
            stream: format!("{prefix}:{{{channel}}}:s"),
            notify: format!("{prefix}:{{{channel}}}"),
        }
    }

    /// The key that remembers a publish's idempotency key (same hash slot as the channel).
    fn idempotency(prefix: &str, channel: &ChannelName, key: &str) -> String {
        format!("{prefix}:{{{channel}}}:k:{key}")
    }

    /// The hash of every node's subscriber count of the channel: node → `<count> <deadline ms>`.
    pub(crate) fn counts(prefix: &str, channel: &ChannelName) -> String {
        format!("{prefix}:{{{channel}}}:n")
    }
}

/// A fresh epoch: 48 random bits in lowercase hex, like the memory broker's.
pub(crate) fn new_epoch() -> String {
    format!("{:x}", rand::random::<u64>() >> 16)
}

fn unavailable(e: &RedisError) -> BrokerError {
    BrokerError::Unavailable(format!("redis: {e}"))
}

/// Whether a command that failed with `e` may have run on Redis all the same: its answer timed
/// out, or the connection dropped after it was sent. (A refused connection sent nothing.)
fn outcome_unknown(e: &RedisError) -> bool {
    !e.is_connection_refusal() && (e.is_timeout() || e.is_connection_dropped())
}

/// Whether a command that failed with `e` is worth sending again soon: the outcome is unknown,
/// or Redis said it cannot take writes yet (loading its data, a replica not yet promoted).
fn retryable(e: &RedisError) -> bool {
    outcome_unknown(e) || matches!(e.code(), Some("LOADING" | "READONLY" | "TRYAGAIN" | "MASTERDOWN"))
}

/// How long a key made for a publish without one is kept: long enough for its own retries
/// (`publish_retry`, 5 s by default, plus the last attempt's response timeout), with a margin.
const OWN_KEY_WINDOW: Duration = Duration::from_secs(15);

/// A request to the reader task.
#[derive(Debug)]
pub(crate) enum Request {
    Subscribe {
        channel: ChannelName,
        since: Since,
        reply: oneshot::Sender<Result<ChannelSubscription, BrokerError>>,
    },
}

/// What the reader task shares with the broker.
#[derive(Default)]
pub(crate) struct Shared {
    /// Whether the pub/sub link answered its last `PING` (and is subscribed): `/readyz`.
    pub(crate) link_up: AtomicBool,
    /// Whether Redis runs with `appendonly yes` and `appendfsync always`, as last read (never
    /// under Sentinel: see `scripts`, "Why the life").
    pub(crate) durable: AtomicBool,
    /// The broker follows a master that Sentinel names.
    pub(crate) sentinel: bool,
    /// The broker is on Redis Cluster: notifications are sharded (`SPUBLISH`, `SSUBSCRIBE`).
    pub(crate) cluster: bool,
    /// This broker's id among the nodes: 16 random hex digits, drawn at connection. Names its
    /// subscriber counts (`Keys::counts`), the presence notices and the broadcasts it publishes.
    pub(crate) node: String,
    /// Where the other nodes' broadcasts go (`Broker::on_broadcast`).
    pub(crate) broadcasts: std::sync::Mutex<Option<comet_core::BroadcastSink>>,
}

/// The pub/sub channel of broadcasts between nodes: `<node> <payload>`.
pub(crate) fn control_channel(prefix: &str) -> String {
    format!("{prefix}:control")
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("link_up", &self.link_up)
            .field("durable", &self.durable)
            .field("sentinel", &self.sentinel)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn store_durable(&self, durable: bool) {
        self.durable
            .store(durable && !self.sentinel && !self.cluster, Ordering::Relaxed);
    }

    /// After a connection failed, Redis may come back restarted with another `appendfsync`:
    /// until it is read again (every 5 s), writes claim no durability (`d = 0`), which at worst
    /// costs a precautionary gap notice, never a reused cursor.
    pub(crate) fn lost_contact(&self, e: &RedisError) {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
            self.durable.store(false, Ordering::Relaxed);
        }
    }
}

/// The Redis broker. Cheap to share (`Arc`); dropping the last handle stops its reader task.
#[derive(Debug)]
pub struct RedisBroker {
    hub: Arc<Hub>,
    data: DataLink,
    requests: mpsc::Sender<Request>,
    publish: redis::Script,
    shared: Arc<Shared>,
    presence: Arc<presence::RedisPresence>,
    config: RedisConfig,
}

/// Reads `appendonly` and `appendfsync`: whether a restart keeps every acknowledged write.
/// `false` when Redis does not say (a managed Redis may refuse `CONFIG`).
pub(crate) async fn read_durable(con: &mut Conn) -> bool {
    if con.is_cluster() {
        return false; // a master with replicas: see `scripts`, "Why the life"
    }
    let get = |name: &'static str| {
        let mut con = con.clone();
        async move {
            redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async::<Vec<String>>(&mut con)
                .await
                .ok()
                .and_then(|v| v.get(1).cloned())
        }
    };
    get("appendonly").await.as_deref() == Some("yes") && get("appendfsync").await.as_deref() == Some("always")
}

impl RedisBroker {
    /// Connects (two connections: commands, and RESP3 pub/sub) and starts the reader task.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when Redis cannot be reached or the URL is invalid.
    pub async fn connect(config: RedisConfig) -> Result<Self, BrokerError> {
        let data = DataLink::connect(Source::open(&config.url, false).map_err(|e| unavailable(&e))?)
            .await
            .map_err(|e| unavailable(&e))?;
        let pubsub_source = Source::open(&config.url, true).map_err(|e| unavailable(&e))?;
        let shared = Arc::new(Shared {
            sentinel: config.url.starts_with("redis+sentinel://"),
            cluster: config.url.starts_with("redis+cluster://"),
            node: format!("{:016x}", rand::random::<u64>()),
            ..Shared::default()
        });
        shared.store_durable(read_durable(&mut data.get()).await);
        let hub = Arc::new(Hub::new(config.hub.clone()));
        let (requests, request_rx) = mpsc::channel(1024);
        let reader = reader::Reader::connect(
            Arc::clone(&hub),
            data.clone(),
            pubsub_source,
            config.clone(),
            Arc::clone(&shared),
        )
        .await
        .map_err(|e| unavailable(&e))?;
        tokio::spawn(reader.run(request_rx));
        let presence = presence::RedisPresence::new(
            &config.prefix,
            &shared.node,
            config.presence_ttl,
            Arc::clone(&hub),
            data.clone(),
            shared.cluster,
        );
        tokio::spawn(presence::maintain_every_third(
            Arc::downgrade(&presence),
            config.presence_ttl,
        ));
        Ok(Self {
            hub,
            presence,
            data,
            requests,
            publish: redis::Script::new(&scripts::publish(shared.cluster)),
            shared,
            config,
        })
    }

    /// The local fan-out.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Runs the publish script, sending it again while its outcome is unknown (up to
    /// [`RedisConfig::publish_retry`]); the key makes the repeats harmless.
    async fn publish_now(&self, msg: &Publish, key: &Idempotency, time: u64) -> Result<Published, BrokerError> {
        let data = comet_core::NotUtf8::check(&msg.data)?;
        let keys = Keys::new(&self.config.prefix, &msg.channel);
        let history = self.config.hub.history_for(&msg.channel);
        let event = msg.event.as_ref().map_or("", |e| e.as_str());
        let key_name = Keys::idempotency(&self.config.prefix, &msg.channel, key.key());
        let deadline = Instant::now() + self.config.publish_retry;
        let mut ambiguous = false;
        let mut delay = Duration::from_millis(50);
        let fresh = new_epoch();
        loop {
            // Read at every attempt: after a failed one, Redis may be a new life (lost_contact).
            let durable = if self.shared.durable.load(Ordering::Relaxed) {
                "1"
            } else {
                "0"
            };
            let result: Result<(String, u64, u8), RedisError> = self
                .publish
                .key(&keys.meta)
                .key(&keys.stream)
                .key(&key_name)
                .arg(&fresh)
                .arg(history.max_messages)
                .arg(history.max_age.as_secs())
                .arg(self.config.meta_ttl_secs(&msg.channel))
                .arg(time)
                .arg(event)
                .arg(data)
                .arg(&keys.notify)
                .arg(durable)
                .arg(key.window.as_secs().max(1))
                .invoke_async(&mut self.data.get())
                .await;
            match result {
                Ok((epoch, offset, duplicate)) => {
                    let epoch = u64::from_str_radix(&epoch, 16).map_err(|_| {
                        BrokerError::Internal(format!("redis holds an invalid epoch {epoch:?} for {}", msg.channel))
                    })?;
                    return Ok(Published {
                        cursor: Cursor::new(epoch, offset),
                        duplicate: duplicate == 1,
                    });
                }
                Err(e) => {
                    self.data.note(&e);
                    self.shared.lost_contact(&e);
                    ambiguous |= outcome_unknown(&e);
                    if !retryable(&e) || Instant::now() + delay > deadline {
                        let why = if ambiguous {
                            format!(
                                "redis: {e}; the publish may have been stored: send it again with the same \
                                 Idempotency-Key to publish it once"
                            )
                        } else {
                            format!("redis: {e}")
                        };
                        return Err(BrokerError::Unavailable(why));
                    }
                    tracing::debug!(channel = %msg.channel, error = %e, "publish outcome unknown; sending it again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    async fn info_now(&self, channel: ChannelName) -> Result<ChannelInfo, BrokerError> {
        let keys = Keys::new(&self.config.prefix, &channel);
        let mut con = self.data.get();
        type Meta = (Option<String>, Option<u64>);
        let ((epoch, offset), len, counts): (Meta, usize, Vec<(String, String)>) = redis::pipe()
            .hmget(&keys.meta, &["e", "o"])
            .xlen(&keys.stream)
            .hgetall(Keys::counts(&self.config.prefix, &channel))
            .query_async(&mut con)
            .await
            .map_err(|e| self.data.failed(&e))?;
        let last = match (epoch.and_then(|e| u64::from_str_radix(&e, 16).ok()), offset) {
            (Some(e), Some(o)) if o > 0 => Some(Cursor::new(e, o)),
            _ => None,
        };
        // This node's count now, the others' as they last wrote them (and not expired). The
        // fields of nodes that stopped writing (dead, restarted under a new id) are removed.
        let now = now_millis();
        let mut others = 0;
        let mut dead = Vec::new();
        for (node, value) in &counts {
            if *node == self.shared.node {
                continue;
            }
            let parsed = value
                .split_once(' ')
                .and_then(|(count, deadline)| Some((count.parse::<usize>().ok()?, deadline.parse::<u64>().ok()?)));
            match parsed {
                Some((count, deadline)) if deadline > now => others += count,
                _ => dead.push(node.as_str()),
            }
        }
        if !dead.is_empty() {
            let forget = redis::cmd("HDEL")
                .arg(Keys::counts(&self.config.prefix, &channel))
                .arg(&dead)
                .to_owned();
            if let Err(e) = forget.query_async::<()>(&mut con).await {
                tracing::debug!(%channel, error = %e, "dead nodes' counts not removed; they are ignored");
            }
        }
        Ok(ChannelInfo {
            subscribers: self.hub.subscribers(&channel) + others,
            channel,
            last,
            history_len: len,
        })
    }
}

impl RedisBroker {
    /// `SET name value EX ttl [NX]`.
    async fn store(&self, name: String, value: Vec<u8>, ttl: Duration, only_new: bool) -> Result<(), BrokerError> {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&name).arg(value).arg("EX").arg(secs.max(1));
        if only_new {
            cmd.arg("NX");
        }
        let mut con = self.data.get();
        cmd.query_async::<Option<String>>(&mut con)
            .await
            .map(drop)
            .map_err(|e| self.data.failed(&e))
    }
}

/// Channel names a `GET /channels` looks at, at most, per call.
const MAX_LISTED: usize = 100_000;

impl RedisBroker {
    async fn channels_now(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(ChannelName, usize)>, BrokerError> {
        let p = &self.config.prefix;
        // The prefix is the client's: its glob characters are escaped, and every name is
        // checked against it again.
        let escaped: String = prefix
            .chars()
            .flat_map(|c| {
                let escape = matches!(c, '*' | '?' | '[' | ']' | '\\').then_some('\\');
                escape.into_iter().chain([c])
            })
            .collect();
        let pattern = format!("{p}:{{{escaped}*}}:n");
        let mut names: std::collections::BTreeSet<ChannelName> = self
            .hub
            .active_channels(prefix, after, usize::MAX)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        // Every master's keys on a cluster (a channel's keys live on its slot's master).
        let keys = self
            .data
            .get()
            .scan(&pattern, MAX_LISTED)
            .await
            .map_err(|e| self.data.failed(&e))?;
        for key in keys {
            let name = key
                .strip_prefix(p.as_str())
                .and_then(|k| k.strip_prefix(":{"))
                .and_then(|k| k.strip_suffix("}:n"));
            if let Some(channel) = name.and_then(|n| ChannelName::new(n).ok())
                && channel.as_str().starts_with(prefix)
                && after.is_none_or(|after| channel.as_str() > after)
            {
                names.insert(channel);
            }
        }
        let mut out = Vec::with_capacity(limit.min(names.len()));
        for channel in names {
            if out.len() >= limit {
                break;
            }
            let subscribers = self.info_now(channel.clone()).await?.subscribers;
            if subscribers > 0 {
                out.push((channel, subscribers));
            }
        }
        Ok(out)
    }
}

/// A key of our own for a publish without one: 128 random bits.
fn own_key() -> Idempotency {
    let key = format!("comet.{:032x}", rand::random::<u128>());
    Idempotency::new(&key, OWN_KEY_WINDOW).expect("a hex key is a valid key")
}

impl Broker for RedisBroker {
    fn publish(&self, msg: Publish) -> BoxFuture<'_, Result<Arc<Message>, BrokerError>> {
        Box::pin(async move {
            let time = now_millis();
            let published = self.publish_now(&msg, &own_key(), time).await?;
            self.hub.stats().record_published(1);
            Ok(Arc::new(Message::new(
                msg.channel,
                published.cursor,
                msg.event,
                &msg.data,
                time,
            )?))
        })
    }

    fn publish_idempotent(&self, msg: Publish, key: Idempotency) -> BoxFuture<'_, Result<Published, BrokerError>> {
        Box::pin(async move {
            let published = self.publish_now(&msg, &key, now_millis()).await?;
            if !published.duplicate {
                self.hub.stats().record_published(1);
            }
            Ok(published)
        })
    }

    fn subscribe(&self, channel: ChannelName, since: Since) -> BoxFuture<'_, Result<ChannelSubscription, BrokerError>> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            self.requests
                .send(Request::Subscribe { channel, since, reply })
                .await
                .map_err(|_| BrokerError::Internal("the redis reader task has stopped".to_owned()))?;
            answer
                .await
                .map_err(|_| BrokerError::Internal("the redis reader task has stopped".to_owned()))?
        })
    }

    fn channel_info(&self, channel: ChannelName) -> BoxFuture<'_, Result<ChannelInfo, BrokerError>> {
        Box::pin(self.info_now(channel))
    }

    fn holds(&self, channel: &ChannelName) -> bool {
        self.hub.holds(channel)
    }

    /// This node's channels, and those whose count hashes (`Keys::counts`) other nodes keep
    /// (a `SCAN`, at most 100,000 names), with the counts of every node.
    fn channels<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(ChannelName, usize)>, BrokerError>> {
        Box::pin(self.channels_now(prefix, after, limit))
    }

    fn presence_join(
        &self,
        channel: &ChannelName,
        entry: PresenceEntry,
        announce: bool,
    ) -> BoxFuture<'_, Result<Transition, BrokerError>> {
        let channel = channel.clone();
        Box::pin(async move { self.presence.join(&channel, entry, announce).await })
    }

    fn presence_leave(
        &self,
        channel: &ChannelName,
        client: &str,
        announce: bool,
    ) -> BoxFuture<'_, Result<Option<(PresenceEntry, Transition)>, BrokerError>> {
        // Whether the leave is announced was stored with the entry (its join's `announce`).
        let _ = announce;
        let (channel, client) = (channel.clone(), client.to_owned());
        Box::pin(async move { self.presence.leave(&channel, &client).await })
    }

    fn presence(&self, channel: &ChannelName) -> BoxFuture<'_, Result<Vec<PresenceEntry>, BrokerError>> {
        let channel = channel.clone();
        Box::pin(async move { self.presence.members(&channel).await })
    }

    fn on_presence_change(&self, sink: PresenceSink) {
        self.presence.set_sink(sink);
    }

    /// `PUBLISH <prefix>:control "<node> <payload>"`: every node's reader gets it, and all but
    /// this one hand it on.
    fn broadcast(&self, payload: bytes::Bytes) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut message = Vec::with_capacity(self.shared.node.len() + 1 + payload.len());
            message.extend_from_slice(self.shared.node.as_bytes());
            message.push(b' ');
            message.extend_from_slice(&payload);
            let mut con = self.data.get();
            redis::cmd("PUBLISH")
                .arg(control_channel(&self.config.prefix))
                .arg(message)
                .query_async::<()>(&mut con)
                .await
                .map_err(|e| self.data.failed(&e))
        })
    }

    fn on_broadcast(&self, sink: comet_core::BroadcastSink) {
        *self
            .shared
            .broadcasts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sink);
    }

    /// Both links answer: the command connection a `PING` within 1 s, and the pub/sub
    /// connection its last periodic `PING` (so a silently dead pub/sub link is not ready).
    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            if !self.shared.link_up.load(Ordering::Relaxed) {
                return false;
            }
            let mut con = self.data.get();
            let ping = redis::cmd("PING");
            match tokio::time::timeout(Duration::from_secs(1), ping.query_async::<String>(&mut con)).await {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => {
                    self.data.note(&e);
                    false
                }
                Err(_) => {
                    tracing::warn!("redis did not answer a readiness PING within 1 s; reconnecting");
                    self.data.replace();
                    false
                }
            }
        })
    }

    fn stats(&self) -> &BrokerStats {
        self.hub.stats()
    }

    fn shared_store(&self) -> Option<&dyn SharedStore> {
        Some(self)
    }
}

/// Keys `<prefix>:t:<key>`: `SET … EX … NX` to put, `SET … EX` to set, `GET` to get, `GETDEL`
/// (Redis 6.2) to take.
impl SharedStore for RedisBroker {
    fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(self.store(format!("{}:t:{key}", self.config.prefix), value, ttl, true))
    }

    fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(self.store(format!("{}:t:{key}", self.config.prefix), value, ttl, false))
    }

    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, BrokerError>> {
        let name = format!("{}:t:{key}", self.config.prefix);
        Box::pin(async move {
            let mut con = self.data.get();
            redis::cmd("GET")
                .arg(&name)
                .query_async::<Option<Vec<u8>>>(&mut con)
                .await
                .map_err(|e| self.data.failed(&e))
        })
    }

    fn take(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, BrokerError>> {
        let name = format!("{}:t:{key}", self.config.prefix);
        Box::pin(async move {
            let mut con = self.data.get();
            redis::cmd("GETDEL")
                .arg(&name)
                .query_async::<Option<Vec<u8>>>(&mut con)
                .await
                .map_err(|e| self.data.failed(&e))
        })
    }
}
