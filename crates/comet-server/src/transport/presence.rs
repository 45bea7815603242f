//! Presence on the transports' side (docs/protocol.md "Presence"): a connection subscribed to a
//! channel whose namespace has `presence = true` holds a [`PresenceHold`] while it lasts (a
//! stream's response body, a WebSocket's subscription); the hold's drop removes the entry. And
//! the JSON of the entries, for `GET /channels/{channel}/presence` and the WebSocket `presence`
//! command.

use std::sync::{Arc, PoisonError};

use comet_core::{Broker, ChannelName, PresenceEntry, Transition, now_millis};
use futures_util::FutureExt;
use serde_json::{Value, json};

use crate::auth::Identity;
use crate::error::ApiError;
use crate::kind::Kind;
use crate::state::AppState;
use crate::webhooks::Webhooks;

/// One connection's entry in one channel's presence, removed when dropped.
pub(crate) struct PresenceHold {
    broker: Arc<dyn Broker>,
    channel: ChannelName,
    client: Arc<str>,
    /// `join_leave`: the leave is pushed to the channel's subscribers too.
    announce: bool,
    /// The entry's user, for the webhooks of a renewal that changes it.
    user: std::sync::Mutex<Arc<str>>,
    webhooks: Arc<Webhooks>,
}

impl std::fmt::Debug for PresenceHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceHold")
            .field("channel", &self.channel.as_str())
            .field("client", &self.client)
            .finish()
    }
}

impl PresenceHold {
    /// Enters the connection `client` (with `identity`'s user and info) in `channel`'s
    /// presence, if its namespace tracks presence; `None` if it does not. `client` is the
    /// connection's id, given it here (`client_id::next`) the first time one is needed.
    ///
    /// # Errors
    /// The broker's error (its store is down, or it has no presence).
    pub(crate) async fn join(
        state: &AppState,
        channel: &ChannelName,
        client: &mut Option<Arc<str>>,
        identity: &Identity,
        kind: Kind,
    ) -> Result<Option<Self>, ApiError> {
        if !crate::auth::policy::presence(state.auth.config(), channel) {
            return Ok(None);
        }
        let client = client.get_or_insert_with(crate::client_id::next);
        let announce = crate::auth::policy::join_leave(state.auth.config(), channel);
        let entry = entry(client, identity, kind);
        let user = Arc::clone(&entry.user);
        let transition = state.broker.presence_join(channel, entry, announce).await?;
        state.webhooks.presence(channel, &user, true, transition);
        Ok(Some(Self {
            broker: Arc::clone(&state.broker),
            channel: channel.clone(),
            client: Arc::clone(client),
            announce,
            user: std::sync::Mutex::new(user),
            webhooks: Arc::clone(&state.webhooks),
        }))
    }

    /// The entry again, under `identity` (a WebSocket `auth` changed who the client is).
    ///
    /// # Errors
    /// As [`join`](Self::join).
    pub(crate) async fn renew(&self, identity: &Identity, kind: Kind) -> Result<(), ApiError> {
        let entry = entry(&self.client, identity, kind);
        let user = Arc::clone(&entry.user);
        // A renewal (the same client) is not announced.
        let transition = self.broker.presence_join(&self.channel, entry, self.announce).await?;
        let former = std::mem::replace(
            &mut *self.user.lock().unwrap_or_else(PoisonError::into_inner),
            Arc::clone(&user),
        );
        if transition.former_user_left {
            let left = Transition {
                user: true,
                ..Transition::default()
            };
            self.webhooks.presence(&self.channel, &former, false, left);
        }
        let added = Transition {
            user: transition.user,
            ..Transition::default()
        };
        self.webhooks.presence(&self.channel, &user, true, added);
        Ok(())
    }

    /// The channel this hold is in.
    pub(crate) fn channel(&self) -> &ChannelName {
        &self.channel
    }
}

fn entry(client: &Arc<str>, identity: &Identity, kind: Kind) -> PresenceEntry {
    PresenceEntry {
        client: Arc::clone(client),
        user: Arc::from(identity.subject().unwrap_or("")),
        info: identity.info().cloned(),
        transport: kind.name(),
        since: now_millis(),
    }
}

impl Drop for PresenceHold {
    fn drop(&mut self) {
        // Outside a runtime (a test's teardown) nothing can run: the entry expires (Redis) or
        // goes with the broker (memory).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (broker, channel, client) = (Arc::clone(&self.broker), self.channel.clone(), Arc::clone(&self.client));
        let (announce, webhooks) = (self.announce, Arc::clone(&self.webhooks));
        let mut leave = Box::pin(async move {
            match broker.presence_leave(&channel, &client, announce).await {
                Ok(Some((entry, transition))) => webhooks.presence(&channel, &entry.user, false, transition),
                Ok(None) => {}
                Err(e) => tracing::warn!(%channel, error = %e, "presence leave failed; the entry expires"),
            }
        });
        // The memory broker answers at once; a broker that must wait (Redis) goes on in a task
        // of its own, with the same future: its first poll may already have sent the leave.
        if leave.as_mut().now_or_never().is_none() {
            runtime.spawn(leave);
        }
    }
}

