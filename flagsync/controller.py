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
`run_all` drives every flag that has a plan (what `flagsync controller` runs), and
`RolloutController.status()` is what `flagsync rollout status` shows.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

import msgspec
import structlog

from flagsync.errors import FlagNotFoundError, FlagsyncError, InvalidFlagError, ValidationIssue
from flagsync.guards import GuardResult, evaluate_guard, parse_guard
from flagsync.metrics import merge_window
from flagsync.model import KEY_PATTERN, Rollout
from flagsync.publisher import Publisher
from flagsync.store import StoreClient

__all__ = [
    "Decision",
    "RolloutController",
    "RolloutPlan",
    "RolloutState",
    "RolloutStatus",
    "planned_flags",
    "run_all",
]

_log = structlog.get_logger("flagsync.controller")
_RENEW_LEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
_RELEASE_LEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RolloutPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How to ramp one flag: steps, hold time, window, sample floor and guards."""

    variant: str
    """The variant being ramped (e.g. `candidate`)."""
    control: str
    """The variant it is compared with (e.g. `current`)."""
    rule: str | None = None
    """Ramp this rule's rollout; None ramps the fallthrough."""
    steps: list[float]
    hold_s: float = 60.0
    window_s: float = 60.0
    min_samples: int = 200
    guards: list[str]
    on_breach: str = "kill"
    """`kill` (the kill switch) or `revert` (the variant back to 0 %)."""

    def validate(self, key: str) -> None:
        """Refuse a plan that cannot run, naming the field."""
        at = f"plans.{key}"
        issues = [
            ValidationIssue(f"{at}.{name}", "not a variant name")
            for name in ("variant", "control")
            if not KEY_PATTERN.match(getattr(self, name))
        ]
        if not self.steps or any(not 0 < s <= 100 for s in self.steps):
            issues.append(ValidationIssue(f"{at}.steps", "steps must be percentages in (0, 100]"))
        elif any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            issues.append(ValidationIssue(f"{at}.steps", "steps must increase"))
        if self.hold_s < 0 or self.window_s <= 0 or self.min_samples < 1:
            issues.append(ValidationIssue(at, "hold_s >= 0, window_s > 0, min_samples >= 1"))
        if self.on_breach not in ("kill", "revert"):
            issues.append(ValidationIssue(f"{at}.on_breach", "use 'kill' or 'revert'"))
        if not self.guards:
            issues.append(ValidationIssue(f"{at}.guards", "a guarded rollout needs a guard"))
        for index, guard in enumerate(self.guards):
            try:
                parse_guard(guard, path=f"{at}.guards[{index}]")
            except InvalidFlagError as error:
                issues.extend(error.issues)
        if issues:
            raise InvalidFlagError(issues)


class RolloutState(msgspec.Struct):
    """Where a rollout stands (stored beside the plan)."""

    status: str = "running"
    """`running`, `completed`, `rolled_back` or `stopped`."""
    step: int = -1
    step_started_ms: int = 0
    updated_ms: int = 0


class Decision(msgspec.Struct, frozen=True):
    """One tick's decision and the numbers behind it."""

    time_ms: int
    decision: str
    """`start`, `hold`, `advance`, `complete`, `rollback`, `stopped` or `not_leader`."""
    step: int
    percent: float
    note: str
    guards: list[GuardResult] = msgspec.field(default_factory=list)
    revision: int | None = None
    """The revision the decision wrote (start, advance, rollback), else None."""

    def __str__(self) -> str:
        return f"{self.decision} at {self.percent:g}%: {self.note}"


_PLAN_SET: Final = "plan"
"""The decision-log entry `set_plan` writes: the decisions before it belong to older plans."""
_QUIET: Final = ("hold", "not_leader")
"""Decisions `run_all` does not report (every tick makes one)."""


class RolloutStatus(msgspec.Struct, frozen=True):
    """Where a rollout stands, read from the flag itself, for `flagsync rollout status`."""

    key: str
    plan: RolloutPlan
    state: RolloutState
    percent: float
    """The ramped variant's weight now, in the plan's rule (or the fallthrough)."""
    step: int
    """The last plan step that weight has reached; -1 before the first."""
    enabled: bool
    samples_since_ms: int
    """Guard samples count from here: the step's start, or the window's when later."""
    now_ms: int
    guards: list[GuardResult]
    decisions: list[dict[str, Any]]
    """The current plan's decisions, newest first (a replaced plan's are left out)."""


_plan_codec = (msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(RolloutPlan))
_state_codec = (msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(RolloutState))


