//! The Lua scripts that make publish and sync atomic on Redis (and on Redis Cluster: every key of
//! a channel shares the `{channel}` hash tag, so one script touches one slot).
//!
//! Per channel `c`, with prefix `p`:
//! - `p:{c}:m`, a hash: `e` = the epoch (lowercase hex), `o` = the newest offset, and the Redis
//!   *life* that last wrote it: `r` = its `run_id`, `p` = its `master_replid`, `d` = `1` when the
//!   writer saw `appendonly yes` with `appendfsync always` (nothing acknowledged is lost by a
//!   restart);
//! - `p:{c}:s`, a stream whose entry ids are `<offset>-0`, fields `t` (ms since the Unix epoch),
//!   `v` (event name, empty for the default) and `d` (data);
//! - `p:{c}:k:<key>`, a string `<epoch> <offset>`: the cursor a publish with that idempotency
//!   key got, for the key's window;
//! - notifications on the pub/sub channel `p:{c}`: `<epoch> <offset> <t> <event>\n<data>`.
//!
//! # Why the life
//! Redis can come back with older data: restarted from an RDB snapshot, or from an AOF written
//! with `appendfsync everysec` (the last second lost), or a replica promoted before it had every
//! write. Then a channel's offset goes back, in the same epoch, and the next publish would get a
//! cursor that was already handed out for another message (subscribers holding it drop the new
//! message as a duplicate: silent loss). Both scripts therefore compare the *life* that wrote
//! the channel with the life answering now: its `run_id`, read inside the script (`INFO
//! server`), so no node can act on a stale view. Another life is a restart, or another server
//! that took over. (The `master_replid` is no guide: Redis changes it on a master when a replica
//! first attaches, as it makes a new replication backlog.)
//!
//! A channel written by another life moves to a fresh epoch, atomically, before any cursor is
//! assigned, unless it was written with `d = 1` and the server is a master alone: no replica
//! attached and `master_replid2` all zeros (it restarted; it was not promoted). Under Sentinel
//! nodes always send `d = 0`: once a replica attaches to a promoted one, its previous
//! replication id is cleared too, and a promotion can no longer be told from a restart. Every
//! holder of an old cursor then gets a gap notice; no cursor ever names two messages.
//!
//! Not seen by the life check: a master that was demoted (without a restart), took a lagging
//! copy of its own data back from a replica, and was promoted again. The reader's [`REBASE`]
//! catches it for every channel a node holds (Redis behind what the node has seen).

/// The life check both scripts start with. KEYS[1] = meta, KEYS[2] = stream; `fresh` is a new
/// epoch, `durable` is `'1'` or `'0'`, `meta_ttl` seconds (0 = none). Returns the channel's epoch
/// after the check (creating it if the channel has none).
///
/// The scripts first refuse to run on a replica ([`MASTER_ONLY`]): a replica may hold older
/// data (a failed master restarted as a replica serves its own old data until its first sync),
/// and a script that happens to write nothing would read it without an error.
const LIFE: &str = r"
local replication = redis.call('INFO', 'replication')
local function life_checked(fresh, durable, meta_ttl)
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  local repl = string.match(replication, 'master_replid:(%x+)')
  local repl2 = string.match(replication, 'master_replid2:(%x+)')
  -- A master alone: no replica attached, not promoted. Only its fsynced writes survive a
  -- restart whole, so only they are recorded as durable.
  local slaves = tonumber(string.match(replication, 'connected_slaves:(%d+)')) or 0
  local alone = repl2 == '0000000000000000000000000000000000000000' and slaves == 0
  if durable == '1' and not alone then durable = '0' end
  local m = redis.call('HMGET', KEYS[1], 'e', 'r', 'p', 'd')
  local e = m[1]
  if e and m[2] and m[2] ~= run then
    -- Written by another life (another process: a restart, or another server promoted). Only
    -- a master that restarted alone kept every write, and only if every write was fsynced
    -- before its answer by a master alone (d = 1): a server that was a replica (its previous
    -- replication id is set) got its data by asynchronous replication, or from its own files
    -- before a sync that may never have finished; and with replicas attached the previous
    -- replication id is cleared when the backlog is made again, so it cannot tell.
    local intact = m[4] == '1' and alone
    if not intact then
      e = false
    end
  end
  if not e then
    -- A fresh epoch starts with an empty stream: entries left from an older one (its meta
    -- evicted or deleted) would carry offsets the new epoch hands out again.
    e = fresh
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'e', e, 'o', 0)
  end
  if m[2] ~= run or m[4] ~= durable then
    redis.call('HSET', KEYS[1], 'r', run, 'p', repl, 'd', durable)
  end
  if tonumber(meta_ttl) > 0 then
    redis.call('EXPIRE', KEYS[1], meta_ttl)
  end
  return e
