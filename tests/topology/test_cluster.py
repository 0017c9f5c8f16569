"""Workers and publishers on a Redis Cluster (issue #12), on real processes: 3 primaries +
3 replicas (`cluster-node-timeout 1000`) on 127.0.0.1, reached through a
`redis+cluster://` URL listing every node as a seed.

A namespace is one slot. Workers follow that slot's owner (or one of its replicas with
`read_from=replica`) with SSUBSCRIBE, and must re-home when the slot moves: the owner
SIGKILLed and its replica promoted, a manual `CLUSTER FAILOVER`, or the slot migrated to
another primary. What is measured (and recorded in the README's "Running at scale"): the
time from the kill until a live node names the promoted replica as owner, and from then
until every worker is connected and READY on it.
"""

from __future__ import annotations

import secrets
import shlex
import time
from typing import Any, Final

import anyio
import pytest
import redis
from redis.crc import key_slot

from flagsync import FlagClient
from flagsync.acl import acl_setuser_commands
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.status import SyncState
from flagsync.store import StoreKeys
from tests.faults.figures import record
from tests.faults.test_worker_credential import run_kill_wait
from tests.integration.conftest import ClientFactory, RawFactory
from tests.integration.support import connections_named, wait_until
from tests.logs import captured_logs, events
from tests.rollout.support import KEY, model_document
from tests.topology.cluster_nodes import ClusterDeployment

WORKERS: Final = 6
FAST: Final[dict[str, Any]] = {"check_interval_s": 0.1, "heartbeat_interval_s": 0.2}
PROMOTE_BUDGET_S: Final = 15.0
CONVERGE_BUDGET_S: Final = 5.0
"""Worker reconnects back off up to `backoff_max_s` (2 s) while the slot has no owner."""


def flag_value(value: str) -> dict[str, Any]:
    """The test flag serving `value` to everyone."""
    variants = {"current": value, "candidate": "x"}
    return {"variants": variants, "off": "current", "default": "current"}


def replicated(cluster: ClusterDeployment, namespace: str) -> None:
    """Block until the namespace owner's replica acknowledged every write so far (WAIT 1)."""
    owner = cluster.owner(StoreKeys(namespace).channel)
    with redis.Redis(port=owner.port, protocol=2) as primary:
        assert primary.wait(1, 5000) == 1


def reached(clients: list[FlagClient], revision: int, budget_s: float = 3.0) -> bool:
    """True once every client applied `revision` (within `budget_s`)."""
    return wait_until(lambda: all(c.revision >= revision for c in clients), budget_s, 0.002)


def all_ready(clients: list[FlagClient]) -> bool:
    """Every client connected and READY."""
    return all(c.status().connected and c.status().state == SyncState.READY for c in clients)


def following(raw: redis.Redis, client: FlagClient) -> bool:
    """True when `client`'s change-channel and read connections are both on `raw`'s node."""
    return len(connections_named(raw, client)) >= 2 and bool(
        connections_named(raw, client, "pubsub")
    )


def shard_subscribers(node: ServerProcess, channel: str) -> int:
    """How many connections of `node` shard-subscribe `channel` (PUBSUB SHARDNUMSUB)."""
    with redis.Redis(port=node.port, protocol=2) as raw:
        reply = raw.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(reply[1])


