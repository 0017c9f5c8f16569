"""The rollout controller on real servers (issue #7): it advances on healthy data, holds on
too few samples, rolls back on each kind of guard (killing or reverting, with the numbers
in the change log), completes, stops on a killed flag, acts only while it holds the
flag's lease, and survives a crash by re-deriving the step from the flag itself.

Ticks are driven by hand (`tick()`), with no hold time unless a test is about it, so the
suite never sleeps through a step. Metrics come from a really connected client in the
first test and, elsewhere, from `tests.rollout.support.write_metrics`, which appends
what a client's reporter appends.
"""

from __future__ import annotations

import json
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import redis
import yaml

from flagsync import FlagClient
from flagsync.controller import Decision, RolloutController
from flagsync.errors import FlagsyncError, InvalidFlagError
from flagsync.metrics import EXPOSURES, HISTOGRAM_BASE
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.store import StoreKeys
from tests.integration.conftest import ClientFactory
from tests.integration.support import model_flag, wait_until
from tests.rollout.support import (
    COST_GUARD,
    KEY,
    LATENCY_GUARD,
    RATE_GUARD,
    Feed,
    healthy,
    make_plan,
    rates,
    run_cli,
    weight_of,
)


@pytest.fixture
def controller(store: Publisher) -> RolloutController:
    """A controller for the model flag (a lease far longer than any test)."""
    return RolloutController(store, KEY, owner="tests", lease_ttl_s=30.0)


def version_of(publisher: Publisher) -> int:
    """The stored version of the model flag."""
    stored = publisher.get(KEY)
    assert stored is not None
    return stored.version


def has_revision(client: FlagClient, revision: int) -> bool:
    """Whether `client` serves `revision` (or a later one)."""
    return client.revision >= revision


def tick_until_acting(controller: RolloutController, timeout_s: float) -> Decision:
    """Tick every 20 ms until `controller` holds the lease and decides something."""
    deadline = time.monotonic() + timeout_s
    while True:
        decision = controller.tick()
        if decision.decision != "not_leader" or time.monotonic() >= deadline:
            return decision
        time.sleep(0.02)


class Traffic:
    """Requests through a connected client: evaluate the flag, then track its outcomes.

    Every 20th request of each variant is rated down, so both variants have the same
    thumbs-down rate whatever the bucketing; the candidate is cheaper and fast enough.
    """

    def __init__(self, client: FlagClient) -> None:
        self.client = client
        self.served: dict[str, int] = {}

    def send(self, users: int) -> None:
        """One request from each of `users` users, half of them on the paid plan."""
        for index in range(users):
            context = {"key": f"user-{index}", "plan": "paid" if index % 2 else "free"}
            model = self.client.string_value(KEY, context, "caller-default")
            variant = "candidate" if model == "gpt-4.1" else "current"
            seen = self.served[variant] = self.served.get(variant, 0) + 1
            self.client.track(KEY, context, "thumbs_down", 1.0 if seen % 20 == 0 else 0.0)
            self.client.track(KEY, context, "cost", 0.004 if variant == "candidate" else 0.005)
            self.client.track(KEY, context, "latency_ms", 700.0 + index % 7 * 60)


class TestSetPlan:
    """A plan is checked against the flag before it is stored."""

    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            ({"rule": "no-such-rule"}, ("plans.model.rule", "flag has no rule 'no-such-rule'")),
            ({"variant": "shadow"}, ("plans.model", "flag has no variant 'shadow'")),
        ],
        ids=["rule", "variant"],
    )
    def test_a_plan_naming_what_the_flag_lacks_is_refused(
        self, controller: RolloutController, fields: dict[str, str], expected: tuple[str, str]
    ) -> None:
        """A rule or variant the flag does not have is refused, and no plan is stored."""
        with pytest.raises(InvalidFlagError) as error:
            controller.set_plan(make_plan(**fields))

        assert [(issue.path, issue.message) for issue in error.value.issues] == [expected]
        with pytest.raises(FlagsyncError, match="no rollout plan"):
            controller.plan()

    def test_a_new_plan_starts_afresh(
        self, store: Publisher, controller: RolloutController
    ) -> None:
        """Setting a plan again resets the state of a finished rollout."""
        controller.set_plan(make_plan())
        controller.tick()
        store.kill(KEY)
        assert controller.tick().decision == "stopped"

        controller.set_plan(make_plan(steps=[10.0, 100.0]))

        assert (controller.state().status, controller.state().step) == ("running", -1)
        assert controller.plan().steps == [10.0, 100.0]


