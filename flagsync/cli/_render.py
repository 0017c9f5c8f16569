"""Readable text for the CLI: diffs, tables, histories, propagation and rollout reports."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from flagsync.diff import definition_changes
from flagsync.model import FlagSet, Rollout, Serve

if TYPE_CHECKING:
    from flagsync._codec import WorkerInfo
    from flagsync.controller import Decision, RolloutPlan, RolloutStatus
    from flagsync.evaluation import EvaluationDetail
    from flagsync.publisher import DefinitionChange, HistoryEntry, PropagationReport, StoredFlag
    from flagsync.snapshot import Snapshot

_MARKS = {"add": "+", "change": "~", "delete": "-"}
_DESCRIPTION_WIDTH = 48


def apply_result(
    changes: Sequence[DefinitionChange], revision: int, *, written: bool, dry_run: bool = False
) -> str:
    """The diff of an apply, then what happened."""
    lines = []
    for change in changes:
        version = f" (v{change.version})" if change.op != "add" else ""
        lines.append(f"{_MARKS[change.op]} {change.kind} {change.key}{version}")
        if change.op == "change":
            lines.extend(f"    {field}" for field in change.fields)
    count = f"{len(changes)} change{'s' if len(changes) != 1 else ''}"
    if not changes:
        lines.append(f"no changes: the store already matches (revision {revision})")
    elif dry_run:
        lines.append(f"dry run: {count}, nothing written (store at revision {revision})")
    elif written:
        lines.append(f"applied {count} as revision {revision}")
    return "\n".join(lines)


def flag_table(definitions: FlagSet, versions: dict[str, int]) -> str:
    """One line per flag: key, state, version, what it serves, description."""
    rows = [("KEY", "STATE", "VERSION", "SERVES", "RULES", "DESCRIPTION")]
    for key, flag in definitions.flags.items():
        rows.append(
            (
                key,
                "on" if flag.enabled else "KILLED",
                f"v{versions.get(key, 0)}",
                serve_summary(flag.default),
                str(len(flag.rules)),
                clip(flag.description, _DESCRIPTION_WIDTH),
            )
        )
    if len(rows) == 1:
        return "no flags in this namespace"
    return _table(rows)


def clip(text: str, width: int) -> str:
    """`text` cut to `width` characters, ending in `…` when something was cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def serve_summary(serve: Serve) -> str:
    """`candidate` or `candidate 20% / current 80%`."""
    if isinstance(serve, Rollout):
        split = " / ".join(f"{name} {weight:g}%" for name, weight in serve.rollout.items())
        return split + (f" by {serve.by}" if serve.by != "key" else "")
    return serve


def flag_detail(
    key: str, version: int, definition: dict[str, Any], last: HistoryEntry | None
) -> str:
    """A flag's YAML, its version and its last change."""
    import yaml  # noqa: PLC0415 - only `get` needs it; `--help` stays fast

    text = yaml.safe_dump({key: definition}, sort_keys=False, allow_unicode=True).rstrip()
    lines = [f"# version {version}", text]
    if last is not None:
        lines.append(
            f"# last change: r{last.revision} {_when(last.time_us)} by {last.actor}: {last.op}"
            + (f" ({last.reason})" if last.reason else "")
        )
    return "\n".join(lines)


def evaluation(key: str, detail: EvaluationDetail) -> str:
    """An evaluation's value and explanation."""
    parts = [
        f"{key} = {json.dumps(detail.value)}",
        f"variant: {detail.variant}",
        f"reason: {detail.reason}",
    ]
    if detail.rule:
        parts.append(f"rule: {detail.rule}")
    if detail.error_code:
        parts.append(f"error: {detail.error_code}")
    return "  ".join(parts)


def no_change(key: str, state: str, revision: int) -> str:
    """A write that would change nothing: `llm-model-version is already enabled (no change)`."""
    return f"{key} is already {state} (no change; store at revision {revision})"


def write_result(
    action: str, key: str, revision: int, stored: StoredFlag | None, rule: str | None = None
) -> str:
    """One line per write."""
    verbs = {
        "kill": "killed",
        "enable": "enabled",
        "ramp": "ramped",
        "set": "set",
        "delete": "deleted",
        "rollback": "rolled back",
    }
    line = f"{verbs.get(action, action)} {key}: revision {revision}"
    if stored is not None:
        serve = stored.flag.default
        where = "serves"
        for position, candidate in enumerate(stored.flag.rules):
            if rule is not None and (candidate.name or f"rules[{position}]") == rule:
                serve, where = candidate.serve, f"{rule} serves"
        line += f" (v{stored.version}, {where} {serve_summary(serve)}"
        line += ", KILLED)" if not stored.flag.enabled else ")"
    return line


def propagation(report: PropagationReport) -> str:
    """`reached 48/48 workers in 3.1 ms`, naming any that did not."""
    total = len(report.reached) + len(report.missing) + len(report.unconfirmed)
    if total == 0:
        return "no live workers reported: nobody confirmed the change"
    slowest = report.max_latency_ms
    timing = (
        f"in {slowest:.1f} ms" if slowest is not None else f"(waited {report.waited_ms:.1f} ms)"
    )
    line = f"reached {len(report.reached)}/{total} workers {timing}"
    if report.missing:
        names = ", ".join(f"{w.id} (at r{w.revision})" for w in report.missing)
        line += f"\nnot reached after {report.waited_ms / 1000:.1f} s: {names}"
    if report.unconfirmed:
        problems = "; ".join(f"{r.key}: {r.problem}" for r in report.unconfirmed)
        line += f"\nunconfirmed (presence record unreadable): {problems}"
    return line


