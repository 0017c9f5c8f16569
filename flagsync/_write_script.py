"""The write script (Lua) and the state digest's Lua half, kept apart from the protocol
module (`flagsync.store`, which re-exports them) so each stays readable.

The script's ARGV layout is built by `flagsync.store.script_arguments`, its reply parsed
by `flagsync.store.parse_write_reply`; the digest it keeps is defined in
`flagsync._digest`.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DIGEST_LUA",
    "GUARD_OP",
    "MESSAGE_SCHEMA",
    "NO_DATA_OPS",
    "SEED_DIGEST_SCRIPT",
    "SHARDED_WRITE_SCRIPT",
    "TOUCH_OP",
    "WRITE_SCRIPT",
]

MESSAGE_SCHEMA: Final = b"fs2"
"""First field of every change message: the header and payload format."""
GUARD_OP: Final = "guard"
"""A write-script op that only checks a version (a prerequisite must not change under a
put): it writes, logs and publishes nothing."""
TOUCH_OP: Final = "touch"
"""A write-script op that only bumps a version (a flag's dependents version, see
`flagsync._references`): no data, no log entry, nothing published."""
NO_DATA_OPS: Final = frozenset({GUARD_OP, TOUCH_OP})
"""Ops that write no flag or segment (absent from the change set and the digest)."""

# The state digest's Lua half (the Python half and the definition: `flagsync._digest`).
# KEYS[1] flags, KEYS[2] segments, KEYS[7] the digest records (hash: 'm:<bucket>' sorted
# member entry hashes, 'top' the 256 bucket digests in bucket order, 40 characters each,
# '-' * 40 for an empty bucket, 'n' entry count), KEYS[8] the digest.
DIGEST_LUA: Final = """
local function entry_hash(field, blob)
  return redis.sha1hex(string.len(field) .. ':' .. field .. blob)
end
local EMPTY_SLOT = string.rep('-', 40)
local top = nil
local function set_slot(bucket, digest)
  top = top or redis.call('HGET', KEYS[7], 'top') or string.rep(EMPTY_SLOT, 256)
  local at = tonumber(bucket, 16) * 40
  top = string.sub(top, 1, at) .. digest .. string.sub(top, at + 41)
end
local function store_bucket(bucket, list)
  table.sort(list)
  if #list == 0 then
    redis.call('HDEL', KEYS[7], 'm:' .. bucket)
    set_slot(bucket, EMPTY_SLOT)
  else
    local joined = table.concat(list)
    redis.call('HSET', KEYS[7], 'm:' .. bucket, joined)
    set_slot(bucket, redis.sha1hex(joined))
  end
end
local function seed_digest()
  redis.call('DEL', KEYS[7])
  top = string.rep(EMPTY_SLOT, 256)
  local groups, count = {}, 0
  for _, source in ipairs({{'flag', KEYS[1]}, {'segment', KEYS[2]}}) do
    local all = redis.call('HGETALL', source[2])
    for i = 1, #all, 2 do
      local entry = entry_hash(source[1] .. ':' .. all[i], all[i + 1])
      local bucket = string.sub(entry, 1, 2)
      groups[bucket] = groups[bucket] or {}
      table.insert(groups[bucket], entry)
      count = count + 1
    end
  end
  for bucket, list in pairs(groups) do store_bucket(bucket, list) end
  redis.call('HSET', KEYS[7], 'n', count)
end
local function digest_consistent()
  local count = redis.call('HGET', KEYS[7], 'n')
  return redis.call('EXISTS', KEYS[8]) == 1 and count and tonumber(count) ==
    redis.call('HLEN', KEYS[1]) + redis.call('HLEN', KEYS[2]) and
    (tonumber(count) == 0 or redis.call('HEXISTS', KEYS[7], 'top') == 1)
end
-- Remove one member from a bucket and/or add one; false when the member to remove is
-- not there (the hashes were changed behind the script's back: the caller re-seeds).
local function edit_bucket(bucket, remove, add)
  local joined = redis.call('HGET', KEYS[7], 'm:' .. bucket) or ''
  local found, list = not remove, {}
  for i = 1, #joined, 40 do
    local member = string.sub(joined, i, i + 39)
    if not found and member == remove then found = true else table.insert(list, member) end
  end
  if add then table.insert(list, add) end
  store_bucket(bucket, list)
  return found
end
-- Replace one entry's hash (a bucket is the first two hex digits of an entry hash).
local function replace_entry(field, before, after)
  local old = before and entry_hash(field, before)
  local new = after and entry_hash(field, after)
  local found = true
  if old and new and string.sub(old, 1, 2) == string.sub(new, 1, 2) then
    found = edit_bucket(string.sub(old, 1, 2), old, new)
  else
    if old then found = edit_bucket(string.sub(old, 1, 2), old, false) end
    if new then edit_bucket(string.sub(new, 1, 2), false, new) end
  end
  local delta = (after and 1 or 0) - (before and 1 or 0)
  if delta ~= 0 then redis.call('HINCRBY', KEYS[7], 'n', delta) end
  return found
end
-- The state digest; stores the slots the updates above changed.
local function state_digest()
  top = top or redis.call('HGET', KEYS[7], 'top') or string.rep(EMPTY_SLOT, 256)
  redis.call('HSET', KEYS[7], 'top', top)
  return redis.sha1hex(top)
end
"""

# One script for every write. It refuses any stale expected version (and, for a signed
# write, a state that moved since the publisher read it) before touching anything, so a
# write is all-or-nothing; then it bumps the revision (never below what the publisher
# already saw: failover can lose acknowledged writes), writes, updates the state digest,
# logs and publishes. ARGV (built by `write_arguments`): channel, seen revision, epoch
# candidate, log maxlen, actor, reason, payload, expected state ('' or
# '<revision>:<digest>', signed writes), signature record ('' = unsigned), change count,
# then per change: kind, key, expected version ('' = any), op, blob; optionally one more
# value with KEYS[10] (see below). Reply: see `parse_write_reply`.
WRITE_SCRIPT: Final = (
    DIGEST_LUA
    + """
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[5], epoch)
end
local count = tonumber(ARGV[10])
local current = {}
for i = 0, count - 1 do
  local base = 11 + i * 5
  local field = ARGV[base] .. ':' .. ARGV[base + 1]
  local version = tonumber(redis.call('HGET', KEYS[3], field) or '0')
  if ARGV[base + 2] ~= '' and tonumber(ARGV[base + 2]) ~= version then
    return {'conflict', ARGV[base], ARGV[base + 1], tostring(version), ARGV[base + 2]}
  end
  current[i] = version
