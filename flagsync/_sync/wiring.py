"""Build what follows a store for `FlagClient.connect` / `connect_async`, and hand back a
`SyncHandle`: the one interface between a client and its sync.

The client gives the sync side two things — the callback that installs a snapshot and,
when metrics are on, its metrics tables — and keeps the handle. Nothing here touches
the client. Imported lazily by `FlagClient.connect*`, so offline evaluation never
imports redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec

from flagsync._connection import check_url, resolve_url
from flagsync._sync.follower import Follower, Listener
from flagsync._sync.lkg import read_lkg, write_lkg
from flagsync._sync.options import SyncOptions
from flagsync._sync.presence import Presence
from flagsync._sync.state_watch import StateListener, StateWatch
from flagsync._sync.thread_driver import ThreadDriver
from flagsync.metrics import MetricsTables
from flagsync.model import LLMSettings
from flagsync.reporter import MetricsReporter
from flagsync.snapshot import Snapshot
from flagsync.status import ClientStatus
from flagsync.store import StoreKeys

__all__ = ["ConnectSettings", "SyncHandle", "run_async_sync", "start_thread_sync"]

Install = Callable[[Snapshot], None]

_METRIC_DEFAULTS: dict[str, Any] = {
    "metrics": True,
    "exposures": False,
    "metrics_interval_s": 10.0,
    "metrics_max_series": 10_000,
}
_SYNC_NAMES = frozenset(field.name for field in dataclasses.fields(SyncOptions))
_OPTION_NAMES = _SYNC_NAMES | {"worker_id", "presence_url", *_METRIC_DEFAULTS}


@dataclass(frozen=True)
class ConnectSettings:
    """`FlagClient.connect()`'s arguments, checked: where, what, how fast, which metrics."""

    url: str
    namespace: str
    sync: SyncOptions
    worker_id: str | None = None
    presence_url: str | None = None
    """Where the presence record goes when `url` is a read-only replica (the primary)."""
    metrics: bool = True
    exposures: bool = False
    metrics_interval_s: float = 10.0
    metrics_max_series: int = 10_000

    @classmethod
    def parse(cls, url: str | None, namespace: str, options: Mapping[str, Any]) -> ConnectSettings:
        """Check `connect()` keyword options (unknown ones: TypeError) and resolve the URL
        (none given and no `REDIS_URL`: FlagsyncError)."""
        unknown = sorted(set(options) - _OPTION_NAMES)
        if unknown:
            known = ", ".join(sorted(_OPTION_NAMES))
            raise TypeError(f"unknown connect option(s) {', '.join(unknown)}; known: {known}")
        sync = {name: value for name, value in options.items() if name in _SYNC_NAMES}
        if sync.get("lkg_path") is not None:
            sync["lkg_path"] = Path(sync["lkg_path"])
        metrics = {name: options.get(name, default) for name, default in _METRIC_DEFAULTS.items()}
        presence_url = options.get("presence_url")
        if presence_url is not None:
            check_url(presence_url)
        return cls(
            url=resolve_url(url),
            namespace=namespace,
            sync=SyncOptions(**sync),
            worker_id=options.get("worker_id"),
            presence_url=presence_url,
            metrics=bool(metrics["metrics"]),
            exposures=bool(metrics["exposures"]),
            metrics_interval_s=float(metrics["metrics_interval_s"]),
            metrics_max_series=int(metrics["metrics_max_series"]),
        )

    @property
    def wants_metrics(self) -> bool:
        """True when the client should keep metrics tables (and a reporter flush them)."""
        return self.metrics or self.exposures


