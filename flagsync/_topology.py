"""Sentinel URLs: `redis+sentinel://[user:pass@]host:port[,host:port...]/<service>[?options]`.

A Sentinel deployment is reached through redis-py's own `redis.sentinel.Sentinel` (and
`redis.asyncio.sentinel` for the async driver): `master_for(service)` gives a client
whose every new connection asks the sentinels where the primary is now, and whose
connections to a demoted primary fail instead of writing to a replica. Nothing here
decides who the primary is; this module only turns a URL into those calls.

Options (query string): `sentinel_username` / `sentinel_password` authenticate to the
sentinels themselves (the user and password of the URL are the data nodes').
`read_from=replica` makes a *worker* (both drivers) subscribe and read on one replica the
sentinels list as up (the same one for both connections: a nudge arrives behind its data
only on the node that holds the data), while its presence and metrics go to the primary;
writers (publisher, CLI, fleet view) always use the primary.

TLS: `rediss+sentinel://` speaks TLS to the sentinels and to the data nodes alike, with
redis-py's `ssl_*` options from the query string (`ssl_ca_certs`, `ssl_ca_path`,
`ssl_certfile`, `ssl_keyfile`, `ssl_password`, `ssl_cert_reqs`, `ssl_check_hostname`);
given on a `redis+sentinel://` URL they are refused, never ignored.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, quote, unquote, urlencode

import redis
from redis.sentinel import MasterNotFoundError, Sentinel

from flagsync.errors import StoreURLError

if TYPE_CHECKING:
    import redis.asyncio as aredis

__all__ = [
    "SENTINEL_SCHEME",
    "SentinelTarget",
    "SentinelURLError",
    "is_sentinel_url",
    "parse_sentinel_url",
    "plain_node_url",
    "replica_url",
    "replica_url_async",
    "sentinel_client",
    "sentinel_client_async",
]

SENTINEL_SCHEME: Final = "redis+sentinel"
_TLS_SCHEME: Final = "rediss+sentinel"
_TLS_OPTIONS: Final = frozenset(
    {
        "ssl_ca_certs",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_cert_reqs",
        "ssl_check_hostname",
    }
)
_OPTIONS: Final = frozenset({"sentinel_username", "sentinel_password", "read_from"}) | _TLS_OPTIONS
_PATHS: Final = frozenset({"ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile"})
_CERT_REQS: Final = ("none", "optional", "required")
_BOOLEANS: Final = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_READ_FROM: Final = ("primary", "replica")
_SHAPE: Final = (
    "redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE (rediss+sentinel:// for TLS)"
)


class SentinelURLError(StoreURLError):
    """A `redis+sentinel://` URL that names no sentinel, no service, or a bad option."""


@dataclass(frozen=True)
class SentinelTarget:
    """Where the sentinels are, which service they watch, and the credentials to use."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    read_from: str = "primary"
    """`replica`: workers follow a replica (see the module docstring)."""
    tls: tuple[tuple[str, str], ...] | None = None
    """None: plaintext; else TLS everywhere, with these `ssl_*` options (may be empty)."""

    def tls_options(self) -> dict[str, Any]:
        """redis-py's keyword options for TLS to a sentinel or data node ({} without)."""
        if self.tls is None:
            return {}
        options: dict[str, Any] = {"ssl": True}
        for name, value in self.tls:
            options[name] = _BOOLEANS[value.lower()] if name == "ssl_check_hostname" else value
        return options

    def node_url(self, host: str, port: int) -> str:
        """A plain URL of one data node, with this target's credentials (and TLS options:
        `rediss://` with them in the query string)."""
        url = plain_node_url(host, port, self.username, self.password)
        if self.tls is None:
            return url
        query = f"?{urlencode(self.tls)}" if self.tls else ""
        return f"rediss{url.removeprefix('redis')}{query}"


def plain_node_url(host: str, port: int, username: str | None, password: str | None) -> str:
    """A plain `redis://` URL of one node found through a topology (Sentinel, Cluster),
    carrying the data nodes' credentials, quoted."""
    auth = ""
    if username or password:
        auth = f"{quote(username or '', safe='')}:{quote(password or '', safe='')}@"
    return f"redis://{auth}{host}:{port}"


