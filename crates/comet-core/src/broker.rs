//! The [`Broker`] trait: what every transport talks to, whatever stores the messages.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::cursor::{Cursor, Since};
use crate::hub::{ChannelSubscription, Event, Idempotency, Published};
use crate::message::{Message, NotUtf8};
use crate::name::{ChannelName, EventName};
use crate::presence::{PresenceEntry, Transition};
use crate::stats::BrokerStats;

/// A boxed, `Send` future, as returned by [`Broker`] methods (so brokers can be chosen at run
/// time as `Arc<dyn Broker>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Publish {
    /// Where to publish.
    pub channel: ChannelName,
    /// The event name; `None` for the default `message`.
    pub event: Option<EventName>,
    /// The text, UTF-8.
    pub data: Bytes,
}

/// Why a broker call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The data is not UTF-8 text.
    #[error(transparent)]
    NotUtf8(#[from] NotUtf8),
    /// The broker's backing store cannot be reached (e.g. Redis is down). Retry later.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker's store has no room left (a full disk): nothing was published. Subscribers
    /// are still served; publishes succeed again once there is room.
    #[error("broker storage full: {0}")]
    Full(String),
    /// Anything else.
    #[error("broker error: {0}")]
    Internal(String),
    /// This broker does not provide the feature named.
    #[error("this broker does not provide {0}")]
    Unsupported(&'static str),
}

/// What `GET /channels/{channel}` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The channel.
    pub channel: ChannelName,
    /// Subscribers: on every node, for a broker shared by several (Redis: this node's now, the
    /// others' as they last reported them, at most a second old).
    pub subscribers: usize,
    /// The newest message's cursor, if any was published in the current epoch.
    pub last: Option<Cursor>,
    /// Messages history holds.
    pub history_len: usize,
}

/// A presence transition a broker made on its own, not as the answer to a join or a leave it
/// was asked for: an entry of a node that died (not renewed within the presence TTL) removed,
/// or a node's entry added again after the store lost it. Exactly one node sees each.
#[derive(Debug, Clone)]
pub struct PresenceChange {
    /// The channel.
    pub channel: ChannelName,
    /// Who joined or left.
    pub entry: PresenceEntry,
    /// Joined (`true`) or left.
    pub joined: bool,
    /// What it changed (a channel or a user's first or last connection, for the webhooks).
    pub transition: Transition,
}

/// Where a broker reports its [`PresenceChange`]s (the server's occupancy webhooks).
pub type PresenceSink = Arc<dyn Fn(PresenceChange) + Send + Sync>;

/// Where a broker hands the [`Broker::broadcast`]s of other nodes (the server's orders to a
/// user's connections).
pub type BroadcastSink = Arc<dyn Fn(Bytes) + Send + Sync>;

/// Short-lived values every node of a cluster can read: the `/tickets` tickets, set on one node
/// and taken (read and removed at once) on any; the client ids given to pollers, set and read.
pub trait SharedStore: Send + Sync + fmt::Debug {
    /// Stores `value` under `key` for `ttl` (rounded up to whole seconds), unless `key` exists.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the store is down.
    fn put(&self, key: &str, value: Vec<u8>, ttl: std::time::Duration) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Removes `key` and returns its value, if it was there and not expired.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the store is down.
    fn take(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, BrokerError>>;

    /// Stores `value` under `key` for `ttl` (rounded up to whole seconds), replacing what was
    /// there and its time to live.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the store is down.
    fn set(&self, key: &str, value: Vec<u8>, ttl: std::time::Duration) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// The value of `key`, if it is there and not expired.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the store is down.
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, BrokerError>>;
}

/// A message store plus fan-out (docs/protocol.md "Delivery"). The in-memory [`MemoryBroker`](crate::MemoryBroker)
/// is the default and the test double; `comet-redis` provides one for several nodes.
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Publishes one message: assigns its cursor, appends it to history, fans it out.
    ///
    /// # Errors
    /// [`BrokerError::NotUtf8`] for non-text data; [`BrokerError::Unavailable`] when the store
    /// is down (nothing was published).
    fn publish(&self, msg: Publish) -> BoxFuture<'_, Result<Arc<Message>, BrokerError>>;

    /// Publishes one message at most once per idempotency key and channel, within the key's
    /// window (docs/protocol.md "Idempotent publishing"): a repeat publishes nothing and answers
    /// the first publish's cursor, with [`Published::duplicate`] set. The key is kept where the
    /// channel is (the node's memory, or Redis), so a repeat through any node is caught.
    ///
    /// # Errors
    /// As [`publish`](Self::publish). [`BrokerError::Unavailable`] may also mean that the outcome
    /// is unknown; sending the same key again then publishes the message once.
    fn publish_idempotent(&self, msg: Publish, key: Idempotency) -> BoxFuture<'_, Result<Published, BrokerError>>;

    /// Subscribes to one channel from `since`: replays what follows it from history, then live
    /// messages, with no gap and no duplicate at the seam; a gap notice first when history no
    /// longer reaches `since`.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the store is down.
    fn subscribe(&self, channel: ChannelName, since: Since) -> BoxFuture<'_, Result<ChannelSubscription, BrokerError>>;