class SyncHandle:
    """What a connected client holds: readiness, status, staleness, listeners, close.

    Safe to call from any thread. `close()` stops the driver (within about a second)
    and the metrics reporter; the last snapshot keeps being served.
    """

    def __init__(
        self,
        follower: Follower,
        presence: Presence,
        stop: Callable[[], None],
        running: Callable[[], bool],
        reporter: MetricsReporter | None = None,
    ) -> None:
        self._follower = follower
        self._presence = presence
        self._stop = stop
        self._running = running
        self.reporter = reporter
        """The metrics reporter flushing the client's tables (None with metrics off)."""
        self._states = StateWatch(
            follower.state, self._until_stale, name=f"flagsync-state-{follower.keys.namespace}"
        )

    @property
    def ready(self) -> threading.Event:
        """Set once the first sync with the store completed."""
        return self._follower.ready

    @property
    def alive(self) -> bool:
        """True while the driver (thread or task) runs."""
        return self._running()

    @property
    def llm_settings(self) -> LLMSettings | None:
        """The namespace's stored `llm:` section (prices) as of the current snapshot, kept
        by the sync itself: reading it is one attribute read, never I/O."""
        return self._follower.llm.settings

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the first sync (True), or `timeout` seconds (False)."""
        return self._follower.ready.wait(timeout)

    async def wait_ready_async(self, timeout: float | None = None) -> bool:
        """`wait_ready` without blocking the event loop (polls every 5 ms)."""
        ready = self._follower.ready
        with anyio.move_on_after(timeout):
            while not ready.is_set():
                await anyio.sleep(0.005)
        return ready.is_set()

    def status(self) -> ClientStatus:
        """A `ClientStatus` report."""
        status = self._follower.status(self._presence.worker_id)
        error = self._presence.error
        return status if error is None else msgspec.structs.replace(status, presence_error=error)

    def is_stale(self) -> bool:
        """True when evaluations come from a snapshot unconfirmed past the grace period."""
        return self._follower.is_stale()

    def is_healthy(self, max_stale_s: float | None = None) -> bool:
        """Synced, open, and confirmed within `max_stale_s` (default: the grace period)."""
        return self._follower.is_healthy(max_stale_s)

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(revision, changed_keys)` after every snapshot swap."""
        self._follower.listeners.append(listener)

    def remove_listener(self, listener: Listener) -> bool:
        """Stop calling `listener` (True if it was registered)."""
        try:
            self._follower.listeners.remove(listener)
        except ValueError:
            return False
        return True

    def add_state_listener(self, listener: StateListener) -> None:
        """Call `listener(previous, current)` on every `SyncState` transition."""
        self._states.add(listener)

    def remove_state_listener(self, listener: StateListener) -> bool:
        """Stop calling `listener` (True if it was registered)."""
        return self._states.remove(listener)

    def _until_stale(self) -> float | None:
        since = self._follower.seconds_since_sync()
        return None if since is None else self._follower.options.stale_after_s - since

    def finish(self) -> None:
        """The driver has stopped: tell state listeners (CLOSED) and end their watcher."""
        self._follower.closed = True
        self._states.stop()

    def close(self) -> None:
        """Stop syncing and flushing metrics."""
        self._stop()
        self.finish()
        if self.reporter is not None:
            self.reporter.close()


def start_thread_sync(
    settings: ConnectSettings, install: Install, tables: MetricsTables | None
) -> SyncHandle:
    """Start following in a daemon thread."""
    follower, presence = _build(settings, install)
    driver = ThreadDriver(follower, presence, settings.url, settings.presence_url)
    driver.start()
    reporter = _start_reporter(settings, tables, presence)
    return SyncHandle(follower, presence, driver.close, lambda: driver.alive, reporter)


@asynccontextmanager
async def run_async_sync(
    settings: ConnectSettings, install: Install, tables: MetricsTables | None
) -> AsyncIterator[SyncHandle]:
    """Follow in an anyio task for the duration of the block."""
    follower, presence = _build(settings, install)
    reporter = _start_reporter(settings, tables, presence)
    if not _on_asyncio():
        # redis-py's async client only runs on asyncio; elsewhere use the thread driver.
        driver = ThreadDriver(follower, presence, settings.url, settings.presence_url)
        driver.start()
        handle = SyncHandle(follower, presence, driver.close, lambda: driver.alive, reporter)
        try:
            yield handle
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(handle.close)
        return

    from flagsync._sync.async_driver import AsyncDriver  # noqa: PLC0415 - asyncio only

    task = AsyncDriver(follower, presence, settings.url, settings.presence_url)
    loop = asyncio.get_running_loop()
    scope = anyio.CancelScope()

    async def follow() -> None:
        with scope:
            await task.run()

    def stop() -> None:
        # `close()` may come from any thread, and cancelling is loop-only: schedule it.
        # Cancelling the task (not only flagging it) makes close() prompt even while a
        # read waits on a frozen server.
        task.request_stop()
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing runs
            loop.call_soon_threadsafe(scope.cancel)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(follow, name=f"flagsync-subscriber-{settings.namespace}")
            handle = SyncHandle(follower, presence, stop, lambda: task.alive)
            try:
                yield handle
            finally:
                task.request_stop()
                group.cancel_scope.cancel()
                handle.finish()
    finally:
        if reporter is not None:  # one last flush, in a thread: it does blocking I/O
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(reporter.close)


def _build(settings: ConnectSettings, install: Install) -> tuple[Follower, Presence]:
    options = settings.sync
    path = options.lkg_path
    follower = Follower(
        StoreKeys(settings.namespace),
        options,
        install,
        initial=None if path is None else read_lkg(path),
        persist=None if path is None else lambda snapshot: write_lkg(path, snapshot),
    )
    return follower, Presence(follower, settings.worker_id)


def _start_reporter(
    settings: ConnectSettings, tables: MetricsTables | None, presence: Presence
) -> MetricsReporter | None:
    if tables is None or not settings.wants_metrics:
        return None
    return MetricsReporter(
        tables,
        settings.presence_url or settings.url,  # a writable node, like the presence record
        StoreKeys(settings.namespace),
        interval_s=settings.metrics_interval_s,
        max_series=settings.metrics_max_series,
        worker_id=lambda: presence.worker_id,  # its own streams (a fork gives a new id)
    ).start()


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
