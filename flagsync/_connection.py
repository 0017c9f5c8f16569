"""Reaching a store: the URL rule, redaction, connection options, hints, and the mapping of
redis-py errors to flagsync errors (`store_errors`, re-exported by `flagsync.store`).

Both sides use this module; it imports nothing of the sync (reader) side, so a
`Publisher` in a CLI process never loads the subscriber, its fork hook or anyio.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from flagsync._cluster import (
    CLUSTER_SCHEME,
    cluster_client,
    cluster_client_async,
    is_cluster_url,
    is_replica_node_url,
    node_for_slot,
    node_for_slot_async,
    parse_cluster_url,
    readonly_on_connect,
    readonly_on_connect_async,
    strip_replica_mark,
)
from flagsync._replicas import (
    check_query,
    primary_url,
    reads_from_replica,
    replica_node_url,
    replica_node_url_async,
)
from flagsync._topology import (
    SENTINEL_SCHEME,
    is_sentinel_url,
    parse_sentinel_url,
    replica_url,
    replica_url_async,
    sentinel_client,
    sentinel_client_async,
)
from flagsync.errors import (
    PermissionDeniedError,
    StoreError,
    StoreUnavailableError,
    StoreURLError,
)

if TYPE_CHECKING:
    import redis.asyncio as aredis

__all__ = [
    "URL_SCHEMES",
    "StoreClient",
    "check_url",
    "connect",
    "connect_async",
    "connection_hint",
    "connection_options",
    "follow_url",
    "follow_url_async",
    "redact_url",
    "resolve_url",
    "store_error",
    "store_errors",
    "writable_url",
]

URL_SCHEMES: Final = ("redis", "rediss", "unix", SENTINEL_SCHEME, CLUSTER_SCHEME)
_NO_URL: Final = (
    "no server URL: pass --url redis://HOST:PORT or set REDIS_URL "
    "(from Python: url='redis://HOST:PORT'); `flagsync server` starts a local one "
    "and prints its URL"
)


def resolve_url(url: str | None) -> str:
    """`url`, else `REDIS_URL`, checked to be a Redis URL; `StoreURLError` otherwise."""
    resolved = url or os.environ.get("REDIS_URL")
    if not resolved:
        raise StoreURLError(_NO_URL)
    check_url(resolved)
    return resolved


def check_url(url: str) -> None:
    """Refuse what redis-py would reject with a bare ValueError (or misread), saying why."""
    shown = redact_url(url)
    if "://" not in url:
        raise StoreURLError(
            f"{shown!r} has no scheme: write redis://{shown} (rediss:// for TLS, "
            "unix:///path for a socket)"
        )
    scheme = url.split("://", 1)[0].lower()
    if is_sentinel_url(url):
        parse_sentinel_url(url, shown)
        return
    if is_cluster_url(url):
        parse_cluster_url(url, shown)
        return
    if scheme not in URL_SCHEMES:
        raise StoreURLError(
            f"{shown!r} is not a Redis URL ({scheme}:// is not a Redis scheme): "
            "use redis://HOST:PORT, rediss://HOST:PORT (TLS), unix:///path, "
            "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE (rediss+sentinel:// for TLS) or "
            "redis+cluster://HOST:PORT[,HOST:PORT...]"
        )
    check_query(url, shown)
    if scheme == "unix":
        return
    try:
        urlsplit(url).port  # noqa: B018 - the property parses and range-checks the port
    except ValueError:
        port = urlsplit(url).netloc.rpartition("@")[2].rpartition(":")[2]
        raise StoreURLError(
            f"{shown!r}: port {port!r} is not a number in 0..65535 (redis://HOST:PORT)"
        ) from None


# The password runs to the *last* "@" of the authority (redis-py reads "u:p@ss@host" so),
# and redis-py also takes one from the query string (`?password=...`).
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/?#]*):[^/?#]*@", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<name>[?&](?:sentinel_|ssl_)?password=)[^&#]*", re.I)


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

    A `redis+sentinel://` URL gives a client of the service's current primary through
    redis-py's `Sentinel.master_for` (see `flagsync._topology`); a `redis+cluster://` URL
    a `RedisCluster` (it routes by key; see `flagsync._cluster`).
    """
    if is_replica_node_url(url):  # a cluster replica a worker follows: reads need READONLY
        url = strip_replica_mark(url)
        options = {"redis_connect_func": readonly_on_connect, **options}
    check_url(url)
    settings = {**connection_options(timeout_s, connect_timeout_s, client_name), **options}
    if is_sentinel_url(url):
        return sentinel_client(parse_sentinel_url(url, redact_url(url)), settings)
    if is_cluster_url(url):
        # RedisCluster learns the slot map now: no seed answering is a StoreUnavailableError.
        with store_errors(url):
            return cluster_client(parse_cluster_url(url, redact_url(url)), settings)  # type: ignore[return-value]
    client: redis.Redis = redis.Redis.from_url(primary_url(url), **settings)
    return client


