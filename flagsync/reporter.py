"""Flush a client's metrics to Redis from a background thread, surviving outages.

Every `interval_s` the reporter drains the in-process counts (`MetricsTables`) into a
bounded pending set and appends one stream entry per flag, to this worker's own stream of
that flag (so a per-worker ACL can confine a worker to its own streams). When Redis is
unreachable the pending set keeps growing up to its bound and is flushed once the server is back;
series that do not fit are dropped and counted (`dropped`), and the transition is
logged once, not per attempt.
"""

from __future__ import annotations

import contextlib
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
        self._expiry_refused = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"flagsync-metrics-{keys.namespace}", daemon=True
        )

    def start(self) -> MetricsReporter:
        """Start flushing every `interval_s` seconds."""
        self._thread.start()
        return self

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop, with one last flush attempt (bounded by the socket timeout)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()

    def flush(self) -> bool:
        """Drain and write now; False (and kept pending) when the store is unreachable."""
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
                if self._client is None:
                    self._client = connect(
                        self.url, timeout_s=self.timeout_s, connect_timeout_s=self.timeout_s
                    )
                pipe = self._client.pipeline(transaction=False)
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

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()
        self.flush()
