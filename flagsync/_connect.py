"""Wire a `FlagClient` to a store: options, the follower, and the thread or task driving it.

Imported lazily by `FlagClient.connect*`, so offline evaluation never imports redis.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from flagsync._follower import Follower, SyncOptions
from flagsync.errors import FlagsyncError
from flagsync.store import StoreKeys
from flagsync.subscriber import ThreadSubscriber

if TYPE_CHECKING:
    from flagsync.client import FlagClient

_OPTION_NAMES = frozenset(field.name for field in dataclasses.fields(SyncOptions))


class SyncHandle:
    """What a connected client holds: its follower and the driver to stop."""

    def __init__(self, follower: Follower, close: Any) -> None:
        self.follower = follower
        self._close = close

    def close(self) -> None:
        self._close()


def resolve_url(url: str | None) -> str:
    """`url`, else `REDIS_URL`; a clear error when there is neither."""
    resolved = url or os.environ.get("REDIS_URL")
    if not resolved:
        raise FlagsyncError(
            "no server URL: pass url='redis://host:port' or set REDIS_URL "
            "(flagsync.server can start a local one)"
        )
    return resolved


def build_follower(client: FlagClient, namespace: str, options: Mapping[str, Any]) -> Follower:
    """A follower for `client` from `connect()` keyword options; unknown options are errors."""
    settings = dict(options)
    worker_id = settings.pop("worker_id", None)
    unknown = sorted(set(settings) - _OPTION_NAMES)
    if unknown:
        known = ", ".join(sorted([*_OPTION_NAMES, "worker_id"]))
        raise TypeError(f"unknown connect option(s) {', '.join(unknown)}; known: {known}")
    if settings.get("lkg_path") is not None:
        settings["lkg_path"] = Path(settings["lkg_path"])
    sync_options = SyncOptions(**settings)
    follower = Follower(
        install=client._install,
        current=lambda: client.snapshot,
        keys=StoreKeys(namespace),
        options=sync_options,
        worker_id=worker_id,
    )
    client._is_stale = follower.is_stale
    return follower


def start_thread_sync(
    client: FlagClient, url: str | None, namespace: str, options: Mapping[str, Any]
) -> SyncHandle:
    """Start following in a daemon thread."""
    follower = build_follower(client, namespace, options)
    driver = ThreadSubscriber(follower, resolve_url(url))
    driver.start()
    return SyncHandle(follower, driver.close)


@asynccontextmanager
async def run_async_sync(
    client: FlagClient, url: str | None, namespace: str, options: Mapping[str, Any]
) -> AsyncIterator[FlagClient]:
    """Follow in an anyio task for the duration of the block."""
    follower = build_follower(client, namespace, options)
    resolved = resolve_url(url)
    if not _on_asyncio():
        # redis-py's async client only runs on asyncio; elsewhere use the thread driver.
        driver = ThreadSubscriber(follower, resolved)
        driver.start()
        client._sync = SyncHandle(follower, driver.close)
        try:
            yield client
        finally:
            await anyio.to_thread.run_sync(driver.close)
        return

    from flagsync.async_subscriber import AsyncSubscriber  # noqa: PLC0415 - asyncio only

    subscriber = AsyncSubscriber(follower, resolved)
    async with anyio.create_task_group() as group:
        client._sync = SyncHandle(follower, subscriber.request_stop)
        group.start_soon(subscriber.run)
        try:
            yield client
        finally:
            subscriber.request_stop()
            group.cancel_scope.cancel()


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def wait_ready_async(handle: SyncHandle, timeout: float | None) -> bool:
    """Poll the follower's readiness without blocking the event loop."""
    ready = handle.follower.ready
    with anyio.move_on_after(timeout):
        while not ready.is_set():
            await anyio.sleep(0.005)
    return ready.is_set()
