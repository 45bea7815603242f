//! Presence shared by every node through Redis (docs/protocol.md "Presence").
//!
//! Per channel `c`, with prefix `p` (one hash slot, as the channel's other keys):
//! - `p:{c}:p`, a hash: client id → the entry as JSON (`client`, `user`, `info`?, `transport`,
//!   `since`, and `a`: whether its joins and leaves are announced);
//! - `p:{c}:pd`, a sorted set: `<client id>|<node>` → that node's deadline for the entry (ms
//!   since the Unix epoch, Redis's clock). A node *holds* an entry while it renews it; a
//!   poller whose requests go to several nodes (behind a load balancer) is held by each. A
//!   hold not renewed by its deadline is released by whichever node touches the channel next;
//! - `p:{c}:ph`, a hash: client id → how many nodes hold it: the entry goes with its last hold;
//! - `p:{c}:pu`, a hash: user → how many of the channel's entries are theirs.
//!
//! and one index, `p:presence`, a sorted set: channel → when a node last renewed entries in it.
//!
//! One script ([`SCRIPT`]) makes every change, so each transition (a channel's first client, a
//! user's last connection) happens exactly once, on one node, whatever the number of nodes:
//! that node gets it back and sends the webhook; joins and leaves are announced on the
//! channel's pub/sub channel (`!j <node> <entry>`, `!l <node> <entry>`), which every node
//! subscribed to it pushes to its local subscribers, except the node that ran the script: it
//! pushes them directly, as the memory broker does (a client's join before its own
//! subscription exists, so a client never gets its own join).
//!
//! Each node keeps its own entries ([`Local`]) and renews them every third of the TTL; one it
//! finds gone (Redis restarted empty, or a long partition let another node remove it) is added
//! again, as a join. A node that dies stops renewing: its entries pass their deadlines, and the
//! channels nobody renewed for a TTL are visited by every node's maintenance, which removes
//! them with their leave notices and webhooks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use comet_core::{
    BrokerError, ChannelName, Hub, PresenceChange, PresenceEntry, PresenceNotice, PresenceSink, Transition,
};
use redis::Value;
use serde_json::json;

use crate::link::{DataLink, RESPONSE_TIMEOUT};

/// The presence script. KEYS: the channel's `p`, `pd`, `pu` and `ph` keys. ARGV[1] = the channel's
/// pub/sub channel, ARGV[2] = the TTL in ms, ARGV[3] = the node running it (the notices it
/// publishes name it, so that it skips them), then operations:
/// - `j CLIENT USER ENTRY`: this node holds the entry (added if it is not there; a changed
///   user replaces it and moves the user counts);
/// - `r CLIENT`: renews this node's hold (a new deadline), or answers it as missing;
/// - `l CLIENT`: releases this node's hold (the entry goes with its last);
/// - `m`: answers the entries.
///
/// Expired entries are removed first. Answers `{changes, entries, count, missing}`, each
/// change `{kind ('j'|'l'), entry, client, channel, user, former_user_left}` with the flags of
/// [`Transition`] as 0/1.
const SCRIPT: &str = r"
local P, D, U, H = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local notify, ttl, node = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local changes = {}
local function flag(b) if b then return 1 end return 0 end
-- One entry fewer for `user`; whether it was their last.
local function fewer(user)
  if redis.call('HINCRBY', U, user, -1) <= 0 then
    redis.call('HDEL', U, user)
    return 1
  end
  return 0
