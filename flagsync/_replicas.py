"""Plain URLs with `?read_from=replica`: a worker follows one replica of a standalone primary.

`redis://primary:6379?read_from=replica` names the primary, as every URL does; writers
(publisher, CLI, fleet view) use it as it is. A *worker* asks the primary for its
replicas with `ROLE` (it lists only those online; the worker ACL grants it, unlike INFO),
subscribes and reads on one of them (both connections on the same one: a nudge arrives
behind its data only on the node that holds that data) and writes its presence and
metrics to the primary. With no replica online it follows the primary, as it does, with
a warning, when the primary refuses `ROLE`; while the primary cannot be asked it keeps
the replica it followed last. The query string is checked here too: redis-py passes an
unknown option on to its connection class, which fails with a bare `TypeError` at the
first command, so an unknown name is refused by name up front instead.
"""

from __future__ import annotations

import inspect
import random
from functools import cache
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import structlog
from redis import connection as redis_connection

from flagsync.errors import StoreURLError

if TYPE_CHECKING:
    import redis.asyncio as aredis

__all__ = [
    "check_query",
    "primary_url",
    "reads_from_replica",
    "replica_node_url",
    "replica_node_url_async",
    "with_read_from",
]

_log = structlog.get_logger("flagsync.sync")
_READ_FROM: Final = ("primary", "replica")
_last_followed: dict[str, str] = {}
"""The replica each `read_from=replica` URL followed last (used while its primary is down)."""


@cache
def _known_options() -> frozenset[str]:
    """Every query option redis-py's `from_url` can hand to its pool and connections."""
    names: set[str] = {"read_from", *redis_connection.URL_QUERY_ARGUMENT_PARSERS}
    for kind in (
        redis_connection.AbstractConnection,
        redis_connection.Connection,
        redis_connection.SSLConnection,
        redis_connection.UnixDomainSocketConnection,
        redis_connection.ConnectionPool,
    ):
        names.update(inspect.signature(kind.__init__).parameters)
    return frozenset(names - {"self", "args", "kwargs"})


def check_query(url: str, shown: str) -> None:
    """Refuse an unknown query option, or a `read_from` that is neither value, by name."""
    query = urlsplit(url).query
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - _known_options())
    if unknown:
        raise StoreURLError(
            f"{shown!r}: unknown option(s) {', '.join(unknown)} (redis-py connection "
            "options and read_from=primary|replica are accepted)"
        )
    read_from = options.get("read_from", "primary")
    if read_from not in _READ_FROM:
        raise StoreURLError(
            f"{shown!r}: read_from={read_from!r} is not one of {', '.join(_READ_FROM)}"
        )
    if read_from == "replica" and url.split("://", 1)[0].lower() == "unix":
        raise StoreURLError(
            f"{shown!r}: read_from=replica needs the primary's redis:// or rediss:// URL "
            "(its replicas are found by address)"
        )


def reads_from_replica(url: str) -> bool:
    """True for a plain `redis://`/`rediss://` URL with `read_from=replica` (checked by
    `check_query` first); never for a Sentinel or Cluster URL, which have their own."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("redis", "rediss"):
        return False
    return dict(parse_qsl(parts.query)).get("read_from") == "replica"


def primary_url(url: str) -> str:
    """`url` without its `read_from` option: the primary, as redis-py connects to it."""
    base, _, given = url.partition("?")  # not urlunsplit: it drops unix:///'s "//"
    query = parse_qsl(given, keep_blank_values=True)
    if all(name != "read_from" for name, _ in query):
        return url
    kept = urlencode([(name, value) for name, value in query if name != "read_from"])
    return f"{base}?{kept}" if kept else base


def with_read_from(url: str, read_from: str) -> str:
    """`url` with its `read_from` option set to `read_from` (the `read_from=` keyword of
    `FlagClient.connect`/`connect_async`; any URL scheme that takes the option)."""
    if read_from not in _READ_FROM:
        raise ValueError(f"read_from: must be one of {', '.join(_READ_FROM)}, got {read_from!r}")
    base, _, given = url.partition("?")  # not urlunsplit: it drops unix:///'s "//"
    query = [(k, v) for k, v in parse_qsl(given, keep_blank_values=True) if k != "read_from"]
    return f"{base}?{urlencode([*query, ('read_from', read_from)])}"


def _node(url: str, host: str, port: int) -> str:
    """`url` (its scheme, credentials and options, no `read_from`) pointed at host:port."""
    parts = urlsplit(primary_url(url))
    credentials = parts.netloc.rpartition("@")[0]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    netloc = f"{credentials}@{address}" if credentials else address
    return urlunsplit(parts._replace(netloc=netloc))


def _choose(url: str, role: Any) -> str:
    """One replica `ROLE`'s reply lists (`["master", offset, [[ip, port, offset], ...]]`)."""
    listed = role[2] if isinstance(role, list | tuple) and len(role) > 2 else []
    online = [(_text(entry[0]), int(entry[1])) for entry in listed]
    chosen = _node(url, *random.choice(online)) if online else primary_url(url)
    _last_followed[url] = chosen
    return chosen


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _unreachable(url: str, error: redis.RedisError) -> str:
    """A primary that cannot be asked (down, mid-failover): keep the replica followed
    last, if any; else the error stands."""
    if url in _last_followed:
        return _last_followed[url]
    raise error


def _refused(url: str, error: redis.ResponseError) -> str:
    """A primary that refuses `ROLE` (an ACL without it) is followed itself."""
    from flagsync._connection import redact_url  # noqa: PLC0415 - it imports this module

    _log.warning(
        "replica_discovery_refused",
        url=redact_url(url),
        error=str(error),
        hint="the worker follows the primary; grant +role (flagsync acl) to follow a replica",
    )
    return primary_url(url)


def replica_node_url(url: str, options: dict[str, Any]) -> str:
    """The URL of one replica of `url`'s primary that is online, picked at random; the
    primary's own when none is; the last one followed when the primary cannot be asked."""
    try:
        with redis.Redis.from_url(primary_url(url), **options) as client:
            role = client.execute_command("ROLE")
    except (redis.ConnectionError, redis.TimeoutError) as error:
        return _unreachable(url, error)
    except redis.ResponseError as error:
        return _refused(url, error)
    return _choose(url, role)


async def replica_node_url_async(url: str, options: dict[str, Any]) -> str:
    """The async twin of `replica_node_url`."""
    import redis.asyncio as aredis  # noqa: PLC0415 - only the async driver needs it

    client: aredis.Redis = aredis.Redis.from_url(primary_url(url), **options)
    try:
        role = await client.execute_command("ROLE")  # type: ignore[no-untyped-call]
    except (redis.ConnectionError, redis.TimeoutError) as error:
        return _unreachable(url, error)
    except redis.ResponseError as error:
        return _refused(url, error)
    finally:
        await client.aclose()
    return _choose(url, role)
