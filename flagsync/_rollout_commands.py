"""A guarded rollout's stored plan, state and decisions, and the operator's commands on it:
set a plan, pause, resume, abort; `flagsync.controller` adds the deciding and acting.

Every command changes the rollout's state and appends to its decision log in one script
that also bumps the flag's lease version (`flagsync._lease`): a controller that read the
state before the command holds an older token, so whatever it decided on that state is
refused, and one that reads after sees the command. So a pause holds even against a
running controller leased elsewhere, from its very next write.

Pause, resume and abort are also recorded in the namespace's change log (the stream
`flagsync history` reads), with the operator and the reason, as entries of kind
`rollout` (op `pause`, `resume`, `abort`; revision 0: no flag changed, no revision was
issued). Abort then ramps the plan's variant to 0 % in the plan's rule through the
publisher, which logs that flag change as every flag write is logged.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

import msgspec
import structlog

from flagsync._lease import Lease
from flagsync._metrics_window import MetricsWindow, read_window
from flagsync._rollout_model import (
    Decision,
    RolloutPlan,
    RolloutState,
    RolloutStatus,
    plan_codec,
    state_codec,
    step_of,
    weight_of,
)
from flagsync.errors import FlagNotFoundError, FlagsyncError, InvalidFlagError
from flagsync.guards import evaluate_guard, parse_guard
from flagsync.publisher import Publisher
from flagsync.store import StoreClient

__all__ = ["ROLLOUT_LOG_KIND", "RolloutCommands", "RolloutOutcome"]

_log = structlog.get_logger("flagsync.controller")

PLAN_SET: Final = "plan"
"""The decision-log entry `set_plan` writes: the decisions before it belong to older plans."""
ROLLOUT_LOG_KIND: Final = "rollout"
"""The change-log kind of a rollout command (pause, resume, abort)."""
ABORTED: Final = "aborted"
"""The status of an aborted rollout (nothing happens until a new plan)."""

# Fence every controller off, save the state, append the decision, and (when ARGV[4] is
# not empty) record the command in the change log. KEYS: versions hash, state, decision
# log, change log, epoch; ARGV: lease field, state blob, decision entry, op, actor, reason,
# flag key, flag version field, change-log maxlen.
_COMMAND: Final = """
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000', '*', 'decision', ARGV[3])
if ARGV[4] ~= '' then
  local t = redis.call('TIME')
  local now_us = tostring(t[1]) .. string.format('%06d', tonumber(t[2]))
  local version = redis.call('HGET', KEYS[1], ARGV[8]) or '0'
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[9], '*',
    'rev', '0', 'epoch', redis.call('GET', KEYS[5]) or '', 'time', now_us,
    'actor', ARGV[5], 'reason', ARGV[6], 'kind', 'rollout', 'key', ARGV[7], 'op', ARGV[4],
    'version', version, 'before', '', 'after', '')