class TestAdvance:
    """On healthy data the controller ramps step by step to the end."""

    def test_a_connected_clients_metrics_ramp_the_rule_to_completion(
        self, server: ServerProcess, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """Exposures and outcomes tracked by a real client carry a rule's ramp to 100 %."""
        publisher.apply({"flags": {KEY: model_flag(default="current")}})
        publisher.ramp(KEY, "candidate", 0, "paid-ramp")
        plan = make_plan(
            rule="paid-ramp",
            steps=[25.0, 50.0, 100.0],
            min_samples=30,
            guards=[RATE_GUARD, COST_GUARD, LATENCY_GUARD],
        )
        controller = RolloutController(publisher, KEY, owner="tests")
        controller.set_plan(plan)
        client = make_client(server.url, exposures=True, metrics_interval_s=0.05)
        assert client.wait_ready(5)
        traffic = Traffic(client)

        made: list[Decision] = []
        for _ in range(len(plan.steps) + 1):
            decision = controller.tick()
            made.append(decision)
            if decision.revision is not None:
                assert wait_until(partial(has_revision, client, decision.revision), 5)
            if decision.decision == "complete":
                break
            step_started_ms = controller.state().step_started_ms
            traffic.send(400)

            def flushed(since_ms: int = step_started_ms) -> bool:
                window = controller.window(since_ms)
                return all(
                    (variant, "thumbs_down") in window
                    and window[(variant, "thumbs_down")].count >= plan.min_samples
                    for variant in ("candidate", "current")
                )

            assert wait_until(flushed, 5), controller.window(step_started_ms)

        assert [(d.decision, d.percent) for d in made] == [
            ("start", 25.0),
            ("advance", 50.0),
            ("advance", 100.0),
            ("complete", 100.0),
        ]
        assert all(r.verdict == "pass" for d in made[1:] for r in d.guards)
        assert weight_of(publisher, rule="paid-ramp") == 100.0
        assert controller.state().status == "completed"
        window = controller.window(0)
        assert window[("candidate", EXPOSURES)].count > 0
        assert window[("current", EXPOSURES)].count > 0
        advance = publisher.history(KEY, limit=1)[0]
        assert advance.reason.startswith("rollout: advance: pass: " + RATE_GUARD)

    def test_each_step_is_judged_on_its_own_data(
        self, store: Publisher, controller: RolloutController, feed: Feed
    ) -> None:
        """Metrics flushed before a step began do not count for it: the new step holds."""
        controller.set_plan(make_plan())
        assert controller.tick().decision == "start"
        feed(healthy())
        time.sleep(0.005)  # stream ids have millisecond resolution
        assert controller.tick().decision == "advance"
        time.sleep(0.005)

        decision = controller.tick()

        assert (decision.decision, decision.percent) == ("hold", 50.0)
        assert [r.verdict for r in decision.guards] == ["insufficient"]
        assert weight_of(store) == 50.0

    def test_a_step_advances_only_after_its_hold_time(
        self, store: Publisher, controller: RolloutController, feed: Feed
    ) -> None:
        """Passing guards advance only once the step has held for `hold_s`."""
        # A hold long enough that a loaded machine's stall between the first two ticks
        # cannot make the "early" tick late.
        controller.set_plan(make_plan(hold_s=1.5))
        assert controller.tick().decision == "start"
        feed(healthy())

        early = controller.tick()
        time.sleep(1.5)
        late = controller.tick()

        assert early.decision == "hold"
        assert early.note.startswith("holding ")
        assert [r.verdict for r in early.guards] == ["pass"]
        assert (late.decision, late.percent) == ("advance", 50.0)
        assert weight_of(store) == 50.0


class TestHold:
    """Too few samples on either side: hold, write nothing."""

    @pytest.mark.parametrize(
        ("candidate", "current"), [(49, 500), (500, 49)], ids=["candidate", "control"]
    )
    def test_too_few_samples_hold_the_step(
        self,
        store: Publisher,
        controller: RolloutController,
        feed: Feed,
        candidate: int,
        current: int,
    ) -> None:
        """Below min_samples on one side the guard is insufficient and the weight stays."""
        controller.set_plan(make_plan(min_samples=50))
        assert controller.tick().decision == "start"
        version = version_of(store)
        # Even a clear regression is not acted on with too few samples.
        feed(
            {
                ("candidate", "thumbs_down"): rates(candidate, candidate // 2),
                ("current", "thumbs_down"): rates(current, 0),
            }
        )

        decision = controller.tick()

        assert decision.decision == "hold"
        assert decision.note == "insufficient samples for 1 guard(s) (min 50)"
        assert decision.revision is None
        [result] = decision.guards
        assert (result.verdict, result.left_samples, result.right_samples) == (
            "insufficient",
            candidate,
            current,
        )
        assert weight_of(store) == 20.0
        assert version_of(store) == version
        assert controller.state().status == "running"

    def test_repeated_identical_holds_are_logged_once(self, controller: RolloutController) -> None:
        """The decision log keeps one entry for a run of holds with the same note."""
        controller.set_plan(make_plan())
        controller.tick()

        holds = [controller.tick() for _ in range(3)]

        assert {d.decision for d in holds} == {"hold"}
        assert [d["decision"] for d in controller.decisions()] == ["hold", "start"]


_BREACHES: dict[str, tuple[str, dict[tuple[str, str], list[float]], str]] = {
    "rate-vs-control": (
        RATE_GUARD,
        {
            ("candidate", "thumbs_down"): rates(200, 60),
            ("current", "thumbs_down"): rates(200, 10),
        },
        "(0.3 [n=200] vs 0.055 [n=200])",
    ),
    "per-request-constant": (
        COST_GUARD,
        {("candidate", "cost"): [0.008] * 200, ("current", "cost"): [0.004] * 200},
        "(0.008 [n=200] vs 0.005)",
    ),
    "p95-percentile": (
        LATENCY_GUARD,
        {("candidate", "latency_ms"): [2000.0 + index for index in range(200)]},
        # the 190th of 200 values, 2189, reported as its histogram bucket's upper edge
        f"({HISTOGRAM_BASE**45:.4g} [n=200] vs 1500)",
    ),
}


class TestRollback:
    """Any breach rolls back at once, by the kill switch or by reverting to 0 %."""

    @pytest.mark.parametrize("kind", list(_BREACHES))
    @pytest.mark.parametrize("on_breach", ["kill", "revert"])
    def test_a_breach_rolls_back(
        self,
        store: Publisher,
        controller: RolloutController,
        feed: Feed,
        kind: str,
        on_breach: str,
    ) -> None:
        """A breached guard rolls back, with the guard and its numbers in the change log."""
        guard, samples, numbers = _BREACHES[kind]
        controller.set_plan(make_plan(guards=[guard], on_breach=on_breach))
        assert controller.tick().decision == "start"
        feed(samples)

        decision = controller.tick()

        assert (decision.decision, decision.percent) == ("rollback", 20.0)
        assert [r.verdict for r in decision.guards] == ["breach"]
        assert decision.revision == store.revision()[1]
        stored = store.get(KEY)
        assert stored is not None
        if on_breach == "kill":
            assert not stored.flag.enabled
            assert weight_of(store) == 20.0
        else:
            assert stored.flag.enabled
            assert weight_of(store) == 0.0
        change = store.history(KEY, limit=1)[0]
        assert change.revision == decision.revision
        assert change.reason == f"rollout: guard breached: {guard}  {numbers}"
        assert controller.state().status == "rolled_back"
        after = controller.tick()
        assert (after.decision, after.note) == ("stopped", "rollout is rolled_back")

    def test_one_breached_guard_is_enough(
        self, store: Publisher, controller: RolloutController, feed: Feed
    ) -> None:
        """One breach among passing guards rolls back; the reason names only the breach."""
        controller.set_plan(make_plan(guards=[RATE_GUARD, COST_GUARD, LATENCY_GUARD]))
        controller.tick()
        samples = healthy(200)
        samples[("candidate", "cost")] = [0.009] * 200
        feed(samples)

        decision = controller.tick()

        assert decision.decision == "rollback"
        assert [r.verdict for r in decision.guards] == ["pass", "breach", "pass"]
        reason = store.history(KEY, limit=1)[0].reason
        assert COST_GUARD in reason
        assert RATE_GUARD not in reason
        assert LATENCY_GUARD not in reason


class TestCompleteAndStop:
    """The rollout ends: completed after the last step, or stopped by a kill."""

    def test_the_rollout_completes_after_the_last_step(
        self, store: Publisher, controller: RolloutController, feed: Feed
    ) -> None:
        """After the last step holds, the rollout completes without another write."""
        candidate_only = {key: values for key, values in healthy().items() if key[0] == "candidate"}
        controller.set_plan(make_plan(steps=[50.0, 100.0], guards=[COST_GUARD, LATENCY_GUARD]))
        made = [controller.tick()]
        for _ in range(2):
            feed(candidate_only)
            made.append(controller.tick())
        version = version_of(store)

        after = controller.tick()

        assert [(d.decision, d.percent) for d in made] == [
            ("start", 50.0),
            ("advance", 100.0),
            ("complete", 100.0),
        ]
        assert made[-1].revision is None
        assert weight_of(store) == 100.0
        assert controller.state().status == "completed"
        assert (after.decision, after.note) == ("stopped", "rollout is completed")
        assert version_of(store) == version

    def test_a_killed_flag_stops_the_rollout(
        self, store: Publisher, controller: RolloutController, feed: Feed
    ) -> None:
        """Killing the flag by hand stops the rollout for good; the controller writes nothing."""
        controller.set_plan(make_plan())
        assert controller.tick().decision == "start"
        kill_revision = store.kill(KEY, reason="operator: stop everything")
        feed(healthy())

        decision = controller.tick()
        store.enable(KEY, reason="operator: back on, by hand")
        final = controller.run(tick_s=0.01, timeout_s=1.0)

        assert (decision.decision, decision.note) == ("stopped", "the flag is killed")
        assert decision.revision is None
        assert store.history(KEY, limit=2)[1].revision == kill_revision
        assert controller.state().status == "stopped"
        assert (final.decision, final.note) == ("stopped", "rollout is stopped")
        assert weight_of(store) == 20.0


class TestLease:
    """One controller acts per flag: the holder of its lease."""

    def test_only_the_lease_holder_acts(self, store: Publisher, feed: Feed) -> None:
        """A second controller reports not_leader and changes nothing while the first acts."""
        first = RolloutController(store, KEY, owner="first", lease_ttl_s=5.0)
        second = RolloutController(store, KEY, owner="second", lease_ttl_s=5.0)
        first.set_plan(make_plan())
        assert first.tick().decision == "start"
        version = version_of(store)
        feed(healthy())

        refused = [second.tick() for _ in range(3)]
        assert version_of(store) == version
        advanced = first.tick()

        assert {(d.decision, d.note) for d in refused} == {
            ("not_leader", "another controller acts")
        }
        assert (advanced.decision, advanced.percent) == ("advance", 50.0)
        assert [d["decision"] for d in first.decisions()] == ["advance", "start"]

    def test_another_controller_takes_over_when_the_lease_expires(
        self, store: Publisher, feed: Feed
    ) -> None:
        """Once the holder stops renewing, the other controller acts after the lease TTL."""
        first = RolloutController(store, KEY, owner="first", lease_ttl_s=0.3)
        second = RolloutController(store, KEY, owner="second", lease_ttl_s=0.3)
        first.set_plan(make_plan())
        assert first.tick().decision == "start"
        stopped_renewing = time.monotonic()
        feed(healthy())

        taken = tick_until_acting(second, timeout_s=3.0)
        waited_s = time.monotonic() - stopped_renewing

        assert (taken.decision, taken.percent) == ("advance", 50.0)
        assert waited_s >= 0.2
        assert first.tick().decision == "not_leader"

    def test_run_releases_the_lease_when_it_returns(self, store: Publisher, feed: Feed) -> None:
        """A controller whose run() returned hands over at once, not after its lease TTL."""
        first = RolloutController(store, KEY, owner="first", lease_ttl_s=30.0)
        second = RolloutController(store, KEY, owner="second", lease_ttl_s=30.0)
        first.set_plan(make_plan())

        returned = first.run(tick_s=0.01, timeout_s=0.0)
        feed(healthy())
        taken = second.tick()

        assert returned.decision == "start"
        assert (taken.decision, taken.percent) == ("advance", 50.0)


class TestCrashAndRestart:
    """A controller that dies leaves the flag where its last write put it."""

    def test_a_new_controller_continues_from_the_flags_step(
        self, store: Publisher, feed: Feed, raw: redis.Redis, namespace: str
    ) -> None:
        """After a crash the next controller waits out the lease, then carries on from the
        step the flag is at, without rewriting it."""
        crashed = RolloutController(store, KEY, owner="crashed", lease_ttl_s=0.4)
        crashed.set_plan(make_plan())
        crashed.tick()
        feed(healthy())
        time.sleep(0.005)  # stream ids have millisecond resolution
        last_write = crashed.tick()
        assert (last_write.decision, last_write.percent) == ("advance", 50.0)
        version = version_of(store)
        lease = f"{StoreKeys(namespace).prefix}:lease:{KEY}"
        assert raw.pttl(lease) > 0  # abandoned, not released
        restarted = RolloutController(store, KEY, owner="restarted", lease_ttl_s=5.0)

        assert restarted.tick().decision == "not_leader"
        resumed = tick_until_acting(restarted, timeout_s=3.0)
        assert (resumed.decision, resumed.step, resumed.percent) == ("hold", 1, 50.0)
        assert version_of(store) == version
        assert weight_of(store) == 50.0
        assert store.history(KEY, limit=1)[0].revision == last_write.revision
        feed(healthy())
        advanced = restarted.tick()

        assert (advanced.decision, advanced.percent) == ("advance", 100.0)

    def test_a_crash_between_ramp_and_state_holds_the_ramped_step(
        self, store: Publisher, controller: RolloutController, feed: Feed
    ) -> None:
        """A ramp whose state was never saved is picked up from the flag and held anew."""
        controller.set_plan(make_plan())
        controller.tick()
        feed(healthy())
        time.sleep(0.005)
        # The crashed controller's ramp landed; its state (still step 0) was never saved.
        store.ramp(KEY, "candidate", 50.0, reason="rollout: advance (crashed before saving)")
        assert controller.state().step == 0
        before_ms = int(time.time() * 1000)

        held = controller.tick()

        assert (held.decision, held.step, held.percent) == ("hold", 1, 50.0)
        assert [r.verdict for r in held.guards] == ["insufficient"]
        assert controller.state().step == 1
        assert controller.state().step_started_ms >= before_ms
        feed(healthy())
        assert (controller.tick().decision, weight_of(store)) == ("advance", 100.0)


class TestCommands:
    """`flagsync rollout plan|status` and `flagsync controller`, run as an operator runs them."""

    def test_rollout_plan_from_options(
        self, server: ServerProcess, store: Publisher, namespace: str
    ) -> None:
        """`rollout plan` with --steps and repeated --guard stores exactly that plan."""
        result = run_cli(
            server.url, namespace, "rollout", "plan", KEY, "--variant", "candidate",
            "--control", "current", "--steps", "5,25,50", "--hold", "0", "--window", "30",
            "--min-samples", "10", "--guard", RATE_GUARD, "--guard", COST_GUARD,
            "--on-breach", "revert", "--json",
        )  # fmt: skip

        assert result.returncode == 0, result.stderr
        expected = make_plan(
            steps=[5.0, 25.0, 50.0],
            min_samples=10,
            guards=[RATE_GUARD, COST_GUARD],
            on_breach="revert",
        )
        assert RolloutController(store, KEY).plan() == expected
        assert json.loads(result.stdout)["plan"]["guards"] == [RATE_GUARD, COST_GUARD]

    def test_rollout_plan_from_a_file(
        self, server: ServerProcess, store: Publisher, namespace: str, tmp_path: Path
    ) -> None:
        """`rollout plan -f plan.yaml` stores the plan the file describes."""
        plan_file = tmp_path / "plan.yaml"
        plan_file.write_text(
            yaml.safe_dump(
                {
                    "variant": "candidate",
                    "control": "current",
                    "steps": [10, 50, 100],
                    "hold_s": 5,
                    "window_s": 20,
                    "min_samples": 100,
                    "guards": [LATENCY_GUARD],
                }
            )
        )

        result = run_cli(server.url, namespace, "rollout", "plan", KEY, "-f", str(plan_file))

        assert result.returncode == 0, result.stderr
        assert f"guard: {LATENCY_GUARD}" in result.stdout
        assert RolloutController(store, KEY).plan() == make_plan(
            steps=[10.0, 50.0, 100.0],
            hold_s=5.0,
            window_s=20.0,
            min_samples=100,
            guards=[LATENCY_GUARD],
        )

    @pytest.mark.parametrize(
        "guard",
        ["thumbs_down(candidate) <= 0.1", "thumbs_down_rate(candidate) <= 1.2.3"],
        ids=["unknown-function", "malformed-number"],
    )
    def test_rollout_plan_refuses_a_bad_guard(
        self, server: ServerProcess, store: Publisher, namespace: str, guard: str
    ) -> None:
        """A bad guard exits 2 naming the guard's path, and no plan is stored."""
        result = run_cli(
            server.url, namespace, "rollout", "plan", KEY, "--variant", "candidate",
            "--control", "current", "--steps", "5,50", "--guard", RATE_GUARD, "--guard", guard,
        )  # fmt: skip

        assert result.returncode == 2, result
        assert f"plans.{KEY}.guards[1]: " in result.stderr
        assert "Traceback" not in result.stderr
        with pytest.raises(FlagsyncError, match="no rollout plan"):
            RolloutController(store, KEY).plan()

    def test_rollout_status_shows_step_guards_and_decisions(
        self,
        server: ServerProcess,
        controller: RolloutController,
        feed: Feed,
        namespace: str,
    ) -> None:
        """`rollout status` shows the step, each guard with its sample counts, and decisions."""
        controller.set_plan(make_plan(guards=[RATE_GUARD, LATENCY_GUARD]))
        controller.tick()
        feed(healthy(120))
        time.sleep(0.005)  # stream ids have millisecond resolution
        controller.tick()
        feed(healthy(80))

        result = run_cli(server.url, namespace, "rollout", "status", KEY, "--json")
        text = run_cli(server.url, namespace, "rollout", "status", KEY)

        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        assert (status["state"]["status"], status["state"]["step"]) == ("running", 1)
        assert [
            (g["guard"], g["verdict"], g["left_samples"], g["right_samples"])
            for g in status["guards"]
        ] == [(RATE_GUARD, "pass", 80, 80), (LATENCY_GUARD, "pass", 80, None)]
        assert [(d["decision"], d["percent"]) for d in status["decisions"]] == [
            ("advance", 50.0),
            ("start", 20.0),
        ]
        assert status["decisions"][0]["guards"][0]["left_samples"] == 120
        assert text.returncode == 0, text.stderr
        assert "status: running, step 2/3 (50%)" in text.stdout
        assert f"pass: {RATE_GUARD}  (0.05 [n=80] vs 0.055 [n=80])" in text.stdout

    def test_controller_command_drives_a_planned_flag_to_completion(
        self,
        server: ServerProcess,
        controller: RolloutController,
        feed: Feed,
        namespace: str,
    ) -> None:
        """`flagsync controller` keeps deciding tick after tick, not once per lease TTL."""
        controller.set_plan(make_plan(guards=[COST_GUARD, LATENCY_GUARD]))
        stop = threading.Event()
        candidate_only = {key: values for key, values in healthy().items() if key[0] == "candidate"}

        def keep_feeding() -> None:
            while not stop.wait(0.02):
                feed(candidate_only)

        feeder = threading.Thread(target=keep_feeding, name="metrics-feeder", daemon=True)
        feeder.start()
        try:
            result = run_cli(
                server.url, namespace, "controller", "--tick", "0.05", "--timeout", "2"
            )
        finally:
            stop.set()
            feeder.join(2)

        assert result.returncode == 0, result.stderr
        decisions = [
            line.removeprefix(f"{KEY}: ").split(" ", 1)[1]  # without the time of day
            for line in result.stdout.splitlines()
            if line.startswith(f"{KEY}: ")
        ]
        assert decisions[:4] == [
            "start at 20%: first step",
            "advance at 50%: to 50%",
            "advance at 100%: to 100%",
            "complete at 100%: all steps held",
        ], result.stdout
        assert controller.state().status == "completed"


class TestStatus:
    """`rollout status` reads the weight the flag really serves and this plan's decisions."""

    def test_a_new_plan_is_waiting_for_its_first_step(
        self, server: ServerProcess, controller: RolloutController, namespace: str
    ) -> None:
        """Before the first tick the status says it waits for the first step (and at which
        percentage), not `running, not started`."""
        controller.set_plan(make_plan())

        text = run_cli(server.url, namespace, "rollout", "status", KEY)

        assert text.returncode == 0, text.stderr
        assert "status: running, waiting for the first step (20%; candidate now at 0%)" in (
            text.stdout
        )
        assert "not started" not in text.stdout
        assert text.stdout.rstrip().endswith("decisions of this plan (newest first):\n  none yet")

    def test_a_weight_between_steps_is_shown_as_it_is(
        self,
        server: ServerProcess,
        store: Publisher,
        controller: RolloutController,
        namespace: str,
    ) -> None:
        """A flag ramped by hand to 25 % under steps 20/50/100 reads `candidate at 25%, past
        step 1/3 (20%)`: the step and the percentage agree with the stored weight."""
        controller.set_plan(make_plan())
        controller.tick()
        store.ramp(KEY, "candidate", 25, reason="by hand")

        status = controller.status()
        text = run_cli(server.url, namespace, "rollout", "status", KEY)

        assert (status.percent, status.step) == (25.0, 0)
        assert "status: running, candidate at 25%, past step 1/3 (20%)" in text.stdout, text
        assert "(20%)" not in text.stdout.replace("past step 1/3 (20%)", "")

    def test_samples_are_counted_since_the_step_began(
        self, server: ServerProcess, controller: RolloutController, feed: Feed, namespace: str
    ) -> None:
        """The guards' sample counts cover the current step only, and the text says so."""
        controller.set_plan(make_plan())
        feed(healthy(300))  # before the rollout started: never counted
        time.sleep(0.005)
        controller.tick()
        time.sleep(0.005)
        feed(healthy(60))

        status = controller.status()
        text = run_cli(server.url, namespace, "rollout", "status", KEY)

        assert status.samples_since_ms == status.state.step_started_ms
        assert [g.left_samples for g in status.guards] == [60]
        assert "guards now (samples since the step started " in text.stdout
        assert "counts restart at every step" in text.stdout

    def test_a_replaced_plans_decisions_are_not_shown(
        self, server: ServerProcess, controller: RolloutController, feed: Feed, namespace: str
    ) -> None:
        """After a new plan replaces one that made decisions, status shows none of the old
        plan's decisions (they stay in the log), only the new plan's."""
        controller.set_plan(make_plan())
        controller.tick()
        feed(healthy())
        controller.tick()
        assert [d["decision"] for d in controller.decisions()] == ["advance", "start"]

        controller.set_plan(make_plan(steps=[60.0, 100.0]))
        before = run_cli(server.url, namespace, "rollout", "status", KEY, "--json")
        controller.tick()
        after = run_cli(server.url, namespace, "rollout", "status", KEY, "--json")

        assert json.loads(before.stdout)["decisions"] == []
        assert [d["decision"] for d in json.loads(after.stdout)["decisions"]] == ["start"]

    def test_a_rule_plan_says_the_samples_are_per_variant(self) -> None:
        """For a plan that ramps one rule, the status says the samples are per variant over
        the whole flag (the metrics have no rule), so they include users outside the rule."""
        from flagsync.cli._render import rollout_status
        from flagsync.controller import RolloutState, RolloutStatus

        plan = make_plan(rule="paid-ramp")
        status = RolloutStatus(
            key=KEY, plan=plan, state=RolloutState(step=1, step_started_ms=1_000),
            percent=50.0, step=1, enabled=True, samples_since_ms=1_000, now_ms=31_000,
            guards=[], decisions=[],
        )  # fmt: skip

        text = rollout_status(status)

        assert "status: running, step 2/3 (50%)" in text
        assert "guards now (samples since the step started 30 s ago" in text
        assert "include users outside rule paid-ramp" in text


class TestRunAll:
    """`run_all` (what `flagsync controller` runs) drives every planned flag."""

    def test_run_all_reports_changes_and_releases_its_leases(
        self, store: Publisher, controller: RolloutController, feed: Feed
    ) -> None:
        """It reports each decision that changes something (not the holds between them), and
        once it returns another controller can act at once (the leases were released)."""
        from flagsync.controller import run_all

        controller.set_plan(make_plan(steps=[50.0, 100.0]))
        reported: list[tuple[str, str]] = []

        def decided(key: str, made: Decision) -> None:
            reported.append((key, made.decision))
            time.sleep(0.005)  # stream ids have millisecond resolution
            feed(healthy())  # the step's own samples

        run_all(
            store,
            tick_s=0.02,
            timeout_s=5.0,
            on_decision=decided,
            should_stop=lambda: len(reported) >= 2,
        )
        other = RolloutController(store, KEY, owner="other", lease_ttl_s=30.0)

        assert reported == [(KEY, "start"), (KEY, "advance")]
        assert weight_of(store) == 100.0
        assert other.tick().decision != "not_leader"  # the lease was free at once
