"""What a guarded rollout is made of: the plan, its stored state, each decision, the
status report, and how the ramped weight and step are read from a flag.

Pure data and functions (no I/O): `flagsync.controller` stores and acts on them; the
names are re-exported there, which is where callers import them from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from flagsync.errors import InvalidFlagError, ValidationIssue
from flagsync.guards import GuardResult, parse_guard
from flagsync.model import KEY_PATTERN, Rollout

__all__ = [
    "Decision",
    "RolloutPlan",
    "RolloutState",
    "RolloutStatus",
    "paused_note",
    "plan_codec",
    "state_codec",
    "step_of",
    "weight_of",
]


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
    max_source_share: float = 1.0
    """Never advance while one metrics stream (one worker) supplies more than this share
    of a guard's samples: a single compromised worker cannot outvote the fleet. 1.0 (the
    default) turns the check off; 0.5 suits fleets of several workers."""

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
        if not 0 < self.max_source_share <= 1:
            issues.append(ValidationIssue(f"{at}.max_source_share", "a share in (0, 1]"))
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
    """`running`, `paused`, `completed`, `rolled_back`, `stopped` or `aborted`."""
    step: int = -1
    step_started_ms: int = 0
    updated_ms: int = 0
    flag_version: int = 0
    """The flag's version as the controller last wrote (or adopted) it; a higher one not
    written by a controller is a human's change, which pauses the plan (0: not known)."""
    paused_by: str | None = None
    """Who changed the flag and so paused the plan."""
    paused_ms: int = 0
    """When that change was written (server clock, ms)."""
    paused_change: str = ""
    """What the change was (its op and reason), or the reason of a `pause`."""
    paused_on_request: bool = False
    """True when an operator paused the rollout (`pause`), not a change to the flag."""

    @property
    def pause_summary(self) -> str:
        """`changed by alice at 2026-11-30 12:00:00 UTC (ramp: ...)` for a plan a change
        paused, `paused by alice at ... (reason)` for one an operator paused."""
        when = datetime.fromtimestamp(self.paused_ms / 1000, tz=UTC)
        verb = "paused" if self.paused_on_request else "changed"
        text = f"{verb} by {self.paused_by} at {when:%Y-%m-%d %H:%M:%S} UTC"
        return f"{text} ({self.paused_change})" if self.paused_change else text


class Decision(msgspec.Struct, frozen=True):
    """One tick's decision and the numbers behind it."""

    time_ms: int
    decision: str
    """`start`, `hold`, `advance`, `complete`, `rollback`, `stopped`, `paused` (by a
    change), `pause`, `resume`, `abort` (an operator's commands), `not_leader` or `fenced`
    (a write refused because the lease moved)."""
    step: int
    percent: float
    note: str
    guards: list[GuardResult] = msgspec.field(default_factory=list)
    revision: int | None = None
    """The revision the decision wrote (start, advance, rollback), else None."""

    def __str__(self) -> str:
        return f"{self.decision} at {self.percent:g}%: {self.note}"


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
    metrics_problems: list[str] = msgspec.field(default_factory=list)
    """Metrics streams that could not be read or held malformed fields."""


plan_codec = (msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(RolloutPlan))
state_codec = (msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(RolloutState))


def paused_note(key: str, state: RolloutState) -> str:
    return f"rollout is paused: {state.pause_summary}; resume with: flagsync rollout resume {key}"


def step_of(plan: RolloutPlan, percent: float) -> int:
    """The last plan step `percent` has reached (-1: not even the first)."""
    return max((i for i, s in enumerate(plan.steps) if s <= percent), default=-1)


def weight_of(flag: Any, plan: RolloutPlan) -> float:
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
