"""Cluster URLs: `redis+cluster://[user:pass@]host:port[,host:port...][?read_from=replica]`.

The hosts are seed nodes. A namespace is one slot (every key shares the hash tag
`{fs:<ns>}`, see `flagsync.store`), so:

- writers (publisher, CLI, fleet view, presence and metrics of a replica-reading worker)
  use redis-py's `RedisCluster`, which routes each command by its key and follows MOVED;
- a worker (both drivers) follows one node for a session: the slot's owner (or, with
  `read_from=replica`, one of its replicas, which needs READONLY to serve reads), asked
  of the seeds now with `CLUSTER SHARDS`. It subscribes there with SSUBSCRIBE (a classic
  PUBLISH in a cluster crosses the bus to every node: p99 32-36 ms measured, issue #12).
  Anything that says the slot is elsewhere — a MOVED reply, a `sunsubscribe` pushed by
  the node when the slot leaves it, CLUSTERDOWN, the node gone — ends the session, and
  the next one asks the seeds again. redis-py's own cluster pub/sub re-homes only when the
  same client refreshes its slot map (0 of 465 messages after a failover, issue #12), so
  the re-homing is ours.

The write script publishes with SPUBLISH on a cluster (`write_script_for`). Cluster mode
needs Redis 7.0+ or Valkey 7.2+ (SPUBLISH, CLUSTER SHARDS). TLS (`rediss+cluster://`) is
not supported yet and is refused by name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, unquote

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from flagsync._topology import plain_node_url
from flagsync._write_script import SHARDED_WRITE_SCRIPT, WRITE_SCRIPT
from flagsync.errors import StoreURLError

if TYPE_CHECKING:
    import redis.asyncio as aredis
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

__all__ = [
    "CLUSTER_SCHEME",
    "ClusterTarget",
    "ClusterURLError",
    "SlotMovedError",
    "cluster_client",
    "cluster_client_async",
    "is_cluster_url",
    "is_replica_node_url",
    "node_for_slot",
    "node_for_slot_async",
    "node_from_shards",
    "parse_cluster_url",
    "readonly_on_connect",
    "readonly_on_connect_async",
    "scan_keys",
    "strip_replica_mark",
    "subscribe_method",
    "write_script_for",
]

CLUSTER_SCHEME: Final = "redis+cluster"
_OPTIONS: Final = frozenset({"read_from"})
_READ_FROM: Final = ("primary", "replica")
_SHAPE: Final = "redis+cluster://[user:pass@]host:port[,host:port...][?read_from=replica]"
_REPLICA_MARK: Final = "#cluster-replica"
"""Ends the node URL of a cluster replica: its connections send READONLY (see `connect`)."""


class ClusterURLError(StoreURLError):
    """A `redis+cluster://` URL that names no seed, has a path, or a bad option."""


class SlotMovedError(redis.ConnectionError):
    """The followed node no longer serves the namespace's slot (or none is known to):
    the session ends and the next one asks the seeds where it is now."""


@dataclass(frozen=True)
class ClusterTarget:
    """The seed nodes, the data nodes' credentials, and which node a worker follows."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    read_from: str = "primary"

    def node_url(self, host: str, port: int, *, replica: bool = False) -> str:
        """A plain `redis://` URL of one node, with this target's credentials (a replica's
        carries the mark that makes `connect` send READONLY)."""
        url = plain_node_url(host, port, self.username, self.password)
        return url + _REPLICA_MARK if replica else url


def is_cluster_url(url: str) -> bool:
    """True for a `redis+cluster://` (or `rediss+cluster://`) URL."""
    return url.split("://", 1)[0].lower().endswith("+cluster")


