//! The reader task: one per node, the only writer of Redis-backed channels in the local hub.
//!
//! It handles, in order: subscribe requests (subscribing in Redis and reading the stream tail
//! the first time a channel gets a local subscriber, and reading it again when a subscriber
//! brings a cursor this node has not seen yet), notifications (appended when they follow what
//! the hub holds, else the stream is read again), disconnections (after which every channel is
//! read again once Redis answers), the health of the pub/sub link (a `PING` every
//! [`RedisConfig::pubsub_ping_interval`]; one unanswered replaces the connection), and
//! unsubscribing channels idle for a while.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use comet_core::{
    Append, BrokerError, ChannelName, Cursor, EventName, Hub, Message, PresenceEntry, PresenceNotice, Since,
};
use redis::{PushInfo, PushKind, RedisError, Value};
use tokio::sync::mpsc;

use crate::link::{Conn, DataLink, RESPONSE_TIMEOUT, Source};
use crate::{Keys, RedisConfig, Request, Shared, new_epoch, read_durable, scripts, unavailable};

/// A channel subscribed in Redis, and since when it has had no local subscriber.
#[derive(Debug)]
struct Subscribed {
    idle_since: Option<Instant>,
    /// The local subscriber count last written to Redis (`Keys::counts`), and when.
    count_written: usize,
    written_at: Option<Instant>,
}

/// How often changed subscriber counts are written to Redis.
const COUNTS_EVERY: Duration = Duration::from_secs(1);

/// How often `appendonly`/`appendfsync` are read again.
const DURABLE_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct Reader {
    hub: Arc<Hub>,
    data: DataLink,
    pubsub_source: Source,
    pubsub: Conn,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    config: RedisConfig,
    shared: Arc<Shared>,
    sync: redis::Script,
    rebase: redis::Script,
    channels: HashMap<ChannelName, Subscribed>,
    /// Set on a disconnection: notifications may have been lost, so every channel is read again.
    needs_resync: bool,
    /// Set when the pub/sub connection was replaced: every channel is subscribed again first.
    needs_resubscribe: bool,
    last_ping: Instant,
    last_durable: Instant,
    last_counts: Instant,
}

async fn pubsub_connect(source: &Source) -> Result<(Conn, mpsc::UnboundedReceiver<PushInfo>), RedisError> {
    let (push_tx, push_rx) = mpsc::unbounded_channel();
    let con = source.connect(Some(push_tx)).await?;
    Ok((con, push_rx))
}

impl Reader {
    pub(crate) async fn connect(
        hub: Arc<Hub>,
        data: DataLink,
        pubsub_source: Source,
        config: RedisConfig,
        shared: Arc<Shared>,
    ) -> Result<Self, RedisError> {
        let (mut pubsub, pushes) = pubsub_connect(&pubsub_source).await?;
        pubsub.subscribe(&crate::control_channel(&config.prefix)).await?;
        shared.link_up.store(true, Ordering::Relaxed);
        Ok(Self {
            hub,
            data,
            pubsub_source,
            pubsub,
            pushes,
            config,
            shared,
            sync: redis::Script::new(&scripts::sync()),
            rebase: redis::Script::new(&scripts::rebase()),
            channels: HashMap::new(),
            needs_resync: false,
            needs_resubscribe: false,
            last_ping: Instant::now(),
            last_durable: Instant::now(),
            last_counts: Instant::now(),
        })
    }

