"""State listeners: `listener(previous, current)` on every `SyncState` transition.

READY → STALE is a matter of time (no confirmation within the grace period), not of an
event the drivers see, so one small daemon thread per client watches the follower's
state — started with the first state listener, so clients without one pay nothing.
It sleeps until the moment READY could turn STALE (the grace period after the last
confirmation), and polls every `poll_s` while not READY, so a recovery is reported
within that. Listeners run on this thread, in registration order; an exception in one
is logged and the others still run. A forked child restarts its own watcher.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Final

import structlog

from flagsync.status import SyncState

__all__ = ["StateListener", "StateWatch"]

_log = structlog.get_logger("flagsync.subscriber")

StateListener = Callable[[SyncState, SyncState], None]
"""Called with the previous and the new state on each transition."""

POLL_S: Final = 0.05
"""How often a watcher re-reads the state while not READY (bounds how late READY is told)."""

_watches: weakref.WeakSet[StateWatch] = weakref.WeakSet()


class StateWatch:
    """Reports the transitions of `state()` to listeners (see the module docstring).

    `until_stale()` says how long the state can stay READY at most (seconds; None: no
    bound), so a READY client's watcher wakes about once per grace period.
    """

    def __init__(
        self,
        state: Callable[[], SyncState],
        until_stale: Callable[[], float | None],
        *,
        name: str,
        poll_s: float = POLL_S,
    ) -> None:
        self._state = state
        self._until_stale = until_stale
        self._name = name
        self._poll_s = poll_s
        self._listeners: list[StateListener] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._last: SyncState | None = None

    def add(self, listener: StateListener) -> None:
        """Call `listener` on every transition from now on (starts the watcher)."""
        with self._lock:
            self._listeners.append(listener)
            if self._last is None:
                self._last = self._state()
        self._start()

    def remove(self, listener: StateListener) -> bool:
        """Stop calling `listener` (True if it was registered)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
                return True
            return False

    def check(self) -> None:
        """Compare the state with the last one reported now (also from another thread)."""
        with self._lock:
            previous, current = self._last, self._state()
            if previous is None or previous is current:
                return
            self._last = current
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(previous, current)
            except Exception:  # noqa: BLE001 - a listener must not stop the others
                _log.exception("state_listener_failed", listener=repr(listener))

    def stop(self) -> None:
        """Report the last transition (e.g. to CLOSED) and end the watcher."""
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)
        self.check()

    def _start(self) -> None:
        with self._lock:
            if self._stopped or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
            _watches.add(self)

    def _run(self) -> None:
        while not self._stopped:
            self.check()
            timeout: float | None = self._poll_s
            if self._last is SyncState.READY:
                remaining = self._until_stale()
                timeout = None if remaining is None else max(self._poll_s, remaining + 0.005)
            self._wake.wait(timeout)
            self._wake.clear()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        if self._listeners:
            self._start()


def _restart_in_child() -> None:
    for watch in list(_watches):
        watch._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_in_child)