def parse_cluster_url(url: str, shown: str) -> ClusterTarget:
    """The target of a cluster URL; `ClusterURLError` naming what is wrong (`shown` is
    the URL with its password redacted, for the message)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() != CLUSTER_SCHEME:
        raise ClusterURLError(
            f"{shown!r}: {scheme}:// is not supported (TLS to a cluster is not built yet); "
            f"use {_SHAPE}"
        )
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    if path.strip("/"):
        raise ClusterURLError(
            f"{shown!r}: a cluster URL has no path (a cluster has one database): write {_SHAPE}"
        )
    credentials, _, hosts = authority.rpartition("@")
    username = password = None
    if credentials:
        user, has_password, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    seeds = tuple(_host_port(part, shown) for part in hosts.split(",") if part)
    if not seeds:
        raise ClusterURLError(f"{shown!r} names no seed node: write {_SHAPE}")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ClusterURLError(
            f"{shown!r}: unknown option(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(_OPTIONS))}"
        )
    read_from = options.get("read_from", "primary")
    if read_from not in _READ_FROM:
        raise ClusterURLError(
            f"{shown!r}: read_from={read_from!r} is not one of {', '.join(_READ_FROM)}"
        )
    return ClusterTarget(seeds=seeds, username=username, password=password, read_from=read_from)


def _host_port(part: str, shown: str) -> tuple[str, int]:
    host, _, port = part.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterURLError(
            f"{shown!r}: seed node {part!r} is not HOST:PORT with a port in 1..65535"
        )
    return host.strip("[]"), int(port)


def write_script_for(url: str) -> str:
    """The write script a writer registers for `url`: SPUBLISH on a cluster, else PUBLISH."""
    return SHARDED_WRITE_SCRIPT if is_cluster_url(url) else WRITE_SCRIPT


def subscribe_method(url: str) -> str:
    """The PubSub method a worker subscribes with: `ssubscribe` on a cluster, else `subscribe`."""
    return "ssubscribe" if is_cluster_url(url) else "subscribe"


# -- writers: redis-py's RedisCluster ------------------------------------------------


def _cluster_options(target: ClusterTarget, options: Mapping[str, Any]) -> dict[str, Any]:
    # `retry` is RedisCluster's own (how often a command is re-routed after a connection
    # error; none: the caller owns retries); MOVED and ASK are followed regardless.
    settings = {name: value for name, value in options.items() if name != "health_check_interval"}
    settings.update(username=target.username, password=target.password)
    return settings


class _ClusterClient(RedisCluster):
    """`RedisCluster` whose transactions parse replies as every other pipeline does.

    redis-py 8.1's cluster transaction (MULTI/EXEC on the slot's owner) applies only the
    cluster-specific reply callbacks, so an HGETALL inside one came back as a flat list
    where a plain client and a cluster pipeline give a dict; the publisher reads its
    state in one transaction.
    """

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)  # type: ignore[no-untyped-call]
        return _ParsedTransaction(pipe, self) if transaction else pipe


class _ParsedTransaction:
    """A cluster transaction pipeline whose `execute` applies the node client's reply
    callbacks to what the cluster ones left raw, and refreshes the slot map when the node
    it went to is gone or no longer the owner (redis-py 8.1's transaction does neither:
    after an owner failover every later transaction went to the dead node)."""

    def __init__(self, pipe: Any, client: RedisCluster) -> None:
        self._pipe = pipe
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __enter__(self) -> _ParsedTransaction:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pipe.reset()

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        strategy = self._pipe._execution_strategy  # no public view of the queued commands
        queued = [(c.args, dict(c.options)) for c in strategy.command_queue]
        try:
            results = self._execute(queued, raise_on_error, first=True)
        except redis.exceptions.MovedError:
            # Nothing ran (MULTI was refused or EXEC aborted): the slot has a new owner, so
            # run it once more there, as redis-py follows MOVED for everything else.
            self._refresh_slots()
            results = self._execute(queued, raise_on_error, first=False)
        callbacks = _node_callbacks()
        raw = self._pipe.cluster_response_callbacks
        parsed = []
        for (args, options), result in zip(queued, results, strict=True):
            name = _text(args[0]).upper()
            if name in callbacks and name not in raw and not isinstance(result, Exception):
                options.pop("keys", None)
                parsed.append(callbacks[name](result, **options))
            else:
                parsed.append(result)
        return parsed

    def _execute(
        self, queued: list[tuple[Any, dict[str, Any]]], raise_on_error: bool, *, first: bool
    ) -> list[Any]:
        if not first:
            for args, options in queued:
                self._pipe.execute_command(*args, **options)
        try:
            results: list[Any] = self._pipe.execute(raise_on_error)
        except redis.exceptions.MovedError:
            if not first:
                self._refresh_slots()
            raise
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterError):
            self._refresh_slots()  # the next call goes where the slot is now
            raise
        return results

    def _refresh_slots(self) -> None:
        # None reachable: the next call tries again.
        with contextlib.suppress(redis.RedisError, redis.exceptions.RedisClusterException):
            self._client.nodes_manager.initialize()


@cache
def _node_callbacks() -> Mapping[str, Any]:
    """The RESP2 reply callbacks of a plain redis-py client (flagsync speaks RESP2)."""
    client = redis.Redis(protocol=2)
    return {str(name).upper(): callback for name, callback in client.response_callbacks.items()}


def cluster_client(target: ClusterTarget, options: Mapping[str, Any]) -> RedisCluster:
    """A `RedisCluster` over the seeds: every command goes to its key's slot owner."""
    return _ClusterClient(
        startup_nodes=[ClusterNode(host, port) for host, port in target.seeds],  # type: ignore[no-untyped-call]
        **_cluster_options(target, options),
    )