/// Joins `client` to every channel of `channels` that tracks presence.
///
/// # Errors
/// As [`PresenceHold::join`]; the holds taken so far are given back.
pub(crate) async fn join_all(
    state: &AppState,
    channels: &[ChannelName],
    client: &mut Option<Arc<str>>,
    identity: &Identity,
    kind: Kind,
) -> Result<Vec<PresenceHold>, ApiError> {
    let mut holds = Vec::new();
    for channel in channels {
        holds.extend(PresenceHold::join(state, channel, client, identity, kind).await?);
    }
    Ok(holds)
}

/// Keeps a poller (poll or long poll) in the presence of `channels` that track it for
/// `presence_ttl_secs` (plus `hold_for`, a long poll's hold) after this request. A request
/// without a good id (one given to this user in an earlier answer, and not expired) gets a new
/// one and is not a member yet: a client becomes one when it sends its id back, so a one-off
/// poll (a history fetch, curl) leaves no member behind. Returns the id to tell the poller, if
/// any channel tracks presence.
///
/// # Errors
/// As [`PresenceHold::join`].
pub(crate) async fn poll_member(
    state: &AppState,
    channels: &[ChannelName],
    asked: Option<&str>,
    identity: &Identity,
    kind: Kind,
    hold_for: std::time::Duration,
) -> Result<Option<Arc<str>>, ApiError> {
    let config = state.auth.config();
    if !channels.iter().any(|c| crate::auth::policy::presence(config, c)) {
        return Ok(None);
    }
    let user: Arc<str> = Arc::from(identity.subject().unwrap_or(""));
    let ttl = std::time::Duration::from_secs(state.config.presence_ttl_secs) + hold_for;
    let owned = match asked {
        Some(id) => state.leases.owned_by(id, &user) || issued_elsewhere(state, id, &user).await?,
        None => false,
    };
    let Some(id) = asked.filter(|_| owned) else {
        let id = crate::client_id::next();
        state.leases.issue(Arc::clone(&id), Arc::clone(&user), ttl);
        share_poller(state, &id, &user, ttl).await?;
        return Ok(Some(id));
    };
    share_poller(state, id, &user, ttl).await?;
    let mut client: Option<Arc<str>> = Some(Arc::from(id));
    for channel in channels {
        if let Some(id) = &client
            && state.leases.renew(id, channel, ttl)
        {
            continue;
        }
        if let Some(hold) = PresenceHold::join(state, channel, &mut client, identity, kind).await?
            && let Some(id) = &client
        {
            state
                .leases
                .insert(Arc::clone(id), Arc::clone(&user), channel.clone(), ttl, Box::new(hold));
        }
    }
    Ok(client)
}

/// The key of a poller's id in the broker's shared store.
fn poller_key(id: &str) -> String {
    format!("poller:{id}")
}

/// Whether the id `id` was given to `user` by another node of the cluster (the broker's shared
/// store says so), so that a poller behind a load balancer stays one client on every node.
/// Only ids of our form (`<16 hex digits>-<counter>`) are looked up.
async fn issued_elsewhere(state: &AppState, id: &str, user: &str) -> Result<bool, ApiError> {
    let Some(store) = state.broker.shared_store() else {
        return Ok(false);
    };
    let ours = id.len() <= 40
        && id.split_once('-').is_some_and(|(node, n)| {
            node.len() == 16 && node.bytes().all(|b| b.is_ascii_hexdigit()) && n.bytes().all(|b| b.is_ascii_digit())
        });
    if !ours {
        return Ok(false);
    }
    Ok(store.get(&poller_key(id)).await?.as_deref() == Some(user.as_bytes()))
}

/// Tells every node that `id` is `user`'s for `ttl` more (nothing without a shared store).
async fn share_poller(state: &AppState, id: &str, user: &str, ttl: std::time::Duration) -> Result<(), ApiError> {
    if let Some(store) = state.broker.shared_store() {
        store.set(&poller_key(id), user.as_bytes().to_vec(), ttl).await?;
    }
    Ok(())
}

/// `400 presence_off` for a channel whose namespace does not track presence.
pub(crate) fn presence_off(channel: &ChannelName) -> ApiError {
    ApiError::bad_request(
        "presence_off",
        format!("the namespace of {channel} does not track presence (set presence = true in its [namespace] table)"),
    )
}

/// `channel`'s entries as JSON objects `{"client","user","info"?,"transport","since"}`.
///
/// # Errors
/// [`presence_off`] when its namespace does not track presence; the broker's error.
pub(crate) async fn list(state: &AppState, channel: &ChannelName) -> Result<Vec<Value>, ApiError> {
    if !crate::auth::policy::presence(state.auth.config(), channel) {
        return Err(presence_off(channel));
    }
    let entries = state.broker.presence(channel).await?;
    Ok(entries.iter().map(entry_json).collect())
}

/// One entry as JSON; `info` is the token's object as it came.
pub(crate) fn entry_json(entry: &PresenceEntry) -> Value {
    let mut v = json!({
        "client": entry.client.as_ref(),
        "user": entry.user.as_ref(),
        "transport": entry.transport,
        "since": entry.since,
    });
    if let Some(info) = entry
        .info
        .as_deref()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
    {
        v["info"] = info;
    }
    v
}

/// How many distinct users the entries `clients` (as [`entry_json`] made them) have.
pub(crate) fn distinct_users(clients: &[Value]) -> usize {
    let mut users: Vec<&str> = clients.iter().filter_map(|c| c["user"].as_str()).collect();
    users.sort_unstable();
    users.dedup();
    users.len()
}