    /// Channel facts.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the store is down.
    fn channel_info(&self, channel: ChannelName) -> BoxFuture<'_, Result<ChannelInfo, BrokerError>>;

    /// Whether this node holds anything of `channel` (history, a subscriber, or its remembered
    /// epoch and offset), without waiting. The server counts polls of channels it does not
    /// hold against `subscribes_per_sec_per_ip`: each may create state. Defaults to `true`.
    fn holds(&self, channel: &ChannelName) -> bool {
        let _ = channel;
        true
    }

    /// A poll of `channel` on this node is answered: forget the channel now if it holds
    /// nothing (no subscriber, never a message), rather than at the next sweep. Defaults to
    /// doing nothing.
    fn forget_if_unused(&self, channel: &ChannelName) {
        let _ = channel;
    }

    /// Adds `entry` to `channel`'s presence (docs/protocol.md "Presence"); a client already
    /// there is replaced. Returns what changed; with `announce`, a client that joined is
    /// pushed to the channel's subscribers as a [`PresenceNotice`](crate::PresenceNotice).
    ///
    /// # Errors
    /// [`BrokerError::Unsupported`] from a broker without presence (the default);
    /// [`BrokerError::Unavailable`] when the store is down.
    fn presence_join(
        &self,
        channel: &ChannelName,
        entry: PresenceEntry,
        announce: bool,
    ) -> BoxFuture<'_, Result<Transition, BrokerError>> {
        let _ = (channel, entry, announce);
        Box::pin(std::future::ready(Err(BrokerError::Unsupported("presence"))))
    }

    /// Removes `client` from `channel`'s presence; `None` if it was not there. With
    /// `announce`, its leave is pushed to the channel's subscribers.
    ///
    /// # Errors
    /// As [`presence_join`](Self::presence_join).
    fn presence_leave(
        &self,
        channel: &ChannelName,
        client: &str,
        announce: bool,
    ) -> BoxFuture<'_, Result<Option<(PresenceEntry, Transition)>, BrokerError>> {
        let _ = (channel, client, announce);
        Box::pin(std::future::ready(Err(BrokerError::Unsupported("presence"))))
    }

    /// `channel`'s presence entries, oldest first.
    ///
    /// # Errors
    /// As [`presence_join`](Self::presence_join).
    fn presence(&self, channel: &ChannelName) -> BoxFuture<'_, Result<Vec<PresenceEntry>, BrokerError>> {
        let _ = channel;
        Box::pin(std::future::ready(Err(BrokerError::Unsupported("presence"))))
    }

    /// The channels with subscribers (on every node, for a broker shared by several) whose
    /// names start with `prefix` and sort after `after`, in name order, at most `limit`, each
    /// with its subscriber count (`GET /channels`). Defaults to `Unsupported`.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the store is down.
    fn channels<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(ChannelName, usize)>, BrokerError>> {
        let _ = (prefix, after, limit);
        Box::pin(std::future::ready(Err(BrokerError::Unsupported("channel listing"))))
    }

    /// Reports to `sink` the presence transitions this broker makes on its own (see
    /// [`PresenceChange`]); a later call replaces the sink. A broker of one node makes none, and
    /// by default the sink is dropped.
    fn on_presence_change(&self, sink: PresenceSink) {
        let _ = sink;
    }

    /// Sends `payload` to every other node of the cluster, each of which hands it to its
    /// [`on_broadcast`](Self::on_broadcast) sink (at most once, while its link is up). A
    /// broker of one node has no other: the default does nothing.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the store is down.
    fn broadcast(&self, payload: Bytes) -> BoxFuture<'_, Result<(), BrokerError>> {
        let _ = payload;
        Box::pin(std::future::ready(Ok(())))
    }

    /// Where this node's broker hands the other nodes' broadcasts; a later call replaces it.
    /// The default drops it (no other node).
    fn on_broadcast(&self, sink: BroadcastSink) {
        let _ = sink;
    }

    /// Whether the broker can serve (its store is reachable). Backs `GET /readyz`.
    fn ready(&self) -> BoxFuture<'_, bool>;

    /// The broker's counters.
    fn stats(&self) -> &BrokerStats;

    /// A store shared by every node on this broker, where there are several (Redis); `None`
    /// (the default) for a broker of one node, whose callers keep such values in memory.
    fn shared_store(&self) -> Option<&dyn SharedStore> {
        None
    }

    /// Up to `limit` events of `channel`'s history after `since` (a gap notice first when
    /// history does not reach it), without waiting for new ones.
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    fn history(
        &self,
        channel: ChannelName,
        since: Since,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Event>, BrokerError>> {
        Box::pin(async move {
            let mut sub = self.subscribe(channel, since).await?;
            let mut out = Vec::new();
            while out.len() < limit {
                let room = limit - out.len();
                if sub.try_read(&mut out, room) == 0 {
                    break;
                }
            }
            Ok(out)
        })
    }
}