    pub(crate) async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                push = self.pushes.recv() => match push {
                    Some(push) => self.on_push(push).await,
                    // Only if the pub/sub connection manager is gone: wait for the next tick.
                    None => {
                        tick.tick().await;
                        self.on_tick().await;
                    }
                },
                request = requests.recv() => match request {
                    Some(request) => self.on_request(request).await,
                    None => break, // the broker was dropped
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_ping) >= self.config.pubsub_ping_interval || self.needs_resubscribe {
            self.last_ping = now;
            self.check_link().await;
        }
        if now.duration_since(self.last_durable) >= DURABLE_EVERY {
            self.last_durable = now;
            let durable = read_durable(&mut self.data.get()).await;
            self.shared.store_durable(durable);
        }
        if self.needs_resync && !self.needs_resubscribe {
            self.resync_all().await;
        }
        if now.duration_since(self.last_counts) >= COUNTS_EVERY {
            self.last_counts = now;
            self.write_counts().await;
        }
        self.reap().await;
    }

    /// Writes this node's subscriber count of each channel that changed (or is due to be
    /// renewed, every third of `presence_ttl`) to `Keys::counts`, where `GET /channels/{channel}`
    /// on every node reads it. Each count carries a deadline: a dead node's stop counting.
    async fn write_counts(&mut self) {
        let now = Instant::now();
        let ttl = self.config.presence_ttl.max(Duration::from_secs(1));
        let deadline = comet_core::now_millis() + ttl.as_millis() as u64;
        let node = self.shared.node.as_str();
        // One pipeline; on a cluster one per channel (a pipeline goes to one slot's node).
        let mut pipes: Vec<redis::Pipeline> = Vec::new();
        for (channel, sub) in &mut self.channels {
            let count = self.hub.subscribers(channel);
            let due = sub.written_at.is_none_or(|at| now.duration_since(at) >= ttl / 3);
            if count == sub.count_written && (count == 0 || !due) {
                continue;
            }
            if pipes.is_empty() || self.shared.cluster {
                pipes.push(redis::pipe());
            }
            let pipe = pipes.last_mut().expect("just pushed");
            let key = Keys::counts(&self.config.prefix, channel);
            if count == 0 {
                pipe.hdel(&key, node).ignore();
            } else {
                pipe.hset(&key, node, format!("{count} {deadline}"))
                    .ignore()
                    .pexpire(&key, (ttl * 3).as_millis() as i64)
                    .ignore();
            }
            sub.count_written = count;
            sub.written_at = Some(now);
        }
        let mut con = self.data.get();
        for pipe in pipes {
            if let Err(e) = tokio::time::timeout(RESPONSE_TIMEOUT, pipe.query_async::<()>(&mut con))
                .await
                .unwrap_or_else(|_| Err(RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))))
            {
                self.data.note(&e);
                tracing::debug!(error = %e, "subscriber counts not written; trying again");
                for sub in self.channels.values_mut() {
                    sub.count_written = usize::MAX; // written again next time
                }
                return;
            }
        }
    }

    /// PINGs the pub/sub connection with a deadline. No answer: the link is down (`/readyz`
    /// fails), notifications may be lost, and the connection is replaced by a new one, on which
    /// every channel is subscribed again and then read again from its stream.
    async fn check_link(&mut self) {
        if !self.needs_resubscribe {
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<Value>(&mut self.pubsub);
            if let Ok(Ok(_)) = tokio::time::timeout(RESPONSE_TIMEOUT, ping).await {
                if !self.needs_resync {
                    self.shared.link_up.store(true, Ordering::Relaxed);
                }
                return;
            }
            tracing::warn!("the redis pub/sub link did not answer its PING; reconnecting");
            self.shared.link_up.store(false, Ordering::Relaxed);
            self.needs_resync = true;
            self.needs_resubscribe = true;
        }
        let connect = tokio::time::timeout(RESPONSE_TIMEOUT, pubsub_connect(&self.pubsub_source));
        let Ok(Ok((pubsub, pushes))) = connect.await else {
            return; // tried again at the next tick
        };
        self.pubsub = pubsub;
        self.pushes = pushes;
        if !self.subscribe_control().await {
            return;
        }
        for channel in self.channels.keys() {
            let keys = Keys::new(&self.config.prefix, channel);
            let subscribe = tokio::time::timeout(RESPONSE_TIMEOUT, self.pubsub.subscribe_notify(&keys.notify));
            if !matches!(subscribe.await, Ok(Ok(()))) {
                return; // a new connection at the next tick
            }
        }
        self.needs_resubscribe = false;
        self.resync_all().await;
    }

    async fn on_request(&mut self, request: Request) {
        match request {
            Request::Subscribe { channel, since, reply } => {
                if reply.is_closed() {
                    return; // its caller gave up waiting (its client went away)
                }
                let result = self
                    .prepare(&channel, since)
                    .await
                    .map(|()| self.hub.subscribe(&channel, since));
                let _ = reply.send(result);
            }
        }
    }

    /// Makes sure `channel` is subscribed in Redis and its stream tail is in the hub, and that
    /// the hub can place `since`: a cursor ahead of what this node holds (a client that
    /// published through another node, or was served by one whose notifications came first)
    /// is looked up in the stream before anything is answered, so it is neither a false gap
    /// nor a replay of what the client has.
    async fn prepare(&mut self, channel: &ChannelName, since: Since) -> Result<(), BrokerError> {
        if !self.ensure(channel).await? {
            return Ok(()); // just read
        }
        if let Since::Cursor(c) = since {
            let head = self.hub.head(channel);
            let placed = head.is_some_and(|head| head.epoch == c.epoch && c.offset <= head.offset);
            // A cheap look at the channel's meta first: only when Redis holds what this node
            // lacks is the stream read (a client's bogus or old cursor costs one HMGET).
            if !placed && self.redis_head(channel).await? != head {
                self.read_stream(channel).await?;
            }
        }
        Ok(())
    }

    /// The channel's epoch and newest offset in Redis (`None` if it has none).
    async fn redis_head(&mut self, channel: &ChannelName) -> Result<Option<Cursor>, BrokerError> {
        let keys = Keys::new(&self.config.prefix, channel);
        let (epoch, offset): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(&keys.meta)
            .arg("e")
            .arg("o")
            .query_async(&mut self.data.get())
            .await
            .map_err(|e| self.data.failed(&e))?;
        Ok(epoch
            .and_then(|e| u64::from_str_radix(&e, 16).ok())
            .map(|e| Cursor::new(e, offset.unwrap_or(0))))
    }

    /// Subscribes `channel` in Redis if it is not yet, reading its stream; returns whether it
    /// already was (nothing read).
    async fn ensure(&mut self, channel: &ChannelName) -> Result<bool, BrokerError> {
        if let Some(entry) = self.channels.get_mut(channel) {
            entry.idle_since = None;
            return Ok(true);
        }
        let keys = Keys::new(&self.config.prefix, channel);
        // Subscribe first, then read: a message published in between is both in the stream and
        // notified, and the hub drops the duplicate.
        self.pubsub
            .subscribe_notify(&keys.notify)
            .await
            .map_err(|e| unavailable(&e))?;
        if let Err(e) = self.read_stream(channel).await {
            let _ = self.pubsub.unsubscribe_notify(&keys.notify).await;
            return Err(e);
        }
        self.channels.insert(
            channel.clone(),
            Subscribed {
                idle_since: None,
                count_written: 0,
                written_at: None,
            },
        );
        Ok(false)
    }

    /// Reads the channel's epoch, newest offset and stream tail (its namespace's history
    /// length), and sets them in the hub. If Redis holds the hub's epoch with an older offset
    /// than the hub (its data went back), the channel is moved to a new epoch first.
    async fn read_stream(&mut self, channel: &ChannelName) -> Result<(), BrokerError> {
        let keys = Keys::new(&self.config.prefix, channel);
        let meta_ttl = self.config.meta_ttl_secs(channel);
        for _ in 0..2 {
            let durable = if self.shared.durable.load(Ordering::Relaxed) {
                "1"
            } else {
                "0"
            };
            let value: Value = self
                .sync
                .key(&keys.meta)
                .key(&keys.stream)
                .arg(new_epoch())
                .arg(self.config.hub.history_for(channel).max_messages)
                .arg(meta_ttl)
                .arg(durable)
                .invoke_async(&mut self.data.get())
                .await
                .map_err(|e| self.data.failed(&e))?;
            let (epoch, head, entries) = parse_sync(&value).ok_or_else(|| {
                BrokerError::Internal(format!("unexpected answer of the sync script for {channel}: {value:?}"))
            })?;
            // Redis went back if it holds this node's epoch with an older head, or with other
            // messages under cursors this node holds (new publishes took the old cursors again).
            let held = self.hub.head(channel).filter(|h| h.epoch == epoch);
            // The first offset at which Redis holds another message than this node (0: none).
            let diverged = held.map_or(0, |h| {
                entries
                    .iter()
                    .filter(|(offset, time, _, data)| {
                        *offset <= h.offset
                            && self
                                .hub
                                .message_at(channel, Cursor::new(epoch, *offset))
                                .is_some_and(|m| m.published_at != *time || m.data_bytes().as_ref() != *data)
                    })
                    .map(|(offset, ..)| *offset)
                    .min()
                    .unwrap_or(0)
            });
            if let Some(held) = held.filter(|h| h.offset > head || diverged > 0) {
                tracing::warn!(
                    %channel, held = %held, redis = %Cursor::new(epoch, head), diverged,
                    "redis went back behind what this node has seen; moving the channel to a new epoch"
                );
                let _: i64 = self
                    .rebase
                    .key(&keys.meta)
                    .key(&keys.stream)
                    .arg(format!("{epoch:x}"))
                    .arg(held.offset)
                    .arg(new_epoch())
                    .arg(meta_ttl)
                    .arg(diverged)
                    .invoke_async(&mut self.data.get())
                    .await
                    .map_err(|e| unavailable(&e))?;
                continue;
            }
            let mut tail = Vec::with_capacity(entries.len());
            for (offset, time, event, data) in entries.into_iter().rev() {
                let event = (!event.is_empty())
                    .then(|| EventName::new(&event))
                    .transpose()
                    .ok()
                    .flatten();
                if let Ok(msg) = Message::new(channel.clone(), Cursor::new(epoch, offset), event, data, time) {
                    tail.push(Arc::new(msg));
                }
            }
            self.hub.replace(channel, epoch, head, tail);
            return Ok(());
        }
        Err(BrokerError::Unavailable(format!(
            "redis: the offset of {channel} keeps going back; retrying"
        )))
    }

    /// Subscribes the pub/sub connection to the nodes' broadcasts; `false` if it did not answer.
    async fn subscribe_control(&mut self) -> bool {
        let control = crate::control_channel(&self.config.prefix);
        let subscribe = tokio::time::timeout(RESPONSE_TIMEOUT, self.pubsub.subscribe(&control));
        matches!(subscribe.await, Ok(Ok(())))
    }

    /// Hands another node's broadcast (`<node> <payload>`) to the sink.
    fn on_broadcast(&self, data: &[Value]) -> bool {
        let [Value::BulkString(name), Value::BulkString(message)] = data else {
            return false;
        };
        if name.as_slice() != crate::control_channel(&self.config.prefix).as_bytes() {
            return false;
        }
        let Some(space) = message.iter().position(|&b| b == b' ') else {
            return true;
        };
        if &message[..space] != self.shared.node.as_bytes() {
            let sink = self
                .shared
                .broadcasts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let Some(sink) = sink {
                sink(bytes::Bytes::copy_from_slice(&message[space + 1..]));
            }
        }
        true
    }

    async fn on_push(&mut self, push: PushInfo) {
        match push.kind {
            PushKind::Message if self.on_broadcast(&push.data) => {}
            PushKind::Message | PushKind::SMessage => {
                if let Some((channel, mine, joined, entry)) = self.parse_presence_notice(&push.data) {
                    // The notices of this node's scripts were pushed when they ran.
                    if !mine {
                        self.hub.announce(PresenceNotice { joined, channel, entry });
                    }
                    return;
                }
                let Some((channel, msg)) = self.parse_notification(&push.data) else {
                    tracing::warn!(?push, "ignoring a malformed notification");
                    return;
                };
                let (cursor, time, data) = (msg.cursor, msg.published_at, msg.data_bytes().clone());
                match self.hub.append(Arc::new(msg)) {
                    Append::Appended | Append::UnknownChannel => {}
                    Append::Duplicate => {
                        // Normally a message read from the stream and notified too. One that is
                        // not the message held at its cursor means Redis went back and handed
                        // the cursor out again: read the stream, which moves it to a new epoch.
                        let held = self.hub.message_at(&channel, cursor);
                        if held.is_some_and(|h| h.published_at != time || *h.data_bytes() != data)
                            && let Err(e) = self.read_stream(&channel).await
                        {
                            tracing::warn!(%channel, error = %e, "cannot read the stream; retrying soon");
                            self.needs_resync = true;
                        }
                    }
                    Append::Hole { .. } | Append::OtherEpoch { .. } => {
                        // Notifications were lost, or Redis started a new epoch: read the stream.
                        if let Err(e) = self.read_stream(&channel).await {
                            tracing::warn!(%channel, error = %e, "cannot read the stream; retrying soon");
                            self.needs_resync = true;
                        }
                    }
                }
            }
            PushKind::Disconnection => {
                tracing::warn!("redis pub/sub connection lost; will resubscribe and catch up from the streams");
                self.shared.link_up.store(false, Ordering::Relaxed);
                self.shared.durable.store(false, Ordering::Relaxed); // read again at the next tick
                self.last_durable = Instant::now().checked_sub(DURABLE_EVERY).unwrap_or(self.last_durable);
                self.needs_resync = true;
            }
            _ => {}
        }
    }

    /// The channel of a notification's pub/sub channel name, and its payload.
    fn notification<'a>(&self, data: &'a [Value]) -> Option<(ChannelName, &'a [u8])> {
        let [Value::BulkString(name), Value::BulkString(payload)] = data else {
            return None;
        };
        let name = std::str::from_utf8(name).ok()?;
        let channel = name
            .strip_prefix(&self.config.prefix)?
            .strip_prefix(":{")?
            .strip_suffix('}')?;
        Some((ChannelName::new(channel).ok()?, payload))
    }

    /// A presence notice (`!j <node> <entry>`, `!l <node> <entry>`: crate::presence): its
    /// channel, whether this node published it, joined, and the entry.
    fn parse_presence_notice(&self, data: &[Value]) -> Option<(ChannelName, bool, bool, PresenceEntry)> {
        let (channel, payload) = self.notification(data)?;
        let (node, joined, entry) = crate::presence::parse_notice(payload)?;
        Some((channel, node == self.shared.node.as_bytes(), joined, entry))
    }

    fn parse_notification(&self, data: &[Value]) -> Option<(ChannelName, Message)> {
        let (channel, payload) = self.notification(data)?;
        let newline = payload.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&payload[..newline]).ok()?;
        let mut parts = header.splitn(4, ' ');
        let epoch = u64::from_str_radix(parts.next()?, 16).ok()?;
        let offset: u64 = parts.next()?.parse().ok()?;
        let time: u64 = parts.next()?.parse().ok()?;
        let event = parts.next()?;
        let event = if event.is_empty() {
            None
        } else {
            Some(EventName::new(event).ok()?)
        };
        let data = &payload[newline + 1..];
        let msg = Message::new(channel.clone(), Cursor::new(epoch, offset), event, data, time).ok()?;
        Some((channel, msg))
    }

    /// After a disconnection: once Redis answers (the PING also makes the pub/sub connection
    /// reconnect and resubscribe), read every channel's stream again.
    async fn resync_all(&mut self) {
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<Value>(&mut self.pubsub);
        if !matches!(tokio::time::timeout(RESPONSE_TIMEOUT, ping).await, Ok(Ok(_))) {
            return;
        }
        if !self.subscribe_control().await {
            return;
        }
        let channels: Vec<ChannelName> = self.channels.keys().cloned().collect();
        let mut failed = 0;
        for channel in channels {
            // Subscribed again by hand: the connection manager's own resubscription after a
            // reconnection ignores its errors.
            let keys = Keys::new(&self.config.prefix, &channel);
            let subscribe = tokio::time::timeout(RESPONSE_TIMEOUT, self.pubsub.subscribe_notify(&keys.notify));
            if !matches!(subscribe.await, Ok(Ok(()))) {
                return; // the link is not back yet
            }
            // One channel that cannot be read does not keep the others from being read.
            if let Err(e) = self.read_stream(&channel).await {
                tracing::warn!(%channel, error = %e, "resync failed; retrying");
                failed += 1;
            }
        }
        if failed > 0 {
            return;
        }
        tracing::info!(
            channels = self.channels.len(),
            "redis reachable again; caught up from the streams"
        );
        self.needs_resync = false;
        self.shared.link_up.store(true, Ordering::Relaxed);
    }

    /// Unsubscribes channels that have had no local subscriber for `idle_unsubscribe`.
    async fn reap(&mut self) {
        let now = Instant::now();
        let mut idle = Vec::new();
        for (channel, entry) in &mut self.channels {
            if self.hub.subscribers(channel) > 0 {
                entry.idle_since = None;
            } else {
                let since = *entry.idle_since.get_or_insert(now);
                if now.duration_since(since) >= self.config.idle_unsubscribe {
                    idle.push(channel.clone());
                }
            }
        }
        for channel in idle {
            if self.hub.remove_if_unsubscribed(&channel) {
                let counted = self.channels.remove(&channel).is_some_and(|sub| sub.count_written != 0);
                if counted {
                    let key = Keys::counts(&self.config.prefix, &channel);
                    let forget = redis::cmd("HDEL").arg(&key).arg(&self.shared.node).to_owned();
                    if let Err(e) = forget.query_async::<()>(&mut self.data.get()).await {
                        tracing::debug!(%channel, error = %e, "count not removed; it expires");
                    }
                }
                let keys = Keys::new(&self.config.prefix, &channel);
                if let Err(e) = self.pubsub.unsubscribe_notify(&keys.notify).await {
                    tracing::debug!(%channel, error = %e, "unsubscribe failed");
                }
            }
        }
    }
}

