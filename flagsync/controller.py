"""Guarded rollouts: ramp a variant step by step while its guards hold, roll back on a breach.

A `RolloutPlan` names the variant to ramp and its control, the steps (percentages),
how long each step must hold, the metrics window, the minimum samples and the guards.
`RolloutController.tick()` makes one decision — start, hold, advance, complete or roll
back — from the metrics workers flushed (`flagsync.metrics`), and writes it: ramps and
kills go through the Publisher (so the change log carries the reason and the numbers),
holds go to the rollout's decision log. Only the holder of the flag's lease (a Redis key
with a TTL) acts, so two controllers never fight; the step is re-derived from the flag
itself on every tick, so a controller that crashes between writes leaves the flag
exactly where its last atomic write put it, and a restarted one carries on from there.

Fencing. A lease with a TTL alone does not stop a controller that was paused (GC, SIGSTOP,
a slow network) between deciding and writing: it would write after another controller
took over. So taking the lease bumps a lease version (`lease:<flag>` in the versions
hash) and returns it as this controller's token; every flag write of the controller
carries a write-script guard on that token and on the flag's version it decided on, and
its state and decision-log writes check the token in the same script. A controller whose
lease moved has its writes refused; one that decided on a flag someone changed meanwhile
has its write refused too.

Humans win. A change to the flag not made by a controller (its version moved past what
the controller last wrote, and the change log says who) pauses the plan: `rollout status`
shows `paused: changed by <actor> at <time>`, and nothing is written until someone runs
`flagsync rollout resume KEY`. A controller never undoes a human's ramp, kill or enable.
An operator can also pause, resume or abort a rollout (`flagsync rollout pause|resume|abort`,
the dashboard): those commands live in `flagsync._rollout_commands`, with the plan and
state this class reads; they fence off every controller in the same script.
`run_all` drives every flag that has a plan (what `flagsync controller` runs), and
`RolloutController.status()` is what `flagsync rollout status` shows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

import msgspec
import structlog

from flagsync._lease import LEASE_KIND
from flagsync._metrics_window import MetricsWindow
from flagsync._rollout_commands import RolloutCommands, RolloutOutcome
from flagsync._rollout_model import (
    Decision,
    RolloutPlan,
    RolloutState,
    RolloutStatus,
    paused_note,
    state_codec,
    step_of,
    weight_of,
)
from flagsync.errors import ConflictError, FlagNotFoundError, FlagsyncError
from flagsync.guards import GuardResult, evaluate_guard, parse_guard
from flagsync.publisher import Publisher, StoredFlag
from flagsync.store import StoreClient

__all__ = [
    "Decision",
    "RolloutController",
    "RolloutOutcome",
    "RolloutPlan",
    "RolloutState",
    "RolloutStatus",
    "planned_flags",
    "run_all",
]

_log = structlog.get_logger("flagsync.controller")


_QUIET: Final = ("hold", "not_leader")
"""Decisions `run_all` does not report (every tick makes one)."""
_FINAL: Final = ("complete", "rollback", "stopped", "paused", "abort")
"""Decisions after which `run` returns: nothing more happens without a human."""
CONTROLLER_REASON: Final = "rollout:"
"""How every change-log reason of a controller's write begins (with the controller's
actor, it tells the controller's own writes from a human's)."""


class RolloutController(RolloutCommands):
    """Drives the guarded rollout of one flag through `publisher`.

    The plan, state, status and the operator's commands (`set_plan`, `pause`, `resume`,
    `abort`) come from `flagsync._rollout_commands.RolloutCommands`; this class decides.
    """

    def __init__(
        self,
        publisher: Publisher,
        key: str,
        *,
        owner: str | None = None,
        lease_ttl_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(publisher, key, owner=owner, lease_ttl_s=lease_ttl_s, clock=clock)
        self._reported_problems: list[str] = []

    # -- acting ----------------------------------------------------------------

    def tick(self) -> Decision:
        """Make one decision (acting on it when this controller holds the lease)."""
        plan, state = self.plan(), self.state()
        now_ms = int(self.clock() * 1000)
        if state.status == "paused":
            return Decision(now_ms, "stopped", state.step, math.nan, paused_note(self.key, state))
        if state.status != "running":
            return Decision(now_ms, "stopped", state.step, math.nan, f"rollout is {state.status}")
        if not self.lease.acquire():
            return Decision(now_ms, "not_leader", state.step, math.nan, "another controller acts")
        # Read again under the token just taken: a pause or abort written before now is
        # seen here, and one written after it bumped the lease version, so every write
        # this tick makes on the state read above is refused.
        state = self.state()
        if state.status != "running":
            note = paused_note(self.key, state) if state.status == "paused" else ""
            return Decision(
                now_ms, "stopped", state.step, math.nan, note or f"rollout is {state.status}"
            )
        stored = self.publisher.get(self.key)
        if stored is None:
            raise FlagNotFoundError("flag", self.key)
        if not stored.flag.enabled:
            state.status = "stopped"
            return self._decide(state, plan, "stopped", 0.0, "the flag is killed", [], now_ms)
        if state.flag_version and stored.version != state.flag_version:
            paused = self._pause_if_changed_by_hand(state, plan, stored, now_ms)
            if paused is not None:
                return paused
        state.flag_version = stored.version
        try:
            return self._act(plan, state, stored, now_ms)
        except ConflictError as refused:
            return self._refused(refused, plan, state, now_ms)

    def _act(
        self, plan: RolloutPlan, state: RolloutState, stored: StoredFlag, now_ms: int
    ) -> Decision:
        """Decide on the flag as read (`stored`); every write is fenced by the lease token
        and refused if the flag changed since it was read."""
        percent = weight_of(stored.flag, plan)
        step = step_of(plan, percent)
        if step == -1:
            revision = self._ramp(plan, state, stored, plan.steps[0], "rollout: start")
            state.step, state.step_started_ms = 0, now_ms
            return self._decide(
                state, plan, "start", plan.steps[0], "first step", [], now_ms, revision
            )
        if step != state.step:  # a restart, or a resumed plan: hold from now
            state.step, state.step_started_ms = step, now_ms
        since = max(state.step_started_ms, now_ms - int(plan.window_s * 1000))
        window = self.read_window(since)
        results = [
            evaluate_guard(parse_guard(text), window.stats, plan.min_samples)
            for text in plan.guards
        ]
        breaches = [result for result in results if result.verdict == "breach"]
        if breaches:
            reason = "rollout: guard breached: " + "; ".join(b.summary for b in breaches)
            if plan.on_breach == "kill":
                revision = self.publisher.kill(
                    self.key,
                    reason=reason[:2000],
                    expected_version=stored.version,
                    lease=self.lease.token,
                )
                self._wrote(state, stored)
            else:
                revision = self._ramp(plan, state, stored, 0, reason)
            state.status = "rolled_back"
            return self._decide(state, plan, "rollback", percent, reason, results, now_ms, revision)
        distrust = self._distrust(plan, window)
        if distrust is not None:  # a breach above still rolls back; nothing else happens
            return self._decide(state, plan, "hold", percent, distrust, results, now_ms)
        held_s = (now_ms - state.step_started_ms) / 1000
        if all(result.verdict == "pass" for result in results) and held_s >= plan.hold_s:
            if step == len(plan.steps) - 1:
                state.status = "completed"
                return self._decide(
                    state, plan, "complete", percent, "all steps held", results, now_ms
                )
            target = plan.steps[step + 1]
            revision = self._ramp(
                plan, state, stored, target, "rollout: advance: " + "; ".join(map(str, results))
            )
            state.step, state.step_started_ms = step + 1, now_ms
            return self._decide(
                state, plan, "advance", target, f"to {target:g}%", results, now_ms, revision
            )
        waiting = [r for r in results if r.verdict == "insufficient"]
        note = (
            f"insufficient samples for {len(waiting)} guard(s) (min {plan.min_samples})"
            if waiting
            else f"holding {held_s:.1f}/{plan.hold_s:g} s"
        )
        return self._decide(state, plan, "hold", percent, note, results, now_ms)

    def run(
        self,
        *,
        tick_s: float = 1.0,
        timeout_s: float | None = None,
        on_decision: Callable[[Decision], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Decision:
        """Tick until the rollout completes, rolls back, stops or pauses (or `timeout_s`)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while True:
                decision = self.tick()
                if on_decision is not None:
                    on_decision(decision)
                if decision.decision in _FINAL:
                    return decision
                if (deadline is not None and time.monotonic() >= deadline) or (
                    should_stop is not None and should_stop()
                ):
                    return decision
                time.sleep(tick_s)
        finally:
            self.release()

    def release(self) -> None:
        """Give up the flag's lease (when held), so another controller can act at once."""
        self.lease.release()

    # -- internals -------------------------------------------------------------

    def _pause_if_changed_by_hand(
        self, state: RolloutState, plan: RolloutPlan, stored: StoredFlag, now_ms: int
    ) -> Decision | None:
        """Pause the plan when someone else changed the flag since the controller last
        wrote it; None when every change since was a controller's own (a controller that
        crashed between its flag write and its state save)."""
        change = self._change_by_hand(state.flag_version, stored.version)
        if change is None:
            return None
        state.status = "paused"
        state.paused_by, state.paused_ms, state.paused_change = change
        note = f"paused: {state.pause_summary}; resume with: flagsync rollout resume {self.key}"
        return self._decide(state, plan, "paused", weight_of(stored.flag, plan), note, [], now_ms)

    def _change_by_hand(self, since: int, now: int) -> tuple[str, int, str] | None:
        """(actor, time ms, what) of the newest change of the flag after version `since`
        not made by a controller; a change missing from the log counts as a human's."""
        entries = [
            entry
            for entry in self.publisher.history(self.key, limit=max(1, now - since))
            if entry.kind == "flag" and entry.version > since
        ]
        for entry in entries:  # newest first
            by_controller = entry.actor == self.publisher.actor and entry.reason.startswith(
                CONTROLLER_REASON
            )
            if not by_controller:
                what = f"{entry.op}: {entry.reason}" if entry.reason else entry.op
                return entry.actor or "unknown", entry.time_us // 1000, what[:200]
        if len(entries) < now - since:
            return "unknown", int(self.clock() * 1000), f"v{since}..v{now} not in the change log"
        return None

    def _refused(
        self, refused: ConflictError, plan: RolloutPlan, state: RolloutState, now_ms: int
    ) -> Decision:
        """A write refused by the script: the lease moved (fenced: write nothing more), or
        the flag changed between this tick's read and its write (a human: pause)."""
        if refused.kind != LEASE_KIND:  # the flag changed: did the lease move too?
            lease_version = self.lease.version()
            if lease_version != self.lease.token:
                refused = ConflictError(LEASE_KIND, self.key, self.lease.token, lease_version)
        if refused.kind == LEASE_KIND:
            _log.warning(
                "rollout_write_fenced",
                key=self.key,
                owner=self.owner,
                token=refused.expected_version,
                lease_version=refused.actual_version,
            )
            self.lease.token = 0
            note = (
                f"write refused: the lease moved (token {refused.expected_version}, now "
                f"{refused.actual_version}) while this controller decided"
            )
            return Decision(now_ms, "fenced", state.step, math.nan, note)
        stored = self.publisher.get(self.key)
        if stored is None:
            raise FlagNotFoundError("flag", self.key) from refused
        paused = self._pause_if_changed_by_hand(state, plan, stored, now_ms)
        if paused is not None:
            return paused
        return Decision(now_ms, "hold", state.step, math.nan, f"write refused: {refused}")

    def _ramp(
        self,
        plan: RolloutPlan,
        state: RolloutState,
        stored: StoredFlag,
        percent: float,
        reason: str,
    ) -> int:
        revision = self.publisher.ramp(
            self.key,
            plan.variant,
            percent,
            plan.rule,
            reason=reason[:2000],
            expected_version=stored.version,
            lease=self.lease.token,
        )
        self._wrote(state, stored)
        return revision

    def _distrust(self, plan: RolloutPlan, window: MetricsWindow) -> str | None:
        """Why the window must not advance the rollout, or None: a stream that could not
        be read or held malformed fields (a worker credential can do both), or one stream
        supplying more of a guard's samples than `plan.max_source_share`."""
        if window.problems:
            if window.problems != self._reported_problems:
                _log.warning("rollout_metrics_unreadable", key=self.key, problems=window.problems)
            self._reported_problems = window.problems
            return "metrics untrustworthy, not advancing: " + "; ".join(window.problems)[:500]
        self._reported_problems = []
        if plan.max_source_share >= 1:
            return None
        for text in plan.guards:
            guard = parse_guard(text)
            for side in (guard.left, guard.right):
                if side.variant is None or side.metric is None:
                    continue
                share, source = window.largest_share(side.variant, side.metric)
                if share > plan.max_source_share:
                    return (
                        f"one metrics stream ({source}) holds {share:.0%} of the samples of "
                        f"{side.variant}/{side.metric} (max_source_share "
                        f"{plan.max_source_share:.0%}): not advancing on it"
                    )
        return None

    def _wrote(self, state: RolloutState, stored: StoredFlag) -> None:
        """Remember the flag's version after this controller's write (unchanged when the
        write had nothing to change)."""
        last = self.publisher.last_write
        state.flag_version = (
            stored.version + 1 if last is not None and last.changed else stored.version
        )

    def _decide(  # noqa: PLR0917 - private; each argument is one part of the record
        self,
        state: RolloutState,
        plan: RolloutPlan,
        decision: str,
        percent: float,
        note: str,
        results: list[GuardResult],
        now_ms: int,
        revision: int | None = None,
    ) -> Decision:
        made = Decision(now_ms, decision, state.step, percent, note, results, revision)
        state.updated_ms = now_ms
        last = self.decisions(1)
        logged = decision != "hold" or not last or last[0].get("note") != note
        if not self._save_fenced(state, made if logged else None):
            _log.warning("rollout_state_fenced", key=self.key, owner=self.owner, decision=decision)
            self.lease.token = 0
            return Decision(
                now_ms, "fenced", state.step, percent, f"state not saved, the lease moved: {made}"
            )
        log = _log.warning if decision in ("rollback", "paused") else _log.info
        if decision != "hold":
            log("rollout_decision", key=self.key, decision=decision, percent=percent, note=note)
        return made

    def _save_fenced(self, state: RolloutState, decision: Decision | None) -> bool:
        """Save the state (and append `decision`) only while this controller's token is
        still the lease version: a fenced-off controller cannot overwrite its successor's."""
        entry = None if decision is None else msgspec.json.encode(decision)
        return self.lease.save(self._state_key, state_codec[0].encode(state), self._log_key, entry)


