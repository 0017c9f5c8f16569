"""Readable text for the CLI: diffs, tables, histories and propagation reports."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import yaml

from flagsync.diff import definition_changes
from flagsync.model import FlagSet, Rollout, Serve

if TYPE_CHECKING:
    from flagsync._codec import WorkerInfo
    from flagsync.evaluation import EvaluationDetail
    from flagsync.publisher import DefinitionChange, HistoryEntry, PropagationReport, StoredFlag
    from flagsync.snapshot import Snapshot

_MARKS = {"add": "+", "change": "~", "delete": "-"}


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
                flag.description[:48],
            )
        )
    if len(rows) == 1:
        return "no flags in this namespace"
    return _table(rows)


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
    total = len(report.reached) + len(report.missing)
    if total == 0:
        return "no live workers to wait for"
    slowest = report.max_latency_ms
    timing = (
        f"in {slowest:.1f} ms" if slowest is not None else f"(waited {report.waited_ms:.1f} ms)"
    )
    line = f"reached {len(report.reached)}/{total} workers {timing}"
    if report.missing:
        names = ", ".join(f"{w.id} (at r{w.revision})" for w in report.missing)
        line += f"\nnot reached after {report.waited_ms / 1000:.1f} s: {names}"
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
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _when(time_us: int) -> str:
    return datetime.fromtimestamp(time_us / 1e6, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def plan(key: str, rollout_plan: Any) -> str:
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


def decision(made: Any) -> str:
    """One controller decision."""
    when = datetime.fromtimestamp(made.time_ms / 1000, tz=UTC).strftime("%H:%M:%S")
    lines = [f"{when} {made}"]
    lines.extend(f"    {result}" for result in made.guards if made.decision != "hold")
    return "\n".join(lines)


def rollout_status(
    key: str, rollout_plan: Any, state: Any, guards: Sequence[Any], decisions: Sequence[Any]
) -> str:
    """Where a rollout stands, its guards on the current window, its recent decisions."""
    step = (
        f"step {state.step + 1}/{len(rollout_plan.steps)} ({rollout_plan.steps[state.step]:g}%)"
        if 0 <= state.step < len(rollout_plan.steps)
        else "not started"
    )
    lines = [plan(key, rollout_plan), f"status: {state.status}, {step}", "guards now:"]
    lines.extend(f"  {result}" for result in guards)
    lines.append("decisions (newest first):")
    for made in decisions:
        when = datetime.fromtimestamp(made["time_ms"] / 1000, tz=UTC).strftime("%H:%M:%S")
        lines.append(f"  {when} {made['decision']} at {made['percent']}%: {made['note']}")
    return "\n".join(lines)
