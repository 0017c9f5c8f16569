"""The `llm:` section (prices) follows workers on a Redis Cluster and through Sentinel,
on real processes: its key shares the namespace's hash tag (one slot), so a whole load
reads it with the flags on the node a worker follows (a replica too), and a change
message carries an edit of the prices alone. `llm_call` opens no connection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import anyio
import pytest

from flagsync import FlagClient
from flagsync.publisher import Publisher
from flagsync.store import StoreKeys
from tests.integration.conftest import ClientFactory, RawFactory
from tests.integration.support import wait_until
from tests.llm.test_synced_prices import costed_without_io, input_cost, priced
from tests.topology.cluster_nodes import ClusterDeployment
from tests.topology.nodes import SentinelDeployment

FAST: Final[dict[str, Any]] = {
    "check_interval_s": 0.1,
    "heartbeat_interval_s": 0.2,
    "metrics_interval_s": 60,
}


@pytest.fixture
def deployment(server_kind: str) -> Iterator[SentinelDeployment]:
    """1 primary, 2 replicas, 3 Sentinels, all stopped by PID after the test."""
    with SentinelDeployment(server_kind) as started:
        yield started


async def applied(clients: list[FlagClient], revision: int, budget_s: float = 5.0) -> bool:
    """True once every client applied `revision`, polled without blocking the event loop."""
    with anyio.move_on_after(budget_s):
        while not all(client.revision >= revision for client in clients):
            await anyio.sleep(0.005)
    return all(client.revision >= revision for client in clients)


@pytest.mark.anyio
class TestCluster:
    """Thread and async workers, on the slot's owner and on its replica."""

    async def test_prices_reach_both_drivers_on_owner_and_replica(
        self,
        cluster: ClusterDeployment,
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """Prices loaded with the flags, then an edit of the prices alone: every worker
        costs calls with it, and the owner sees no connection from `llm_call`."""
        with Publisher(cluster.url, namespace, "operator") as publisher:
            first = publisher.apply(priced(2.5))
            on_owner = make_client(cluster.url, **FAST)
            async with FlagClient.connect_async(
                f"{cluster.url}?read_from=replica", namespace, **FAST
            ) as on_replica:
                assert await on_replica.wait_ready_async(10.0), on_replica.status()
                assert on_owner.wait_ready(5.0), on_owner.status()
                assert await applied([on_owner, on_replica], first)  # a replica may lag
                raw = make_raw(cluster.owner(StoreKeys(namespace).channel).url)
                assert costed_without_io(raw, on_owner) == pytest.approx(2.5)
                assert input_cost(on_replica) == pytest.approx(2.5)
                revision = publisher.apply(priced(8.0))
                assert await applied([on_owner, on_replica], revision)
                assert costed_without_io(raw, on_owner) == pytest.approx(8.0)
                assert input_cost(on_replica) == pytest.approx(8.0)


class TestSentinel:
    """A worker reading a replica found through Sentinel."""

    def test_prices_reach_a_replica_worker(
        self, deployment: SentinelDeployment, make_client: ClientFactory, namespace: str
    ) -> None:
        """The replica's whole load and the change message both carry the prices."""
        with Publisher(deployment.url, namespace, "operator") as publisher:
            first = publisher.apply(priced(1.5))
            worker = make_client(f"{deployment.url}?read_from=replica", **FAST)
            assert worker.wait_ready(10.0), worker.status()
            assert wait_until(lambda: worker.revision >= first, 5.0), worker.status()  # lag
            assert input_cost(worker) == pytest.approx(1.5)
            revision = publisher.apply(priced(9.0))
            assert wait_until(lambda: worker.revision >= revision, 5.0), worker.status()
            assert input_cost(worker) == pytest.approx(9.0)
