//! The two Lua scripts that change the L2 cache (`mode = "purge_and_cache"`). Each runs as one
//! `EVAL`, so Redis never interleaves a purge with a write: see [`super::l2`] for the keys and
//! the tombstone rule. Key names are built from the prefix the same way as in [`super::l2`].

use std::time::Duration;

use super::bus::PurgeMessage;
use super::l2::{self, SharedValue};
use crate::credential::CacheKey;

/// Stores one shared session unless a tombstone of its credential, session or identity is at or
/// after `ARGV[6]` (Unix ms). KEYS: value, sid set, iid set, tomb:key, tomb:sid, tomb:iid.
/// ARGV: value JSON, value PX, set PX, credential hex, session id, not-before ms.
/// Returns 1 when stored, 0 when a tombstone kept it out.
const REMEMBER: &str = r"
local since = tonumber(ARGV[6])
for i = 4, 6 do
  local t = tonumber(redis.call('GET', KEYS[i]))
  if t and t >= since then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return 1
";

/// Deletes every shared value a purge covers and the index sets naming them, then writes the
/// purge's tombstones. ARGV: prefix, now (Unix ms), tombstone PX, credential hex or '', session
/// id or '', identity id or ''. A credential whose session was not named is looked up in its
/// stored value (a logout ends the whole session). Returns how many values were deleted.
///
/// Deletes come first: on a Redis at `maxmemory` (`noeviction`) a script's first write is
/// refused when it may grow memory, later ones are not, so the tombstones still get written.
/// Nobody sees the order (a script is atomic).
const PURGE: &str = r"
local p, now, px = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local dead = {}
local sids = {}
if ARGV[5] ~= '' then sids[#sids + 1] = ARGV[5] end
if ARGV[4] ~= '' then
  local k = p .. 'session:' .. ARGV[4]
  if #sids == 0 then
    local raw = redis.call('GET', k)
    if raw then
      local ok, v = pcall(cjson.decode, raw)
      if ok and type(v) == 'table' and type(v.session_id) == 'string' and v.session_id ~= '' then
        sids[#sids + 1] = v.session_id
      end
    end
  end
  dead[#dead + 1] = k
end
if ARGV[6] ~= '' then
  local k = p .. 'iid:' .. ARGV[6]
  for _, sid in ipairs(redis.call('SMEMBERS', k)) do sids[#sids + 1] = sid end
  dead[#dead + 1] = k
end
for _, sid in ipairs(sids) do
  local set = p .. 'sid:' .. sid
  for _, hex in ipairs(redis.call('SMEMBERS', set)) do
    dead[#dead + 1] = p .. 'session:' .. hex
  end
  dead[#dead + 1] = set
end
local n = 0
for _, k in ipairs(dead) do n = n + redis.call('DEL', k) end
local function tomb(k)
  local old = tonumber(redis.call('GET', k))
  if old and old > now then
    redis.call('PEXPIRE', k, px)
  else
    redis.call('SET', k, now, 'PX', px)
  end
end
if ARGV[4] ~= '' then tomb(p .. 'tomb:key:' .. ARGV[4]) end
if ARGV[6] ~= '' then tomb(p .. 'tomb:iid:' .. ARGV[6]) end
for _, sid in ipairs(sids) do tomb(p .. 'tomb:sid:' .. sid) end
return n
";

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The `EVAL` storing `value` for `key` unless purged at or after `not_before_ms`; the index sets
/// live at least `max_ttl`.
pub fn remember(
    prefix: &str,
    key: &CacheKey,
    value: &SharedValue,
    not_before_ms: u64,
    value_ttl: Duration,
    max_ttl: Duration,
) -> redis::Cmd {
    let hex = super::bus::hex(&key.0);
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(REMEMBER)
        .arg(6)
        .arg(l2::session_key(prefix, key))
        .arg(l2::sid_key(prefix, &value.session_id))
        .arg(l2::iid_key(prefix, &value.identity_id))
        .arg(l2::tomb_key(prefix, "key", &hex))
        .arg(l2::tomb_key(prefix, "sid", &value.session_id))
        .arg(l2::tomb_key(prefix, "iid", &value.identity_id))
        .arg(value.encode())
        .arg(ms(value_ttl))
        .arg(ms(max_ttl.max(value_ttl)))
        .arg(hex)
        .arg(&value.session_id)
        .arg(not_before_ms);
    cmd
}

/// The `EVAL` performing `message`'s purge on the L2 cache at `now_ms`, its tombstones living
/// `tombstone_ttl`.
pub fn purge(
    prefix: &str,
    message: &PurgeMessage,
    now_ms: u64,
    tombstone_ttl: Duration,
) -> redis::Cmd {
    let credential = message
        .credential
        .as_deref()
        .and_then(super::bus::unhex)
        .map(|k| super::bus::hex(&k.0))
        .unwrap_or_default();
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(PURGE)
        .arg(0)
        .arg(prefix)
        .arg(now_ms)
        .arg(ms(tombstone_ttl))
        .arg(credential)
        .arg(message.session_id.as_deref().unwrap_or(""))
        .arg(message.identity_id.as_deref().unwrap_or(""));
    cmd
}