class RolloutController:
    """Drives the guarded rollout of one flag through `publisher`."""

    def __init__(
        self,
        publisher: Publisher,
        key: str,
        *,
        owner: str | None = None,
        lease_ttl_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.publisher = publisher
        self.key = key
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease_ttl_ms = int(lease_ttl_s * 1000)
        self.clock = clock
        keys = publisher.keys
        self._plan_key = keys.plans
        self._state_key = keys.rollout(key)
        self._log_key = keys.rollout_log(key)
        self._lease_key = keys.lease(key)
        self._metrics_key = keys.metrics(key)
        self._redis: Any = StoreClient(publisher.client, publisher.url)  # errors mapped

    # -- plan and state ----------------------------------------------------------

    def set_plan(self, plan: RolloutPlan) -> None:
        """Store `plan` (validated) and start the rollout afresh."""
        plan.validate(self.key)
        stored = self.publisher.get(self.key)
        if stored is None:
            raise FlagNotFoundError("flag", self.key)
        for name in (plan.variant, plan.control):
            if name not in stored.flag.variants:
                raise InvalidFlagError.single(f"plans.{self.key}", f"flag has no variant {name!r}")
        rules = [rule.name or f"rules[{i}]" for i, rule in enumerate(stored.flag.rules)]
        if plan.rule is not None and plan.rule not in rules:  # else every tick would fail
            raise InvalidFlagError.single(
                f"plans.{self.key}.rule", f"flag has no rule {plan.rule!r}"
            )
        for index, text in enumerate(plan.guards):  # a typo would hold the rollout forever
            guard = parse_guard(text)
            for side in (guard.left, guard.right):
                if side.variant is not None and side.variant not in stored.flag.variants:
                    raise InvalidFlagError.single(
                        f"plans.{self.key}.guards[{index}]",
                        f"flag has no variant {side.variant!r}",
                    )
        self._redis.hset(self._plan_key, self.key, _plan_codec[0].encode(plan))
        self._save_state(RolloutState())
        steps = ", ".join(f"{step:g}%" for step in plan.steps)
        marker = Decision(int(self.clock() * 1000), _PLAN_SET, -1, 0.0, f"new plan: {steps}")
        self._redis.xadd(
            self._log_key, {"decision": msgspec.json.encode(marker)}, maxlen=1000, approximate=True
        )

    def plan(self) -> RolloutPlan:
        """The stored plan; `FlagsyncError` when the flag has none."""
        blob = self._redis.hget(self._plan_key, self.key)
        if blob is None:
            raise FlagsyncError(f"no rollout plan for {self.key!r} (see: flagsync rollout plan)")
        return _plan_codec[1].decode(blob)

    def state(self) -> RolloutState:
        """The stored state (a fresh one if none)."""
        blob = self._redis.get(self._state_key)
        return RolloutState() if blob is None else _state_codec[1].decode(blob)

    def decisions(self, limit: int = 20) -> list[dict[str, Any]]:
        """The current plan's newest decisions, newest first (none from a replaced plan)."""
        made: list[dict[str, Any]] = []
        for _, fields in self._redis.xrevrange(self._log_key, count=limit + 1):
            decision = json.loads(fields[b"decision"])
            if decision.get("decision") == _PLAN_SET:
                break
            made.append(decision)
        return made[:limit]

    def status(self, decisions: int = 10) -> RolloutStatus:
        """The plan, its state, the weight the flag really serves, the guards on the samples
        of the current step, and the current plan's recent decisions."""
        plan, state = self.plan(), self.state()
        stored = self.publisher.get(self.key)
        if stored is None:
            raise FlagNotFoundError("flag", self.key)
        percent = _weight_of(stored.flag, plan)
        now_ms = int(self.clock() * 1000)
        since = max(state.step_started_ms, now_ms - int(plan.window_s * 1000))
        window = self.window(since)
        return RolloutStatus(
            key=self.key,
            plan=plan,
            state=state,
            percent=percent,
            step=_step_of(plan, percent),
            enabled=stored.flag.enabled,
            samples_since_ms=since,
            now_ms=now_ms,
            guards=[evaluate_guard(parse_guard(g), window, plan.min_samples) for g in plan.guards],
            decisions=self.decisions(decisions),
        )

    def window(self, since_ms: int) -> dict[tuple[str, str], Any]:
        """Metrics of the flag flushed since `since_ms`, summed per (variant, metric)."""
        entries = self._redis.xrange(self._metrics_key, min=str(since_ms), max="+")
        return merge_window(fields for _, fields in entries)

    # -- acting ----------------------------------------------------------------

    def tick(self) -> Decision:
        """Make one decision (acting on it when this controller holds the lease)."""
        plan, state = self.plan(), self.state()
        now_ms = int(self.clock() * 1000)
        if state.status != "running":
            return Decision(now_ms, "stopped", state.step, math.nan, f"rollout is {state.status}")
        if not self._renew_lease():
            return Decision(now_ms, "not_leader", state.step, math.nan, "another controller acts")
        stored = self.publisher.get(self.key)
        if stored is None:
            raise FlagNotFoundError("flag", self.key)
        if not stored.flag.enabled:
            state.status = "stopped"
            return self._decide(state, plan, "stopped", 0.0, "the flag is killed", [], now_ms)
        percent = _weight_of(stored.flag, plan)
        step = _step_of(plan, percent)
        if step == -1:
            revision = self._ramp(plan, plan.steps[0], "rollout: start")
            state.step, state.step_started_ms = 0, now_ms
            return self._decide(
                state, plan, "start", plan.steps[0], "first step", [], now_ms, revision
            )
        if step != state.step:  # a restart, or someone ramped by hand: hold from now
            state.step, state.step_started_ms = step, now_ms
        since = max(state.step_started_ms, now_ms - int(plan.window_s * 1000))
        window = self.window(since)
        results = [
            evaluate_guard(parse_guard(text), window, plan.min_samples) for text in plan.guards
        ]
        breaches = [result for result in results if result.verdict == "breach"]
        if breaches:
            reason = "rollout: guard breached: " + "; ".join(b.summary for b in breaches)
            if plan.on_breach == "kill":
                revision = self.publisher.kill(self.key, reason=reason[:2000])
            else:
                revision = self._ramp(plan, 0, reason)
            state.status = "rolled_back"
            return self._decide(state, plan, "rollback", percent, reason, results, now_ms, revision)
        held_s = (now_ms - state.step_started_ms) / 1000
        if all(result.verdict == "pass" for result in results) and held_s >= plan.hold_s:
            if step == len(plan.steps) - 1:
                state.status = "completed"
                return self._decide(
                    state, plan, "complete", percent, "all steps held", results, now_ms
                )
            target = plan.steps[step + 1]
            revision = self._ramp(plan, target, "rollout: advance: " + "; ".join(map(str, results)))
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
        """Tick until the rollout completes, rolls back or stops (or `timeout_s`)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while True:
                decision = self.tick()
                if on_decision is not None:
                    on_decision(decision)
                if decision.decision in ("complete", "rollback", "stopped"):
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
        self._redis.eval(_RELEASE_LEASE, 1, self._lease_key, self.owner)

    # -- internals -------------------------------------------------------------

    def _renew_lease(self) -> bool:
        return bool(
            self._redis.eval(_RENEW_LEASE, 1, self._lease_key, self.owner, self.lease_ttl_ms)
        )

    def _ramp(self, plan: RolloutPlan, percent: float, reason: str) -> int:
        return self.publisher.ramp(self.key, plan.variant, percent, plan.rule, reason=reason[:2000])

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
        self._save_state(state)
        last = self.decisions(1)
        if decision != "hold" or not last or last[0].get("note") != note:
            self._redis.xadd(
                self._log_key,
                {"decision": msgspec.json.encode(made)},
                maxlen=1000,
                approximate=True,
            )
        log = _log.warning if decision == "rollback" else _log.info
        if decision != "hold":
            log("rollout_decision", key=self.key, decision=decision, percent=percent, note=note)
        return made

    def _save_state(self, state: RolloutState) -> None:
        self._redis.set(self._state_key, _state_codec[0].encode(state))


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
                if decision.decision not in _QUIET and on_decision is not None:
                    on_decision(key, decision)
            if should_stop is not None and should_stop():
                return
            time.sleep(tick_s)
    finally:
        for controller in controllers.values():
            controller.release()


def _step_of(plan: RolloutPlan, percent: float) -> int:
    """The last plan step `percent` has reached (-1: not even the first)."""
    return max((i for i, s in enumerate(plan.steps) if s <= percent), default=-1)


def _weight_of(flag: Any, plan: RolloutPlan) -> float:
    """The ramped variant's current percentage in the plan's rule (or the fallthrough)."""
    serve = flag.default
    if plan.rule is not None:
        for position, rule in enumerate(flag.rules):
            if (rule.name or f"rules[{position}]") == plan.rule:
                serve = rule.serve
                break
        else:
            raise InvalidFlagError.single(f"plans.{plan.rule}", "the flag has no such rule")
    if isinstance(serve, Rollout):
        return float(serve.rollout.get(plan.variant, 0))
    return 100.0 if serve == plan.variant else 0.0
