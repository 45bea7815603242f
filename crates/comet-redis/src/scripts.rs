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
//! message as a duplicate: silent loss). Both scripts therefore compare the life that wrote the
//! channel with the life answering now (`INFO server` and `INFO replication`, read inside the
//! script, so no node can act on a stale view). Another life is a restart (a new `run_id` and
//! `master_replid`), or a replica that took over (its `master_replid2` is the writer's
//! `master_replid`). A replica that took over, or a restart without `d = 1`, moves the channel
//! to a fresh epoch, atomically, before any cursor is assigned. Every holder of an old cursor then
//! gets a gap notice; nothing is ever acknowledged twice under one cursor.

/// The life check both scripts start with. KEYS[1] = meta, KEYS[2] = stream; `fresh` is a new
/// epoch, `durable` is `'1'` or `'0'`, `meta_ttl` seconds (0 = none). Returns the channel's epoch
/// after the check (creating it if the channel has none).
const LIFE: &str = r"
local function life_checked(fresh, durable, meta_ttl)
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  local replication = redis.call('INFO', 'replication')
  local repl = string.match(replication, 'master_replid:(%x+)')
  local repl2 = string.match(replication, 'master_replid2:(%x+)')
  local m = redis.call('HMGET', KEYS[1], 'e', 'r', 'p', 'd')
  local e = m[1]
  if e and m[2] and (m[2] ~= run or m[3] ~= repl) then
    -- Written by another life. A replica of it that took over (its previous replication id is
    -- the writer's) may lack writes: replication is asynchronous. A restart kept every write
    -- only if every write was fsynced before it was acknowledged.
    local promoted = repl2 == m[3]
    local intact = m[4] == '1' and not promoted
    if not intact then
      e = false
      redis.call('DEL', KEYS[2])
    end
  end
  if not e then
    e = fresh
    redis.call('HSET', KEYS[1], 'e', e, 'o', 0)
  end
  if m[2] ~= run or m[3] ~= repl or m[4] ~= durable then
    redis.call('HSET', KEYS[1], 'r', run, 'p', repl, 'd', durable)
  end
  if tonumber(meta_ttl) > 0 then
    redis.call('EXPIRE', KEYS[1], meta_ttl)
  end
  return e
end
";

/// Publish: KEYS = meta, stream, idempotency key; ARGV = fresh epoch, max length, history TTL
/// seconds (0 = none), meta TTL seconds (0 = none), time, event, data, notification channel,
/// durable (`1`/`0`), key window seconds. Returns `{epoch, offset, duplicate (0/1)}`: for a key
/// already used, the first publish's cursor and 1, and nothing is published.
pub(crate) fn publish() -> String {
    format!(
        "{LIFE}{}",
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
    )
}

/// Sync: KEYS = meta, stream; ARGV = fresh epoch, how many of the newest entries, meta TTL
/// seconds, durable. Creates the channel's epoch if it has none (so that subscribers' cursors
/// are in the epoch the first publish will use), after the life check. Returns
/// `{epoch, offset, entries newest first}`.
pub(crate) fn sync() -> String {
    format!(
        "{LIFE}{}",
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
/// seconds. If Redis holds that epoch with an offset *below* the node's (its data went back in a
/// way the life check could not see, e.g. a snapshot restored by hand), moves the channel to the
/// fresh epoch and drops its stream. Returns 1 if it did, else 0.
pub(crate) const REBASE: &str = r"
local m = redis.call('HMGET', KEYS[1], 'e', 'o')
if m[1] == ARGV[1] and tonumber(m[2] or '0') < tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', ARGV[3], 'o', 0)
  if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
  return 1
end
return 0
";
