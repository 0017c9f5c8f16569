"""Workers and publishers on a Sentinel deployment (issue #12), on real processes:
1 primary + 2 replicas + 3 Sentinels (down-after 1000 ms) on 127.0.0.1, the primary
SIGKILLed with workers connected through a `redis+sentinel://` URL.

What is measured (and recorded in the README's "Running at scale"): the time from the
kill until a majority of Sentinels name the new primary (`+switch-master`), from then
until every worker is connected and READY on it, and from a write after the failover
until every worker applied it. Every acknowledged write here was replicated first
(`WAIT`), so this tests following a failover; `test_failover_lost_writes` loses writes.
The publisher's writes during and after the failover are its own retries (no helper).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Final

import anyio
import pytest
import redis

from flagsync import FlagClient
from flagsync.publisher import Publisher
from flagsync.status import SyncState
from tests.faults.figures import record
from tests.faults.test_worker_credential import run_kill_wait
from tests.integration.conftest import ClientFactory, RawFactory
from tests.integration.support import connections_named, wait_until
from tests.logs import captured_logs, events
from tests.rollout.support import KEY, model_document
from tests.topology.nodes import SentinelDeployment

WORKERS: Final = 8
FAST: Final[dict[str, Any]] = {"check_interval_s": 0.1, "heartbeat_interval_s": 0.2}
SWITCH_BUDGET_S: Final = 15.0
CONVERGE_BUDGET_S: Final = 1.0
"""Workers hear `+switch-master` and reconnect at once (before: their backoff, up to 2 s)."""


@pytest.fixture
def deployment(server_kind: str) -> Iterator[SentinelDeployment]:
    """1 primary, 2 replicas, 3 Sentinels, all stopped by PID after the test."""
    with SentinelDeployment(server_kind) as started:
        yield started


def replicated(deployment: SentinelDeployment) -> None:
    """Block until both replicas acknowledged every write so far (WAIT 2)."""
    with redis.Redis(port=deployment.nodes.primary.port, protocol=2) as primary:
        assert primary.wait(len(deployment.nodes.replicas), 5000) == len(deployment.nodes.replicas)


def fail_over(deployment: SentinelDeployment) -> tuple[int, float]:
    """SIGKILL the primary; return the new primary's port and the seconds until a majority
    of Sentinels named it."""
    old = deployment.nodes.primary.port
    killed = time.monotonic()
    deployment.nodes.primary.kill()
    assert wait_until(
        lambda: deployment.primary_port() not in (None, old), SWITCH_BUDGET_S, 0.02
    ), [sentinel.log()[-800:] for sentinel in deployment.sentinels]
    port = deployment.primary_port()
    assert port is not None
    return port, time.monotonic() - killed


def flag_value(value: str) -> dict[str, Any]:
    """The test flag serving `value` to everyone."""
    variants = {"current": value, "candidate": "x"}
    return {"variants": variants, "off": "current", "default": "current"}


class TestSentinelFailover:
    """The primary dies under connected workers (thread driver)."""

    def test_workers_follow_the_new_primary_and_a_later_write_reaches_them_all(
        self, deployment: SentinelDeployment, make_client: ClientFactory, namespace: str
    ) -> None:
        """After the primary is SIGKILLed, every worker is READY on the new primary within
        a few seconds of the switch, a write made through the same Sentinel URL afterwards
        reaches all of them, and so does `flagsync kill --wait` given that URL (reached
        8/8); each worker logs one connection_lost, not one per retry."""
        with Publisher(deployment.url, namespace, "operator") as publisher:
            publisher.apply(model_document())
            publisher.put(KEY, flag_value("before"))
            replicated(deployment)
            clients = [make_client(deployment.url, **FAST) for _ in range(WORKERS)]
            assert all(client.wait_ready(5) for client in clients)

            with captured_logs() as logs:
                new_port, switch_s = fail_over(deployment)
                switched = time.monotonic()
                assert wait_until(
                    lambda: all(
                        client.status().connected and client.status().state == SyncState.READY
                        for client in clients
                    ),
                    CONVERGE_BUDGET_S,
                    0.01,
                ), [client.status() for client in clients]
                converge_s = time.monotonic() - switched

                written = time.monotonic()
                revision = publisher.put(KEY, flag_value("after"))
                assert wait_until(
                    lambda: all(client.revision >= revision for client in clients), 3, 0.002
                ), [client.status() for client in clients]
                reach_s = time.monotonic() - written
                killer = run_kill_wait(deployment.url, namespace, 5.0)
                out, err = killer.communicate(timeout=30)

        with redis.Redis(port=new_port, protocol=2) as primary:
            assert primary.info("replication")["role"] == "master"
        assert all(client.variation(KEY, {}, None) == "after" for client in clients)
        assert killer.returncode == 0, (out, err)
        assert f"reached {WORKERS}/{WORKERS}" in out
        lost = events(logs, "connection_lost")
        assert len(lost) <= WORKERS, lost
        record(
            "sentinel-failover",
            deployment.nodes.kind,
            recovery_s=converge_s,
            case="all workers READY on the new primary, seconds after the switch",
            switch_s=round(switch_s, 3),
            write_reached_all_ms=round(reach_s * 1000, 1),
            workers=WORKERS,
        )


class TestSentinelAsyncDriver:
    """The same failover under the asyncio driver."""

    @pytest.mark.anyio
    async def test_async_workers_follow_the_new_primary(
        self, deployment: SentinelDeployment, namespace: str
    ) -> None:
        """Two async workers on the Sentinel URL are READY on the new primary within a few
        seconds of the switch and apply a write made after it."""
        with Publisher(deployment.url, namespace, "operator") as publisher:
            publisher.put(KEY, flag_value("before"))
            replicated(deployment)
            async with (
                FlagClient.connect_async(deployment.url, namespace, **FAST) as first,
                FlagClient.connect_async(deployment.url, namespace, **FAST) as second,
            ):
                clients = (first, second)
                for client in clients:
                    assert await client.wait_ready_async(5), client.status()
                _, switch_s = await anyio.to_thread.run_sync(fail_over, deployment)
                switched = time.monotonic()
                with anyio.move_on_after(CONVERGE_BUDGET_S):
                    while not all(
                        c.status().connected and c.status().state == SyncState.READY
                        for c in clients
                    ):
                        await anyio.sleep(0.005)
                converge_s = time.monotonic() - switched
                assert all(c.status().connected for c in clients), [c.status() for c in clients]
                revision = await anyio.to_thread.run_sync(
                    lambda: publisher.put(KEY, flag_value("after"))
                )
                with anyio.move_on_after(3):
                    while not all(c.revision >= revision for c in clients):
                        await anyio.sleep(0.005)
                assert [c.variation(KEY, {}, None) for c in clients] == ["after", "after"]
        record(
            "sentinel-failover-async",
            deployment.nodes.kind,
            recovery_s=round(converge_s, 4),
            case="both async workers READY on the new primary, seconds after the switch",
            switch_s=round(switch_s, 3),
            workers=len(clients),
        )


class TestSentinelReadFromReplica:
    """`?read_from=replica`: workers follow a replica, report on the primary."""

    def test_workers_follow_one_replica_each_and_report_on_the_primary(
        self,
        deployment: SentinelDeployment,
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """Each worker's change-channel and read connections are on the same replica and
        none on the primary but its presence writer; `kill --wait` counts them all; after
        the primary is SIGKILLed a write still reaches every worker."""
        url = f"{deployment.url}?read_from=replica"
        with Publisher(deployment.url, namespace, "operator") as publisher:
            publisher.apply(model_document())
            replicated(deployment)
            clients = [make_client(url, **FAST) for _ in range(4)]
            assert all(client.wait_ready(5) for client in clients)
            primary = make_raw(deployment.nodes.primary.url)
            replicas = [make_raw(node.url) for node in deployment.nodes.replicas]
            for client in clients:
                per_replica = [len(connections_named(raw, client)) for raw in replicas]
                assert sorted(per_replica) == [0, 2], (per_replica, client.status())
                pubsub = [len(connections_named(raw, client, "pubsub")) for raw in replicas]
                assert sorted(pubsub) == [0, 1], pubsub
                assert len(connections_named(primary, client)) == 1  # the presence writer
            assert wait_until(lambda: len(publisher.workers()) == len(clients), 5)
            killer = run_kill_wait(deployment.url, namespace, 5.0)
            out, err = killer.communicate(timeout=30)
            assert killer.returncode == 0, (out, err)
            assert f"reached {len(clients)}/{len(clients)}" in out

            fail_over(deployment)
            switched = time.monotonic()
            revision = publisher.put(KEY, flag_value("after"))
            assert wait_until(
                lambda: all(client.revision >= revision for client in clients), 5, 0.005
            ), [client.status() for client in clients]
            reach_s = time.monotonic() - switched

        assert all(client.variation(KEY, {}, None) == "after" for client in clients)
        record(
            "sentinel-read-from-replica",
            deployment.nodes.kind,
            recovery_s=reach_s,
            case="write after the switch reached every worker",
            workers=len(clients),
        )
