"""The Redis layout, the atomic write script, and the commands that read the store.

Every key of a namespace shares the hash tag `{fs:<ns>}`, so one Lua script can touch
them all, also on Redis Cluster:

    {fs:<ns>}:flags        hash   flag key -> StoredDefinition blob (msgpack)
    {fs:<ns>}:segments     hash   segment name -> StoredDefinition blob
    {fs:<ns>}:versions     hash   "flag:<key>" / "segment:<name>" -> version (kept after delete)
    {fs:<ns>}:rev          string global revision
    {fs:<ns>}:epoch        string random id of this store's history (new after a wipe)
    {fs:<ns>}:log          stream change log / audit trail (actor, time, before/after)
    {fs:<ns>}:worker:<id>  string presence heartbeat of one worker (with a TTL)
    {fs:<ns>}:changes      channel where every revision is published

Reading commands are built here as plain tuples so the sync and the async subscriber
send exactly the same thing; the I/O stays in the drivers.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from flagsync.errors import FlagsyncError

__all__ = ["DEFAULT_LOG_MAXLEN", "LoadedStore", "StoreKeys", "connection_hint", "redact_url"]

DEFAULT_LOG_MAXLEN: Final = 10_000
NAMESPACE_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

Command = tuple[Any, ...]


class StoreKeys:
    """The key and channel names of one namespace."""

    __slots__ = (
        "channel",
        "epoch",
        "flags",
        "log",
        "namespace",
        "prefix",
        "revision",
        "segments",
        "versions",
    )

    def __init__(self, namespace: str = "default") -> None:
        if not NAMESPACE_PATTERN.match(namespace):
            raise FlagsyncError(
                f"invalid namespace {namespace!r}: use 1-64 of a-z 0-9 . _ - "
                "starting with a letter or digit"
            )
        self.namespace = namespace
        self.prefix = f"{{fs:{namespace}}}"
        self.flags = f"{self.prefix}:flags"
        self.segments = f"{self.prefix}:segments"
        self.versions = f"{self.prefix}:versions"
        self.revision = f"{self.prefix}:rev"
        self.epoch = f"{self.prefix}:epoch"
        self.log = f"{self.prefix}:log"
        self.channel = f"{self.prefix}:changes"

    def worker(self, worker_id: str) -> str:
        """The presence key of one worker."""
        return f"{self.prefix}:worker:{worker_id}"

    @property
    def worker_pattern(self) -> str:
        """A SCAN pattern matching every presence key of the namespace."""
        return f"{self.prefix}:worker:*"

    def script_keys(self) -> list[str]:
        """KEYS of the write script, in its order."""
        return [self.flags, self.segments, self.versions, self.revision, self.epoch, self.log]


# One script for every write. It refuses any stale expected version before touching
# anything, so a write is all-or-nothing; then it bumps the revision (never below what
# the publisher already saw: failover can lose acknowledged writes), writes, logs and
# publishes. ARGV: channel, seen revision, epoch candidate, log maxlen, actor, reason,
# payload, change count, then per change: kind, key, expected version ('' = any), op, blob.
WRITE_SCRIPT: Final = """
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[5], epoch)
end
local count = tonumber(ARGV[8])
local current = {}
for i = 0, count - 1 do
  local base = 9 + i * 5
  local field = ARGV[base] .. ':' .. ARGV[base + 1]
  local version = tonumber(redis.call('HGET', KEYS[3], field) or '0')
  if ARGV[base + 2] ~= '' and tonumber(ARGV[base + 2]) ~= version then
    return {'conflict', ARGV[base], ARGV[base + 1], tostring(version), ARGV[base + 2]}
  end
  current[i] = version
end
local stored = tonumber(redis.call('GET', KEYS[4]) or '0')
local revision = math.max(stored, tonumber(ARGV[2])) + 1
local rev = string.format('%d', revision)
redis.call('SET', KEYS[4], rev)
local now = redis.call('TIME')
local now_us = string.format('%d', tonumber(now[1]) * 1000000 + tonumber(now[2]))
local versions = {}
for i = 0, count - 1 do
  local base = 9 + i * 5
  local kind, key, op, blob = ARGV[base], ARGV[base + 1], ARGV[base + 3], ARGV[base + 4]
  if op ~= 'guard' then
    local hash = KEYS[1]
    if kind == 'segment' then hash = KEYS[2] end
    local before = redis.call('HGET', hash, key) or ''
    local version = string.format('%d', current[i] + 1)
    redis.call('HSET', KEYS[3], kind .. ':' .. key, version)
    if op == 'delete' then
      redis.call('HDEL', hash, key)
    else
      redis.call('HSET', hash, key, blob)
    end
    redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[4], '*',
      'rev', rev, 'epoch', epoch, 'time', now_us, 'actor', ARGV[5], 'reason', ARGV[6],
      'kind', kind, 'key', key, 'op', op, 'version', version, 'before', before, 'after', blob)
    table.insert(versions, kind .. ':' .. key .. '=' .. version)
  end