def connect_async(
    url: str,
    *,
    timeout_s: float = 2.0,
    connect_timeout_s: float = 2.0,
    client_name: str | None = None,
) -> aredis.Redis:
    """`connect` for redis.asyncio (the async driver): the same options and URL schemes."""
    import redis.asyncio as aredis  # noqa: PLC0415 - only the async driver needs it

    settings = connection_options(timeout_s, connect_timeout_s, client_name)
    if is_replica_node_url(url):
        url = strip_replica_mark(url)
        settings["redis_connect_func"] = readonly_on_connect_async
    check_url(url)
    if is_sentinel_url(url):
        return sentinel_client_async(parse_sentinel_url(url, redact_url(url)), settings)
    if is_cluster_url(url):
        return cluster_client_async(parse_cluster_url(url, redact_url(url)), settings)  # type: ignore[return-value]
    client: aredis.Redis = aredis.Redis.from_url(primary_url(url), **settings)
    return client


def writable_url(url: str, presence_url: str | None) -> str | None:
    """Where a worker following `url` writes its presence and metrics: `presence_url` if
    given, the primary for a `read_from=replica` Sentinel or plain URL (the slot's owner for a
    cluster URL), else None (`url` itself)."""
    if presence_url is not None:
        return presence_url
    if is_cluster_url(url) and parse_cluster_url(url, redact_url(url)).read_from == "replica":
        return url  # connect() on a cluster URL routes each key to its slot's owner
    if is_sentinel_url(url) and parse_sentinel_url(url, redact_url(url)).read_from == "replica":
        return url  # connect() on a Sentinel URL always reaches the primary
    if reads_from_replica(url):
        return primary_url(url)
    return None


def follow_url(url: str, timeout_s: float, key: str = "") -> str:
    """The node a worker subscribes and reads on for one session: for a `read_from=replica`
    Sentinel URL, one replica the sentinels list as up (asked now); for a plain one, one
    replica its primary lists as online (see `flagsync._replicas`); for a cluster URL, the
    owner of `key`'s slot or one of its replicas (asked of the seeds now); else `url`."""
    if is_cluster_url(url):
        settings = connection_options(timeout_s, timeout_s, None)
        return node_for_slot(parse_cluster_url(url, redact_url(url)), settings, key)
    if reads_from_replica(url):
        return replica_node_url(url, connection_options(timeout_s, timeout_s, None))
    if not is_sentinel_url(url):
        return url
    target = parse_sentinel_url(url, redact_url(url))
    if target.read_from != "replica":
        return url
    settings = connection_options(timeout_s, timeout_s, None)
    return replica_url(target, settings) or url


async def follow_url_async(url: str, timeout_s: float, key: str = "") -> str:
    """The async twin of `follow_url`."""
    if is_cluster_url(url):
        settings = connection_options(timeout_s, timeout_s, None)
        return await node_for_slot_async(parse_cluster_url(url, redact_url(url)), settings, key)
    if reads_from_replica(url):
        return await replica_node_url_async(url, connection_options(timeout_s, timeout_s, None))
    if not is_sentinel_url(url):
        return url
    target = parse_sentinel_url(url, redact_url(url))
    if target.read_from != "replica":
        return url
    settings = connection_options(timeout_s, timeout_s, None)
    return await replica_url_async(target, settings) or url


