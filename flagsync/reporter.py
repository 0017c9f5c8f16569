"""Flush clients' metrics to Redis from one background thread per process, surviving outages.

One path per process and connection target: every reporter of a URL is flushed by the
same daemon thread over the same connection pool, started with the first reporter and
stopped with the last (500 async clients in a process once meant 501 threads and 500
extra connections). A forked child starts its own thread for the reporters it inherited.

Every `interval_s` the reporter drains the in-process counts (`MetricsTables`) into a
bounded pending set and appends one stream entry per flag, to this worker's own stream of
that flag (so a per-worker ACL can confine a worker to its own streams). When Redis is
unreachable the pending set keeps growing up to its bound and is flushed once the server is back;
series that do not fit are dropped and counted (`dropped`), and the transition is
logged once, not per attempt.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import structlog

from flagsync._connection import connect, store_errors
from flagsync.errors import StoreError
from flagsync.metrics import MetricsTables, PendingSeries, flush_commands
from flagsync.store import StoreKeys

__all__ = ["MetricsReporter"]

_log = structlog.get_logger("flagsync.metrics")


class MetricsReporter:
    """The daemon thread that flushes one client's metrics."""

    def __init__(
        self,
        tables: MetricsTables,
        url: str,
        keys: StoreKeys,
        *,
        interval_s: float = 10.0,
        max_series: int = 10_000,
        retention_s: float = 86_400.0,
        timeout_s: float = 1.0,
        worker_id: Callable[[], str] | None = None,
    ) -> None:
        self.tables = tables
        self.worker_id = worker_id
        """This worker's id, read at each flush: entries go to its own streams
        (`StoreKeys.worker_metrics`); None: the flags' shared streams."""
        self.url = url
        self.keys = keys
        self.interval_s = interval_s
        self.retention_ms = int(retention_s * 1000)
        self.timeout_s = timeout_s
        self.pending = PendingSeries(max_series)
        self.flushed_entries = 0
        self.last_error: str | None = None
        self._client: redis.Redis | None = None
        """Its own client, only for a flush outside the shared thread's lifetime."""
        self._flusher: _Flusher | None = None
        self._expiry_refused = False
        self._flushing = threading.Lock()

    def start(self) -> MetricsReporter:
        """Start flushing every `interval_s` seconds (on the process's shared thread)."""
        self._flusher = _Flusher.register(self)
        return self

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop, with one last flush attempt (bounded by the socket timeout); the last
        reporter of a target waits up to `timeout_s` for the shared thread to end."""
        self.flush()  # on the shared pool while still registered
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.unregister(self, timeout_s)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()

    def flush(self, via: _Flusher | None = None) -> bool:
        """Drain and write now; False (and kept pending) when the store is unreachable."""
        with self._flushing:  # the shared thread and a caller may flush at once
            return self._flush(via or self._flusher)

    def _connection(self, via: _Flusher | None) -> redis.Redis:
        if via is not None:
            return via.client()
        if self._client is None:
            self._client = connect(
                self.url, timeout_s=self.timeout_s, connect_timeout_s=self.timeout_s
            )
        return self._client

    def _flush(self, via: _Flusher | None) -> bool:
        self.pending.add(self.tables.drain())
        if not self.pending.series:
            return True
        commands = flush_commands(
            self.keys,
            self.pending.by_flag(),
            self.retention_ms,
            int(time.time() * 1000),
            None if self.worker_id is None else self.worker_id(),
        )
        try:
            with store_errors(self.url, "flush metrics"):
                pipe = self._connection(via).pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)  # type: ignore[no-untyped-call]
                replies = pipe.execute(raise_on_error=False)
                self._raise_unless_appended(commands, replies)
        except (StoreError, OSError) as error:
            message = f"{type(error).__name__}: {error}"
            if message != self.last_error:
                _log.warning(
                    "metrics_flush_failed",
                    namespace=self.keys.namespace,
                    error=message,
                    pending_series=len(self.pending.series),
                    dropped=self.pending.dropped,
                )
            self.last_error = message
            return False
        if self.last_error is not None:
            # What the outage cost: the failure was logged before anything was dropped.
            _log.info(
                "metrics_flush_recovered",
                namespace=self.keys.namespace,
                dropped=self.pending.dropped,
            )
            self.last_error = None
        self.flushed_entries += sum(command[0] == "XADD" for command in commands)
        self.pending.series.clear()
        return True

    def _raise_unless_appended(self, commands: list[tuple[Any, ...]], replies: list[Any]) -> None:
        """Raise the first refused XADD (the entries stay pending); a refused PEXPIRE (an
        ACL from before streams expired) only costs the expiry: logged once, and the
        entries, already appended, are not sent again (they would count twice)."""
        for command, reply in zip(commands, replies, strict=True):
            if isinstance(reply, Exception) and command[0] == "XADD":
                raise reply
        refused = [r for c, r in zip(commands, replies, strict=True) if isinstance(r, Exception)]
        if refused and not self._expiry_refused:
            self._expiry_refused = True
            _log.warning(
                "metrics_expiry_refused",
                namespace=self.keys.namespace,
                error=f"{type(refused[0]).__name__}: {refused[0]}",
                hint="grant the worker user +pexpire (see: flagsync acl)",
            )


class _Flusher:
    """The one thread (and connection pool) that flushes every reporter of one URL."""

    _all: dict[tuple[str, float], _Flusher] = {}  # noqa: RUF012 - the process's registry
    _lock = threading.Lock()

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.due: dict[MetricsReporter, float] = {}
        """Each reporter and the monotonic time of its next flush."""
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._client: redis.Redis | None = None

    @classmethod
    def register(cls, reporter: MetricsReporter) -> _Flusher:
        """Add `reporter` to its target's flusher, starting it if it is the first."""
        with cls._lock:
            key = (reporter.url, reporter.timeout_s)
            flusher = cls._all.get(key)
            if flusher is None:
                flusher = cls._all[key] = _Flusher(reporter.url, reporter.timeout_s)
            with flusher._wake:
                flusher.due[reporter] = time.monotonic() + reporter.interval_s
                flusher._wake.notify()
            flusher._ensure_thread()
            return flusher

    def unregister(self, reporter: MetricsReporter, timeout_s: float = 1.0) -> None:
        """Remove `reporter`; the last one out stops the thread (waiting up to
        `timeout_s` for it) and so closes the pool."""
        with _Flusher._lock, self._wake:
            self.due.pop(reporter, None)
            if self.due:
                return
            if _Flusher._all.get((self.url, self.timeout_s)) is self:
                del _Flusher._all[(self.url, self.timeout_s)]
            self._wake.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def client(self) -> redis.Redis:
        """The shared client of this target (redis-py's pool is thread-safe)."""
        with self._wake:
            client = self._client
            if client is None:
                client = self._client = connect(
                    self.url, timeout_s=self.timeout_s, connect_timeout_s=self.timeout_s
                )
            return client

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="flagsync-metrics", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self.due:
                    break
                now = time.monotonic()
                ready = [reporter for reporter, at in self.due.items() if at <= now]
                if not ready:
                    self._wake.wait(min(self.due.values()) - now)
                    continue
                for reporter in ready:
                    self.due[reporter] = now + reporter.interval_s
            for reporter in ready:
                if not reporter.flush(self):
                    break  # the target is down: the others would wait a timeout each
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    @classmethod
    def after_fork_in_child(cls) -> None:
        """In a forked child: the parent's thread is gone and its sockets are not ours;
        flush the inherited reporters from a thread of this process."""
        cls._lock = threading.Lock()
        for flusher in list(cls._all.values()):
            flusher._wake = threading.Condition()
            flusher._client = None
            flusher._thread = None
            for reporter in flusher.due:
                reporter._flushing = threading.Lock()
            if flusher.due:
                flusher._ensure_thread()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_Flusher.after_fork_in_child)
