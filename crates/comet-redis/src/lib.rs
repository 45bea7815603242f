//! [`RedisBroker`]: the [`Broker`] trait over Redis, so that several `comet` nodes share channels,
//! history and cursors (DESIGN §6).
//!
//! - Publish is one Lua call ([`scripts::PUBLISH`]): it assigns the channel's epoch (on first use)
//!   and next offset, appends to the channel's stream (`XADD … MAXLEN ~ N`, TTL), and notifies
//!   every node with `PUBLISH`. The ack goes back only once Redis holds the message.
//! - Each node holds one RESP3 pub/sub connection, subscribed only to channels with local
//!   subscribers, and fans out through the same [`Hub`] as the memory broker.
//! - One task per node, the *reader*, owns every Redis-side decision: subscribing a channel,
//!   reading its stream tail into the hub, applying notifications, unsubscribing idle channels,
//!   and resynchronising after a disconnection. Because it is the only writer of the hub and
//!   works in order, a notification that does not follow what the hub holds (a hole after lost
//!   notifications, or a new epoch after Redis lost its data) is never applied blindly: the reader
//!   reads the stream instead, so subscribers get every message or an explicit gap notice.

mod reader;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use comet_core::{
    BoxFuture, Broker, BrokerError, BrokerStats, ChannelInfo, ChannelName, ChannelSubscription, Cursor, Hub, HubConfig,
    Message, Publish, Since, now_millis,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};

/// Settings of a [`RedisBroker`].
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Prefix of every key and pub/sub channel. Defaults to `comet`.
    pub prefix: String,
    /// Local fan-out and history bounds; `history.max_messages` is also the stream's `MAXLEN ~`
    /// and `history.max_age` its TTL (refreshed by each publish).
    pub hub: HubConfig,
    /// How long a channel with no local subscriber stays subscribed in Redis, so that pollers
    /// coming back do not resubscribe every time. Defaults to 5 seconds.
    pub idle_unsubscribe: Duration,
}

impl RedisConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>, hub: HubConfig) -> Self {
        Self {
            url: url.into(),
            prefix: "comet".to_owned(),
            hub,
            idle_unsubscribe: Duration::from_secs(5),
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
}

/// A fresh epoch: 48 random bits in lowercase hex, like the memory broker's.
pub(crate) fn new_epoch() -> String {
    format!("{:x}", rand::random::<u64>() >> 16)
}

fn unavailable(e: &redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(format!("redis: {e}"))
}

/// A request to the reader task.
#[derive(Debug)]
pub(crate) enum Request {
    Subscribe {
        channel: ChannelName,
        since: Since,
        reply: oneshot::Sender<Result<ChannelSubscription, BrokerError>>,
    },
}

/// The Redis broker. Cheap to share (`Arc`); dropping the last handle stops its reader task.
#[derive(Debug)]
pub struct RedisBroker {
    hub: Arc<Hub>,
    data: ConnectionManager,
    requests: mpsc::Sender<Request>,
    publish: redis::Script,
    config: RedisConfig,
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
}

impl RedisBroker {
    /// Connects (two connections: commands, and RESP3 pub/sub) and starts the reader task.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when Redis cannot be reached or the URL is invalid.
    pub async fn connect(config: RedisConfig) -> Result<Self, BrokerError> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| unavailable(&e))?;
        let data = ConnectionManager::new_with_config(client, manager_config())
            .await
            .map_err(|e| unavailable(&e))?;
        let resp3 = if config.url.contains('?') {
            format!("{}&protocol=resp3", config.url)
        } else {
            format!("{}?protocol=resp3", config.url)
        };
        let pubsub_client = redis::Client::open(resp3.as_str()).map_err(|e| unavailable(&e))?;
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let pubsub = ConnectionManager::new_with_config(
            pubsub_client,
            manager_config().set_push_sender(push_tx).set_automatic_resubscription(),
        )
        .await
        .map_err(|e| unavailable(&e))?;
        let hub = Arc::new(Hub::new(config.hub.clone()));
        let (requests, request_rx) = mpsc::channel(1024);
        let reader = reader::Reader::new(Arc::clone(&hub), data.clone(), pubsub, config.clone());
        tokio::spawn(reader.run(request_rx, push_rx));
        Ok(Self {
            hub,
            data,
            requests,
            publish: redis::Script::new(scripts::PUBLISH),
            config,
        })
    }

    /// The local fan-out.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    async fn publish_now(&self, msg: Publish) -> Result<Arc<Message>, BrokerError> {
        let data = comet_core::NotUtf8::check(&msg.data)?;
        let keys = Keys::new(&self.config.prefix, &msg.channel);
        let history = self.config.hub.history_for(&msg.channel);
        let time = now_millis();
        let event = msg.event.as_ref().map_or("", |e| e.as_str());
        let (epoch, offset): (String, u64) = self
            .publish
            .key(&keys.meta)
            .key(&keys.stream)
            .arg(new_epoch())
            .arg(history.max_messages)
            .arg(history.max_age.as_secs())
            .arg(time)
            .arg(event)
            .arg(data)
            .arg(&keys.notify)
            .invoke_async(&mut self.data.clone())
            .await
            .map_err(|e| unavailable(&e))?;
        let epoch = u64::from_str_radix(&epoch, 16).map_err(|_| {
            BrokerError::Internal(format!("redis holds an invalid epoch {epoch:?} for {}", msg.channel))
        })?;
        self.hub.stats().record_published(1);
        Ok(Arc::new(Message::new(
            msg.channel,
            Cursor::new(epoch, offset),
            msg.event,
            data.as_bytes(),
            time,
        )?))
    }

    async fn info_now(&self, channel: ChannelName) -> Result<ChannelInfo, BrokerError> {
        let keys = Keys::new(&self.config.prefix, &channel);
        let mut con = self.data.clone();
        let ((epoch, offset), len): ((Option<String>, Option<u64>), usize) = redis::pipe()
            .hmget(&keys.meta, &["e", "o"])
            .xlen(&keys.stream)
            .query_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        let last = match (epoch.and_then(|e| u64::from_str_radix(&e, 16).ok()), offset) {
            (Some(e), Some(o)) if o > 0 => Some(Cursor::new(e, o)),
            _ => None,
        };
        Ok(ChannelInfo {
            subscribers: self.hub.subscribers(&channel),
            channel,
            last,
            history_len: len,
        })
    }
}

impl Broker for RedisBroker {
    fn publish(&self, msg: Publish) -> BoxFuture<'_, Result<Arc<Message>, BrokerError>> {
        Box::pin(self.publish_now(msg))
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

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let mut con = self.data.clone();
            let ping = redis::cmd("PING");
            matches!(
                tokio::time::timeout(Duration::from_secs(1), ping.query_async::<String>(&mut con)).await,
                Ok(Ok(_))
            )
        })
    }

    fn stats(&self) -> &BrokerStats {
        self.hub.stats()
    }
}
