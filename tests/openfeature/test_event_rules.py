"""The event rules of `ProviderEvents.step`, driven by hand-made `ClientStatus` reports:
the order and the deadline, without waiting for a real server to misbehave."""

from __future__ import annotations

from typing import Any

import pytest
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.provider import FeatureProvider

from flagsync import FlagClient
from flagsync._provider_events import ProviderEvents
from flagsync.openfeature import FlagsyncProvider
from flagsync.status import ClientStatus, SyncState
from tests.integration.support import base_document

Emitted = list[tuple[str, ProviderEventDetails]]


def status(state: SyncState, since: float | None = 0.1, revision: int = 3) -> ClientStatus:
    """A status report in `state`, confirmed `since` seconds ago."""
    return ClientStatus(
        state=state,
        connected=state is SyncState.READY,
        namespace="ns",
        epoch="e",
        revision=revision,
        flags=4,
        seconds_since_sync=since,
    )


@pytest.fixture
def watched() -> tuple[ProviderEvents, Emitted]:
    """Event rules over an offline provider whose emitted events are recorded (no thread)."""
    provider = FlagsyncProvider(FlagClient.offline(base_document()))
    emitted: Emitted = []

    def record(_: FeatureProvider, event: ProviderEvent, details: ProviderEventDetails) -> Any:
        emitted.append((event.value.removeprefix("PROVIDER_"), details))

    provider.attach(record)
    return ProviderEvents(provider, provider.client, 5.0), emitted


def names(emitted: Emitted) -> list[str]:
    """The emitted events' short names, in order."""
    return [name for name, _ in emitted]


class TestOrder:
    """READY → (STALE → (ERROR) → READY)*, changes only while READY."""

    def test_nothing_before_initialize_returns(
        self, watched: tuple[ProviderEvents, Emitted]
    ) -> None:
        """Until `initialize` returns, the SDK owns the first event: the rules emit none."""
        events, emitted = watched
        events.step(status(SyncState.STALE, since=9.0))
        assert emitted == []

    def test_error_always_follows_a_stale(self, watched: tuple[ProviderEvents, Emitted]) -> None:
        """A READY client found unconfirmed past the deadline emits STALE, then ERROR;
        recovery emits READY once."""
        events, emitted = watched
        events.initialized(ready=True)
        events.step(status(SyncState.STALE, since=6.0))
        events.step(status(SyncState.STALE, since=7.0))
        events.step(status(SyncState.READY))
        events.step(status(SyncState.READY))
        assert names(emitted) == ["STALE", "ERROR", "READY"]
        assert "error_after_s=5.0" in (emitted[1][1].message or "")

    def test_stale_below_the_deadline_then_error_at_it(
        self, watched: tuple[ProviderEvents, Emitted]
    ) -> None:
        """STALE while unconfirmed for less than `error_after_s`; ERROR at it."""
        events, emitted = watched
        events.initialized(ready=True)
        events.step(status(SyncState.STALE, since=1.2))
        events.step(status(SyncState.STALE, since=4.99))
        assert names(emitted) == ["STALE"]
        events.step(status(SyncState.STALE, since=5.0))
        assert names(emitted) == ["STALE", "ERROR"]

    def test_changes_during_stale_follow_the_ready(
        self, watched: tuple[ProviderEvents, Emitted]
    ) -> None:
        """A swap seen while STALE is reported right after the READY that ends it."""
        events, emitted = watched
        events.initialized(ready=True)
        events.step(status(SyncState.STALE, since=1.5))
        events._on_swap(4, frozenset({"model", "context-window"}))
        events.step(status(SyncState.STALE, since=1.6))
        assert names(emitted) == ["STALE"]
        events.step(status(SyncState.READY, revision=4))
        assert names(emitted) == ["STALE", "READY", "CONFIGURATION_CHANGED"]
        assert emitted[-1][1].flags_changed == ["context-window", "model"]
        assert emitted[-1][1].metadata == {"revision": 4}

    def test_first_sync_after_a_timed_out_initialize_is_not_a_change(
        self, watched: tuple[ProviderEvents, Emitted]
    ) -> None:
        """After `initialize` timed out (ERROR), the first load brings READY only; an empty
        swap (a resync that changed nothing) brings nothing."""
        events, emitted = watched
        events.initialized(ready=False)
        events._on_swap(1, frozenset({"model", "beta-ui"}))
        events.step(status(SyncState.CONNECTING, since=None))
        events.step(status(SyncState.READY, revision=1))
        events._on_swap(1, frozenset())
        events.step(status(SyncState.READY, revision=1))
        assert names(emitted) == ["READY"]

    def test_a_closed_client_is_an_error(self, watched: tuple[ProviderEvents, Emitted]) -> None:
        """A client closed under the provider emits STALE then ERROR saying so."""
        events, emitted = watched
        events.initialized(ready=True)
        events.step(status(SyncState.CLOSED))
        assert names(emitted) == ["STALE", "ERROR"]
        assert emitted[-1][1].message == "the FlagClient was closed"

    def test_offline_client_is_ready(self, watched: tuple[ProviderEvents, Emitted]) -> None:
        """An offline client never goes stale: after a timed-out start it is READY."""
        events, emitted = watched
        events.initialized(ready=False)
        events.step(status(SyncState.OFFLINE, since=None))
        assert names(emitted) == ["READY"]


class TestWakeUps:
    """The watcher sleeps until pushed, except for the ERROR deadline while STALE."""

    def test_no_deadline_unless_stale(self, watched: tuple[ProviderEvents, Emitted]) -> None:
        """READY, CONNECTING and CLOSED clients wake the watcher only by a push."""
        events, _ = watched
        events.initialized(ready=True)
        for state in (SyncState.READY, SyncState.CONNECTING, SyncState.CLOSED):
            assert events.until_error(status(state)) is None

    def test_stale_wakes_at_the_error_deadline(
        self, watched: tuple[ProviderEvents, Emitted]
    ) -> None:
        """STALE for 1.5 s of a 5 s deadline: wake in 3.5 s; none once ERROR was emitted."""
        events, _ = watched
        events.initialized(ready=True)
        assert events.until_error(status(SyncState.STALE, since=1.5)) == pytest.approx(3.5)
        events.step(status(SyncState.STALE, since=6.0))
        assert events.emitted == "ERROR"
        assert events.until_error(status(SyncState.STALE, since=6.5)) is None
