"""Writers racing on one flag (FAULTS.md S29, S33): controllers fenced by their lease, human
changes that pause a plan, and kill switches that never lose to a concurrent writer.

Everything runs on real server processes: two controllers whose leases really expire, a
human's write landing between a controller's decision and its write (a hook on the
controller's write path, the same moment a SIGSTOP would freeze it), and 8 threads with
their own publishers hammering one flag.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Final

import pytest
import redis

from flagsync.controller import RolloutController
from flagsync.errors import ConflictError, FlagsyncError
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from tests.faults.figures import record
from tests.integration.conftest import PublisherFactory
from tests.logs import captured_logs, events
from tests.rollout.support import (
    KEY,
    Samples,
    healthy,
    make_plan,
    model_document,
    rates,
    run_cli,
    weight_of,
    write_metrics,
)

WRITERS: Final = 8
CALLS_PER_WRITER: Final = 600
"""4,800 calls: before the fix, 3-6 of 4,000 raised `ConflictError` here."""


class TestKillUnderContention:
    """S33: a kill switch without an expected version never fails because of a race."""

    def test_kills_and_enables_of_8_concurrent_writers_all_succeed(
        self, server: ServerProcess, server_kind: str, make_publisher: PublisherFactory
    ) -> None:
        """8 writers alternating kill and enable on one flag: every call returns a revision."""
        make_publisher(server.url).apply(model_document())
        writers = [make_publisher(server.url, actor=f"writer-{n}") for n in range(WRITERS)]
        failures: list[BaseException] = []
        revisions: list[int] = []
        start = threading.Barrier(WRITERS)

        def hammer(writer: Publisher) -> None:
            start.wait(timeout=10)
            for call in range(CALLS_PER_WRITER):
                try:
                    if call % 2:
                        revisions.append(writer.enable(KEY, reason="contention test"))
                    else:
                        revisions.append(writer.kill(KEY, reason="contention test"))
                except FlagsyncError as error:
                    failures.append(error)

        threads = [threading.Thread(target=hammer, args=(writer,)) for writer in writers]
        started = time.monotonic()
        with captured_logs() as logs:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
        elapsed_s = time.monotonic() - started
        raced = events(logs, "intent_write_raced")

        assert not any(thread.is_alive() for thread in threads)
        assert failures == []
        assert len(revisions) == WRITERS * CALLS_PER_WRITER
        assert raced, "the writers never raced: the test proved nothing"
        record(
            "S33",
            server_kind,
            recovery_s=None,
            calls=len(revisions),
            failed=len(failures),
            retried=len(raced),
            most_attempts=max(entry["attempt"] for entry in raced) + 1,
            elapsed_s=round(elapsed_s, 2),
        )

    def test_a_kill_with_an_expected_version_still_reports_a_conflict(
        self, server: ServerProcess, make_publisher: PublisherFactory
    ) -> None:
        """The dashboard's kill, based on a version another writer has since replaced, fails."""
        dashboard = make_publisher(server.url, actor="dashboard")
        dashboard.apply(model_document())
        stored = dashboard.get(KEY)
        assert stored is not None
        make_publisher(server.url, actor="other").ramp(KEY, "candidate", 30.0)

        with pytest.raises(ConflictError) as refused:
            dashboard.kill(KEY, expected_version=stored.version)

        assert (refused.value.kind, refused.value.key) == ("flag", KEY)
        assert refused.value.expected_version == stored.version
        after = dashboard.get(KEY)
        assert after is not None
        assert after.flag.enabled


CONTROLLERS: Final = "rollout-controllers"
"""The actor every controller of these tests writes as (one service account)."""


class PausingPublisher(Publisher):
    """A publisher that runs `before_write` once, right before its next write script:
    the moment a controller that already decided is frozen (GC pause, SIGSTOP)."""

    before_write: Callable[[], object] | None = None

    def _write(self, *args: Any, **kwargs: Any) -> int:
        hook, self.before_write = self.before_write, None
        if hook is not None:
            hook()
        return super()._write(*args, **kwargs)