class TestClusterWorkers:
    """Workers follow the namespace's slot owner through a cluster URL."""

    def test_workers_shard_subscribe_on_the_owner_and_every_change_reaches_them(
        self,
        cluster: ClusterDeployment,
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """Each worker's two connections are on the slot's owner, subscribed with
        SSUBSCRIBE (no classic subscriber anywhere), and every change written through the
        same URL (SPUBLISH from the write script, `WAIT`ed for on the owner: its one
        replica acknowledged each) reaches them all; metrics are flushed to the owner;
        `kill --wait` through the CLI reports reached N/N and replicated to 1/1."""
        channel = StoreKeys(namespace).channel
        with Publisher(cluster.url, namespace, "operator", min_replicas=1) as publisher:
            publisher.apply(model_document())
            reporting = make_client(cluster.url, metrics_interval_s=0.05, **FAST)
            clients = [reporting, *(make_client(cluster.url, **FAST) for _ in range(3))]
            assert all(client.wait_ready(5) for client in clients), [c.status() for c in clients]
            owner = cluster.owner(channel)
            raw = make_raw(owner.url)
            assert all(following(raw, client) for client in clients)
            assert shard_subscribers(owner, channel) == len(clients)
            classic = [make_raw(node.url).pubsub_numsub(channel)[0][1] for node in cluster.nodes]
            assert classic == [0] * len(cluster.nodes)

            for value in ("one", "two", "three"):
                revision = publisher.put(KEY, flag_value(value))
                assert reached(clients, revision), [c.status() for c in clients]
                assert {c.variation(KEY, {}, None) for c in clients} == {value}
                assert publisher.last_write is not None
                assert str(publisher.last_write.replication) == "replicated to 1/1 replicas"
            assert wait_until(lambda: len(publisher.workers()) == len(clients), 5)
            for user in range(20):
                reporting.track(KEY, {"key": f"user-{user}"}, "latency_ms", 5.0)
            metrics = StoreKeys(namespace).metrics_pattern  # flushed through RedisCluster
            assert wait_until(lambda: any(raw.scan_iter(match=metrics)), 5)
            killer = run_kill_wait(cluster.url, namespace, 5.0)
            out, err = killer.communicate(timeout=30)
        assert killer.returncode == 0, (out, err)
        assert f"replicated to 1/1 replicas, reached {len(clients)}/{len(clients)}" in out


def promote(cluster: ClusterDeployment, namespace: str) -> tuple[ServerProcess, float]:
    """SIGKILL the namespace's slot owner; return its replica, promoted, and the seconds
    until a live node named it the slot's owner."""
    channel = StoreKeys(namespace).channel
    owner = cluster.owner(channel)
    replica = cluster.replica_of(owner)
    killed = time.monotonic()
    owner.kill()
    assert wait_until(lambda: cluster.owner(channel) is replica, PROMOTE_BUDGET_S, 0.02)
    return replica, time.monotonic() - killed


class TestClusterFailover:
    """The slot's owner dies under connected workers; its replica is promoted."""

    def test_workers_re_home_on_the_promoted_replica_and_a_later_write_reaches_them(
        self,
        cluster: ClusterDeployment,
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """After the owner is SIGKILLed, every worker is READY on the promoted replica
        within a few seconds, a write made through the same URL afterwards reaches all of
        them (the publisher's slot map still names the dead node: its own failover retry
        asks the cluster again), and so does `flagsync kill --wait` (reached N/N); each
        worker logs one connection_lost for the episode, not one per retry."""
        with Publisher(cluster.url, namespace, "operator") as publisher:
            publisher.apply(model_document())
            publisher.put(KEY, flag_value("before"))
            replicated(cluster, namespace)
            clients = [make_client(cluster.url, **FAST) for _ in range(WORKERS)]
            assert all(client.wait_ready(5) for client in clients)

            with captured_logs() as logs:
                promoted, promote_s = promote(cluster, namespace)
                named = time.monotonic()
                assert wait_until(lambda: all_ready(clients), CONVERGE_BUDGET_S, 0.01), [
                    c.status() for c in clients
                ]
                converge_s = time.monotonic() - named
                raw = make_raw(promoted.url)
                assert all(following(raw, client) for client in clients)

                started = time.monotonic()
                revision = publisher.put(KEY, flag_value("after"))  # its own retry
                written = time.monotonic()
                assert wait_until(
                    lambda: all(client.revision >= revision for client in clients), 3, 0.002
                ), [client.status() for client in clients]
                reach_s = time.monotonic() - written
                killer = run_kill_wait(cluster.url, namespace, 5.0)
                out, err = killer.communicate(timeout=30)

        assert all(client.variation(KEY, {}, None) == "after" for client in clients)
        assert killer.returncode == 0, (out, err)
        assert f"reached {WORKERS}/{WORKERS}" in out
        lost = events(logs, "connection_lost")
        assert len(lost) <= WORKERS, lost
        assert len(events(logs, "store_failover_retrying")) <= 1, logs
        record(
            "cluster-failover",
            cluster.kind,
            recovery_s=converge_s,
            case="all workers READY on the promoted replica, seconds after it was named owner",
            promote_s=round(promote_s, 3),
            write_reached_all_ms=round(reach_s * 1000, 1),
            first_write_ms=round((written - started) * 1000, 1),
            workers=WORKERS,
        )


class TestClusterAsyncDriver:
    """The same failover under the asyncio driver."""

    @pytest.mark.anyio
    async def test_async_workers_re_home_on_the_promoted_replica(
        self, cluster: ClusterDeployment, namespace: str
    ) -> None:
        """Two async workers, one following the owner and one its replica
        (`read_from=replica`, presence written through the async `RedisCluster`), shard
        subscribe there and are counted as live; both are READY on the promoted replica
        within a few seconds of the owner's kill and apply a write made after it."""
        channel = StoreKeys(namespace).channel
        with Publisher(cluster.url, namespace, "operator") as publisher:
            publisher.put(KEY, flag_value("before"))
            await anyio.to_thread.run_sync(replicated, cluster, namespace)
            online = await anyio.to_thread.run_sync(
                wait_until, lambda: cluster.shard_online(channel), 10, 0.05
            )
            assert online
            async with (
                FlagClient.connect_async(cluster.url, namespace, **FAST) as first,
                FlagClient.connect_async(
                    f"{cluster.url}?read_from=replica", namespace, **FAST
                ) as second,
            ):
                clients = (first, second)
                for client in clients:
                    assert await client.wait_ready_async(5), client.status()
                owner = cluster.owner(channel)
                assert shard_subscribers(owner, channel) == 1
                assert shard_subscribers(cluster.replica_of(owner), channel) == 1
                with anyio.move_on_after(5):
                    while len(publisher.workers()) < 2:
                        await anyio.sleep(0.05)
                assert len(publisher.workers()) == 2, [c.status() for c in clients]
                revision = publisher.put(KEY, flag_value("nudged"))
                with anyio.move_on_after(3):
                    while not all(c.revision >= revision for c in clients):
                        await anyio.sleep(0.005)
                assert [c.variation(KEY, {}, None) for c in clients] == ["nudged"] * 2

                promoted, _ = await anyio.to_thread.run_sync(promote, cluster, namespace)
                with anyio.move_on_after(CONVERGE_BUDGET_S):
                    while not all_ready(list(clients)):
                        await anyio.sleep(0.01)
                assert all_ready(list(clients)), [c.status() for c in clients]
                assert shard_subscribers(promoted, channel) == 2
                revision = await anyio.to_thread.run_sync(  # its own failover retry
                    lambda: publisher.put(KEY, flag_value("after"))
                )
                with anyio.move_on_after(3):
                    while not all(c.revision >= revision for c in clients):
                        await anyio.sleep(0.005)
                assert [c.variation(KEY, {}, None) for c in clients] == ["after", "after"]

    @pytest.mark.anyio
    async def test_async_workers_re_home_after_a_slot_migration(
        self, cluster: ClusterDeployment, namespace: str
    ) -> None:
        """The slot migrated to another primary: the async driver reads the pushed
        `sunsubscribe` too, re-homes within 2 s (its reads are 5 s apart) and applies a
        write made on the new owner."""
        channel = StoreKeys(namespace).channel
        slow: dict[str, Any] = {"check_interval_s": 5.0, "heartbeat_interval_s": 5.0}
        with Publisher(cluster.url, namespace, "operator") as publisher:
            publisher.put(KEY, flag_value("before"))
            async with FlagClient.connect_async(cluster.url, namespace, **slow) as client:
                assert await client.wait_ready_async(5), client.status()
                old = cluster.owner(channel)
                target = next(node for node in cluster.primaries() if node is not old)
                await anyio.to_thread.run_sync(
                    cluster.migrate_slot, key_slot(channel.encode()), target
                )
                with anyio.move_on_after(2):
                    while shard_subscribers(target, channel) < 1 or not all_ready([client]):
                        await anyio.sleep(0.01)
                assert shard_subscribers(target, channel) == 1, client.status()
                assert shard_subscribers(old, channel) == 0
                revision = publisher.put(KEY, flag_value("after"))
                with anyio.move_on_after(3):
                    while client.revision < revision:
                        await anyio.sleep(0.005)
                assert client.variation(KEY, {}, None) == "after"


class TestSlotMoves:
    """The slot moves while its old node stays up: workers must notice and re-home."""

    def test_a_manual_failover_re_homes_workers_on_the_new_owner(
        self,
        cluster: ClusterDeployment,
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """`CLUSTER FAILOVER` on the owner's replica: the old owner, now a replica, answers
        the workers' reads with MOVED (or pushes `sunsubscribe`: Valkey); they re-home on
        the new owner, and the publisher's next write follows the MOVED and reaches them."""
        channel = StoreKeys(namespace).channel
        with Publisher(cluster.url, namespace, "operator") as publisher:
            publisher.apply(model_document())
            clients = [make_client(cluster.url, **FAST) for _ in range(3)]
            assert all(client.wait_ready(5) for client in clients)
            replica = cluster.replica_of(cluster.owner(channel))
            make_raw(replica.url).execute_command("CLUSTER", "FAILOVER")  # type: ignore[no-untyped-call]
            assert wait_until(lambda: cluster.owner(channel) is replica, PROMOTE_BUDGET_S, 0.02)
            raw = make_raw(replica.url)
            assert wait_until(
                lambda: all(following(raw, c) for c in clients) and all_ready(clients),
                CONVERGE_BUDGET_S,
                0.01,
            ), [c.status() for c in clients]
            # No retry: the old owner answers MOVED, which the publisher follows (its state
            # is read in a transaction, where redis-py 8.1 alone would not).
            revision = publisher.put(KEY, flag_value("after"))
            assert wait_until(lambda: all(c.revision >= revision for c in clients), 3, 0.002)
        assert all(client.variation(KEY, {}, None) == "after" for client in clients)

    def test_a_slot_migration_re_homes_workers_on_the_new_owner(
        self,
        cluster: ClusterDeployment,
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """The namespace's slot is migrated (keys and all) to another primary: the old
        owner pushes `sunsubscribe`, the workers re-home on the new owner at once (their
        reads are 5 s apart, so nothing else could have told them within the 2 s), and a
        write made there reaches them all."""
        channel = StoreKeys(namespace).channel
        slow: dict[str, Any] = {"check_interval_s": 5.0, "heartbeat_interval_s": 5.0}
        with Publisher(cluster.url, namespace, "operator") as publisher:
            publisher.apply(model_document())
            publisher.put(KEY, flag_value("before"))
            clients = [make_client(cluster.url, **slow) for _ in range(3)]
            assert all(client.wait_ready(5) for client in clients)
            old = cluster.owner(channel)
            target = next(node for node in cluster.primaries() if node is not old)
            with captured_logs() as logs:
                cluster.migrate_slot(key_slot(channel.encode()), target)
                raw = make_raw(target.url)
                assert wait_until(
                    lambda: all(following(raw, c) for c in clients) and all_ready(clients),
                    2.0,
                    0.01,
                ), [c.status() for c in clients]
            assert shard_subscribers(old, channel) == 0
            revision = publisher.put(KEY, flag_value("after"))  # MOVED followed: no retry
            assert wait_until(lambda: all(c.revision >= revision for c in clients), 3, 0.002)
        assert all(client.variation(KEY, {}, None) == "after" for client in clients)
        moved = [e for e in events(logs, "connection_lost") if "slot moved" in str(e["error"])]
        assert len(moved) == len(clients), events(logs, "connection_lost")


class TestClusterReadFromReplica:
    """`?read_from=replica`: workers follow the owner's replica, report on the owner."""

    def test_workers_follow_the_replica_and_report_on_the_owner(
        self,
        cluster: ClusterDeployment,
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """Each worker's change-channel and read connections are on the owner's replica
        (reads there need READONLY), its presence goes to the owner so `kill --wait`
        counts it, and a write reaches every worker."""
        channel = StoreKeys(namespace).channel
        url = f"{cluster.url}?read_from=replica"
        with Publisher(cluster.url, namespace, "operator") as publisher:
            publisher.apply(model_document())
            replicated(cluster, namespace)
            # Until the seeds list the replica as online, workers follow the owner instead.
            assert wait_until(lambda: cluster.shard_online(channel), 10, 0.05)
            clients = [make_client(url, **FAST) for _ in range(3)]
            assert all(client.wait_ready(5) for client in clients), [c.status() for c in clients]
            owner = cluster.owner(channel)
            replica = make_raw(cluster.replica_of(owner).url)
            assert all(following(replica, client) for client in clients)
            assert all(client.status().presence_error is None for client in clients)
            killer = run_kill_wait(cluster.url, namespace, 5.0)
            out, err = killer.communicate(timeout=30)
            assert killer.returncode == 0, (out, err)
            assert f"reached {len(clients)}/{len(clients)}" in out
            revision = publisher.put(KEY, flag_value("after"))
            assert wait_until(lambda: all(c.revision >= revision for c in clients), 3, 0.002)
        assert all(client.variation(KEY, {}, None) == "after" for client in clients)


class TestClusterAcl:
    """`flagsync acl`'s users, created on every node, are enough on a cluster."""

    def test_least_privilege_users_work_on_every_node_without_a_denial(
        self,
        cluster: ClusterDeployment,
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """With exactly the `ACL SETUSER` lines `flagsync acl` prints, run on each node, an
        operator writes (SPUBLISH inside the script) and two workers — one on the owner,
        one on its replica — follow, report presence and flush metrics; no node logs an
        ACL denial."""
        channel = StoreKeys(namespace).channel
        worker_password, operator_password = secrets.token_hex(8), secrets.token_hex(8)
        lines = acl_setuser_commands(
            namespace, worker_password=worker_password, operator_password=operator_password
        )
        for node in cluster.nodes:
            admin = make_raw(node.url)
            for line in lines:
                admin.execute_command(*shlex.split(line))  # type: ignore[no-untyped-call]
        hosts = cluster.url.partition("://")[2]
        operator = f"redis+cluster://flagsync-operator:{operator_password}@{hosts}"
        worker = f"redis+cluster://flagsync-worker:{worker_password}@{hosts}"
        with Publisher(operator, namespace, "operator") as publisher:
            publisher.apply(model_document())
            replicated(cluster, namespace)
            assert wait_until(lambda: cluster.shard_online(channel), 10, 0.05)
            clients = [
                make_client(worker + query, metrics_interval_s=0.05, **FAST)
                for query in ("", "?read_from=replica")
            ]
            assert all(client.wait_ready(5) for client in clients), [c.status() for c in clients]
            owner = cluster.owner(channel)
            assert following(make_raw(owner.url), clients[0])
            assert following(make_raw(cluster.replica_of(owner).url), clients[1])
            for client in clients:
                client.track(KEY, {"key": "user-1"}, "latency_ms", 5.0)
            revision = publisher.put(KEY, flag_value("after"))
            assert reached(clients, revision)
            assert wait_until(lambda: len(publisher.workers()) == 2, 5)
            pattern = StoreKeys(namespace).metrics_pattern
            raw = make_raw(owner.url)
            assert wait_until(lambda: len(list(raw.scan_iter(match=pattern))) == 2, 5)
        denials = {node.port: make_raw(node.url).acl_log() for node in cluster.running()}
        assert all(not log for log in denials.values()), denials
