"""The client's hooks against real servers: state listeners pushed from the sync side
(CONNECTING → READY → STALE on a SIGSTOPped server → READY on SIGCONT → CLOSED), removing
change and state listeners, and exposure totals in `status()`."""

from __future__ import annotations

import threading
import time

import structlog

from flagsync import FlagClient, load_flags
from flagsync.client import MeteredFlagClient
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.snapshot import Snapshot
from flagsync.status import SyncState
from tests.integration.conftest import ClientFactory, PublisherFactory
from tests.integration.support import RevisionRecorder, base_document, counter_flag, wait_until


class Transitions:
    """A state listener recording (previous, current, when) from whichever thread calls it."""

    def __init__(self) -> None:
        self.seen: list[tuple[SyncState, SyncState, float]] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, previous: SyncState, current: SyncState) -> None:
        with self._lock:
            self.seen.append((previous, current, time.monotonic()))
            self.threads.add(threading.current_thread().name)

    def states(self) -> list[SyncState]:
        with self._lock:
            return [current for _, current, _ in self.seen]

    def at(self, state: SyncState) -> float | None:
        with self._lock:
            return next((when for _, current, when in self.seen if current is state), None)


class TestStateListeners:
    """Transitions are pushed to state listeners, in order, from the sync side."""

    def test_freeze_and_recovery(
        self,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: ClientFactory,
    ) -> None:
        """READY → STALE within the grace period (+ a margin) of a SIGSTOP, READY again
        soon after SIGCONT, CLOSED on close; a failing listener is logged, not raised,
        and the others still hear every transition."""
        publisher = make_publisher(dedicated_server.url)
        publisher.apply(base_document())
        client = make_client(dedicated_server.url)
        seen = Transitions()

        def broken(previous: SyncState, current: SyncState) -> None:
            raise RuntimeError("listener bug")

        assert client.wait_ready(5.0)
        assert wait_until(lambda: client.status().state is SyncState.READY, 5.0)
        client.add_state_listener(broken)
        client.add_state_listener(seen)
        with structlog.testing.capture_logs() as logs:
            dedicated_server.pause()
            frozen_at = time.monotonic()
            try:
                assert wait_until(lambda: SyncState.STALE in seen.states(), 5.0), seen.states()
            finally:
                dedicated_server.resume()
            resumed_at = time.monotonic()
            assert wait_until(lambda: seen.states()[-1:] == [SyncState.READY], 5.0)
            client.close()
        stale_at, ready_at = seen.at(SyncState.STALE), seen.seen[-1][2]
        assert stale_at is not None
        assert stale_at - frozen_at <= 1.0 + 2.0  # the 1 s grace + scheduling on a busy box
        assert ready_at - resumed_at <= 5.0
        assert seen.states() == [SyncState.STALE, SyncState.READY, SyncState.CLOSED]
        assert seen.seen[0][0] is SyncState.READY
        assert any(name.startswith("flagsync-state-") for name in seen.threads)
        failures = [entry for entry in logs if entry["event"] == "state_listener_failed"]
        assert len(failures) == len(seen.seen)

    def test_connecting_then_ready(
        self,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: ClientFactory,
    ) -> None:
        """A client connecting to a frozen server reports READY once the server answers."""
        make_publisher(dedicated_server.url).apply(base_document())
        dedicated_server.pause()
        try:
            client = make_client(dedicated_server.url)
            seen = Transitions()
            client.add_state_listener(seen)
            assert client.status().state is SyncState.CONNECTING
        finally:
            dedicated_server.resume()
        assert wait_until(lambda: seen.states() == [SyncState.READY], 10.0), seen.states()
        assert seen.seen[0][0] is SyncState.CONNECTING

    def test_removed_state_listener_is_not_called(
        self, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """After `remove_state_listener` nothing more is reported to it (CLOSED included)."""
        publisher.apply(base_document())
        client = make_client(publisher.url)
        seen, kept = Transitions(), Transitions()
        client.add_state_listener(seen)
        client.add_state_listener(kept)
        assert client.wait_ready(5.0)
        assert client.remove_state_listener(seen)
        assert not client.remove_state_listener(seen)
        client.close()
        assert wait_until(lambda: SyncState.CLOSED in kept.states(), 5.0), kept.states()
        # READY may have been told before the removal (or come before either listener was
        # added: no transition then); CLOSED, after it, never.
        assert seen.states() in ([], [SyncState.READY])

    def test_offline_client_has_none(self) -> None:
        """An offline client never transitions; registering and removing are harmless."""
        client = FlagClient.offline(base_document())
        seen = Transitions()
        client.add_state_listener(seen)
        assert not client.remove_state_listener(seen)
        assert not client.remove_listener(lambda revision, changed: None)
        assert seen.states() == []


class TestRemoveListener:
    """A removed change listener hears no later swap."""

    def test_remove_listener(self, publisher: Publisher, make_client: ClientFactory) -> None:
        """The kept listener sees both writes, the removed one only the first."""
        publisher.apply(base_document())
        client = make_client(publisher.url)
        assert client.wait_ready(5.0)
        kept, removed = RevisionRecorder(), RevisionRecorder()
        client.add_listener(kept)
        client.add_listener(removed)
        first = publisher.put("counter", counter_flag(1))
        assert removed.wait_for(first, 5.0)
        assert client.remove_listener(removed)
        assert not client.remove_listener(removed)
        second = publisher.put("counter", counter_flag(2))
        assert kept.wait_for(second, 5.0)
        assert second not in removed.revisions


class TestExposureTotals:
    """`status().exposures` counts served variants since start, across metric flushes."""

    def test_totals_survive_flushes(self, publisher: Publisher, make_client: ClientFactory) -> None:
        """100 evaluations of a split flag are all counted, before and after a flush."""
        publisher.apply(base_document())
        client = make_client(publisher.url, exposures=True, metrics_interval_s=60)
        assert client.wait_ready(5.0)
        plain = make_client(publisher.url)
        assert plain.wait_ready(5.0)
        key = split_flag(client)
        for user in range(60):
            client.variation(key, {"key": f"user-{user}", "plan": "paid"}, None)
        assert sum(client.status().exposures[key].values()) == 60
        sync = client._sync
        assert sync is not None
        assert sync.reporter is not None
        assert sync.reporter.flush()
        for user in range(40):
            client.variation(key, {"key": f"user-{user}", "plan": "paid"}, None)
        totals = client.status().exposures[key]
        assert sum(totals.values()) == 100
        assert plain.status().exposures == {}


def split_flag(client: FlagClient) -> str:
    """A flag of the base document whose variant depends on the context (it is counted)."""
    for key in client.snapshot:
        flag = client.snapshot.flag(key)
        if flag is not None and flag.select is not None:
            return key
    raise AssertionError("the base document has no context-dependent flag")


class TestExposureTotalsAcrossSwaps:
    """Totals count each evaluation once, whatever snapshots were swapped in between."""

    def test_carried_over_flag_is_counted_once(self) -> None:
        """A flag compiled in one snapshot and carried into the next (another flag
        changed) is both live and retired: its exposures are counted once, before and
        after `take_metrics` drains them."""
        client = MeteredFlagClient(Snapshot.build(load_flags(base_document())))
        key = split_flag(client)
        for user in range(10):
            client.variation(key, {"key": f"user-{user}", "plan": "paid"}, None)
        other = next(k for k in client.snapshot if k != key and k not in linked(client, key))
        updated, _ = client.snapshot.apply(
            flags={other: client.snapshot.definitions.flags[other]}, revision=2
        )
        client._install(updated)
        assert updated.flag(key) is client.snapshot.flag(key)  # carried over, not recompiled
        assert sum(client.status().exposures[key].values()) == 10
        drained = client.take_metrics()
        assert sum(stat.count for (flag, _, _), stat in drained.items() if flag == key) == 10
        for user in range(5):
            client.variation(key, {"key": f"user-{user}", "plan": "paid"}, None)
        assert sum(client.status().exposures[key].values()) == 15


def linked(client: FlagClient, key: str) -> set[str]:
    """`key`'s prerequisites and the flags requiring it (changing one may recompile `key`)."""
    flags = client.snapshot.definitions.flags
    requiring = {other for other, flag in flags.items() if key in flag.requires}
    return requiring | set(flags[key].requires)