def cluster_client_async(target: ClusterTarget, options: Mapping[str, Any]) -> AsyncRedisCluster:
    """The async twin of `cluster_client` (`redis.asyncio.cluster`)."""
    from redis.asyncio.cluster import ClusterNode as AsyncClusterNode  # noqa: PLC0415
    from redis.asyncio.cluster import RedisCluster as AsyncCluster  # noqa: PLC0415

    return AsyncCluster(
        startup_nodes=[AsyncClusterNode(host, port) for host, port in target.seeds],
        **_cluster_options(target, options),
    )


def scan_keys(client: Any, pattern: str, count: int) -> Iterator[bytes]:
    """SCAN for `pattern` (which starts with a namespace's hash tag). On a `RedisCluster`,
    only the node owning that slot is scanned (redis-py would walk every primary, whose
    other namespaces' keys can only cost time); its slot map was refreshed by the last
    redirect, so after a write it names the owner."""
    if isinstance(client, RedisCluster):
        owner = client.get_node_from_key(pattern)  # type: ignore[no-untyped-call]
        found: Iterator[bytes] = client.scan_iter(match=pattern, count=count, target_nodes=owner)
        return found
    plain: Iterator[bytes] = client.scan_iter(match=pattern, count=count)
    return plain


# -- workers: the node of one slot, asked of the seeds --------------------------------


@dataclass(frozen=True)
class _Node:
    host: str
    port: int
    role: str
    health: str


def _fields(entry: Any) -> dict[str, Any]:
    """A CLUSTER SHARDS map: a flat [name, value, ...] list in RESP2, a dict in RESP3."""
    if isinstance(entry, Mapping):
        pairs = list(entry.items())
    else:
        pairs = list(zip(entry[::2], entry[1::2], strict=True))
    return {_text(name): value for name, value in pairs}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _shard_of(reply: Sequence[Any], slot: int) -> list[_Node] | None:
    """The nodes of the shard serving `slot` in one CLUSTER SHARDS reply, or None."""
    for entry in reply:
        shard = _fields(entry)
        ranges = [int(bound) for bound in shard.get("slots", [])]
        if not any(
            first <= slot <= last for first, last in zip(ranges[::2], ranges[1::2], strict=True)
        ):
            continue
        nodes = []
        for raw in shard.get("nodes", []):
            node = _fields(raw)
            host = _text(node.get("ip") or node.get("endpoint") or "")
            nodes.append(_Node(host, int(node["port"]), _text(node["role"]), _text(node["health"])))
        return nodes
    return None


