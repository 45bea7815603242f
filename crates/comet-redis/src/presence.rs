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
use std::sync::{Arc, Mutex, PoisonError, Weak};
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

/// The index of channels with entries, on Redis's clock (so nodes' clocks do not matter).
/// KEYS[1] = the index; ARGV[1] = the operation:
/// - `touch CHANNEL…`: renewed now;
/// - `stale TTL BATCH`: at most BATCH channels nobody renewed for TTL ms;
/// - `settle TTL (CHANNEL COUNT)…`: after a sweep, a channel still stale leaves the index if
///   it has no entry left, or is looked at again a TTL later if it has (entries a partitioned
///   node may still renew), so it never blocks the others;
/// - `empty CHANNEL`: its last entry left.
const INDEX: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
if op == 'touch' then
  for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now, ARGV[i]) end
elseif op == 'stale' then
  return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]), 'LIMIT', 0, tonumber(ARGV[3]))
elseif op == 'settle' then
  local ttl = tonumber(ARGV[2])
  for i = 3, #ARGV, 2 do
    local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if score and tonumber(score) <= now - ttl then
      if tonumber(ARGV[i + 1]) == 0 then
        redis.call('ZREM', KEYS[1], ARGV[i])
      else
        redis.call('ZADD', KEYS[1], now, ARGV[i])
      end
    end
  end
elseif op == 'empty' then
  redis.call('ZREM', KEYS[1], ARGV[2])
end
return {}
";

/// Channels whose renewals stopped, visited per batch.
const STALE_BATCH: usize = 256;
/// Batches per maintenance round, at most (so a round is bounded; the next goes on).
const STALE_BATCHES: usize = 16;
/// Renewals in one script call, at most.
const RENEW_BATCH: usize = 1000;
/// A maintenance round stops after this many channels failed in a row (Redis is down).
const FAILURES_IN_A_ROW: usize = 3;

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
    /// Itself, for the tasks it spawns (a release after a join that was cut short).
    me: Weak<RedisPresence>,
    prefix: String,
    /// This broker's id among the nodes (`Shared::node`).
    node: String,
    ttl: Duration,
    hub: Arc<Hub>,
    data: DataLink,
    script: redis::Script,
    index_script: redis::Script,
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

/// Releases this node's hold of a client in a channel when dropped armed: a join whose script
/// may have run but whose caller never learnt it (its answer was lost, or the request was
/// dropped meanwhile) leaves no ghost. Releasing a hold that is not there does nothing.
struct Release {
    presence: Weak<RedisPresence>,
    channel: ChannelName,
    client: Arc<str>,
    armed: bool,
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // the hold expires with its TTL
        };
        let (presence, channel, client) = (self.presence.clone(), self.channel.clone(), Arc::clone(&self.client));
        runtime.spawn(async move {
            if let Some(presence) = presence.upgrade()
                && let Err(e) = presence.run(&channel, &["l", &client], Some((&client, false))).await
            {
                tracing::debug!(%channel, error = %e, "release after a cut-short join failed; the hold expires");
            }
        });
    }
}