def breached() -> Samples:
    """The candidate rated down 4 times as often as the control, on plenty of samples."""
    return {
        ("candidate", "thumbs_down"): rates(400, 80),
        ("current", "thumbs_down"): rates(400, 20),
    }


@pytest.fixture
def store(server: ServerProcess, make_publisher: PublisherFactory) -> Publisher:
    """The controllers' publisher, with the model flag serving `current` to everyone."""
    publisher = make_publisher(server.url, actor=CONTROLLERS)
    publisher.apply(model_document())
    return publisher


@pytest.fixture
def pausing(server: ServerProcess, namespace: str) -> Iterator[PausingPublisher]:
    """A controller's publisher whose next write can be held back by a hook."""
    publisher = PausingPublisher(server.url, namespace, CONTROLLERS)
    try:
        yield publisher
    finally:
        publisher.close()


@pytest.fixture
def feed(raw: redis.Redis, namespace: str) -> Callable[[Samples], None]:
    """`feed(samples)`: append a metrics entry for the model flag, as a worker's flush does."""
    return partial(write_metrics, raw, namespace, KEY)


@pytest.fixture
def alice(server: ServerProcess, make_publisher: PublisherFactory) -> Publisher:
    """A human operator's publisher."""
    return make_publisher(server.url, actor="alice")


class TestStaleLeaseHolder:
    """S29: a controller frozen between deciding and writing, past its lease TTL."""

    def test_a_stale_advance_after_the_new_holder_rolled_back_is_refused(
        self, store: Publisher, pausing: PausingPublisher, feed: Callable[[Samples], None]
    ) -> None:
        """The frozen controller's "advance to 50 %" is refused by the write script; the
        successor's rollback and its rolled_back state stand."""
        frozen = RolloutController(pausing, KEY, owner="frozen", lease_ttl_s=0.3)
        successor = RolloutController(store, KEY, owner="successor", lease_ttl_s=5.0)
        frozen.set_plan(make_plan())
        assert frozen.tick().decision == "start"
        feed(healthy())
        successor_decisions = []

        def freeze_past_the_lease() -> None:
            time.sleep(0.45)  # the 0.3 s lease expires while frozen
            feed(breached())
            successor_decisions.append(successor.tick())

        pausing.before_write = freeze_past_the_lease
        stale = frozen.tick()

        assert [d.decision for d in successor_decisions] == ["rollback"]
        assert stale.decision == "fenced"
        stored = store.get(KEY)
        assert stored is not None
        assert not stored.flag.enabled
        assert weight_of(store) == 20.0
        assert frozen.state().status == "rolled_back"
        assert [e.op for e in store.history(KEY, limit=3)] == ["kill", "ramp", "apply"]
        assert [d["decision"] for d in frozen.decisions()] == ["rollback", "start"]

    def test_a_stale_write_is_refused_inside_the_script_even_with_the_flag_unchanged(
        self, store: Publisher, pausing: PausingPublisher, feed: Callable[[Samples], None]
    ) -> None:
        """A successor that only took the lease (and wrote nothing) still fences the frozen
        controller: the refusal is the script's lease guard, not a version check."""
        frozen = RolloutController(pausing, KEY, owner="frozen", lease_ttl_s=0.3)
        successor = RolloutController(store, KEY, owner="successor", lease_ttl_s=5.0)
        frozen.set_plan(make_plan(min_samples=50))
        assert frozen.tick().decision == "start"
        version = store.get(KEY)
        feed(healthy())

        def freeze_past_the_lease() -> None:
            time.sleep(0.45)
            store.client.delete(f"{store.keys.prefix}:metrics:{KEY}")  # successor will hold
            assert successor.tick().decision == "hold"

        pausing.before_write = freeze_past_the_lease
        with captured_logs() as logs:
            stale = frozen.tick()

        assert stale.decision == "fenced"
        assert "the lease moved" in stale.note
        assert [e["owner"] for e in events(logs, "rollout_write_fenced")] == ["frozen"]
        after = store.get(KEY)
        assert version is not None
        assert after is not None
        assert after.version == version.version
        assert weight_of(store) == 20.0
        assert frozen.tick().decision == "not_leader"