def presence_node_url(url: str, timeout_s: float, key: str) -> str:
    """Where a worker writes for one session: on a cluster URL, the slot owner's own node
    URL (asked of the seeds now; a plain connection, re-resolved after a failover); else
    `url` itself."""
    if not is_cluster_url(url):
        return url
    target = replace(parse_cluster_url(url, redact_url(url)), read_from="primary")
    return node_for_slot(target, connection_options(timeout_s, timeout_s, None), key)


async def presence_node_url_async(url: str, timeout_s: float, key: str) -> str:
    """The async twin of `presence_node_url`."""
    if not is_cluster_url(url):
        return url
    target = replace(parse_cluster_url(url, redact_url(url)), read_from="primary")
    return await node_for_slot_async(target, connection_options(timeout_s, timeout_s, None), key)


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


# A cluster slot that has moved or has no owner right now (failover, resharding).
_CLUSTER_MOVING: Final = (
    redis.exceptions.ClusterError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
)
# Server replies that mean "not now" rather than "no": a replica, a loading or busy server.
_UNAVAILABLE_REPLIES: Final = ("READONLY", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN")


@contextmanager
def store_errors(url: str, doing: str = "") -> Iterator[None]:
    """Turn redis-py's errors into flagsync's, with the URL's password redacted.

    `doing` (e.g. "flush metrics") prefixes the message. Everyone who sends commands
    wraps them in this: the publisher, the fleet view, the controller and the metrics
    reporter, so a caller only ever catches `FlagsyncError` subclasses.
    """
    try:
        yield
    except (redis.RedisError, RedisClusterException) as error:
        raise store_error(url, error, doing) from None


def store_error(
    url: str, error: redis.RedisError | RedisClusterException, doing: str = ""
) -> StoreError:
    """The flagsync error for one redis-py error (see `store_errors`)."""
    where = redact_url(url)
    prefix = f"{doing}: " if doing else ""
    text = str(error)
    # Before ConnectionError: redis-py's AuthenticationError subclasses it, but bad
    # credentials are not an unreachable store.
    if isinstance(
        error,
        redis.exceptions.NoPermissionError
        | redis.AuthenticationError
        | redis.exceptions.AuthorizationError,
    ) or text.startswith(("NOPERM", "WRONGPASS", "NOAUTH")):
        return PermissionDeniedError(f"{prefix}{where}: {text}")
    if isinstance(error, RedisClusterException):  # no seed answered, a slot not covered
        return StoreUnavailableError(f"{prefix}cannot reach {where}: {text}")
    if isinstance(error, _CLUSTER_MOVING):
        return StoreUnavailableError(
            f"{prefix}{where} cannot serve this now (a cluster slot is moving or has no "
            f"owner yet): {type(error).__name__}: {text}"
        )
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        hint = connection_hint(url, error)
        return StoreUnavailableError(f"{prefix}cannot reach {where}: {text}{hint}")
    if isinstance(error, redis.exceptions.InvalidResponse):
        return StoreUnavailableError(
            f"{prefix}{where} answered, but not as a Redis or Valkey server would ({text}): "
            "check the port"
        )
    if text.startswith(_UNAVAILABLE_REPLIES):
        return StoreUnavailableError(f"{prefix}{where} cannot serve this now: {text}")
    return StoreError(f"{prefix}{where} refused the command: {text}")


class StoreClient:
    """A redis-py client whose every command maps its errors as `store_errors` does.

    For code that sends a few plain commands (the rollout controller, the CLI) and
    would otherwise wrap each one.
    """

    __slots__ = ("_client", "_url")

    def __init__(self, client: Any, url: str) -> None:
        self._client = client
        self._url = url

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute
        url = self._url

        def command(*args: Any, **kwargs: Any) -> Any:
            with store_errors(url):
                return attribute(*args, **kwargs)

        command.__name__ = name
        return command

    @property
    def raw(self) -> Any:
        """The redis-py client itself."""
        return self._client