fn as_str(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// `(offset, time, event, data)`; the data borrowed from the script's answer.
type Entry<'a> = (u64, u64, String, &'a [u8]);

/// `{epoch, offset, entries}` of the sync script.
fn parse_sync(value: &Value) -> Option<(u64, u64, Vec<Entry<'_>>)> {
    let Value::Array(items) = value else { return None };
    let [epoch, head, entries] = items.as_slice() else {
        return None;
    };
    let epoch = u64::from_str_radix(&as_str(epoch)?, 16).ok()?;
    let head: u64 = as_str(head)?.parse().ok()?;
    let Value::Array(entries) = entries else { return None };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(pair) = entry else { return None };
        let [id, Value::Array(fields)] = pair.as_slice() else {
            return None;
        };
        let offset: u64 = as_str(id)?.split_once('-')?.0.parse().ok()?;
        let (mut time, mut event, mut data) = (0, String::new(), &[][..]);
        for kv in fields.chunks(2) {
            let [k, v] = kv else { return None };
            match as_str(k)?.as_str() {
                "t" => time = as_str(v)?.parse().ok()?,
                "v" => event = as_str(v)?,
                "d" => {
                    data = match v {
                        Value::BulkString(b) => b.as_slice(),
                        _ => return None,
                    }
                }
                _ => {}
            }
        }
        out.push((offset, time, event, data));
    }
    Some((epoch, head, out))
}
