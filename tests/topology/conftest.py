"""Fixtures of the topology suite: the integration suite's clients and servers, plus
replica sets started from the same server binaries (Valkey always, Debian's
redis-server where present, see `tests.optional`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults import figures
from tests.integration.conftest import (  # noqa: F401 - fixtures shared with this suite
    make_client,
    make_publisher,
    make_raw,
    namespace,
    server_kind,
)
from tests.topology.cluster_nodes import ClusterDeployment
from tests.topology.nodes import ReplicaSet


@pytest.fixture(scope="session", autouse=True)
def topology_figures() -> Iterator[None]:
    """Write the measured figures (failover times) to `$FLAGSYNC_FAULT_FIGURES` at the end."""
    yield
    figures.write()


@pytest.fixture
def anyio_backend() -> str:
    """The async-driver tests run on asyncio only (redis.asyncio does not run on Trio)."""
    return "asyncio"


@pytest.fixture
def cluster(server_kind: str) -> Iterator[ClusterDeployment]:  # noqa: F811
    """3 primaries + 3 replicas, every node stopped by PID after the test."""
    with ClusterDeployment(server_kind) as started:
        yield started


@pytest.fixture
def lagging(server_kind: str) -> Iterator[ReplicaSet]:  # noqa: F811
    """A primary and one replica whose replication link goes through a fault proxy."""
    with ReplicaSet(server_kind, proxied=True) as nodes:
        yield nodes
