"""The live feed: follow the store's revision and the workers' presence at a bounded rate.

One poller per dashboard process (not per page): it reads the revision every 100 ms
(one command) and the presence records every 250 ms, derives the convergence of the
latest revision ("3/3 workers applied r17 in 2.1 ms"; a worker that has not applied it
within 1 s is late), and wakes the open pages' event streams only when something they
show changed. It does not connect a `FlagClient`: that would register the dashboard as
a worker and count it in every "reached N/M".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import structlog

from flagsync.errors import FlagsyncError

__all__ = ["LATE_AFTER_S", "LiveState", "Poller"]

_log = structlog.get_logger("flagsync.dashboard")
REVISION_EVERY_S: Final = 0.1
WORKERS_EVERY_S: Final = 0.25
LATE_AFTER_S: Final = 1.0
"""A worker that has not applied the latest revision this long after it was written is late."""


@dataclass
class LiveState:
    """What every open page is told: the store's state and the fleet's convergence."""

    ok: bool = False
    error: str | None = None
    epoch: str | None = None
    revision: int = 0
    workers: list[dict[str, Any]] = field(default_factory=list)
    convergence: dict[str, Any] | None = None
    checked_ms: int = 0

    def signature(self) -> tuple[Any, ...]:
        """What, when changed, is worth an event (heartbeat ages alone are not)."""
        return (
            self.ok,
            self.error,
            self.epoch,
            self.revision,
            tuple((w["id"], w["revision"], w["state"]) for w in self.workers),
            None if self.convergence is None else tuple(sorted(self.convergence.items())),
        )

    def to_json(self) -> dict[str, Any]:
        """The event payload."""
        return {
            "ok": self.ok,
            "error": self.error,
            "epoch": self.epoch,
            "revision": self.revision,
            "workers": self.workers,
            "convergence": self.convergence,
            "checked_ms": self.checked_ms,
        }


def worker_row(worker: Any, epoch: str | None, revision: int, now_ms: int) -> dict[str, Any]:
    """One presence record as the pages show it."""
    same_history = worker.epoch == epoch
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "revision": worker.revision,
        "lag": (revision - worker.revision) if same_history else None,
        "state": worker.state,
        "applied": same_history and worker.revision >= revision,
        "heartbeat_age_s": round(max(0, now_ms - worker.heartbeat_ms) / 1000, 1),
    }


def convergence(
    workers: list[Any], epoch: str | None, revision: int, since_ms: int, now_ms: int
) -> dict[str, Any]:
    """How many live workers applied `revision`, how fast, and which are late."""
    reached = [w for w in workers if w.epoch == epoch and w.revision >= revision]
    exact = [
        (w.applied_us - w.published_us) / 1000
        for w in reached
        if w.revision == revision and w.published_us and w.applied_us >= w.published_us
    ]
    published_ms = min((w.published_us // 1000 for w in reached if w.revision == revision
                        and w.published_us), default=since_ms)  # fmt: skip
    late = [
        w.id for w in workers if w not in reached and now_ms - published_ms > LATE_AFTER_S * 1000
    ]
    ms = max(exact) if exact else None
    text = f"{len(reached)}/{len(workers)} workers applied r{revision}"
    if ms is not None and len(reached) == len(workers):
        text += f" in {ms:.1f} ms"
    elif workers and len(reached) < len(workers):
        text += f" ({len(workers) - len(reached)} not yet"
        text += f"; {len(late)} late > {LATE_AFTER_S:g} s)" if late else ")"
    return {
        "revision": revision,
        "reached": len(reached),
        "total": len(workers),
        "ms": None if ms is None else round(ms, 2),
        "late": sorted(late),
        "complete": len(reached) == len(workers),
        "text": text,
    }


class Poller:
    """Follows one backend's store; `wait_change` lets event streams sleep until news."""

    def __init__(
        self,
        revision: Callable[[], tuple[str | None, int]],
        workers: Callable[[], list[Any]],
    ) -> None:
        self._read_revision = revision
        self._read_workers = workers
        self.state = LiveState()
        self.sequence = 0
        self._changed = asyncio.Event()
        self._since_ms = 0
        self._signature: tuple[Any, ...] | None = None
        self._raw_workers: list[Any] = []

    async def run(self) -> None:
        """Poll until cancelled; store errors become `ok=False` with the reason."""
        next_workers = 0.0
        while True:
            now = time.monotonic()
            try:
                epoch, revision = await anyio.to_thread.run_sync(self._read_revision)
                moved = (epoch, revision) != (self.state.epoch, self.state.revision)
                if moved:
                    self._since_ms = int(time.time() * 1000)
                if moved or now >= next_workers or not self.state.ok:
                    self._raw_workers = await anyio.to_thread.run_sync(self._read_workers)
                    next_workers = now + WORKERS_EVERY_S
                self._update(epoch, revision)
            except FlagsyncError as error:
                if self.state.ok or self.state.error != str(error):
                    _log.warning("dashboard_store_unavailable", error=str(error))
                self.state = LiveState(
                    ok=False,
                    error=str(error),
                    epoch=self.state.epoch,
                    revision=self.state.revision,
                    workers=self.state.workers,
                    convergence=self.state.convergence,
                    checked_ms=self.state.checked_ms,
                )
                self._notify()
            await asyncio.sleep(REVISION_EVERY_S)

    def _update(self, epoch: str | None, revision: int) -> None:
        now_ms = int(time.time() * 1000)
        workers = self._raw_workers
        self.state = LiveState(
            ok=True,
            epoch=epoch,
            revision=revision,
            workers=[worker_row(w, epoch, revision, now_ms) for w in workers],
            convergence=convergence(workers, epoch, revision, self._since_ms, now_ms),
            checked_ms=now_ms,
        )
        self._notify()

    def _notify(self) -> None:
        signature = self.state.signature()
        if signature == self._signature:
            return
        self._signature = signature
        self.sequence += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_change(self, seen: int, timeout_s: float) -> int:
        """Return the sequence number once it differs from `seen` (or after `timeout_s`)."""
        if self.sequence != seen:
            return self.sequence
        with anyio.move_on_after(timeout_s):
            await self._changed.wait()
        return self.sequence
