"""What only `FlagClient.connect_async` has, against real servers: leaving the block,
cancellation, `wait_ready_async`, and the Trio fallback (FAULTS.md S18).

How the asyncio driver follows changes is tested with the thread driver's, by the same
tests: `test_subscriber.py` runs each of them on both drivers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import redis

from flagsync import FlagClient
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess, free_port
from flagsync.status import SyncState
from tests.integration.conftest import PublisherFactory
from tests.integration.support import (
    BASE_VALUES,
    base_document,
    connections_named,
    served,
)


@pytest.fixture
def anyio_backend() -> str:
    """redis.asyncio runs on asyncio only; other backends get the thread driver."""
    return "asyncio"


async def eventually(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `predicate` without blocking the event loop; False after `timeout_s`."""
    with anyio.move_on_after(timeout_s):
        while not predicate():
            await anyio.sleep(0.005)
    return predicate()


@asynccontextmanager
async def ready_async_client(url: str, namespace: str, **options: Any) -> AsyncIterator[FlagClient]:
    """An async client, synced before the block starts."""
    async with FlagClient.connect_async(url, namespace, **options) as client:
        assert await client.wait_ready_async(5), client.status()
        yield client


@pytest.mark.anyio
class TestShutdown:
    """Leaving the block or cancelling stops the task within 1 s and leaves nothing open."""

    async def test_leaving_the_block_closes_everything(
        self, server: ServerProcess, publisher: Publisher, raw: redis.Redis
    ) -> None:
        """After the block: CLOSED, no connection left on the server, presence removed."""
        publisher.apply(base_document())
        async with ready_async_client(server.url, publisher.keys.namespace) as client:
            assert await eventually(lambda: len(publisher.workers()) == 1, 2)
            assert connections_named(raw, client)
            started = time.monotonic()
        assert time.monotonic() - started < 1.0
        assert client.status().state is SyncState.CLOSED
        assert await eventually(lambda: not connections_named(raw, client), 5)
        assert publisher.workers() == []
        assert served(client) == BASE_VALUES  # the last snapshot is still served

    async def test_cancellation_mid_read(
        self, server: ServerProcess, publisher: Publisher, raw: redis.Redis
    ) -> None:
        """Cancelling the enclosing scope while the task waits on its read exits within 1 s."""
        publisher.apply(base_document())
        cancelled_at = None
        with anyio.CancelScope() as scope:
            async with ready_async_client(server.url, publisher.keys.namespace) as client:
                await anyio.sleep(0.1)  # the task is now blocked reading the channel
                cancelled_at = time.monotonic()
                scope.cancel()
                await anyio.sleep(10)
        assert scope.cancelled_caught
        assert cancelled_at is not None
        assert time.monotonic() - cancelled_at < 1.0
        assert client.status().state is SyncState.CLOSED
        assert await eventually(lambda: not connections_named(raw, client), 5)

    async def test_cancellation_mid_backoff_then_new_client(
        self, server: ServerProcess, publisher: Publisher
    ) -> None:
        """A task backing off from an absent server is cancelled within 1 s; a new client
        works afterwards."""
        publisher.apply(base_document())
        url = f"redis://127.0.0.1:{free_port()}"
        with anyio.CancelScope() as scope:
            async with FlagClient.connect_async(
                url, publisher.keys.namespace, connect_timeout_s=0.1, backoff_max_s=5.0
            ) as client:
                assert not await client.wait_ready_async(0.5)  # a few failed attempts
                cancelled_at = time.monotonic()
                scope.cancel()
                await anyio.sleep(10)
        assert time.monotonic() - cancelled_at < 1.0
        assert client.status().state is SyncState.CLOSED
        async with ready_async_client(server.url, publisher.keys.namespace) as fresh:
            assert served(fresh) == BASE_VALUES

    async def test_leaving_while_server_frozen(
        self, dedicated_server: ServerProcess, make_publisher: PublisherFactory
    ) -> None:
        """Leaving the block while the server is SIGSTOPped still returns within 1 s."""
        publisher = make_publisher(dedicated_server.url)
        publisher.apply(base_document())
        try:
            async with ready_async_client(dedicated_server.url, publisher.keys.namespace) as client:
                dedicated_server.pause()
                await anyio.sleep(0.3)  # reads and the heartbeat now hang on the server
                started = time.monotonic()
            elapsed_s = time.monotonic() - started
        finally:
            dedicated_server.resume()
        assert elapsed_s < 1.0, f"took {elapsed_s:.2f}s"
        assert client.status().state is SyncState.CLOSED
        assert served(client) == BASE_VALUES

    async def test_wait_ready_async_times_out(self, publisher: Publisher) -> None:
        """With no server, `wait_ready_async` returns False after its timeout, not later."""
        url = f"redis://127.0.0.1:{free_port()}"
        async with FlagClient.connect_async(url, publisher.keys.namespace) as client:
            started = time.monotonic()
            assert not await client.wait_ready_async(0.3)
            assert time.monotonic() - started < 0.6
            assert client.status().state is SyncState.CONNECTING


class TestOtherBackends:
    """On an anyio backend without redis.asyncio the blocking driver runs in a thread."""

    def test_trio_falls_back_to_the_thread_driver(
        self, server: ServerProcess, publisher: Publisher
    ) -> None:
        """Under Trio the client syncs, follows a change, and stops when the block ends."""
        pytest.importorskip(
            "trio", reason="trio is not installed (pip install trio, or the test extra)"
        )
        publisher.apply(base_document())
        namespace = publisher.keys.namespace

        async def follow() -> None:
            async with FlagClient.connect_async(server.url, namespace) as client:
                assert await client.wait_ready_async(5)
                revision = publisher.kill("model")
                assert await eventually(lambda: client.revision == revision, 2)
            assert client.status().state is SyncState.CLOSED

        anyio.run(follow, backend="trio")