def history(entries: Sequence[HistoryEntry]) -> str:
    """The change log, newest first, with field-level differences."""
    if not entries:
        return "no changes recorded"
    lines = []
    for entry in entries:
        reason = f"  ({entry.reason})" if entry.reason else ""
        lines.append(
            f"r{entry.revision:<5} {_when(entry.time_us)}  {entry.actor:<12} "
            f"{entry.op:<11} {entry.kind} {entry.key} v{entry.version}{reason}"
        )
        if entry.kind == "rollout":  # a pause/resume/abort: no definition changed
            continue
        if entry.before is None and entry.after is not None:
            lines.append("    created")
        elif entry.after is None:
            lines.append("    deleted")
        else:
            lines.extend(f"    {field}" for field in entry.fields)
    return "\n".join(lines)


def workers(items: Sequence[WorkerInfo], revision: int) -> str:
    """Live workers with their applied revision, lag and heartbeat age."""
    if not items:
        return f"no live workers (store at revision {revision})"
    now_ms = time.time() * 1000
    rows = [("WORKER", "HOST", "PID", "REVISION", "LAG", "STATE", "HEARTBEAT")]
    rows.extend(
        (
            worker.id,
            worker.host,
            str(worker.pid),
            f"r{worker.revision}",
            str(max(0, revision - worker.revision)),
            worker.state,
            f"{(now_ms - worker.heartbeat_ms) / 1000:.1f}s ago",
        )
        for worker in items
    )
    return _table(rows)


def snapshot_change(before: Snapshot, after: Snapshot, keys: frozenset[str]) -> str:
    """What a subscriber saw change in one swap."""
    lines = [f"r{after.revision}: {', '.join(sorted(keys)) or 'resynced, nothing changed'}"]
    for key in sorted(keys):
        old, new = before.definitions.flags.get(key), after.definitions.flags.get(key)
        if old is None:
            lines.append(f"    + {key}")
        elif new is None:
            lines.append(f"    - {key}")
        else:
            changes = definition_changes("flag", msgspec.to_builtins(old), msgspec.to_builtins(new))
            lines.extend(f"    {key}.{field}" for field in changes)
    return "\n".join(lines)


def document(data: dict[str, Any], syntax: str) -> str:
    """A flag document as YAML or JSON text."""
    if syntax == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    import yaml  # noqa: PLC0415 - only `export` needs it

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _when(time_us: int) -> str:
    return datetime.fromtimestamp(time_us / 1e6, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def plan(key: str, rollout_plan: RolloutPlan) -> str:
    """A stored rollout plan."""
    steps = " -> ".join(f"{step:g}%" for step in rollout_plan.steps)
    where = f" (rule {rollout_plan.rule})" if rollout_plan.rule else ""
    lines = [
        f"plan for {key}: {rollout_plan.variant} vs {rollout_plan.control}{where}: {steps}",
        f"  hold {rollout_plan.hold_s:g} s per step, window {rollout_plan.window_s:g} s, "
        f"at least {rollout_plan.min_samples} samples; on breach: {rollout_plan.on_breach}",
        *(f"  guard: {guard}" for guard in rollout_plan.guards),
    ]
    return "\n".join(lines)


def decision(made: Decision) -> str:
    """One controller decision."""
    when = datetime.fromtimestamp(made.time_ms / 1000, tz=UTC).strftime("%H:%M:%S")
    lines = [f"{when} {made}"]
    lines.extend(f"    {result}" for result in made.guards if made.decision != "hold")
    return "\n".join(lines)


def rollout_status(status: RolloutStatus) -> str:
    """Where a rollout stands (from the weight the flag really serves), its guards on the
    samples of the current step, and the current plan's recent decisions."""
    rollout_plan = status.plan
    lines = [
        plan(status.key, rollout_plan),
        f"status: {status.state.status.replace('_', ' ')}, {_where_in_plan(status)}",
    ]
    if status.state.status == "paused":
        lines.append(f"paused: {status.state.pause_summary}")
        lines.append(f"  resume with: flagsync rollout resume {status.key}")
    age_s = max(0.0, (status.now_ms - status.samples_since_ms) / 1000)
    started = status.samples_since_ms == status.state.step_started_ms
    lines.append(
        f"guards now (samples since the {'step started' if started else 'window began'} "
        f"{age_s:.0f} s ago: counts restart at every step):"
    )
    lines.extend(f"  {result}" for result in status.guards)
    lines.extend(f"  metrics problem: {problem}" for problem in status.metrics_problems)
    if rollout_plan.rule is not None:
        lines.append(
            f"  note: samples are counted per variant over the whole flag, so they include "
            f"users outside rule {rollout_plan.rule}"
        )
    lines.append("decisions of this plan (newest first):")
    for made in status.decisions:
        when = datetime.fromtimestamp(made["time_ms"] / 1000, tz=UTC).strftime("%H:%M:%S")
        percent = "?" if made.get("percent") is None else f"{made['percent']:g}"
        lines.append(f"  {when} {made['decision']} at {percent}%: {made['note']}")
    if not status.decisions:
        lines.append("  none yet")
    return "\n".join(lines)


def _where_in_plan(status: RolloutStatus) -> str:
    """`step 2/4 (25%)`, `waiting for the first step (5%)`, or the weight between steps."""
    steps, variant, percent = status.plan.steps, status.plan.variant, status.percent
    if not status.enabled:
        return f"the flag is killed ({variant} at {percent:g}% once enabled)"
    if status.step == -1:
        if status.state.status == "running":
            return f"waiting for the first step ({steps[0]:g}%; {variant} now at {percent:g}%)"
        return f"{variant} at {percent:g}%"
    at = f"step {status.step + 1}/{len(steps)}"
    if percent == steps[status.step]:
        return f"{at} ({percent:g}%)"
    return f"{variant} at {percent:g}%, past {at} ({steps[status.step]:g}%)"
