"""`read_from=replica` on a plain URL of a standalone primary (issue #12), on real processes.

`redis://primary?read_from=replica` makes a worker subscribe and read on one replica the
primary lists as online and report its presence to the primary; writers given the same URL
write to the primary. Checked by where the worker's subscription is (`PUBSUB NUMSUB` is
per node), by `kill --wait` through that URL counting it, and with lag on the replication
link, by every revision the worker applies serving the content written under it.
"""

from __future__ import annotations

import secrets
import shlex
import threading
import time
from typing import Any, Final

import anyio
import pytest
import redis

from flagsync import FlagClient
from flagsync.acl import acl_setuser_commands
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.status import SyncState
from flagsync.store import StoreKeys
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
CHANGES: Final = 20


def subscribers(node: ServerProcess, namespace: str) -> int:
    """How many connections of `node` itself subscribe to the namespace's change channel."""
    channel = StoreKeys(namespace).channel
    with redis.Redis(port=node.port, socket_timeout=2.0, protocol=2) as client:
        counts: dict[Any, Any] = dict(client.pubsub_numsub(channel))
    return int(counts.get(channel.encode(), 0))


def flag(value: str) -> dict[str, Any]:
    """The test flag serving `value` to everyone."""
    variants = {"current": value, "candidate": "x"}
    return {"variants": variants, "off": "current", "default": "current"}


class TestThreadDriver:
    """A thread-driver worker given the primary's URL with `read_from=replica`."""

    def test_follows_the_replica_without_stale_reads_and_kill_wait_counts_it(
        self, lagging: ReplicaSet, make_client: ClientFactory, namespace: str
    ) -> None:
        """The worker subscribes on the replica, not the primary; with 1-9 ms of lag on
        the replication link every revision it applies serves its own content; `kill
        --wait` through the same URL writes on the primary and reports `reached 1/1`."""
        url = f"{lagging.primary.url}?read_from=replica"
        replica, proxy = lagging.replicas[0], lagging.proxies[0]
        seen: list[tuple[int, Any]] = []
        lock = threading.Lock()
        with Publisher(url, namespace, "operator") as publisher:
            written = {publisher.put(KEY, flag("v0")): "v0"}
            client = make_client(url, **FAST)
            assert client.wait_ready(5), client.status()
            assert wait_until(lambda: subscribers(replica, namespace) == 1, 5)
            assert subscribers(lagging.primary, namespace) == 0

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
            assert wait_until(lambda: len(publisher.workers()) == 1, 5), client.status()
            publisher.apply(model_document())
            killer = run_kill_wait(url, namespace, 5.0)
            out, err = killer.communicate(timeout=30)

        with lock:
            stale = [
                (rev, value) for rev, value in seen if rev <= last and written.get(rev) != value
            ]
        assert not stale, stale
        assert killer.returncode == 0, (out, err)
        assert "reached 1/1" in out
        assert client.status().presence_error is None
        assert client.status().reconnects == 0, client.status()

    def test_with_no_replica_online_the_worker_follows_the_primary(
        self, server_kind: str, make_client: ClientFactory, namespace: str
    ) -> None:
        """A primary without replicas: the worker follows the primary itself."""
        with ReplicaSet(server_kind, replicas=0) as nodes:
            url = f"{nodes.primary.url}?read_from=replica"
            with Publisher(url, namespace, "operator") as publisher:
                revision = publisher.put(KEY, flag("v1"))
                client = make_client(url, **FAST)
                assert client.wait_ready(5), client.status()
                assert subscribers(nodes.primary, namespace) == 1
                assert client.revision == revision
                assert client.variation(KEY, {}, None) == "v1"

    def test_with_the_primary_down_a_reconnect_keeps_the_replica(
        self, server_kind: str, make_client: ClientFactory, namespace: str
    ) -> None:
        """The primary is SIGKILLed and the worker's connections to its replica are
        killed: the reconnect cannot ask the primary, so it follows the replica it
        followed last and is READY there again, serving what the replica holds."""
        with ReplicaSet(server_kind) as nodes:
            url = f"{nodes.primary.url}?read_from=replica"
            replica = nodes.replicas[0]
            with Publisher(url, namespace, "operator") as publisher:
                revision = publisher.put(KEY, flag("v1"))
            client = make_client(url, **FAST)
            assert client.wait_ready(5), client.status()
            assert wait_until(lambda: client.revision == revision, 5), client.status()
            nodes.primary.kill()
            with redis.Redis(port=replica.port, protocol=2) as admin:
                admin.client_kill_filter(_type="pubsub")
            assert wait_until(lambda: client.status().reconnects >= 1, 5), client.status()
            assert wait_until(
                lambda: client.status().connected and subscribers(replica, namespace) == 1, 10
            ), client.status()
            status = client.status()

        assert status.state == SyncState.READY, status
        assert client.variation(KEY, {}, None) == "v1"


