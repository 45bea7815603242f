//! The Lua scripts that make publish and sync atomic on Redis (and on Redis Cluster: both keys of
//! a channel share the `{channel}` hash tag, so one script touches one slot).
//!
//! Per channel `c`, with prefix `p`:
//! - `p:{c}:m`, a hash: `e` = the epoch (lowercase hex), `o` = the newest offset;
//! - `p:{c}:s`, a stream whose entry ids are `<offset>-0`, fields `t` (ms since the Unix epoch),
//!   `v` (event name, empty for the default) and `d` (data);
//! - notifications on the pub/sub channel `p:{c}`: `<epoch> <offset> <t> <event>\n<data>`.

/// Publish: KEYS = meta, stream; ARGV = fresh epoch (used if the channel has none), max length,
/// TTL seconds (0 = none), time, event, data, notification channel. Returns `{epoch, offset}`.
pub(crate) const PUBLISH: &str = r"
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  e = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', e, 'o', 0)
end
local o = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], o .. '-0', 't', ARGV[4], 'v', ARGV[5], 'd', ARGV[6])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
redis.call('PUBLISH', ARGV[7], e .. ' ' .. o .. ' ' .. ARGV[4] .. ' ' .. ARGV[5] .. '\n' .. ARGV[6])
return {e, o}
";

/// Sync: KEYS = meta, stream; ARGV = fresh epoch, how many of the newest entries, TTL seconds.
/// Creates the channel's epoch if it has none (so that subscribers' cursors are in the epoch the
/// first publish will use). Returns `{epoch, offset, entries newest first}`.
pub(crate) const SYNC: &str = r"
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  e = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', e, 'o', 0)
  local ttl = tonumber(ARGV[3])
  if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
end
local o = redis.call('HGET', KEYS[1], 'o')
if not o then o = '0' end
local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])
return {e, o, entries}
";