end
return 1
"""


class RolloutOutcome(msgspec.Struct, frozen=True):
    """What a pause, resume or abort did."""

    key: str
    action: str
    actor: str
    reason: str
    state: RolloutState
    revision: int | None = None
    """Abort: the revision of its ramp to 0 % (the store's current one when the variant
    already served nobody); None for pause and resume."""
    changed: bool = False
    """Abort: True when the ramp to 0 % changed the flag."""


class RolloutCommands:
    """One flag's rollout as stored, and what an operator does with it."""

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
        self._redis: Any = StoreClient(publisher.client, publisher.url)  # errors mapped
        self.lease = Lease(self._redis, keys, key, self.owner, self.lease_ttl_ms)
        """The flag's lease; its token fences every write of a controller."""

    # -- reading ---------------------------------------------------------------

    def plan(self) -> RolloutPlan:
        """The stored plan; `FlagsyncError` when the flag has none."""
        blob = self._redis.hget(self._plan_key, self.key)
        if blob is None:
            raise FlagsyncError(f"no rollout plan for {self.key!r} (see: flagsync rollout plan)")
        return plan_codec[1].decode(blob)

    def state(self) -> RolloutState:
        """The stored state (a fresh one if none)."""
        blob = self._redis.get(self._state_key)
        return RolloutState() if blob is None else state_codec[1].decode(blob)

    def decisions(self, limit: int = 20) -> list[dict[str, Any]]:
        """The current plan's newest decisions, newest first (none from a replaced plan)."""
        made: list[dict[str, Any]] = []
        for _, fields in self._redis.xrevrange(self._log_key, count=limit + 1):
            decision = json.loads(fields[b"decision"])
            if decision.get("decision") == PLAN_SET:
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
        percent = weight_of(stored.flag, plan)
        now_ms = int(self.clock() * 1000)
        since = max(state.step_started_ms, now_ms - int(plan.window_s * 1000))
        window = self.read_window(since)
        return RolloutStatus(
            key=self.key,
            plan=plan,
            state=state,
            percent=percent,
            step=step_of(plan, percent),
            enabled=stored.flag.enabled,
            samples_since_ms=since,
            now_ms=now_ms,
            guards=[
                evaluate_guard(parse_guard(g), window.stats, plan.min_samples) for g in plan.guards
            ],
            decisions=self.decisions(decisions),
            metrics_problems=window.problems,
        )

    def window(self, since_ms: int) -> dict[tuple[str, str], Any]:
        """Metrics of the flag flushed since `since_ms`, summed per (variant, metric)."""
        return self.read_window(since_ms).stats

    def read_window(self, since_ms: int) -> MetricsWindow:
        """The window with what each worker's stream gave and what could not be read."""
        return read_window(
            self.publisher.client, self.publisher.url, self.publisher.keys, self.key, since_ms
        )

    # -- the operator's commands -------------------------------------------------

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
        self._redis.hset(self._plan_key, self.key, plan_codec[0].encode(plan))
        steps = ", ".join(f"{step:g}%" for step in plan.steps)
        marker = Decision(int(self.clock() * 1000), PLAN_SET, -1, 0.0, f"new plan: {steps}")
        self._command(RolloutState(flag_version=stored.version), marker)

    def pause(self, reason: str = "") -> RolloutOutcome:
        """Hold the rollout at its step until `resume`: no controller writes the flag
        meanwhile, a running one from its next write on. `FlagsyncError` unless running."""
        plan, state = self.plan(), self.state()
        if state.status != "running":
            raise FlagsyncError(
                f"the rollout of {self.key!r} is {_status_text(state)}, not running: "
                "nothing to pause"
            )
        stored = self._stored()
        now_ms = int(self.clock() * 1000)
        actor = self.publisher.actor
        state.status = "paused"
        state.paused_by, state.paused_ms = actor, now_ms
        state.paused_change, state.paused_on_request = reason[:200], True
        state.updated_ms = now_ms
        percent = weight_of(stored.flag, plan)
        note = f"paused by {actor}" + (f": {reason}" if reason else "")
        self._command(state, Decision(now_ms, "pause", state.step, percent, note), "pause", reason)
        _log.info("rollout_paused", key=self.key, actor=actor, reason=reason, percent=percent)
        return RolloutOutcome(self.key, "pause", actor, reason, state)

    def resume(self, reason: str = "") -> RolloutState:
        """Resume a paused rollout (paused by `pause` or by a human's change to the flag)
        from where the flag is now: a human's change stands, and the rollout carries on
        from the step its weight has reached. `FlagsyncError` when it is not paused."""
        plan, state = self.plan(), self.state()
        if state.status != "paused":
            raise FlagsyncError(
                f"the rollout of {self.key!r} is {_status_text(state)}, not paused: "
                "nothing to resume"
            )
        stored = self._stored()
        actor = self.publisher.actor
        note = f"resumed by {actor} after: {state.pause_summary}"
        if reason:
            note += f"; {reason}"
        now_ms = int(self.clock() * 1000)
        resumed = RolloutState(
            step=-1, step_started_ms=now_ms, updated_ms=now_ms, flag_version=stored.version
        )
        percent = weight_of(stored.flag, plan)
        self._command(resumed, Decision(now_ms, "resume", -1, percent, note), "resume", reason)
        _log.info("rollout_resumed", key=self.key, actor=actor, version=stored.version)
        return resumed

    def abort(self, reason: str = "") -> RolloutOutcome:
        """Stop the rollout for good and serve its variant to nobody in the plan's rule.

        The state is written first (fencing off any controller), then the ramp to 0 %:
        no controller can ramp again in between. A flag the variant already serves to
        nobody is left as it is (`changed` False)."""
        plan, state = self.plan(), self.state()
        stored = self._stored()
        actor = self.publisher.actor
        now_ms = int(self.clock() * 1000)
        before = weight_of(stored.flag, plan)
        state.status, state.updated_ms = ABORTED, now_ms
        note = f"aborted by {actor} at {before:g}%" + (f": {reason}" if reason else "")
        self._command(state, Decision(now_ms, "abort", state.step, 0.0, note), "abort", reason)
        if before == 0:  # serves nobody already (e.g. a fixed variant): nothing to write
            revision, changed = self.publisher.revision()[1], False
        else:
            revision = self.publisher.ramp(
                self.key,
                plan.variant,
                0,
                plan.rule,
                reason=(f"rollout aborted: {reason}" if reason else "rollout aborted")[:2000],
            )
            last = self.publisher.last_write
            changed = last is None or last.changed
        _log.warning("rollout_aborted", key=self.key, actor=actor, reason=reason, was=before)
        return RolloutOutcome(self.key, "abort", actor, reason, state, revision, changed)

    # -- internals -------------------------------------------------------------

    def _stored(self) -> Any:
        stored = self.publisher.get(self.key)
        if stored is None:
            raise FlagNotFoundError("flag", self.key)
        return stored

    def _command(
        self, state: RolloutState, decision: Decision, op: str = "", reason: str = ""
    ) -> None:
        """Save `state` and append `decision` (and log `op` in the change log) in one
        script that fences off every controller's token first."""
        keys = self.publisher.keys
        self._redis.eval(
            _COMMAND,
            5,
            keys.versions,
            self._state_key,
            self._log_key,
            keys.log,
            keys.epoch,
            self.lease.field,
            state_codec[0].encode(state),
            msgspec.json.encode(decision),
            op,
            self.publisher.actor,
            reason[:2000],
            self.key,
            f"flag:{self.key}",
            self.publisher.log_maxlen,
        )


def _status_text(state: RolloutState) -> str:
    return state.status.replace("_", " ")