impl RedisPresence {
    /// `sharded`: on Redis Cluster, notices go by `SPUBLISH` (see `scripts::sharded_if`).
    pub(crate) fn new(
        prefix: &str,
        node: &str,
        ttl: Duration,
        hub: Arc<Hub>,
        data: DataLink,
        sharded: bool,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            ttl: ttl.max(Duration::from_secs(1)),
            hub,
            data,
            script: redis::Script::new(&crate::scripts::sharded_if(SCRIPT.to_owned(), sharded)),
            index_script: redis::Script::new(INDEX),
            local: Mutex::default(),
            sink: Mutex::default(),
        })
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_sink(&self, sink: PresenceSink) {
        *self.sink.lock().unwrap_or_else(PoisonError::into_inner) = Some(sink);
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    /// Runs the script on `channel` with `ops`. Every join and leave it made is pushed to this
    /// node's subscribers (the other nodes get it through pub/sub); every change goes to the
    /// sink except `asked` (the client, and whether joined), which the caller reports itself.
    async fn run(
        &self,
        channel: &ChannelName,
        ops: &[&str],
        asked: Option<(&str, bool)>,
    ) -> Result<Answer, BrokerError> {
        let p = &self.prefix;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{p}:{{{channel}}}:p"))
            .key(format!("{p}:{{{channel}}}:pd"))
            .key(format!("{p}:{{{channel}}}:pu"))
            .key(format!("{p}:{{{channel}}}:ph"))
            .arg(format!("{p}:{{{channel}}}"))
            .arg(self.ttl_ms())
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
        let mut skipped = false;
        for (joined, entry, transition, announced) in &answer.changes {
            if *announced && transition.client {
                self.hub.announce(PresenceNotice {
                    joined: *joined,
                    channel: channel.clone(),
                    entry: entry.clone(),
                });
            }
            if !skipped && asked == Some((&*entry.client, *joined)) {
                skipped = true;
                continue;
            }
            if let Some(sink) = &sink {
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

    /// Runs the index script with `args`.
    async fn index(&self, args: &[&str]) -> Result<Value, BrokerError> {
        let mut invocation = self.index_script.prepare_invoke();
        invocation.key(format!("{}:presence", self.prefix));
        for arg in args {
            invocation.arg(*arg);
        }
        let mut con = self.data.get();
        tokio::time::timeout(RESPONSE_TIMEOUT, invocation.invoke_async(&mut con))
            .await
            .map_err(|_| BrokerError::Unavailable("redis: the presence index timed out".into()))?
            .map_err(|e| self.data.failed(&e))
    }

    async fn touch_index(&self, channels: &[ChannelName]) {
        for chunk in channels.chunks(STALE_BATCH) {
            let mut args = vec!["touch"];
            args.extend(chunk.iter().map(ChannelName::as_str));
            if let Err(e) = self.index(&args).await {
                tracing::debug!(error = %e, "presence index not updated; the next renewal tries again");
                return;
            }
        }
    }

    pub(crate) async fn join(
        &self,
        channel: &ChannelName,
        entry: PresenceEntry,
        announce: bool,
    ) -> Result<Transition, BrokerError> {
        let json = encode(&entry, announce);
        let renewal = self.local().get(channel).is_some_and(|m| m.contains_key(&entry.client));
        // Until this node holds it in `local`, a join cut short is released again.
        let mut release = Release {
            presence: self.me.clone(),
            channel: channel.clone(),
            client: Arc::clone(&entry.client),
            armed: !renewal,
        };
        let answer = self
            .run(
                channel,
                &["j", &entry.client, &entry.user, &json],
                Some((&entry.client, true)),
            )
            .await?;
        self.local().entry(channel.clone()).or_default().insert(
            Arc::clone(&entry.client),
            Held {
                json,
                user: Arc::clone(&entry.user),
            },
        );
        release.armed = false;
        // In the background: the caller may be gone before it is done, and the next renewal
        // touches it anyway.
        let (me, indexed) = (self.me.clone(), channel.clone());
        tokio::spawn(async move {
            if let Some(presence) = me.upgrade() {
                presence.touch_index(std::slice::from_ref(&indexed)).await;
            }
        });
        Ok(answer
            .changes
            .into_iter()
            .find(|(joined, e, _, _)| *joined && e.client == entry.client)
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
        let answer = self.run(channel, &["l", client], Some((client, false))).await?;
        if answer.count == 0
            && let Err(e) = self.index(&["empty", channel.as_str()]).await
        {
            tracing::debug!(%channel, error = %e, "presence index not updated; the sweep will");
        }
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
    /// removes the expired entries of channels nobody renewed for a TTL (a dead node's). A
    /// channel that fails does not keep the others from being renewed (they are visited from a
    /// random place each round); several failing in a row (Redis down) end the round.
    pub(crate) async fn maintain(&self) {
        let mut channels: Vec<(ChannelName, Vec<Arc<str>>)> = self
            .local()
            .iter()
            .map(|(c, m)| (c.clone(), m.keys().cloned().collect()))
            .collect();
        if !channels.is_empty() {
            let start = rand::random_range(0..channels.len());
            channels.rotate_left(start);
        }
        let mut renewed = Vec::with_capacity(channels.len());
        let mut failures = 0;
        for (channel, clients) in channels {
            match self.renew(&channel, &clients).await {
                Ok(()) => {
                    failures = 0;
                    renewed.push(channel);
                }
                Err(e) => {
                    tracing::warn!(%channel, error = %e, "presence renewal failed; trying again next round");
                    failures += 1;
                    if failures >= FAILURES_IN_A_ROW {
                        break;
                    }
                }
            }
        }
        self.touch_index(&renewed).await;
        if let Err(e) = self.sweep_stale().await {
            tracing::debug!(error = %e, "presence sweep failed; trying again next round");
        }
    }

    /// Renews `clients` in `channel`, and adds back those Redis no longer has (it restarted
    /// empty, or a partition outlasted the TTL) that this node still holds, as joins.
    async fn renew(&self, channel: &ChannelName, clients: &[Arc<str>]) -> Result<(), BrokerError> {
        let mut missing = Vec::new();
        for chunk in clients.chunks(RENEW_BATCH) {
            let mut ops: Vec<&str> = Vec::with_capacity(chunk.len() * 2);
            for client in chunk {
                ops.extend(["r", client]);
            }
            missing.extend(self.run(channel, &ops, None).await?.missing);
        }
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
        for chunk in held.chunks(RENEW_BATCH) {
            let mut ops: Vec<&str> = Vec::with_capacity(chunk.len() * 4);
            for (client, h) in chunk {
                ops.extend(["j", client, &h.user, &h.json]);
            }
            self.run(channel, &ops, None).await?;
        }
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

    /// Visits the channels nobody renewed for a TTL: the script removes their expired entries
    /// (with leave notices and webhooks, by whichever node gets there first), then the index
    /// forgets the empty ones and puts the others back a TTL later.
    async fn sweep_stale(&self) -> Result<(), BrokerError> {
        let ttl = self.ttl_ms().to_string();
        let batch = STALE_BATCH.to_string();
        for _ in 0..STALE_BATCHES {
            let stale = self.index(&["stale", &ttl, &batch]).await?;
            let Value::Array(names) = stale else {
                return Ok(());
            };
            let mut settled: Vec<(String, String)> = Vec::with_capacity(names.len());
            for name in &names {
                let Value::BulkString(name) = name else { continue };
                let name = String::from_utf8_lossy(name).into_owned();
                let count = match ChannelName::new(&name) {
                    Ok(channel) => self.run(&channel, &[], None).await?.count,
                    Err(_) => 0, // not a channel of ours: forgotten
                };
                settled.push((name, count.to_string()));
            }
            let mut args = vec!["settle", ttl.as_str()];
            for (name, count) in &settled {
                args.extend([name.as_str(), count.as_str()]);
            }
            self.index(&args).await?;
            if names.len() < STALE_BATCH {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Renewals every third of the TTL, until the presence is dropped.
pub(crate) async fn maintain_every_third(presence: Weak<RedisPresence>, ttl: Duration) {
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
