"""An operator's pause, resume and abort of a guarded rollout, on real servers: a pause
holds the step against a controller that is running (leased elsewhere) from its next
tick, resume lets it carry on, abort stops it and serves the variant to nobody in the
plan's rule; each is in the change log with the operator and the reason, and the
`flagsync rollout pause|resume|abort` commands do the same from a shell.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from flagsync._metrics_window import MetricsWindow
from flagsync.controller import Decision, RolloutController, run_all
from flagsync.errors import FlagsyncError
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from tests.integration.conftest import PublisherFactory
from tests.integration.support import wait_until
from tests.rollout.support import (
    KEY,
    Feed,
    healthy,
    make_plan,
    model_document,
    run_cli,
    weight_of,
)


@pytest.fixture
def operator(
    server: ServerProcess, make_publisher: PublisherFactory, store: Publisher
) -> RolloutController:
    """The model flag's rollout as operator `olga` sees it (her own connection)."""
    return RolloutController(make_publisher(server.url, actor="olga"), KEY, owner="olga-cli")


class RunningController:
    """`run_all` on its own thread and connection (owner `ctl`), as `flagsync controller`
    runs, feeding healthy samples after each decision; stopped and joined by `stop()`."""

    def __init__(self, publisher: Publisher, feed: Feed) -> None:
        self.decisions: list[Decision] = []
        self._feed = feed
        self._stop = threading.Event()
        self._publisher = publisher
        self._thread = threading.Thread(target=self._run, name="test-controller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        def decided(_key: str, made: Decision) -> None:
            self.decisions.append(made)
            time.sleep(0.005)  # stream ids have millisecond resolution
            self._feed(healthy())

        run_all(
            self._publisher,
            tick_s=0.02,
            timeout_s=30.0,
            on_decision=decided,
            should_stop=self._stop.is_set,
        )

    def seen(self, decision: str) -> bool:
        """Whether the controller reported `decision`."""
        return any(made.decision == decision for made in self.decisions)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the controller thread did not stop"


@pytest.fixture
def running(
    server: ServerProcess, make_publisher: PublisherFactory, store: Publisher, feed: Feed
) -> Iterator[Callable[[], RunningController]]:
    """`running()`: start a controller loop (stopped after the test)."""
    started: list[RunningController] = []

    def start() -> RunningController:
        loop = RunningController(make_publisher(server.url, actor="controller"), feed)
        started.append(loop)
        return loop

    try:
        yield start
    finally:
        for loop in started:
            loop.stop()


def rollout_entries(publisher: Publisher) -> list[tuple[str, str, str]]:
    """(op, actor, reason) of the change log's rollout entries for the flag, oldest first."""
    return [
        (entry.op, entry.actor, entry.reason)
        for entry in reversed(publisher.history(KEY, limit=50))
        if entry.kind == "rollout"
    ]


class TestPause:
    """A pause holds the step, even against a controller already running elsewhere."""

    def test_a_running_controller_holds_its_step_until_resumed(
        self,
        store: Publisher,
        operator: RolloutController,
        running: Callable[[], RunningController],
        feed: Feed,
    ) -> None:
        """Paused at 20 %, a running controller with healthy data writes nothing more;
        resumed, the same controller carries on to 100 %."""
        operator.set_plan(make_plan(steps=[20.0, 50.0, 100.0], hold_s=0.3))
        loop = running()
        assert wait_until(lambda: loop.seen("start"), 10), loop.decisions
        version = store.get(KEY).version  # type: ignore[union-attr]

        outcome = operator.pause("checking the cost dashboard")
        paused_at = time.monotonic()
        assert wait_until(lambda: loop.seen("stopped"), 5), loop.decisions
        while time.monotonic() - paused_at < 1.0:  # > 3 holds of healthy data
            time.sleep(0.05)

        assert outcome.state.status == "paused"
        assert weight_of(store) == 20.0
        assert store.get(KEY).version == version  # type: ignore[union-attr]
        assert operator.state().status == "paused"
        assert "paused by olga" in operator.state().pause_summary
        assert not loop.seen("advance")

        operator.resume("cost looks fine")

        def fed_and_done() -> bool:  # the resumed step counts samples from its restart
            feed(healthy())
            return weight_of(store) == 100.0

        assert wait_until(fed_and_done, 15, interval_s=0.1), loop.decisions
        assert rollout_entries(store) == [
            ("pause", "olga", "checking the cost dashboard"),
            ("resume", "olga", "cost looks fine"),
        ]
        assert [d["decision"] for d in operator.decisions()][-3:] == ["resume", "pause", "start"]

    def test_a_pause_while_a_controller_decides_refuses_its_write(
        self, store: Publisher, operator: RolloutController, feed: Feed
    ) -> None:
        """The pause bumps the lease version in the same script: a controller that read
        the state as running and holds the older token has its ramp refused (fenced)."""

        class PausedWhileDeciding(RolloutController):
            """Reads its metrics window while the operator pauses (the race, made certain)."""

            def read_window(self, since_ms: int) -> MetricsWindow:
                window = super().read_window(since_ms)
                operator.pause("hold on")
                return window

        controller = PausedWhileDeciding(store, KEY, owner="ctl", lease_ttl_s=30.0)
        operator.set_plan(make_plan())
        assert controller.tick().decision == "start"  # reads no window
        feed(healthy())

        decision = controller.tick()

        assert decision.decision == "fenced", decision
        assert weight_of(store) == 20.0
        assert operator.state().status == "paused"
        assert controller.tick().decision == "stopped"

    def test_only_a_running_rollout_pauses_and_only_a_paused_one_resumes(
        self, store: Publisher, operator: RolloutController
    ) -> None:
        """Pausing twice or resuming a running rollout is refused, saying its status, and
        writes nothing to the change log."""
        operator.set_plan(make_plan())
        with pytest.raises(FlagsyncError, match="is running, not paused: nothing to resume"):
            operator.resume("no")
        operator.pause("first")
        with pytest.raises(FlagsyncError, match="is paused, not running: nothing to pause"):
            operator.pause("second")

        assert rollout_entries(store) == [("pause", "olga", "first")]

    def test_a_flag_without_a_plan_says_so(self, store: Publisher) -> None:
        """No plan: the error names the command that makes one."""
        with pytest.raises(FlagsyncError, match="no rollout plan for 'model'"):
            RolloutController(store, KEY).pause("x")


class TestAbort:
    """Abort stops the rollout and takes the variant back to 0 % in the plan's rule."""

    def test_abort_ramps_the_variant_to_zero_and_the_controller_stops(
        self,
        store: Publisher,
        operator: RolloutController,
        running: Callable[[], RunningController],
    ) -> None:
        """Aborted mid-ramp, the variant serves nobody, the running controller reports the
        rollout stopped, and both the command and the ramp are in the change log."""
        operator.set_plan(make_plan(steps=[20.0, 50.0, 100.0], hold_s=60.0))
        loop = running()
        assert wait_until(lambda: weight_of(store) == 20.0, 10), loop.decisions

        outcome = operator.abort("candidate too expensive")

        assert (outcome.state.status, outcome.changed) == ("aborted", True)
        assert weight_of(store) == 0.0
        assert wait_until(lambda: loop.seen("stopped"), 5), loop.decisions
        newest = store.history(KEY, limit=1)[0]
        assert (newest.kind, newest.op, newest.actor, newest.revision) == (
            "flag",
            "ramp",
            "olga",
            outcome.revision,
        )
        assert newest.reason == "rollout aborted: candidate too expensive"
        assert rollout_entries(store) == [("abort", "olga", "candidate too expensive")]
        time.sleep(0.2)  # ten controller ticks: none writes
        assert weight_of(store) == 0.0
        assert operator.decisions(1)[0]["decision"] == "abort"

    def test_abort_in_a_rule_touches_only_that_rule(
        self, store: Publisher, operator: RolloutController
    ) -> None:
        """A plan on a rule is aborted in that rule; the fallthrough keeps its split."""
        document = model_document()
        flag = document["flags"][KEY]
        flag["rules"] = [
            {
                "name": "paid",
                "when": [{"attr": "plan", "op": "in", "values": ["paid"]}],
                "serve": {"rollout": {"candidate": 30, "current": 70}},
            }
        ]
        flag["default"] = {"rollout": {"candidate": 10, "current": 90}}
        store.apply(document)
        operator.set_plan(make_plan(rule="paid"))

        outcome = operator.abort("")

        assert outcome.changed
        assert weight_of(store, rule="paid") == 0.0
        assert weight_of(store) == 10.0
        assert store.history(KEY, limit=1)[0].reason == "rollout aborted"


class TestCommands:
    """`flagsync rollout pause|resume|abort KEY --reason`, as an operator runs them."""

    def test_pause_resume_and_abort_from_the_shell(
        self, server: ServerProcess, namespace: str, store: Publisher
    ) -> None:
        """Each command says what it did, and `history` lists them with actor and reason."""
        RolloutController(store, KEY).set_plan(make_plan())
        common = ("--actor", "bob")

        paused = run_cli(server.url, namespace, "rollout", "pause", KEY, "--reason", "p", *common)
        status = run_cli(server.url, namespace, "rollout", "status", KEY)
        resumed = run_cli(server.url, namespace, "rollout", "resume", KEY, "--reason", "r", *common)
        again = run_cli(server.url, namespace, "rollout", "resume", KEY, *common)
        aborted = run_cli(server.url, namespace, "rollout", "abort", KEY, "--reason", "a", *common)
        history = run_cli(server.url, namespace, "history", KEY)

        assert paused.returncode == 0, paused.stderr
        assert "model: rollout paused by bob" in paused.stdout
        assert "paused: paused by bob at" in status.stdout
        assert resumed.returncode == 0, resumed.stderr
        assert again.returncode != 0
        assert "is running, not paused" in again.stderr
        assert aborted.returncode == 0, aborted.stderr
        assert "rollout aborted by bob; variant already at 0%" in aborted.stdout
        assert rollout_entries(store) == [("pause", "bob", "p"), ("resume", "bob", "r"),
                                          ("abort", "bob", "a")]  # fmt: skip
        lines = history.stdout.splitlines()
        assert any("pause" in line and "rollout model" in line and "(p)" in line for line in lines)
        assert RolloutController(store, KEY).state().status == "aborted"
