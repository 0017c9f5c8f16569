"""Wire a `FlagClient` to a store: options, the follower, and the thread or task driving it.

Imported lazily by `FlagClient.connect*`, so offline evaluation never imports redis.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from flagsync._connection import resolve_url as resolve_url  # noqa: PLC0414 - re-export
from flagsync._follower import Follower, SyncOptions
from flagsync.metrics import MetricsTables
from flagsync.reporter import MetricsReporter
from flagsync.store import StoreKeys
from flagsync.subscriber import ThreadSubscriber

if TYPE_CHECKING:
    from flagsync.client import FlagClient

_METRIC_OPTIONS = {
    "metrics": True,
    "exposures": False,
    "metrics_interval_s": 10.0,
    "metrics_max_series": 10_000,
}
_OPTION_NAMES = frozenset(field.name for field in dataclasses.fields(SyncOptions)) | frozenset(
    {"worker_id", *_METRIC_OPTIONS}
)


class SyncHandle:
    """What a connected client holds: its follower, its metrics reporter, what to stop."""

    def __init__(
        self, follower: Follower, close: Any, reporter: MetricsReporter | None = None
    ) -> None:
        self.follower = follower
        self.reporter = reporter
        self._close = close

    def close(self) -> None:
        self._close()
        if self.reporter is not None:
            self.reporter.close()


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`connect()` keyword options as (sync options, metrics options); unknown ones fail."""
    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        known = ", ".join(sorted(_OPTION_NAMES))
        raise TypeError(f"unknown connect option(s) {', '.join(unknown)}; known: {known}")
    sync = {name: value for name, value in options.items() if name not in _METRIC_OPTIONS}
    metrics = {name: options.get(name, default) for name, default in _METRIC_OPTIONS.items()}
    return sync, metrics


def start_metrics(
    client: FlagClient, url: str, namespace: str, metrics: Mapping[str, Any]
) -> MetricsReporter | None:
    """Give `client` metrics tables and start their reporter (unless metrics are off)."""
    if not metrics["metrics"] and not metrics["exposures"]:
        return None
    tables = client._metrics or MetricsTables()
    client._metrics = tables
    return MetricsReporter(
        tables,
        url,
        StoreKeys(namespace),
        interval_s=float(metrics["metrics_interval_s"]),
        max_series=int(metrics["metrics_max_series"]),
    ).start()


def build_follower(client: FlagClient, namespace: str, options: Mapping[str, Any]) -> Follower:
    """A follower for `client` from `connect()` keyword options; unknown options are errors."""
    settings, _ = split_options(options)
    worker_id = settings.pop("worker_id", None)
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
    resolved = resolve_url(url)
    driver = ThreadSubscriber(follower, resolved)
    driver.start()
    reporter = start_metrics(client, resolved, namespace, split_options(options)[1])
    return SyncHandle(follower, driver.close, reporter)


@asynccontextmanager
async def run_async_sync(
    client: FlagClient, url: str | None, namespace: str, options: Mapping[str, Any]
) -> AsyncIterator[FlagClient]:
    """Follow in an anyio task for the duration of the block."""
    follower = build_follower(client, namespace, options)
    resolved = resolve_url(url)
    reporter = start_metrics(client, resolved, namespace, split_options(options)[1])
    if not _on_asyncio():
        # redis-py's async client only runs on asyncio; elsewhere use the thread driver.
        driver = ThreadSubscriber(follower, resolved)
        driver.start()
        handle = client._sync = SyncHandle(follower, driver.close, reporter)
        try:
            yield client
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(handle.close)
        return

    from flagsync.async_subscriber import AsyncSubscriber  # noqa: PLC0415 - asyncio only

    subscriber = AsyncSubscriber(follower, resolved)
    try:
        async with anyio.create_task_group() as group:
            client._sync = SyncHandle(follower, subscriber.request_stop)
            group.start_soon(subscriber.run)
            try:
                yield client
            finally:
                subscriber.request_stop()
                group.cancel_scope.cancel()
    finally:
        if reporter is not None:  # one last flush, in a thread: it does blocking I/O
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(reporter.close)


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
