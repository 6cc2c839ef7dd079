//! The Lua scripts a node runs in the store, each one round trip and
//! atomic there: the registry's beat and leave, and fleet-wide quotas'
//! admission, journal and rewrite (`quota.rs`). Every script's keys share
//! the fleet's hash tag.

use std::sync::LazyLock;

use redis::Script;

/// Publishes the node's record and returns every live node's: the dead
/// (their time in the live set past) are removed on the way. KEYS: the
/// live set (id by expiry, ms of the store's clock), the records (id to
/// JSON); ARGV: the id, the record, its time to live (ms).
pub(super) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  if id ~= ARGV[1] then redis.call('HDEL', KEYS[2], id) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
return redis.call('HMGET', KEYS[2], unpack(live))
",
    )
});

/// Removes the node from the registry. KEYS as `PUBLISH`; ARGV: the id.
pub(super) static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
",
    )
});

/// KEYS: the live nodes, the user's hash, the prefix's hash, this node's
/// set of keys it owns a field in. ARGV: the node, the count, the user
/// limit, the prefix limit (0: none). 0 admitted, 1 over the user's, 2
/// over the prefix's.
pub(super) static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function live(key)
  local total = 0
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local expiry = redis.call('ZSCORE', KEYS[1], fields[i])
    if expiry and tonumber(expiry) > now then total = total + tonumber(fields[i + 1]) end
  end
  return total
end
local n = tonumber(ARGV[2])
if tonumber(ARGV[3]) > 0 and live(KEYS[2]) + n > tonumber(ARGV[3]) then return 1 end
if tonumber(ARGV[4]) > 0 and live(KEYS[3]) + n > tonumber(ARGV[4]) then return 2 end
redis.call('HINCRBY', KEYS[2], ARGV[1], n)
redis.call('HINCRBY', KEYS[3], ARGV[1], n)
redis.call('SADD', KEYS[4], KEYS[2], KEYS[3])
return 0
",
    )
});

/// KEYS: this node's owned set. ARGV: the node, then key and change
/// pairs (a count that reaches 0 loses its field).
pub(super) static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for i = 2, #ARGV, 2 do
  local n = redis.call('HINCRBY', ARGV[i], ARGV[1], tonumber(ARGV[i + 1]))
  if n <= 0 then redis.call('HDEL', ARGV[i], ARGV[1]) else redis.call('SADD', KEYS[1], ARGV[i]) end
end
return 1
",
    )
});

/// KEYS: this node's owned set. ARGV: the node, `reset` (1: first drop
/// every field it owned), then key and count pairs.
pub(super) static REWRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[2] == '1' then
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('HDEL', key, ARGV[1]) end
  redis.call('DEL', KEYS[1])
end
for i = 3, #ARGV, 2 do
  redis.call('HSET', ARGV[i], ARGV[1], ARGV[i + 1])
  redis.call('SADD', KEYS[1], ARGV[i])
end
return 1
",
    )
});