class TestLeastPrivilege:
    """`flagsync acl`'s worker user is enough to follow a replica found with ROLE."""

    def test_an_acl_worker_follows_the_replica_without_a_denial(
        self, server_kind: str, make_client: ClientFactory, namespace: str
    ) -> None:
        """With the printed users on both nodes (ACLs do not replicate), the worker asks
        the primary for its replicas, follows one, is counted, and nothing is denied."""
        worker_password, operator_password = secrets.token_hex(8), secrets.token_hex(8)
        lines = acl_setuser_commands(
            namespace, worker_password=worker_password, operator_password=operator_password
        )
        with ReplicaSet(server_kind) as nodes:
            for node in (nodes.primary, *nodes.replicas):
                with redis.Redis(port=node.port, protocol=2) as admin:
                    for line in lines:
                        admin.execute_command(*shlex.split(line))
                    admin.execute_command("ACL", "LOG", "RESET")
            address = nodes.primary.url.partition("://")[2]
            operator = f"redis://flagsync-operator:{operator_password}@{address}"
            worker = f"redis://flagsync-worker:{worker_password}@{address}?read_from=replica"
            with Publisher(operator, namespace, "operator") as publisher:
                publisher.put(KEY, flag("v1"))
                client = make_client(worker, **FAST)
                assert client.wait_ready(5), client.status()
                assert subscribers(nodes.replicas[0], namespace) == 1
                assert wait_until(lambda: len(publisher.workers()) == 1, 5), client.status()
            denials = []
            for node in (nodes.primary, *nodes.replicas):
                with redis.Redis(port=node.port, protocol=2) as admin:
                    denials += admin.execute_command("ACL", "LOG")

        assert denials == []
        assert client.variation(KEY, {}, None) == "v1"


class TestAsyncDriver:
    """The same on the asyncio driver."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        """redis.asyncio runs on asyncio only."""
        return "asyncio"

    @pytest.mark.anyio
    async def test_follows_the_replica_and_reports_presence_to_the_primary(
        self, server_kind: str, namespace: str
    ) -> None:
        """The async worker given `read_from="replica"` (the keyword form) subscribes on
        the replica, applies a change written on the primary, and is counted by the fleet
        view on the primary."""
        with ReplicaSet(server_kind) as nodes:
            url = nodes.primary.url
            with Publisher(url, namespace, "operator") as publisher:
                publisher.put(KEY, flag("v0"))
                async with FlagClient.connect_async(
                    url, namespace, read_from="replica", **FAST
                ) as client:
                    assert await client.wait_ready_async(5), client.status()
                    assert subscribers(nodes.replicas[0], namespace) == 1
                    assert subscribers(nodes.primary, namespace) == 0
                    revision = publisher.put(KEY, flag("v1"))
                    for _ in range(100):
                        if client.revision == revision and publisher.workers():
                            break
                        await anyio.sleep(0.05)
                    status = client.status()
                    value = client.variation(KEY, {}, None)
                    workers = publisher.workers()

        assert value == "v1", status
        assert len(workers) == 1, status
        assert status.presence_error is None, status