end
local stored = tonumber(redis.call('GET', KEYS[4]) or '0')
if ARGV[8] ~= '' then
  local state = string.format('%d', stored) .. ':' .. (redis.call('GET', KEYS[8]) or '')
  if state ~= ARGV[8] or not digest_consistent() then
    return {'moved', state}
  end
elseif not digest_consistent() then
  seed_digest()
end
local revision = math.max(stored, tonumber(ARGV[2])) + 1
local rev = string.format('%d', revision)
redis.call('SET', KEYS[4], rev)
local now = redis.call('TIME')
local now_us = string.format('%d', tonumber(now[1]) * 1000000 + tonumber(now[2]))
local versions = {}
local reseed = false
for i = 0, count - 1 do
  local base = 11 + i * 5
  local kind, key, op, blob = ARGV[base], ARGV[base + 1], ARGV[base + 3], ARGV[base + 4]
  if op == '$TOUCH' then
    redis.call('HSET', KEYS[3], kind .. ':' .. key, string.format('%d', current[i] + 1))
  elseif op ~= '$GUARD' then
    local hash = KEYS[1]
    if kind == 'segment' then hash = KEYS[2] end
    local before = redis.call('HGET', hash, key)
    local version = string.format('%d', current[i] + 1)
    redis.call('HSET', KEYS[3], kind .. ':' .. key, version)
    local after = false
    if op == 'delete' then
      redis.call('HDEL', hash, key)
    else
      redis.call('HSET', hash, key, blob)
      after = blob
    end
    if not replace_entry(kind .. ':' .. key, before, after) then reseed = true end
    redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[4], '*',
      'rev', rev, 'epoch', epoch, 'time', now_us, 'actor', ARGV[5], 'reason', ARGV[6],
      'kind', kind, 'key', key, 'op', op, 'version', version, 'before', before or '',
      'after', blob)
    table.insert(versions, kind .. ':' .. key .. '=' .. version)
  end
end
-- Optional, after the changes: the namespace's `llm:` section (KEYS[10]), stored with the
-- flags that were checked against it (a guard or touch of 'llm:settings' is among them).
local llm_section = ARGV[11 + count * 5]
if llm_section and KEYS[10] then redis.call('SET', KEYS[10], llm_section) end
if reseed then seed_digest() end
local digest = state_digest()
redis.call('SET', KEYS[8], digest)
if ARGV[9] ~= '' then
  redis.call('SET', KEYS[9], ARGV[9])
else
  redis.call('DEL', KEYS[9])
end
redis.call('PUBLISH', ARGV[1], '$SCHEMA|' .. epoch .. '|' .. rev .. '|' .. now_us .. '|' ..
  digest .. '|' .. ARGV[9] .. '|' .. ARGV[7])
return {'ok', rev, epoch, now_us, table.concat(versions, ','), digest}
""".replace("$GUARD", GUARD_OP)
    .replace("$TOUCH", TOUCH_OP)
    .replace("$SCHEMA", MESSAGE_SCHEMA.decode())
)

# The same script on a Redis Cluster (`flagsync._cluster`): SPUBLISH reaches the shard
# subscribers of the slot's owner and replicas; a classic PUBLISH crosses the cluster bus to
# every node (p99 32-36 ms measured on non-owner nodes, issue #12).
SHARDED_WRITE_SCRIPT: Final = WRITE_SCRIPT.replace(
    "redis.call('PUBLISH', ARGV[1],", "redis.call('SPUBLISH', ARGV[1],"
)

# Seeds the digest records of a store written before they existed (or changed behind the
# script's back) without writing a revision: the content, hence its digest, is unchanged.
# ARGV[1] 'force': recompute even when the records look consistent (a signing publisher
# found an entry hash missing from its bucket).
SEED_DIGEST_SCRIPT: Final = (
    DIGEST_LUA
    + """
if ARGV[1] == 'force' or not digest_consistent() then
  seed_digest()
  redis.call('SET', KEYS[8], state_digest())
end
return redis.call('GET', KEYS[8])
"""
)
