"""OpenFeature provider events from a `FlagClient`'s sync state, emitted by one thread.

The client pushes two things: state transitions (`add_state_listener`: READY, STALE,
CLOSED, ...) and snapshot swaps (`add_listener`). Both only wake one daemon thread,
which reads `status()` and alone emits, so the order is fixed; it polls nothing — the
only time it wakes by itself is the ERROR deadline while STALE. The order: a state
event first (READY / STALE / ERROR), then the CONFIGURATION_CHANGED events of the swaps
it has not reported yet — only while READY: changes applied during STALE or ERROR are
reported right after the READY that ends it. A handler sees
READY → (STALE → (ERROR) → READY)* with changes in between; ERROR never comes without
a STALE before it.

State rules (`error_after_s` is the documented deadline):
- READY: the client is READY (or offline);
- STALE: the client is STALE, and the store confirmed within `error_after_s`;
- ERROR: the store has not confirmed the client's revision for `error_after_s`
  (or the client was closed under the provider);
- a client still CONNECTING stays where `initialize` left it (ERROR after its timeout).
Swaps before the first READY are part of what READY delivers and are not reported.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Final

import structlog
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode as OFErrorCode

from flagsync.status import ClientStatus, SyncState

if TYPE_CHECKING:
    from openfeature.provider import AbstractProvider

    from flagsync.client import FlagClient

__all__ = ["ProviderEvents"]

_log = structlog.get_logger("flagsync.openfeature")

READY: Final = "READY"
STALE: Final = "STALE"
ERROR: Final = "ERROR"


class ProviderEvents:
    """Watches one client and emits the provider's events (see the module docstring)."""

    def __init__(
        self,
        provider: AbstractProvider,
        client: FlagClient,
        error_after_s: float,
    ) -> None:
        self.provider = provider
        self.client = client
        self.error_after_s = error_after_s
        self.emitted: str | None = None
        """The last state event emitted (or reported by `initialize`); None before."""
        self._pending: deque[tuple[int, frozenset[str]]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = False
        self._synced = False
        """Whether READY was ever emitted (swaps before it belong to the first READY)."""

    def start(self) -> None:
        """Listen to the client's swaps and start the watcher thread (idempotent)."""
        if not self._listening:
            self.client.add_listener(self._on_swap)
            self.client.add_state_listener(self._on_state)
            self._listening = True
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            namespace = self.client.status().namespace or "offline"
            self._thread = threading.Thread(
                target=self._run, name=f"flagsync-openfeature-{namespace}", daemon=True
            )
            self._thread.start()

    def initialized(self, *, ready: bool) -> None:
        """`initialize` returned: the SDK emits READY (ready) or ERROR (timed out) itself."""
        with self._lock:
            self.emitted = READY if ready else ERROR
            if ready:
                self._synced = True
                self._pending.clear()  # what READY delivers is not a change
        self._wake.set()  # a transition before our listener was added: look once now

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the watcher thread and wait for it; the client (which may outlive the
        provider) stops calling our listeners."""
        self._stop.set()
        self._wake.set()
        if self._listening:
            self.client.remove_listener(self._on_swap)
            self.client.remove_state_listener(self._on_state)
            self._listening = False
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        with self._lock:
            self._pending.clear()

    def _on_swap(self, revision: int, changed: frozenset[str]) -> None:
        """Listener (runs on the subscriber): queue the change and wake the watcher."""
        if self._stop.is_set():
            return  # the client outlives a provider that did not own it
        with self._lock:
            self._pending.append((revision, changed))
        self._wake.set()

    def _on_state(self, previous: SyncState, current: SyncState) -> None:
        """State listener (runs on the sync's state watcher): wake the watcher."""
        self._wake.set()

    def _run(self) -> None:
        timeout_s: float | None = None
        while not self._stop.is_set():
            self._wake.wait(timeout_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                status = self.client.status()
                self.step(status)
                timeout_s = self.until_error(status)
            except Exception:  # noqa: BLE001 - the watcher must outlive a failing handler
                _log.exception("openfeature_event_failed")
                timeout_s = 1.0

    def until_error(self, status: ClientStatus) -> float | None:
        """Seconds until STALE turns ERROR (None: nothing due without a push)."""
        since = status.seconds_since_sync
        if status.state is not SyncState.STALE or since is None or self.emitted == ERROR:
            return None
        return max(0.001, self.error_after_s - since)

    def target(self, status: ClientStatus) -> str | None:
        """The state event `status` calls for (None: keep the current one)."""
        state = status.state
        if state in (SyncState.READY, SyncState.OFFLINE):
            return READY
        if state is SyncState.STALE:
            since = status.seconds_since_sync
            return ERROR if since is None or since >= self.error_after_s else STALE
        if state is SyncState.CLOSED:
            return ERROR
        return None  # CONNECTING: initialize decided (READY never, ERROR after its timeout)

    def step(self, status: ClientStatus) -> None:
        """Emit what `status` and the queued swaps call for, in the documented order."""
        with self._lock:
            if self.emitted is None:
                return  # initialize has not returned: the SDK emits the first event
            target = self.target(status)
            events: list[tuple[str, ProviderEventDetails]] = []
            if target is not None and target != self.emitted:
                if target == ERROR and self.emitted == READY:
                    events.append((STALE, self._details(STALE, status)))
                events.append((target, self._details(target, status)))
                if target == READY and not self._synced:
                    self._pending.clear()  # initialize timed out: this is the first sync
                self.emitted = target
            changes: list[tuple[int, frozenset[str]]] = []
            if self.emitted == READY:  # changes during STALE/ERROR follow the READY ending it
                self._synced = True
                changes = list(self._pending)
                self._pending.clear()
        for name, details in events:
            self._emit(name, details)
        for revision, changed in changes:
            if changed:
                self.provider.emit_provider_configuration_changed(
                    ProviderEventDetails(
                        flags_changed=sorted(changed),
                        message=f"revision {revision}",
                        metadata={"revision": revision},
                    )
                )

    def _details(self, name: str, status: ClientStatus) -> ProviderEventDetails:
        since = status.seconds_since_sync
        metadata: dict[str, bool | str | int | float] = {
            "revision": status.revision,
            "state": str(status.state),
        }
        if since is not None:
            metadata["seconds_since_sync"] = since
        if name == READY:
            return ProviderEventDetails(message="in sync with the store", metadata=metadata)
        unconfirmed = "never" if since is None else f"for {since:.2f} s"
        if name == STALE:
            message = f"store unconfirmed {unconfirmed}; serving revision {status.revision}"
            return ProviderEventDetails(message=message, metadata=metadata)
        if status.state is SyncState.CLOSED:
            message = "the FlagClient was closed"
        else:
            message = (
                f"store unconfirmed {unconfirmed} (error_after_s={self.error_after_s});"
                f" serving revision {status.revision}"
            )
        if status.last_error:
            message = f"{message}: {status.last_error}"
        return ProviderEventDetails(
            message=message, error_code=OFErrorCode.GENERAL, metadata=metadata
        )

    def _emit(self, name: str, details: ProviderEventDetails) -> None:
        if name == READY:
            self.provider.emit_provider_ready(details)
        elif name == STALE:
            self.provider.emit_provider_stale(details)
        else:
            self.provider.emit_provider_error(details)
