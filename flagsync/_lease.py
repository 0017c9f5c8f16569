"""The rollout lease with a fencing token: one controller acts per flag, and a controller
whose lease moved cannot write, even if it was frozen between deciding and writing.

The lease key (`{fs:<ns>}:lease:<flag>`, with a TTL) says who holds it; taking it bumps
the lease version (`lease:<flag>` in the namespace's versions hash) and that version is
the holder's token. Every write of the holder checks the token inside the write: flag
writes through the write script's `guard` op (`flagsync.publisher.lease_guard`), state
and decision-log writes through `save`'s own script. A TTL alone cannot do this: a
paused holder does not know its lease expired.
"""

from __future__ import annotations

from typing import Any, Final

from flagsync.store import StoreKeys, version_fields

__all__ = ["LEASE_KIND", "Lease"]

LEASE_KIND: Final = "lease"
"""The versions-hash kind of a lease version: field `lease:<flag>`."""

# Take or renew; reply: the holder's token (the lease version), 0 while another holds it.
# Taking it (not renewing) bumps the version, fencing off every earlier holder.
# KEYS: lease, versions hash; ARGV: owner, ttl ms, versions field.
_ACQUIRE: Final = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local token = redis.call('HGET', KEYS[2], ARGV[3])
if owner and token then return tonumber(token) end
return redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
"""
# Set a key (and append to a stream) only while `token` is the lease version.
# KEYS: versions hash, key, stream; ARGV: field, token, value, stream entry ('' none).
_SAVE: Final = """
if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[3])
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000', '*', 'decision', ARGV[4])
end
return 1
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """One owner's view of a flag's lease; `token` is 0 while it does not hold it."""

    def __init__(self, redis: Any, keys: StoreKeys, flag: str, owner: str, ttl_ms: int) -> None:
        self._redis = redis
        self._key = keys.lease(flag)
        self._versions = keys.versions
        self._field = version_fields(LEASE_KIND, [flag])[0]
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.token = 0

    @property
    def field(self) -> str:
        """The lease version's field in the versions hash (`lease:<flag>`)."""
        return self._field

    def acquire(self) -> bool:
        """Take or renew the lease; True (and `token` set) when this owner holds it."""
        reply = self._redis.eval(
            _ACQUIRE, 2, self._key, self._versions, self.owner, self.ttl_ms, self._field
        )
        self.token = int(reply)
        return self.token > 0

    def version(self) -> int:
        """The lease version now (another holder's token once the lease moved)."""
        return int(self._redis.hget(self._versions, self._field) or 0)

    def fence_off(self) -> None:
        """Bump the version without taking the lease: whatever a holder decided before is
        refused; the holder renews under the new version at its next acquire."""
        self._redis.hincrby(self._versions, self._field, 1)

    def save(self, key: str, value: bytes, stream: str, entry: bytes | None) -> bool:
        """SET `key` and append `entry` to `stream`, only while `token` is the version."""
        reply = self._redis.eval(
            _SAVE, 3, self._versions, key, stream, self._field, self.token, value, entry or b""
        )
        return bool(reply)

    def release(self) -> None:
        """Give the lease up (when held), so another controller can act at once."""
        self.token = 0
        self._redis.eval(_RELEASE, 1, self._key, self.owner)
