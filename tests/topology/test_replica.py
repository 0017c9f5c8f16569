"""Workers that follow a read-only replica (issue #12, FAULTS.md S32), on real processes.

A worker subscribes and reads on the same replica: a PUBLISH reaches the replica's
subscribers in replication order, behind the writes before it, so a nudge never leads to
a stale read there, even with lag on the replication link (injected by a `FaultProxy`).
Its presence goes to a writable node (`presence_url`, the primary); when it cannot, the
worker still follows, says so in `status().presence_error`, and `--wait` does not count it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Final

import anyio
import pytest

from flagsync import FlagClient
from flagsync.publisher import Publisher
from flagsync.server import free_port
from flagsync.status import SyncState
from tests.faults.test_worker_credential import run_kill_wait
from tests.integration.conftest import ClientFactory
from tests.integration.support import wait_until
from tests.rollout.support import KEY, model_document
from tests.topology.nodes import ReplicaSet

FAST: Final[dict[str, Any]] = {
    "check_interval_s": 0.05,
    "heartbeat_interval_s": 0.1,
    "presence_ttl_s": 5.0,
}
CHANGES: Final = 40


def flag(value: str) -> dict[str, Any]:
    """The test flag serving `value` to everyone."""
    variants = {"current": value, "candidate": "x"}
    return {"variants": variants, "off": "current", "default": "current"}


class TestReadFromReplica:
    """A worker on a replica with `presence_url` = the primary."""

    def test_no_stale_read_after_a_nudge_with_lag_on_the_replication_link(
        self, lagging: ReplicaSet, make_client: ClientFactory, namespace: str
    ) -> None:
        """With 1-9 ms of lag on the replication link, the worker never goes back to an
        older revision (a revision check or load on a node behind its nudge would), every
        revision it applies serves the content written under it, and it reaches the last."""
        replica, proxy = lagging.replicas[0], lagging.proxies[0]
        seen: list[tuple[int, Any]] = []
        lock = threading.Lock()
        with Publisher(lagging.primary.url, namespace, "operator") as publisher:
            written = {publisher.put(KEY, flag("v0")): "v0"}
            client = make_client(replica.url, presence_url=lagging.primary.url, **FAST)
            assert client.wait_ready(5), client.status()

            def listener(revision: int, _keys: frozenset[str]) -> None:
                with lock:
                    seen.append((revision, client.variation(KEY, {}, None)))

            client.add_listener(listener)
            proxy.latency(5, 4)
            for i in range(1, CHANGES + 1):
                written[publisher.put(KEY, flag(f"v{i}"))] = f"v{i}"
                time.sleep(0.01)
            last = max(written)
            assert wait_until(lambda: client.revision == last, 10), client.status()

        with lock:
            stale = [(rev, value) for rev, value in seen if written.get(rev) != value]
        assert not stale, stale
        revisions = [revision for revision, _ in seen]
        assert revisions == sorted(set(revisions)), revisions
        assert client.variation(KEY, {}, None) == f"v{CHANGES}"
        assert client.status().presence_error is None

    def test_kill_wait_counts_a_worker_on_a_replica_through_its_presence_on_the_primary(
        self, lagging: ReplicaSet, make_client: ClientFactory, namespace: str
    ) -> None:
        """`kill --wait` on the primary reports `reached 1/1`: the worker applied the kill
        on its lagging replica and heartbeat it to the primary."""
        replica, proxy = lagging.replicas[0], lagging.proxies[0]
        with Publisher(lagging.primary.url, namespace, "operator") as publisher:
            publisher.apply(model_document())
            client = make_client(replica.url, presence_url=lagging.primary.url, **FAST)
            assert client.wait_ready(5), client.status()
            assert wait_until(lambda: len(publisher.workers()) == 1, 5), client.status()
            proxy.latency(20, 5)
            killer = run_kill_wait(lagging.primary.url, namespace, 5.0)
            out, err = killer.communicate(timeout=30)

        assert killer.returncode == 0, (out, err)
        assert "reached 1/1" in out

    def test_an_unreachable_presence_node_is_reported_and_not_counted(
        self, lagging: ReplicaSet, make_client: ClientFactory, namespace: str
    ) -> None:
        """With nothing listening at `presence_url`, the worker still follows the replica,
        reports why it is not in the fleet view, and `kill --wait` says nobody confirmed."""
        replica = lagging.replicas[0]
        nowhere = f"redis://127.0.0.1:{free_port()}"
        with Publisher(lagging.primary.url, namespace, "operator") as publisher:
            publisher.apply(model_document())
            client = make_client(replica.url, presence_url=nowhere, **FAST)
            assert client.wait_ready(5), client.status()
            assert wait_until(lambda: client.status().presence_error is not None, 5)
            killer = run_kill_wait(lagging.primary.url, namespace, 0.5)
            out, err = killer.communicate(timeout=30)
            assert wait_until(lambda: client.variation(KEY, {}, None) == "gpt-4o", 5)

        status = client.status()
        assert killer.returncode == 1, (out, err)
        assert "nobody confirmed the change" in out
        assert status.state == SyncState.READY, status
        assert status.reconnects == 0, status
        assert status.presence_error is not None
        assert nowhere in status.presence_error


class TestAsyncDriverOnAReplica:
    """S32 on the asyncio driver."""

    @pytest.mark.anyio
    async def test_a_refused_presence_write_is_reported_not_a_reconnect(
        self, server_kind: str, namespace: str
    ) -> None:
        """Over 1.5 s on a replica without `presence_url`, the async worker stays connected,
        does not reconnect, and reports that a read-only replica refused its presence."""
        with ReplicaSet(server_kind) as nodes:
            with Publisher(nodes.primary.url, namespace, "operator") as publisher:
                revision = publisher.apply(model_document())
            async with FlagClient.connect_async(nodes.replicas[0].url, namespace, **FAST) as client:
                assert await client.wait_ready_async(5), client.status()
                await anyio.sleep(1.5)
                status = client.status()

        assert status.revision >= revision, status
        assert status.connected, status
        assert status.reconnects == 0, status
        assert status.resyncs <= 2, status
        assert status.presence_error is not None
        assert "read-only replica" in status.presence_error