end
local function drop(client)
  local e = redis.call('HGET', P, client)
  if not e then return end
  redis.call('HDEL', P, client)
  local entry = cjson.decode(e)
  local user_left = fewer(entry.user)
  local last = flag(redis.call('HLEN', P) == 0)
  if entry.a == 1 then redis.call('PUBLISH', notify, '!l ' .. node .. ' ' .. e) end
  changes[#changes + 1] = {'l', e, 1, last, user_left, 0}
end
-- One holder fewer (the member `client|node` of D); the entry goes with its last holder.
local function release(member)
  if redis.call('ZREM', D, member) == 0 then return end
  local client = string.match(member, '^(.*)|[^|]*$')
  if redis.call('HINCRBY', H, client, -1) <= 0 then
    redis.call('HDEL', H, client)
    drop(client)
  end
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', D, '-inf', now)) do release(member) end
local members, missing = {}, {}
local i = 4
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'j' then
    local client, user, e = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    i = i + 4
    local member = client .. '|' .. node
    if not redis.call('ZSCORE', D, member) then redis.call('HINCRBY', H, client, 1) end
    redis.call('ZADD', D, now + ttl, member)
    local old = redis.call('HGET', P, client)
    if old then
      local before = cjson.decode(old).user
      if before ~= user then
        redis.call('HSET', P, client, e)
        local former_left = fewer(before)
        local first_of_user = flag(redis.call('HINCRBY', U, user, 1) == 1)
        changes[#changes + 1] = {'j', e, 0, 0, first_of_user, former_left}
      end
    else
      local first = flag(redis.call('HLEN', P) == 0)
      redis.call('HSET', P, client, e)
      local first_of_user = flag(redis.call('HINCRBY', U, user, 1) == 1)
      if cjson.decode(e).a == 1 then redis.call('PUBLISH', notify, '!j ' .. node .. ' ' .. e) end
      changes[#changes + 1] = {'j', e, 1, first, first_of_user, 0}
    end
  elseif op == 'r' then
    local client = ARGV[i + 1]
    i = i + 2
    local member = client .. '|' .. node
    if redis.call('ZSCORE', D, member) then
      redis.call('ZADD', D, now + ttl, member)
    else
      missing[#missing + 1] = client
    end
  elseif op == 'l' then
    release(ARGV[i + 1] .. '|' .. node)
    i = i + 2
  elseif op == 'm' then
    members = redis.call('HVALS', P)
    i = i + 1
  else
    return redis.error_reply('comet presence: unknown operation ' .. tostring(op))
  end
end
-- Abandoned by every node (all dead), the keys go three TTLs after the last change.
for _, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 1 then redis.call('PEXPIRE', k, ttl * 3) end
end
return {changes, members, redis.call('HLEN', P), missing}
";

/// Removes `channel` from the index if nobody renewed it since `threshold` (a join in between
/// keeps it). KEYS[1] = the index; ARGV = channel, threshold (ms).
const UNINDEX: &str = r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
";

/// Channels whose renewals stopped, visited per maintenance round, at most.
const STALE_BATCH: usize = 256;

/// One entry this node holds: its JSON as stored, and its user (for renewals).
#[derive(Debug, Clone)]
struct Held {
    json: String,
    user: Arc<str>,
}

/// This node's entries, by channel, then client.
type Local = HashMap<ChannelName, HashMap<Arc<str>, Held>>;

/// What a script run answered.
struct Answer {
    /// Joined or left, the entry, what it changed, and whether it is announced.
    changes: Vec<(bool, PresenceEntry, Transition, bool)>,
    members: Vec<PresenceEntry>,
    count: usize,
    /// Clients `r` found gone.
    missing: Vec<String>,
}

/// Presence over Redis, for one node.
pub(crate) struct RedisPresence {
    prefix: String,
    /// This broker's id among the nodes (`Shared::node`).
    node: String,
    ttl: Duration,
    hub: Arc<Hub>,
    data: DataLink,
    script: redis::Script,
    unindex: redis::Script,
    /// A `std` mutex: held only to read or change the map, never across an `.await`.
    local: Mutex<Local>,
    sink: Mutex<Option<PresenceSink>>,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl RedisPresence {
    pub(crate) fn new(prefix: &str, node: &str, ttl: Duration, hub: Arc<Hub>, data: DataLink) -> Self {
        Self {
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            ttl: ttl.max(Duration::from_secs(1)),
            hub,
            data,
            script: redis::Script::new(SCRIPT),
            unindex: redis::Script::new(UNINDEX),
            local: Mutex::default(),
            sink: Mutex::default(),
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_sink(&self, sink: PresenceSink) {
        *self.sink.lock().unwrap_or_else(PoisonError::into_inner) = Some(sink);
    }

    fn index(&self) -> String {
        format!("{}:presence", self.prefix)
    }

    /// Runs the script on `channel` with `ops`. Every join and leave it made is pushed to this
    /// node's subscribers (the other nodes get it through pub/sub); the changes for clients
    /// other than `asked` (the one the caller acts for, who reports its own) go to the sink.
    async fn run(&self, channel: &ChannelName, ops: &[&str], asked: Option<&str>) -> Result<Answer, BrokerError> {
        let p = &self.prefix;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{p}:{{{channel}}}:p"))
            .key(format!("{p}:{{{channel}}}:pd"))
            .key(format!("{p}:{{{channel}}}:pu"))
            .key(format!("{p}:{{{channel}}}:ph"))
            .arg(format!("{p}:{{{channel}}}"))
            .arg(self.ttl.as_millis() as u64)
            .arg(&self.node);
        for op in ops {
            invocation.arg(*op);
        }
        let mut con = self.data.get();
        let value: Value = tokio::time::timeout(RESPONSE_TIMEOUT, invocation.invoke_async(&mut con))
            .await
            .map_err(|_| {
                self.data.replace();
                BrokerError::Unavailable("redis: the presence script timed out".into())
            })?
            .map_err(|e| self.data.failed(&e))?;
        let answer = parse_answer(&value)
            .ok_or_else(|| BrokerError::Internal(format!("redis: unexpected presence answer {value:?}")))?;
        let sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (joined, entry, transition, announced) in &answer.changes {
            if *announced && transition.client {
                self.hub.announce(PresenceNotice {
                    joined: *joined,
                    channel: channel.clone(),
                    entry: entry.clone(),
                });
            }
            if let Some(sink) = &sink
                && Some(entry.client.as_ref()) != asked
            {
                sink(PresenceChange {
                    channel: channel.clone(),
                    entry: entry.clone(),
                    joined: *joined,
                    transition: *transition,
                });
            }
        }
        Ok(answer)
    }

    async fn touch_index(&self, channels: &[ChannelName]) {
        if channels.is_empty() {
            return;
        }
        let now = comet_core::now_millis();
        let mut pipe = redis::pipe();
        for channel in channels {
            pipe.zadd(self.index(), channel.as_str(), now).ignore();
        }
        let mut con = self.data.get();
        if let Err(e) = pipe.query_async::<()>(&mut con).await {
            self.data.note(&e);
            tracing::debug!(error = %e, "presence index not updated; the next renewal tries again");
        }
    }

    pub(crate) async fn join(
        &self,
        channel: &ChannelName,
        entry: PresenceEntry,
        announce: bool,
    ) -> Result<Transition, BrokerError> {
        let json = encode(&entry, announce);
        let answer = self
            .run(channel, &["j", &entry.client, &entry.user, &json], Some(&entry.client))
            .await?;
        self.local().entry(channel.clone()).or_default().insert(
            Arc::clone(&entry.client),
            Held {
                json,
                user: Arc::clone(&entry.user),
            },
        );
        self.touch_index(std::slice::from_ref(channel)).await;
        Ok(answer
            .changes
            .into_iter()
            .find(|(_, e, _, _)| e.client == entry.client)
            .map(|(_, _, t, _)| t)
            .unwrap_or_default())
    }

    pub(crate) async fn leave(
        &self,
        channel: &ChannelName,
        client: &str,
    ) -> Result<Option<(PresenceEntry, Transition)>, BrokerError> {
        {
            let mut local = self.local();
            if let Some(members) = local.get_mut(channel) {
                members.remove(client);
                if members.is_empty() {
                    local.remove(channel);
                }
            }
        }
        let answer = self.run(channel, &["l", client], Some(client)).await?;
        Ok(answer
            .changes
            .into_iter()
            .find(|(joined, e, _, _)| !joined && e.client.as_ref() == client)
            .map(|(_, e, t, _)| (e, t)))
    }

    pub(crate) async fn members(&self, channel: &ChannelName) -> Result<Vec<PresenceEntry>, BrokerError> {
        let mut members = self.run(channel, &["m"], None).await?.members;
        members.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.client.cmp(&b.client)));
        Ok(members)
    }

    /// One maintenance round: renews this node's entries (adding back any Redis lost), then
    /// removes the expired entries of channels nobody renewed for a TTL (a dead node's).
    pub(crate) async fn maintain(&self) {
        let channels: Vec<(ChannelName, Vec<Arc<str>>)> = self
            .local()
            .iter()
            .map(|(c, m)| (c.clone(), m.keys().cloned().collect()))
            .collect();
        let mut renewed = Vec::with_capacity(channels.len());
        for (channel, clients) in channels {
            if let Err(e) = self.renew(&channel, &clients).await {
                tracing::warn!(%channel, error = %e, "presence renewal failed; trying again next round");
                return;
            }
            renewed.push(channel);
        }
        self.touch_index(&renewed).await;
        if let Err(e) = self.sweep_stale().await {
            tracing::debug!(error = %e, "presence sweep failed; trying again next round");
        }
    }

    /// Renews `clients` in `channel`, and adds back those Redis no longer has (it restarted
    /// empty, or a partition outlasted the TTL) that this node still holds, as joins.
    async fn renew(&self, channel: &ChannelName, clients: &[Arc<str>]) -> Result<(), BrokerError> {
        let mut ops: Vec<&str> = Vec::with_capacity(clients.len() * 2);
        for client in clients {
            ops.extend(["r", client]);
        }
        let missing = self.run(channel, &ops, None).await?.missing;
        if missing.is_empty() {
            return Ok(());
        }
        let held: Vec<(String, Held)> = {
            let local = self.local();
            let members = local.get(channel);
            missing
                .into_iter()
                .filter_map(|c| Some((c.clone(), members?.get(c.as_str())?.clone())))
                .collect()
        };
        let mut ops: Vec<&str> = Vec::with_capacity(held.len() * 4);
        for (client, h) in &held {
            ops.extend(["j", client, &h.user, &h.json]);
        }
        self.run(channel, &ops, None).await?;
        // A client that left while it was being added back (its leave ran first) is removed
        // again, so no entry outlives its connection.
        let gone: Vec<String> = {
            let local = self.local();
            let members = local.get(channel);
            held.into_iter()
                .map(|(c, _)| c)
                .filter(|c| members.is_none_or(|m| !m.contains_key(c.as_str())))
                .collect()
        };
        for client in gone {
            self.run(channel, &["l", &client], None).await?;
        }
        Ok(())
    }

    async fn sweep_stale(&self) -> Result<(), BrokerError> {
        let threshold = comet_core::now_millis().saturating_sub(self.ttl.as_millis() as u64);
        let mut con = self.data.get();
        let stale: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.index())
            .arg("-inf")
            .arg(threshold)
            .arg("LIMIT")
            .arg(0)
            .arg(STALE_BATCH)
            .query_async(&mut con)
            .await
            .map_err(|e| self.data.failed(&e))?;
        for name in stale {
            let Ok(channel) = ChannelName::new(&name) else {
                continue;
            };
            let answer = self.run(&channel, &[], None).await?;
            if answer.count == 0 {
                self.unindex
                    .key(self.index())
                    .arg(channel.as_str())
                    .arg(threshold)
                    .invoke_async::<()>(&mut con)
                    .await
                    .map_err(|e| self.data.failed(&e))?;
            }
        }
        Ok(())
    }
}

/// Renewals every third of the TTL, until the presence is dropped.
pub(crate) async fn maintain_every_third(presence: std::sync::Weak<RedisPresence>, ttl: Duration) {
    let every = (ttl / 3).max(Duration::from_millis(200));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(presence) = presence.upgrade() else {
            return;
        };
        presence.maintain().await;
    }
}

/// The entry as stored: the JSON of docs/protocol.md "Presence" plus `a`, last.
fn encode(entry: &PresenceEntry, announce: bool) -> String {
    let mut v = json!({
        "client": entry.client.as_ref(),
        "user": entry.user.as_ref(),
        "transport": entry.transport,
        "since": entry.since,
    });
    if let Some(info) = entry
        .info
        .as_deref()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
    {
        v["info"] = info;
    }
    // serde_json keeps keys sorted (no `preserve_order`): `a` is pushed on by hand, last, so
    // `announced` can read it without parsing.
    let mut text = v.to_string();
    text.pop();
    text.push_str(if announce { ",\"a\":1}" } else { ",\"a\":0}" });
    text
}

/// The transport names of `comet_server::Kind`, as `&'static str`.
fn transport_name(name: &str) -> &'static str {
    match name {
        "poll" => "poll",
        "longpoll" => "longpoll",
        "stream" => "stream",
        "iframe" => "iframe",
        "sse" => "sse",
        "ws" => "ws",
        _ => "unknown",
    }
}

/// An entry from its stored JSON.
pub(crate) fn decode(text: &[u8]) -> Option<PresenceEntry> {
    let v: serde_json::Value = serde_json::from_slice(text).ok()?;
    Some(PresenceEntry {
        client: Arc::from(v["client"].as_str()?),
        user: Arc::from(v["user"].as_str()?),
        info: v
            .get("info")
            .filter(|i| i.is_object())
            .map(|i| Arc::from(i.to_string())),
        transport: transport_name(v["transport"].as_str()?),
        since: v["since"].as_u64()?,
    })
}

/// A pub/sub notice `!j <node> <entry>` or `!l <node> <entry>`: the node that published it,
/// joined, and the entry.
pub(crate) fn parse_notice(payload: &[u8]) -> Option<(&[u8], bool, PresenceEntry)> {
    let joined = match payload.get(..3)? {
        b"!j " => true,
        b"!l " => false,
        _ => return None,
    };
    let rest = &payload[3..];
    let space = rest.iter().position(|&b| b == b' ')?;
    Some((&rest[..space], joined, decode(&rest[space + 1..])?))
}

fn parse_answer(value: &Value) -> Option<Answer> {
    let Value::Array(parts) = value else {
        return None;
    };
    let [
        Value::Array(changes),
        Value::Array(members),
        Value::Int(count),
        Value::Array(missing),
    ] = parts.as_slice()
    else {
        return None;
    };
    let bytes = |v: &Value| match v {
        Value::BulkString(b) => Some(b.clone()),
        _ => None,
    };
    let flag = |v: &Value| matches!(v, Value::Int(1));
    let mut out = Vec::with_capacity(changes.len());
    for change in changes {
        let Value::Array(f) = change else {
            return None;
        };
        if f.len() < 6 {
            return None;
        }
        let joined = bytes(&f[0])? == b"j";
        let stored = bytes(&f[1])?;
        let entry = decode(&stored)?;
        let transition = Transition {
            client: flag(&f[2]),
            channel: flag(&f[3]),
            user: flag(&f[4]),
            former_user_left: flag(&f[5]),
        };
        out.push((joined, entry, transition, stored.ends_with(b",\"a\":1}")));
    }
    let members = members.iter().filter_map(|m| decode(&bytes(m)?)).collect();
    let missing = missing
        .iter()
        .filter_map(|m| String::from_utf8(bytes(m)?).ok())
        .collect();
    Some(Answer {
        changes: out,
        members,
        count: usize::try_from(*count).ok()?,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_their_stored_json() {
        let entry = PresenceEntry {
            client: "00000000000000aa-7".into(),
            user: "al\"ice".into(),
            info: Some(r#"{"name":"Alice"}"#.into()),
            transport: "sse",
            since: 1_700_000_000_123,
        };
        let json = encode(&entry, true);
        assert!(json.ends_with(",\"a\":1}"), "{json}");
        assert_eq!(decode(json.as_bytes()).unwrap(), entry);
        let plain = PresenceEntry {
            info: None,
            ..entry.clone()
        };
        assert_eq!(decode(encode(&plain, false).as_bytes()).unwrap(), plain);
        let notice = format!("!l 00ff {json}");
        let (node, joined, parsed) = parse_notice(notice.as_bytes()).unwrap();
        assert_eq!((node, joined, parsed), (&b"00ff"[..], false, entry));
        assert!(
            parse_notice(b"1f 3 4 \nhello").is_none(),
            "a message notification is no notice"
        );
    }
}