end
redis.call('PUBLISH', ARGV[1], 'fs1|' .. epoch .. '|' .. rev .. '|' .. now_us .. '|' .. ARGV[7])
return {'ok', rev, epoch, now_us, table.concat(versions, ',')}
"""


class LoadedStore(msgspec.Struct, frozen=True):
    """A consistent read of a namespace: everything at one (epoch, revision)."""

    epoch: str | None
    revision: int
    flags: dict[str, bytes]
    segments: dict[str, bytes]


def load_commands(keys: StoreKeys) -> list[Command]:
    """Pipelined reads of a whole namespace, bracketed by two revision reads.

    No MULTI: a least-privilege worker may not have it. Every write bumps the revision
    atomically with its data, so equal (epoch, revision) before and after proves the
    hashes in between belong to that revision.
    """
    revision = ("MGET", keys.revision, keys.epoch)
    return [revision, ("HGETALL", keys.flags), ("HGETALL", keys.segments), revision]


def parse_load(results: Sequence[Any]) -> LoadedStore | None:
    """The loaded store, or None when a write slipped in between (read again)."""
    before, flags, segments, after = results
    if before != after:
        return None
    revision, epoch = _parse_revision(before)
    return LoadedStore(
        epoch=epoch,
        revision=revision,
        flags={_text(key): bytes(value) for key, value in flags.items()},
        segments={_text(key): bytes(value) for key, value in segments.items()},
    )


def revision_command(keys: StoreKeys) -> Command:
    """Read the store's (revision, epoch)."""
    return ("MGET", keys.revision, keys.epoch)


def parse_revision(result: Sequence[Any]) -> tuple[int, str | None]:
    """(revision, epoch) from `revision_command`'s reply; (0, None) for an empty store."""
    return _parse_revision(result)


def _parse_revision(result: Sequence[Any]) -> tuple[int, str | None]:
    raw_revision, raw_epoch = result
    epoch = None if raw_epoch is None else _text(raw_epoch)
    try:
        revision = int(raw_revision) if raw_revision is not None else 0
    except ValueError:
        revision = 0
    return revision, epoch


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


# The password runs to the *last* "@" of the authority (redis-py reads "u:p@ss@host" so),
# and redis-py also takes one from the query string (`?password=...`).
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/?#]*):[^/?#]*@", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<name>[?&]password=)[^&#]*", re.I)


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`, for logs and error messages."""
    redacted = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['name']}***", redacted)


def connection_hint(url: str, error: BaseException) -> str:
    """A hint to append to a connection error whose own words hide the likely cause, or "".

    A TLS server that requires client certificates may just end the session after the
    handshake ("EOF occurred in violation of protocol"), and a TLS-only port resets a
    plaintext client ("Connection reset by peer"): neither message says "TLS".
    """
    causes: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and len(causes) < 8:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    tls = url.lower().startswith("rediss://")
    if tls and any(isinstance(c, ssl.SSLError) for c in causes):
        if "certificate" not in str(error).lower():
            return (
                " (the server ended the TLS session: if it requires client certificates, "
                "pass ssl_certfile and ssl_keyfile)"
            )
    elif not tls and any(isinstance(c, ConnectionResetError) for c in causes):
        return " (reset by the server: if it only accepts TLS, use a rediss:// URL)"
    return ""


def connect(
    url: str,
    *,
    timeout_s: float = 2.0,
    connect_timeout_s: float = 2.0,
    client_name: str | None = None,
    **options: Any,
) -> redis.Redis:
    """A redis-py client with every timeout set and no hidden retries (we own those).

    redis-py 8 changed its defaults (timeouts, 10 retries with backoff, RESP3); being
    explicit keeps behaviour the same across versions. RESP2 is used everywhere.

    Every connection is named (`client_name`, default `flagsync`), which also makes its
    set-up a round trip: over TLS 1.3 the server sends session tickets right after the
    handshake, and with RESP2, no AUTH and no name, redis-py's pool found that unread
    data on the new connection and refused it ("Connection not ready") every time.
    """
    client: redis.Redis = redis.Redis.from_url(
        url, **connection_options(timeout_s, connect_timeout_s, client_name), **options
    )
    return client


def connection_options(
    timeout_s: float, connect_timeout_s: float, client_name: str | None
) -> dict[str, Any]:
    """The keyword options of every flagsync connection, sync (`connect`) or async."""
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": connect_timeout_s,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "protocol": 2,
        "client_name": client_name or "flagsync",
        "driver_info": None,  # no CLIENT SETINFO: absent on Redis 7.0, needs an ACL grant
    }


def parse_write_reply(reply: Sequence[Any]) -> tuple[str, Any]:
    """('ok', (revision, epoch, server_us, {field: version})) or ('conflict', details)."""
    status = _text(reply[0])
    if status == "conflict":
        kind, key, actual, expected = (_text(part) for part in reply[1:5])
        return "conflict", (kind, key, int(actual), int(expected))
    revision, epoch, server_us = int(reply[1]), _text(reply[2]), int(reply[3])
    versions: dict[str, int] = {}
    for item in filter(None, _text(reply[4]).split(",")):
        field, _, version = item.rpartition("=")
        versions[field] = int(version)
    return "ok", (revision, epoch, server_us, versions)


def version_fields(kind: str, keys: Sequence[str]) -> list[str]:
    """The `versions` hash fields of some flags or segments."""
    return [f"{kind}:{key}" for key in keys]


def decode_versions(fields: Sequence[str], values: Sequence[Any]) -> Mapping[str, int]:
    """HMGET reply of `versions` as {field: version} (0 for never written)."""
    return {
        field: int(value) if value is not None else 0
        for field, value in zip(fields, values, strict=True)
    }
