"""Timing helpers of the fault scenarios: short deadlines (the integration suite's), and
how long recovery took.

"Recovered" means what FAULTS.md asks of every scenario: the client is back on the
store's latest (epoch, revision), connected and READY. Recovery time is measured from
the end of the fault to that moment, by polling every couple of milliseconds.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar

from flagsync import FlagClient
from flagsync.publisher import Publisher
from flagsync.status import SyncState
from tests.integration.conftest import ClientFactory
from tests.integration.support import FAST, MESSAGES_ONLY

__all__ = [  # FAST and MESSAGES_ONLY are the integration suite's, imported from here too
    "FAST",
    "MESSAGES_ONLY",
    "POLL_S",
    "EvaluationTimes",
    "at_revision",
    "flagsync_threads",
    "on_latest",
    "open_sockets",
    "ready_client",
    "recovery_s",
    "serving",
    "time_to",
    "timing_window",
]

POLL_S: Final = 0.002

RECOVERED_WITHIN_S: Final = 2.5
"""After a fault ends, a client with `FAST` deadlines is back on the latest revision within
this: one capped retry delay (0.3 s), a connect and a load take ~0.4 s on an idle machine
(the figures record it); the rest is room for a loaded 2-core CI runner (1.8 s seen)."""

_T = TypeVar("_T")


def ready_client(
    make_client: ClientFactory, url: str, namespace: str | None = None, **options: Any
) -> FlagClient:
    """A connected client that has synced (fails the test otherwise)."""
    client = make_client(url, namespace, **options)
    assert client.wait_ready(5), client.status()
    return client


def time_to(predicate: Callable[[], bool], timeout_s: float) -> float | None:
    """Seconds until `predicate` holds (polled every 2 ms), or None after `timeout_s`."""
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_S)


def at_revision(*clients: FlagClient, revision: int) -> Callable[[], bool]:
    """A predicate: every one of `clients` has applied `revision`."""
    return lambda: all(client.revision == revision for client in clients)


def serving(client: FlagClient, key: str, value: Any) -> Callable[[], bool]:
    """A predicate: `client` serves `value` for flag `key` (empty context)."""
    return lambda: client.variation(key, {}, None) == value


def on_latest(client: FlagClient, publisher: Publisher) -> Callable[[], bool]:
    """A predicate: `client` is connected, READY and on the store's (epoch, revision)."""
    epoch, revision = publisher.revision()

    def recovered() -> bool:
        status = client.status()
        return (
            status.state is SyncState.READY
            and status.connected
            and (status.epoch, status.revision) == (epoch, revision)
        )

    return recovered


def reconnected(client: FlagClient, reconnects_before: int) -> Callable[[], bool]:
    """A predicate: `client` is connected again after at least one more reconnect.

    Being on the latest revision does not imply this: a revision check can load the
    latest snapshot before the subscriber thread has noticed its connection is gone.
    """

    def back() -> bool:
        status = client.status()
        return status.connected and status.reconnects > reconnects_before

    return back


def recovery_s(
    client: FlagClient, publisher: Publisher, timeout_s: float, *, since: float | None = None
) -> float:
    """Seconds from `since` (a `time.monotonic()`, default now) until `client` is READY on
    the store's latest revision; fails the test when that takes over `timeout_s` from now."""
    started = time.monotonic() if since is None else since
    assert time_to(on_latest(client, publisher), timeout_s) is not None, (
        f"not recovered within {timeout_s}s: {client.status()}"
    )
    return time.monotonic() - started


def flagsync_threads(namespace: str) -> list[threading.Thread]:
    """Live threads flagsync started for `namespace` (subscriber, metrics reporter, ...)."""
    return [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith("flagsync-") and thread.name.endswith(f"-{namespace}")
    ]


def open_sockets() -> int:
    """Sockets this process holds open (file descriptors pointing at a socket)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            continue  # closed meanwhile (e.g. the fd listdir itself used)
    return count


def _preemptions() -> int:
    """Times the OS took the CPU from this thread (involuntary context switches).

    Waiting (on a lock, the network, the GIL) is a voluntary switch and is not counted.
    """
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw


class EvaluationTimes:
    """How long each evaluation timed during a fault took, with when and which it was.

    An evaluation during which the OS preempted this thread (a loaded machine: other
    processes wanted the core) says nothing about flagsync blocking; it is set aside in
    `preempted`, not in `samples`. Blocking waits are voluntary switches: still timed.
    """

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, str]] = []
        """(duration s, seconds into the fault, call)"""
        self.preempted = 0
        """Evaluations set aside: the OS preempted the thread during them."""

    def time(self, call: str, elapsed_s: float, evaluate: Callable[[], _T]) -> _T:
        """Run and time one evaluation."""
        switches = _preemptions()
        started = time.perf_counter()
        result = evaluate()
        duration_s = time.perf_counter() - started
        if _preemptions() == switches:
            self.samples.append((duration_s, elapsed_s, call))
        else:
            self.preempted += 1
        return result

    @property
    def max_s(self) -> float:
        """The slowest kept evaluation; fails when preemption left too few to judge."""
        kept = len(self.samples)
        counts = f"{kept} evaluations timed, {self.preempted} preempted by the OS"
        assert kept >= 100, counts
        assert self.preempted <= kept // 4, counts
        return max(duration_s for duration_s, _, _ in self.samples)

    def slowest(self, count: int = 5) -> list[str]:
        """The slowest evaluations, described for an assertion message."""
        return [
            f"{call} at {elapsed_s:.3f}s: {duration_s * 1e6:.0f} us"
            for duration_s, elapsed_s, call in sorted(self.samples, reverse=True)[:count]
        ] + [f"{self.preempted} preempted evaluations set aside"]


@contextmanager
def timing_window() -> Iterator[None]:
    """Measure evaluation times without the interpreter's own pauses.

    "Evaluations never block" is about flagsync waiting for the network or a lock. The
    cyclic GC's pauses and the GIL's 5 ms switch interval (another thread, such as the
    subscriber or the fault proxy, running Python code) are not that, and would show up
    as milliseconds here: the GC is off and threads switch every 0.1 ms in this window.
    """
    gc_enabled, interval_s = gc.isenabled(), sys.getswitchinterval()
    gc.disable()
    sys.setswitchinterval(0.0001)
    try:
        yield
    finally:
        sys.setswitchinterval(interval_s)
        if gc_enabled:
            gc.enable()