end
";

/// Refuses, with the `READONLY` error a replica gives writes, to run anywhere but on a master.
const MASTER_ONLY: &str = r"
if not string.find(replication, 'role:master', 1, true) then
  return redis.error_reply('READONLY comet: this redis is a replica, not the master')
end
";

/// Publish: KEYS = meta, stream, idempotency key; ARGV = fresh epoch, max length, history TTL
/// seconds (0 = none), meta TTL seconds (0 = none), time, event, data, notification channel,
/// durable (`1`/`0`), key window seconds. Returns `{epoch, offset, duplicate (0/1)}`: for a key
/// already used, the first publish's cursor and 1, and nothing is published. On a cluster
/// (`sharded`) the notification is an `SPUBLISH`: it goes only to the nodes subscribed at the
/// channel's shard.
pub(crate) fn publish(sharded: bool) -> String {
    let script = format!(
        "{LIFE}{MASTER_ONLY}{}",
        r"
local first = redis.call('GET', KEYS[3])
if first then
  local sp = string.find(first, ' ', 1, true)
  return {string.sub(first, 1, sp - 1), tonumber(string.sub(first, sp + 1)), 1}
end
local e = life_checked(ARGV[1], ARGV[9], ARGV[4])
local o = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], o .. '-0', 't', ARGV[5], 'v', ARGV[6], 'd', ARGV[7])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[2], ttl)
end
redis.call('SET', KEYS[3], e .. ' ' .. o, 'EX', ARGV[10])
redis.call('PUBLISH', ARGV[8], e .. ' ' .. o .. ' ' .. ARGV[5] .. ' ' .. ARGV[6] .. '\n' .. ARGV[7])
return {e, o, 0}
"
    );
    sharded_if(script, sharded)
}

/// `script` with its notifications sent by `SPUBLISH` when `sharded` (Redis Cluster).
pub(crate) fn sharded_if(script: String, sharded: bool) -> String {
    if sharded {
        script.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
    } else {
        script
    }
}

/// Sync: KEYS = meta, stream; ARGV = fresh epoch, how many of the newest entries, meta TTL
/// seconds, durable. Creates the channel's epoch if it has none (so that subscribers' cursors
/// are in the epoch the first publish will use), after the life check. Returns
/// `{epoch, offset, entries newest first}`.
pub(crate) fn sync() -> String {
    format!(
        "{LIFE}{MASTER_ONLY}{}",
        r"
local e = life_checked(ARGV[1], ARGV[4], ARGV[3])
local o = redis.call('HGET', KEYS[1], 'o')
if not o then o = '0' end
local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])
return {e, o, entries}
"
    )
}

/// Rebase: KEYS = meta, stream; ARGV = the epoch and offset a node holds, a fresh epoch, meta TTL
/// seconds, and the first offset at which the node saw Redis hold another message than its own
/// (`0` if none). If Redis holds that epoch with an offset *below* the node's, or with other
/// messages under the same cursors (its data went back in a way the life check could not see,
/// e.g. a snapshot loaded in place, and new publishes took the old cursors again), moves the
/// channel to the fresh epoch. The entries from the first divergent offset on were published
/// after Redis went back, into cursors no node that held the channel delivered (each dropped them
/// as duplicates): they are kept, renumbered from 1 in the fresh epoch, so that they reach
/// subscribers after the gap notice instead of going down with the old epoch. Older entries are
/// dropped. Returns 1 if it moved the channel, else 0.
pub(crate) fn rebase() -> String {
    format!("local replication = redis.call('INFO', 'replication'){MASTER_ONLY}{REBASE}")
}

const REBASE: &str = r"
local m = redis.call('HMGET', KEYS[1], 'e', 'o')
local from = tonumber(ARGV[5])
if m[1] == ARGV[1] and (from > 0 or tonumber(m[2] or '0') < tonumber(ARGV[2])) then
  local kept = {}
  if from > 0 then kept = redis.call('XRANGE', KEYS[2], from .. '-0', '+') end
  local ttl = redis.call('PTTL', KEYS[2])
  redis.call('DEL', KEYS[2])
  for i, entry in ipairs(kept) do
    redis.call('XADD', KEYS[2], i .. '-0', unpack(entry[2]))
  end
  if #kept > 0 and ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
  redis.call('HSET', KEYS[1], 'e', ARGV[3], 'o', #kept)
  if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
  return 1
end
return 0
";
