//! [`Presence`]: who is subscribed to each channel of a namespace with `presence = true`
//! (docs/protocol.md "Presence"). One entry per connection (`client`), counted per user, so
//! that a user's first connection and last one, and a channel's first and last client, are
//! each one [`Transition`].

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::name::ChannelName;

/// One connection's presence in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The connection's id, unique in the cluster.
    pub client: Arc<str>,
    /// The credential's subject (`sub`); `""` for anonymous clients.
    pub user: Arc<str>,
    /// The token's `comet.info` object, as JSON text (at most 1 KiB), if it has one.
    pub info: Option<Arc<str>>,
    /// The transport's name (`sse`, `ws`, …).
    pub transport: &'static str,
    /// When the client joined, in milliseconds since the Unix epoch.
    pub since: u64,
}

/// What one join or leave changed in its channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transition {
    /// The client joined (it was not there: not a renewal) or left.
    pub client: bool,
    /// The channel got its first client (join) or lost its last (leave).
    pub channel: bool,
    /// The user got their first connection to the channel (join) or lost their last (leave).
    pub user: bool,
    /// A join that changed the client's user (a WebSocket `auth`): its former user lost their
    /// last connection to the channel with it.
    pub former_user_left: bool,
}

/// The members of one channel.
#[derive(Debug, Default)]
struct Members {
    clients: HashMap<Arc<str>, PresenceEntry>,
    /// Connections per user.
    users: HashMap<Arc<str>, usize>,
}

/// Shards of the registry: joins and leaves of different channels rarely share a lock.
const SHARDS: usize = 32;

/// The presence of every channel on this node, for a broker of one node (the memory broker).
#[derive(Debug)]
pub struct Presence {
    shards: Box<[Mutex<HashMap<ChannelName, Members>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl Presence {
    fn shard(&self, channel: &ChannelName) -> MutexGuard<'_, HashMap<ChannelName, Members>> {
        let index = (self.hasher.hash_one(channel) % SHARDS as u64) as usize;
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `entry` to `channel`. A client already there is replaced (its user may have
    /// changed: a WebSocket `auth`), and the transition is then the difference.
    pub fn join(&self, channel: &ChannelName, entry: PresenceEntry) -> Transition {
        let mut shard = self.shard(channel);
        let members = shard.entry(channel.clone()).or_default();
        let first_client = members.clients.is_empty();
        let user = Arc::clone(&entry.user);
        let before = members.clients.insert(Arc::clone(&entry.client), entry);
        let before_none = before.is_none();
        let mut former_user_left = false;
        if let Some(before) = before {
            if before.user == user {
                return Transition::default();
            }
            former_user_left = members.forget_user(&before.user);
        }
        let count = members.users.entry(user).or_insert(0);
        *count += 1;
        Transition {
            former_user_left,
            client: before_none,
            channel: first_client,
            user: *count == 1,
        }
    }

    /// Removes `client` from `channel`; `None` if it was not there.
    pub fn leave(&self, channel: &ChannelName, client: &str) -> Option<(PresenceEntry, Transition)> {
        let mut shard = self.shard(channel);
        let members = shard.get_mut(channel)?;
        let entry = members.clients.remove(client)?;
        let user = members.forget_user(&entry.user);
        let last = members.clients.is_empty();
        if last {
            shard.remove(channel);
        }
        Some((
            entry,
            Transition {
                client: true,
                channel: last,
                user,
                former_user_left: false,
            },
        ))
    }

    /// The entries of `channel`, oldest first.
    pub fn members(&self, channel: &ChannelName) -> Vec<PresenceEntry> {
        let shard = self.shard(channel);
        let mut entries: Vec<PresenceEntry> = shard
            .get(channel)
            .map(|m| m.clients.values().cloned().collect())
            .unwrap_or_default();
        entries.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.client.cmp(&b.client)));
        entries
    }

    /// How many distinct users `channel` has.
    pub fn users(&self, channel: &ChannelName) -> usize {
        self.shard(channel).get(channel).map_or(0, |m| m.users.len())
    }

    /// How many channels have members (for tests and metrics).
    pub fn channels(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl Members {
    /// One connection of `user` fewer; whether it was the last.
    fn forget_user(&mut self, user: &Arc<str>) -> bool {
        match self.users.get_mut(user) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                self.users.remove(user);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(client: &str, user: &str, since: u64) -> PresenceEntry {
        PresenceEntry {
            client: client.into(),
            user: user.into(),
            info: None,
            transport: "sse",
            since,
        }
    }

    /// A transition of a client (joined or left) that also moved the channel and the user.
    fn moved(channel: bool, user: bool) -> Transition {
        Transition {
            client: true,
            channel,
            user,
            former_user_left: false,
        }
    }

    #[test]
    fn transitions_are_counted_once_per_channel_and_per_user() {
        let presence = Presence::default();
        let room = ChannelName::new("room:1").unwrap();
        let t = presence.join(&room, entry("c1", "alice", 1));
        assert_eq!(t, moved(true, true));
        let t = presence.join(&room, entry("c2", "alice", 2));
        assert_eq!(t, moved(false, false), "alice's second tab");
        let t = presence.join(&room, entry("c3", "bob", 3));
        assert_eq!(t, moved(false, true));
        assert_eq!(presence.users(&room), 2);
        let names: Vec<_> = presence.members(&room).iter().map(|e| e.client.to_string()).collect();
        assert_eq!(names, ["c1", "c2", "c3"]);

        let only_the_client = Transition {
            client: true,
            ..Transition::default()
        };
        assert_eq!(presence.leave(&room, "c1").unwrap().1, only_the_client);
        assert!(presence.leave(&room, "c1").is_none(), "a second leave is nothing");
        assert_eq!(presence.leave(&room, "c3").unwrap().1, moved(false, true));
        let (gone, t) = presence.leave(&room, "c2").unwrap();
        assert_eq!((gone.user.as_ref(), t), ("alice", moved(true, true)));
        assert_eq!(presence.channels(), 0, "an empty channel leaves nothing behind");
    }

    #[test]
    fn a_client_joining_again_is_renewed_or_moves_to_its_new_user() {
        let presence = Presence::default();
        let room = ChannelName::new("room:1").unwrap();
        presence.join(&room, entry("c1", "", 1));
        assert_eq!(presence.join(&room, entry("c1", "", 1)), Transition::default());
        let t = presence.join(&room, entry("c1", "alice", 1));
        let renamed = Transition {
            client: false,
            former_user_left: true,
            ..moved(false, true)
        };
        assert_eq!(t, renamed, "anonymous became alice: not a join of the client");
        assert_eq!(presence.users(&room), 1);
        assert_eq!(presence.members(&room)[0].user.as_ref(), "alice");
    }
}