class TestHumanChanges:
    """S29: a human's ramp, kill or enable always wins; the plan pauses, visibly."""

    def test_a_human_ramp_during_a_tick_pauses_the_plan(
        self,
        pausing: PausingPublisher,
        alice: Publisher,
        server: ServerProcess,
        namespace: str,
        feed: Callable[[Samples], None],
    ) -> None:
        """A ramp to 0 % landing between the controller's decision and its write stands;
        the plan pauses, `rollout status` says by whom, and resumes only when told to."""
        store = pausing
        pausing.apply(model_document())
        controller = RolloutController(pausing, KEY, owner="controller", lease_ttl_s=30.0)
        controller.set_plan(make_plan())
        assert controller.tick().decision == "start"
        feed(healthy())
        pausing.before_write = lambda: alice.ramp(KEY, "candidate", 0.0, reason="bad answers")

        paused = controller.tick()
        again = controller.tick()
        shown = run_cli(server.url, namespace, "rollout", "status", KEY)

        assert paused.decision == "paused"
        assert "changed by alice at " in paused.note
        assert weight_of(store) == 0.0
        assert (again.decision, weight_of(store)) == ("stopped", 0.0)
        assert "rollout is paused: changed by alice" in again.note
        state = controller.state()
        assert (state.status, state.paused_by) == ("paused", "alice")
        assert shown.returncode == 0, shown.stderr
        assert "paused: changed by alice at " in shown.stdout
        assert "flagsync rollout resume model" in shown.stdout

        resumed = run_cli(server.url, namespace, "rollout", "resume", KEY)
        restarted = controller.tick()

        assert resumed.returncode == 0, resumed.stderr
        assert controller.state().status == "running"
        assert (restarted.decision, weight_of(store)) == ("start", 20.0)

    def test_a_human_ramp_between_ticks_is_not_restarted(
        self, store: Publisher, alice: Publisher, feed: Callable[[Samples], None]
    ) -> None:
        """After a human ramps to 0 % between ticks, the next tick pauses instead of
        starting the ramp again at the first step."""
        controller = RolloutController(store, KEY, owner="controller", lease_ttl_s=30.0)
        controller.set_plan(make_plan())
        assert controller.tick().decision == "start"
        alice.ramp(KEY, "candidate", 0.0, reason="rolling back by hand")
        feed(healthy())

        decisions = [controller.tick() for _ in range(3)]

        assert [d.decision for d in decisions] == ["paused", "stopped", "stopped"]
        assert weight_of(store) == 0.0
        assert store.history(KEY, limit=1)[0].actor == "alice"

    def test_a_human_enable_after_a_rollback_is_not_undone(
        self, store: Publisher, alice: Publisher, feed: Callable[[Samples], None]
    ) -> None:
        """The controller killed the flag on a breach; a human enables it again; no tick
        kills it again or ramps it."""
        controller = RolloutController(store, KEY, owner="controller", lease_ttl_s=30.0)
        controller.set_plan(make_plan())
        assert controller.tick().decision == "start"
        feed(breached())
        assert controller.tick().decision == "rollback"
        alice.enable(KEY, reason="false alarm")
        feed(breached())

        decisions = [controller.tick() for _ in range(3)]

        assert {d.decision for d in decisions} == {"stopped"}
        stored = store.get(KEY)
        assert stored is not None
        assert stored.flag.enabled
        assert weight_of(store) == 20.0
        assert store.history(KEY, limit=1)[0].actor == "alice"

    def test_a_controllers_own_unsaved_write_is_adopted_not_paused(
        self, store: Publisher, feed: Callable[[Samples], None]
    ) -> None:
        """A controller that died after its flag write but before saving its state left a
        change the log shows as a controller's: the next controller carries on from it."""
        first = RolloutController(store, KEY, owner="first", lease_ttl_s=30.0)
        first.set_plan(make_plan())
        assert first.tick().decision == "start"
        store.ramp(KEY, "candidate", 50.0, reason="rollout: advance (died before saving)")
        first.release()
        second = RolloutController(store, KEY, owner="second", lease_ttl_s=30.0)

        held = second.tick()

        assert (held.decision, held.percent) == ("hold", 50.0)
        assert second.state().status == "running"