def planned_flags(publisher: Publisher) -> list[str]:
    """The keys of the flags that have a rollout plan."""
    plans = StoreClient(publisher.client, publisher.url).hkeys(publisher.keys.plans)
    return sorted(key.decode() for key in plans)


def run_all(
    publisher: Publisher,
    *,
    tick_s: float = 1.0,
    timeout_s: float | None = None,
    on_decision: Callable[[str, Decision], None] | None = None,
    on_error: Callable[[str, FlagsyncError], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Drive every flag's rollout plan until `timeout_s` (or `should_stop()`).

    One controller (one lease owner) per flag for the whole run: a new owner every tick
    would find the lease its predecessor took and wait out its TTL each time. Reports
    to `on_decision` what changed (not holds, and a stopped rollout once); a plan that
    fails goes to `on_error` and does not stop the others. Leases are released at the end.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    controllers: dict[str, RolloutController] = {}
    reported_stop: set[str] = set()
    try:
        while deadline is None or time.monotonic() < deadline:
            for key in planned_flags(publisher):
                controller = controllers.get(key)
                if controller is None:
                    controller = controllers[key] = RolloutController(publisher, key)
                try:
                    decision = controller.tick()
                except FlagsyncError as error:
                    if on_error is not None:
                        on_error(key, error)
                    continue
                if decision.decision == "stopped":
                    if key in reported_stop:
                        continue
                    reported_stop.add(key)
                else:  # running again (resumed): its next stop is news
                    reported_stop.discard(key)
                if decision.decision not in _QUIET and on_decision is not None:
                    on_decision(key, decision)
            if should_stop is not None and should_stop():
                return
            time.sleep(tick_s)
    finally:
        for controller in controllers.values():
            controller.release()
