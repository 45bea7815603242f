//! The reader task: one per node, the only writer of Redis-backed channels in the local hub.
//!
//! It handles, in order: subscribe requests (subscribing in Redis and reading the stream tail
//! the first time a channel gets a local subscriber), notifications (appended when they follow
//! what the hub holds, else the stream is read again), disconnections (after which every channel
//! is read again once Redis answers), and unsubscribing channels idle for a while.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use comet_core::{Append, BrokerError, ChannelName, Cursor, EventName, Hub, Message};
use redis::aio::ConnectionManager;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::{Keys, RedisConfig, Request, new_epoch, scripts, unavailable};

/// A channel subscribed in Redis, and since when it has had no local subscriber.
#[derive(Debug)]
struct Subscribed {
    idle_since: Option<Instant>,
}

pub(crate) struct Reader {
    hub: Arc<Hub>,
    data: ConnectionManager,
    pubsub: ConnectionManager,
    config: RedisConfig,
    sync: redis::Script,
    channels: HashMap<ChannelName, Subscribed>,
    /// Set on a disconnection: notifications may have been lost, so every channel is read again.
    needs_resync: bool,
}

impl Reader {
    pub(crate) fn new(hub: Arc<Hub>, data: ConnectionManager, pubsub: ConnectionManager, config: RedisConfig) -> Self {
        Self {
            hub,
            data,
            pubsub,
            config,
            sync: redis::Script::new(scripts::SYNC),
            channels: HashMap::new(),
            needs_resync: false,
        }
    }

    pub(crate) async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    ) {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                push = pushes.recv() => match push {
                    Some(push) => self.on_push(push).await,
                    None => break,
                },
                request = requests.recv() => match request {
                    Some(request) => self.on_request(request).await,
                    None => break, // the broker was dropped
                },
                _ = tick.tick() => {
                    if self.needs_resync {
                        self.resync_all().await;
                    }
                    self.reap().await;
                }
            }
        }
    }

    async fn on_request(&mut self, request: Request) {
        match request {
            Request::Subscribe { channel, since, reply } => {
                let result = self
                    .ensure(&channel)
                    .await
                    .map(|()| self.hub.subscribe(&channel, since));
                let _ = reply.send(result);
            }
        }
    }

    /// Makes sure `channel` is subscribed in Redis and its stream tail is in the hub.
    async fn ensure(&mut self, channel: &ChannelName) -> Result<(), BrokerError> {
        if let Some(entry) = self.channels.get_mut(channel) {
            entry.idle_since = None;
            return Ok(());
        }
        let keys = Keys::new(&self.config.prefix, channel);
        // Subscribe first, then read: a message published in between is both in the stream and
        // notified, and the hub drops the duplicate.
        self.pubsub.subscribe(&keys.notify).await.map_err(|e| unavailable(&e))?;
        if let Err(e) = self.read_stream(channel).await {
            let _ = self.pubsub.unsubscribe(&keys.notify).await;
            return Err(e);
        }
        self.channels.insert(channel.clone(), Subscribed { idle_since: None });
        Ok(())
    }

    /// Reads the channel's epoch, newest offset and stream tail, and sets them in the hub.
    async fn read_stream(&mut self, channel: &ChannelName) -> Result<(), BrokerError> {
        let keys = Keys::new(&self.config.prefix, channel);
        let value: Value = self
            .sync
            .key(&keys.meta)
            .key(&keys.stream)
            .arg(new_epoch())
            .arg(self.config.hub.history.max_messages)
            .arg(self.config.hub.history.max_age.as_secs())
            .invoke_async(&mut self.data)
            .await
            .map_err(|e| unavailable(&e))?;
        let (epoch, head, entries) = parse_sync(&value).ok_or_else(|| {
            BrokerError::Internal(format!("unexpected answer of the sync script for {channel}: {value:?}"))
        })?;
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
        Ok(())
    }

    async fn on_push(&mut self, push: PushInfo) {
        match push.kind {
            PushKind::Message => {
                let Some((channel, msg)) = self.parse_notification(&push.data) else {
                    tracing::warn!(?push, "ignoring a malformed notification");
                    return;
                };
                match self.hub.append(Arc::new(msg)) {
                    Append::Appended | Append::Duplicate | Append::UnknownChannel => {}
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
                self.needs_resync = true;
            }
            _ => {}
        }
    }

    fn parse_notification(&self, data: &[Value]) -> Option<(ChannelName, Message)> {
        let [Value::BulkString(name), Value::BulkString(payload)] = data else {
            return None;
        };
        let name = std::str::from_utf8(name).ok()?;
        let channel = name
            .strip_prefix(&self.config.prefix)?
            .strip_prefix(":{")?
            .strip_suffix('}')?;
        let channel = ChannelName::new(channel).ok()?;
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
        if redis::cmd("PING").query_async::<Value>(&mut self.pubsub).await.is_err() {
            return;
        }
        let channels: Vec<ChannelName> = self.channels.keys().cloned().collect();
        for channel in channels {
            if let Err(e) = self.read_stream(&channel).await {
                tracing::debug!(%channel, error = %e, "resync failed; retrying");
                return;
            }
        }
        tracing::info!(
            channels = self.channels.len(),
            "redis reachable again; caught up from the streams"
        );
        self.needs_resync = false;
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
                self.channels.remove(&channel);
                let keys = Keys::new(&self.config.prefix, &channel);
                if let Err(e) = self.pubsub.unsubscribe(&keys.notify).await {
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
