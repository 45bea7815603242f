//! [`MemoryBroker`]: the embedded default broker, one node, history in memory.

use std::sync::Arc;

use crate::broker::{BoxFuture, Broker, BrokerError, ChannelInfo, Publish};
use crate::cursor::Since;
use crate::hub::{ChannelSubscription, Hub, HubConfig, Idempotency, PresenceNotice, Published};
use crate::message::Message;
use crate::name::ChannelName;
use crate::presence::{Presence, PresenceEntry, Transition};
use crate::stats::BrokerStats;

/// The in-memory broker: a [`Hub`] whose cursors are assigned locally. A restart (or a channel
/// forgotten by [`sweep`](Self::sweep) after its history expired) starts a new epoch, so old
/// cursors get a gap notice, never a silent gap.
#[derive(Debug)]
pub struct MemoryBroker {
    hub: Hub,
    presence: Presence,
}

impl MemoryBroker {
    /// A broker with `config`.
    pub fn new(config: HubConfig) -> Self {
        Self {
            hub: Hub::new(config),
            presence: Presence::default(),
        }
    }

    /// The local hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Trims history by age and forgets idle, empty channels; returns the channel count. The
    /// server calls this every few seconds.
    pub fn sweep(&self) -> usize {
        self.hub.sweep()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new(HubConfig::default())
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, msg: Publish) -> BoxFuture<'_, Result<Arc<Message>, BrokerError>> {
        let result = self
            .hub
            .publish(&msg.channel, msg.event, &msg.data)
            .map_err(BrokerError::from);
        Box::pin(std::future::ready(result))
    }

    fn publish_idempotent(&self, msg: Publish, key: Idempotency) -> BoxFuture<'_, Result<Published, BrokerError>> {
        let result = self
            .hub
            .publish_idempotent(&msg.channel, msg.event, &msg.data, &key)
            .map_err(BrokerError::from);
        Box::pin(std::future::ready(result))
    }

    fn subscribe(&self, channel: ChannelName, since: Since) -> BoxFuture<'_, Result<ChannelSubscription, BrokerError>> {
        Box::pin(std::future::ready(Ok(self.hub.subscribe(&channel, since))))
    }

    fn channel_info(&self, channel: ChannelName) -> BoxFuture<'_, Result<ChannelInfo, BrokerError>> {
        let info = self.hub.info(&channel).unwrap_or(ChannelInfo {
            channel,
            subscribers: 0,
            last: None,
            history_len: 0,
        });
        Box::pin(std::future::ready(Ok(info)))
    }

    fn presence_join(
        &self,
        channel: &ChannelName,
        entry: PresenceEntry,
        announce: bool,
    ) -> BoxFuture<'_, Result<Transition, BrokerError>> {
        let notice = announce.then(|| entry.clone());
        let transition = self.presence.join(channel, entry);
        if let Some(entry) = notice.filter(|_| transition.client) {
            self.hub.announce(PresenceNotice {
                joined: true,
                channel: channel.clone(),
                entry,
            });
        }
        Box::pin(std::future::ready(Ok(transition)))
    }

    fn presence_leave(
        &self,
        channel: &ChannelName,
        client: &str,
        announce: bool,
    ) -> BoxFuture<'_, Result<Option<(PresenceEntry, Transition)>, BrokerError>> {
        let left = self.presence.leave(channel, client);
        if announce && let Some((entry, _)) = &left {
            self.hub.announce(PresenceNotice {
                joined: false,
                channel: channel.clone(),
                entry: entry.clone(),
            });
        }
        Box::pin(std::future::ready(Ok(left)))
    }

    fn presence(&self, channel: &ChannelName) -> BoxFuture<'_, Result<Vec<PresenceEntry>, BrokerError>> {
        Box::pin(std::future::ready(Ok(self.presence.members(channel))))
    }

    fn channels<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(ChannelName, usize)>, BrokerError>> {
        Box::pin(std::future::ready(Ok(self.hub.active_channels(prefix, after, limit))))
    }

    fn holds(&self, channel: &ChannelName) -> bool {
        self.hub.holds(channel)
    }

    fn forget_if_unused(&self, channel: &ChannelName) {
        self.hub.forget_if_unused(channel);
    }

    fn ready(&self) -> BoxFuture<'_, bool> {
        Box::pin(std::future::ready(true))
    }

    fn stats(&self) -> &BrokerStats {
        self.hub.stats()
    }
}