def is_sentinel_url(url: str) -> bool:
    """True for a `redis+sentinel://` (or `rediss+sentinel://`) URL."""
    return url.split("://", 1)[0].lower().endswith("+sentinel")


def parse_sentinel_url(url: str, shown: str) -> SentinelTarget:
    """The target of a Sentinel URL; `SentinelURLError` naming what is wrong (`shown`
    is the URL with its password redacted, for the message)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in (SENTINEL_SCHEME, _TLS_SCHEME):
        raise SentinelURLError(f"{shown!r}: {scheme}:// is not supported; use {_SHAPE}")
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    credentials, _, hosts = authority.rpartition("@")
    username = password = None
    if credentials:
        user, has_password, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    sentinels = tuple(_host_port(part, shown) for part in hosts.split(",") if part)
    if not sentinels:
        raise SentinelURLError(f"{shown!r} names no sentinel: write {_SHAPE}")
    service = unquote(path.strip("/"))
    if not service or "/" in service:
        raise SentinelURLError(f"{shown!r}: the path must be the service name: write {_SHAPE}")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise SentinelURLError(
            f"{shown!r}: unknown option(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(_OPTIONS))}"
        )
    read_from = options.get("read_from", "primary")
    if read_from not in _READ_FROM:
        raise SentinelURLError(
            f"{shown!r}: read_from={read_from!r} is not one of {', '.join(_READ_FROM)}"
        )
    return SentinelTarget(
        tls=_tls(scheme.lower() == _TLS_SCHEME, options, shown),
        read_from=read_from,
        sentinels=sentinels,
        service=service,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def no_primary_message(target: SentinelTarget, error: str) -> str:
    """What redis-py's `MasterNotFoundError` means, without its dump of client reprs:
    no sentinel answered, or those that did name no primary that is up for the service."""
    addresses = ", ".join(f"{host}:{port}" for host, port in target.sentinels)
    service = target.service
    detail = error.partition(" : ")[2]
    if not detail:
        return (
            f"the sentinels ({addresses}) answered, but none names a primary that is up for "
            f"service {service!r}: check the service name (a failover may be under way)"
        )
    silent = [f"{h}:{p}" for h, p in target.sentinels if f"host={h},port={p}," in detail]
    if len(silent) == len(target.sentinels):
        if target.tls is not None:
            return (
                f"no sentinel answered over TLS ({addresses}: connection refused, timed out "
                "or the TLS handshake failed: check ssl_ca_certs and the certificates)"
            )
        return f"no sentinel answered ({addresses}: connection refused or timed out)"
    return (
        f"no primary for service {service!r}: sentinel(s) {', '.join(silent) or addresses} "
        "did not answer and the others name no primary that is up"
    )


def _tls(on: bool, options: dict[str, str], shown: str) -> tuple[tuple[str, str], ...] | None:
    """The checked `ssl_*` options of a `rediss+sentinel://` URL (None: no TLS)."""
    given = tuple(sorted((k, v) for k, v in options.items() if k in _TLS_OPTIONS))
    if not on:
        if given:
            names = ", ".join(name for name, _ in given)
            raise SentinelURLError(
                f"{shown!r}: {names} need TLS: write rediss+sentinel:// to use them"
            )
        return None
    for name, value in given:
        if name == "ssl_cert_reqs" and value.lower() not in _CERT_REQS:
            raise SentinelURLError(
                f"{shown!r}: ssl_cert_reqs={value!r} is not one of {', '.join(_CERT_REQS)}"
            )
        if name == "ssl_check_hostname" and value.lower() not in _BOOLEANS:
            raise SentinelURLError(f"{shown!r}: ssl_check_hostname={value!r} is not true or false")
        if name in _PATHS and not value:
            raise SentinelURLError(f"{shown!r}: {name} is empty (a file or directory path)")
    return given


def _host_port(part: str, shown: str) -> tuple[str, int]:
    host, _, port = part.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SentinelURLError(
            f"{shown!r}: sentinel {part!r} is not HOST:PORT with a port in 1..65535"
        )
    return host.strip("[]"), int(port)


def _settings(
    target: SentinelTarget, options: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(sentinel connection options, data node connection options)."""
    tls = target.tls_options()
    node = {**options, "username": target.username, "password": target.password, **tls}
    sentinel: dict[str, Any] = {
        name: options[name]
        for name in ("socket_timeout", "socket_connect_timeout", "retry", "protocol")
        if name in options
    }
    sentinel.update(
        username=target.sentinel_username,
        password=target.sentinel_password,
        client_name=options.get("client_name"),
        driver_info=None,
        **tls,
    )
    return sentinel, node