def node_from_shards(target: ClusterTarget, reply: Sequence[Any], slot: int) -> str:
    """The URL to follow for `slot`, from one CLUSTER SHARDS reply: its owner, or an
    online replica of it for `read_from=replica`; `SlotMovedError` if none is usable now."""
    nodes = _shard_of(reply, slot)
    if nodes is None:
        raise SlotMovedError(f"no shard serves slot {slot} (the cluster is not assembled)")
    primaries = [node for node in nodes if node.role == "master" and node.health == "online"]
    if not primaries:
        raise SlotMovedError(f"slot {slot} has no reachable owner (a failover may be under way)")
    if target.read_from == "replica":
        replicas = [node for node in nodes if node.role == "replica" and node.health == "online"]
        if replicas:
            chosen = replicas[slot % len(replicas)] if len(replicas) > 1 else replicas[0]
            return target.node_url(chosen.host, chosen.port, replica=True)
    return target.node_url(primaries[0].host, primaries[0].port)


def node_for_slot(target: ClusterTarget, options: Mapping[str, Any], key: str) -> str:
    """The URL of the node a worker follows for `key`'s slot, as the first seed that
    answers sees it: the owner, or one of its replicas online for `read_from=replica`."""
    slot = key_slot(key.encode())
    last: Exception | None = None
    for host, port in target.seeds:
        settings = {**options, "username": target.username, "password": target.password}
        try:
            with redis.Redis(host=host, port=port, **settings) as seed:
                reply = seed.execute_command("CLUSTER", "SHARDS")
        except redis.RedisError as error:
            last = error
            continue
        return node_from_shards(target, reply, slot)
    raise SlotMovedError(f"no seed node answered CLUSTER SHARDS: {last}") from last


async def node_for_slot_async(target: ClusterTarget, options: Mapping[str, Any], key: str) -> str:
    """The async twin of `node_for_slot`."""
    import redis.asyncio as aredis  # noqa: PLC0415 - only the async driver needs it

    slot = key_slot(key.encode())
    last: Exception | None = None
    for host, port in target.seeds:
        settings = {**options, "username": target.username, "password": target.password}
        seed = aredis.Redis(host=host, port=port, **settings)
        try:
            reply = await seed.execute_command("CLUSTER", "SHARDS")  # type: ignore[no-untyped-call]
        except redis.RedisError as error:
            last = error
            continue
        finally:
            await seed.aclose()
        return node_from_shards(target, reply, slot)
    raise SlotMovedError(f"no seed node answered CLUSTER SHARDS: {last}") from last


def is_replica_node_url(url: str) -> bool:
    """True for a node URL `node_for_slot` gave for a cluster replica."""
    return url.endswith(_REPLICA_MARK)


def strip_replica_mark(url: str) -> str:
    """The plain `redis://` URL of a replica node URL."""
    return url.removesuffix(_REPLICA_MARK)


def readonly_on_connect(connection: Any) -> None:
    """redis-py's connection set-up, then READONLY: a cluster replica answers reads of its
    primary's slots only on connections that asked (otherwise MOVED to the primary)."""
    connection.on_connect()
    connection.send_command("READONLY")
    reply = connection.read_response()
    if _text(reply) != "OK":
        raise redis.ConnectionError(f"READONLY refused: {reply!r}")


async def readonly_on_connect_async(connection: aredis.Connection) -> None:
    """The async twin of `readonly_on_connect`."""
    await connection.on_connect()
    await connection.send_command("READONLY")
    reply = await connection.read_response()
    if _text(reply) != "OK":
        raise redis.ConnectionError(f"READONLY refused: {reply!r}")