class _Sentinel(Sentinel):
    """redis-py's `Sentinel`, whose "no primary" error says in one line what happened
    (a worker's `last_error`, the CLI, the logs) instead of listing client reprs."""

    def __init__(self, target: SentinelTarget, sentinel_kwargs: dict[str, Any]) -> None:
        super().__init__(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        self.target = target

    def discover_master(self, service_name: str) -> Any:
        try:
            return super().discover_master(service_name)  # type: ignore[no-untyped-call]
        except MasterNotFoundError as error:
            raise MasterNotFoundError(no_primary_message(self.target, str(error))) from None


@cache
def _async_sentinel() -> type[Any]:
    """The async twin of `_Sentinel` (built on first use: redis.asyncio loads late)."""
    from redis.asyncio.sentinel import (  # noqa: PLC0415
        MasterNotFoundError as AsyncMasterNotFoundError,  # its own class, not redis.sentinel's
    )
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel  # noqa: PLC0415

    class AsyncCleanSentinel(AsyncSentinel):
        def __init__(self, target: SentinelTarget, sentinel_kwargs: dict[str, Any]) -> None:
            super().__init__(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
            self.target = target

        async def discover_master(self, service_name: str) -> Any:
            try:
                return await super().discover_master(service_name)
            except AsyncMasterNotFoundError as error:
                message = no_primary_message(self.target, str(error))
                raise AsyncMasterNotFoundError(message) from None

    return AsyncCleanSentinel


class _PrimaryClient(redis.Redis):
    """`master_for`'s client that also closes the sentinel connections behind it."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            pool: Any = self.connection_pool
            pool.sentinel_manager.close()


@cache
def _async_primary_client() -> type[aredis.Redis]:
    """The async twin of `_PrimaryClient` (built on first use: redis.asyncio loads late)."""
    import redis.asyncio as aredis  # noqa: PLC0415 - the async driver's alone

    class AsyncPrimaryClient(aredis.Redis):
        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            try:
                await super().aclose(close_connection_pool)
            finally:
                pool: Any = self.connection_pool
                await pool.sentinel_manager.aclose()

    return AsyncPrimaryClient


def sentinel_client(target: SentinelTarget, options: dict[str, Any]) -> redis.Redis:
    """A client of the service's current primary (redis-py's `Sentinel.master_for`)."""
    sentinel_options, node_options = _settings(target, options)
    manager = _Sentinel(target, sentinel_options)
    client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
        target.service, redis_class=_PrimaryClient, **node_options
    )
    return client


def sentinel_client_async(target: SentinelTarget, options: dict[str, Any]) -> aredis.Redis:
    """The async twin of `sentinel_client` (`redis.asyncio.sentinel`)."""
    sentinel_options, node_options = _settings(target, options)
    manager = _async_sentinel()(target, sentinel_options)
    client: aredis.Redis = manager.master_for(
        target.service, redis_class=_async_primary_client(), **node_options
    )
    return client


def replica_url(target: SentinelTarget, options: dict[str, Any]) -> str | None:
    """The URL of one replica the sentinels list as up, picked at random (None: none is)."""
    sentinel_options, _ = _settings(target, options)
    with Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options) as manager:  # type: ignore[no-untyped-call]
        replicas: list[tuple[str, int]] = manager.discover_slaves(target.service)
    return _pick(target, replicas)


async def replica_url_async(target: SentinelTarget, options: dict[str, Any]) -> str | None:
    """The async twin of `replica_url`."""
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel  # noqa: PLC0415

    sentinel_options, _ = _settings(target, options)
    manager = AsyncSentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    try:
        replicas: Any = await manager.discover_slaves(target.service)
    finally:
        await manager.aclose()
    return _pick(target, replicas)


def _pick(target: SentinelTarget, replicas: list[tuple[str, int]]) -> str | None:
    if not replicas:
        return None
    host, port = random.choice(list(replicas))
    return target.node_url(host, int(port))
