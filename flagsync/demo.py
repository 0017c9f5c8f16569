"""`flagsync demo`: the whole story on one machine, with real measurements.

A real server (embedded Valkey unless a URL is given), the example LLM-rollout flags,
N worker processes serving SIMULATED chat requests (`flagsync.examples.inference`,
started as processes: the library never imports it), and an
operator script: staff only -> 5 % -> 25 % of paid users on the candidate model, the
new prompt for paid users, then a quality regression in the candidate's simulated
thumbs-down rate, detected from the workers' counters and answered with the kill
switch. Every step prints how many workers applied it and how fast (measured by the
workers), and the traffic split, cost and thumbs-down rate per model variant. Last, a
fallback episode on the LLM config flag `chat-llm`: the SIMULATED primary provider
answers 429 for a while, requests move to the fallback, and the fallback rate per
variant is read back from the flag's own metrics.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from flagsync._metrics_window import read_window
from flagsync.cli._render import propagation
from flagsync.controller import Decision, RolloutController, RolloutPlan
from flagsync.publisher import PropagationReport, Publisher
from flagsync.server import ServerProcess

__all__ = ["DEMO_FLAGS", "DemoOptions", "run_demo", "shares_in_tenths"]

DEMO_FLAGS = Path(__file__).with_name("data") / "llm-rollout.yaml"
LLM_FLAGS = Path(__file__).with_name("data") / "llm-configs.yaml"
LLM_FLAG = "chat-llm"
MODEL_FLAG = "llm-model-version"
RAMP_RULE = "paid-ramp"
WORKER_MODULE = "flagsync.examples.inference"
"""The example worker, run as `python -m` (installed with the package, never imported)."""
_FIELDS = ("requests", "errors", "latency_ms", "tokens", "cost", "thumbs_down", "fallbacks")


@dataclass(frozen=True)
class DemoOptions:
    """How big and how long the demo runs."""

    workers: int = 4
    duration_s: float = 24.0
    """Roughly the total time of the traffic phases (six of them)."""
    rps: float = 300.0
    """Simulated requests per second per worker."""
    url: str | None = None
    namespace: str = "demo"
    dashboard_port: int | None = None
    """Serve the dashboard on 127.0.0.1:PORT while the demo runs (`--dashboard`)."""


@dataclass
class _Fleet:
    """The worker processes and their latest cumulative counters."""

    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    latest: dict[int, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def rows(self) -> list[list[Any]]:
        with self.lock:
            return [row for report in self.latest.values() for row in report["counters"]]


def run_demo(options: DemoOptions, out: IO[str] = sys.stdout) -> dict[str, Any]:
    """Run the scenario, narrating to `out`; returns the measured summary."""
    phase_s = max(1.0, options.duration_s / 6)
    say = _narrator(out)
    summary: dict[str, Any] = {
        "workers": options.workers,
        "namespace": options.namespace,
        "steps": [],
    }
    with ExitStack() as stack:
        url = options.url or os.environ.get("REDIS_URL")
        if url is None:
            server = stack.enter_context(ServerProcess())
            url = server.url
            say(f"server: embedded Valkey at {url} (set REDIS_URL or --url to use your own)")
        else:
            say(f"server: {_redacted(url)}")
        publisher = stack.enter_context(Publisher(url, options.namespace, actor="demo-operator"))
        revision = publisher.apply(DEMO_FLAGS, prune=True, reason="demo setup")
        say(f"applied {DEMO_FLAGS.name} to namespace {options.namespace!r} as revision {revision}")
        revision = publisher.apply(LLM_FLAGS, reason="demo setup: the LLM config flag")
        say(f"applied {LLM_FLAGS.name} (the LLM config flag {LLM_FLAG}) as revision {revision}")
        if options.dashboard_port is not None:
            stack.enter_context(_dashboard(url, options, say))
        fleet = stack.enter_context(_workers(url, options))
        _wait_for_workers(publisher, options.workers, revision)
        say(f"{options.workers} workers running (SIMULATED LLM backends; the flags are real)\n")

        def step(
            title: str, command: str, write: Callable[[], int], target: float | None
        ) -> dict[str, Any]:
            say(f"[{len(summary['steps']) + 1}] {title}\n    $ {command}")
            revision = write()
            report = publisher.wait_propagated(revision, timeout=5)
            say("    " + _reached(report))
            time.sleep(phase_s)
            return _record_step(summary, fleet, say, title, revision, report, target)

        step(
            "staff only: the candidate model for @acme.com, no paid traffic yet",
            f"flagsync ramp {MODEL_FLAG} candidate 0 --rule {RAMP_RULE}",
            lambda: publisher.ramp(MODEL_FLAG, "candidate", 0, RAMP_RULE, reason="staff only"),
            0.0,
        )
        step(
            "the new prompt template for paid users",
            "publisher.put('prompt-template-v2', ...)  # + rule: plan in [paid, enterprise] -> on",
            lambda: publisher.put("prompt-template-v2", _prompt_for_paid(publisher)),
            None,
        )
        summary["regression"] = _guarded_rollout(publisher, fleet, summary, say, phase_s)
        kill_revision = summary["regression"]["kill_revision"]
        time.sleep(phase_s / 2)
        after = _traffic(fleet.rows(), kill_revision, at_least=True)
        summary["after_kill"] = after
        candidate = after["variants"].get("candidate", {}).get("requests", 0)
        say(
            f"    after the rollback: {after['requests']:,.0f} requests, "
            f"{candidate:.0f} on the candidate"
        )
        summary["ok"] = candidate == 0
        summary["fallback_episode"] = _fallback_episode(publisher, fleet, summary, say, phase_s)
        if options.dashboard_port is not None and sys.stdin.isatty():
            say("\nthe dashboard stays open: press Enter to stop everything")
            sys.stdin.readline()
    say("\ndone: workers stopped, server stopped" if options.url is None else "\ndone")
    return summary


@contextmanager
def _dashboard(url: str, options: DemoOptions, say: Callable[[str], None]) -> Iterator[None]:
    """The dashboard on a thread of this process, for the length of the demo."""
    from flagsync.dashboard import DashboardConfig  # noqa: PLC0415 - the `dashboard` extra
    from flagsync.dashboard.serve import DashboardServer  # noqa: PLC0415

    config = DashboardConfig(
        url, options.namespace, port=options.dashboard_port or 8600, actor="dashboard"
    )
    with DashboardServer(config) as running:
        say(f"dashboard: {running.url}/ (open it to watch the story live)")
        yield


def _fallback_episode(
    publisher: Publisher,
    fleet: _Fleet,
    summary: dict[str, Any],
    say: Callable[[str], None],
    phase_s: float,
) -> dict[str, Any]:
    """The primary provider of `chat-llm` answers 429 (SIMULATED) for one phase, then
    recovers; the fallback rate per variant comes from the flag's metrics stream."""
    say(
        f"[4] the LLM config flag {LLM_FLAG}: its primary provider "  # after [3], the rollout
        "answers 429 for a while (SIMULATED)\n"
        "    primary openai/gpt-4o or openai/gpt-4.1; fallbacks: [anthropic/claude-sonnet-4,"
        " on: 429, 5xx, timeout]"
    )
    episode: dict[str, Any] = {}
    for phase, note in (("during", "429s from openai"), ("after", "openai answers again")):
        for process in fleet.processes:
            process.send_signal(signal.SIGUSR2)  # toggles the simulated outage
        time.sleep(1.0)  # let the previous phase's last metrics flush (every 0.5 s)
        since_ms = _server_ms(publisher)
        time.sleep(phase_s)
        time.sleep(0.6)
        rates = _fallback_rates(publisher, since_ms)
        episode[phase] = rates
        shown = ", ".join(
            f"{variant} {row['fallback_rate']:.1%} of {row['calls']:,}"
            for variant, row in sorted(rates.items())
        )
        say(f"    {phase} ({note}): fallback_rate by variant: {shown}")
    return episode


def _server_ms(publisher: Publisher) -> int:
    seconds, micros = publisher.client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _fallback_rates(publisher: Publisher, since_ms: int) -> dict[str, dict[str, Any]]:
    """`fallback` per variant of `chat-llm` flushed since `since_ms`: what a guard reads."""
    window = read_window(
        publisher.client, publisher.url, publisher.keys, LLM_FLAG, since_ms
    ).stats  # every worker's stream (each flushes to its own)
    return {
        variant: {"calls": stat.count, "fallback_rate": round(stat.mean, 4)}
        for (variant, metric), stat in window.items()
        if metric == "fallback" and stat.count
    }


def _record_step(  # noqa: PLR0917 - private; called with a recorded tuple
    summary: dict[str, Any],
    fleet: _Fleet,
    say: Callable[[str], None],
    title: str,
    revision: int,
    report: PropagationReport,
    target: float | None,
) -> dict[str, Any]:
    """Measure the traffic served at `revision` and add the step to the summary."""
    result = {"title": title, "revision": revision, "target": target, **_propagation(report)}
    result.update(_traffic(fleet.rows(), revision))
    say(_describe_traffic(result))
    summary["steps"].append(result)
    return result


def _guarded_rollout(
    publisher: Publisher,
    fleet: _Fleet,
    summary: dict[str, Any],
    say: Callable[[str], None],
    phase_s: float,
) -> dict[str, Any]:
    """Let the controller ramp 5 -> 25 -> 50 -> 100 %; degrade the candidate's simulated
    quality during the 25 % step; the controller must see it and roll back by itself."""
    plan = RolloutPlan(
        variant="candidate",
        control="current",
        rule=RAMP_RULE,
        steps=[5, 25, 50, 100],
        hold_s=max(2.0, phase_s),
        window_s=max(2.0, phase_s / 2),
        min_samples=40,
        guards=[
            "thumbs_down_rate(candidate) <= thumbs_down_rate(current) * 1.5",
            "cost_per_request(candidate) <= 0.0085",
            "p95_latency_ms(candidate) <= 1500",
        ],
        on_breach="kill",
    )
    controller = RolloutController(publisher, MODEL_FLAG)
    controller.set_plan(plan)
    say(
        f"[{len(summary['steps']) + 1}] a guarded rollout takes over "
        "(nobody touches the flag from here on)\n"
        f"    $ flagsync rollout plan {MODEL_FLAG} --variant candidate --control current "
        f"--rule {RAMP_RULE} --steps 5,25,50,100 --hold {plan.hold_s:g} --window "
        f"{plan.window_s:g} \\\n        " + " ".join(f"--guard '{g}'" for g in plan.guards)
        + f"\n    $ flagsync rollout run {MODEL_FLAG}"
    )  # fmt: skip
    regression: dict[str, Any] = {}
    pending: list[tuple[str, int, PropagationReport, float]] = []

    def degrade() -> None:
        say("    !! a regression appears in the candidate's quality signal (simulated)")
        regression["started"] = time.monotonic()
        for process in fleet.processes:
            process.send_signal(signal.SIGUSR1)

    def on_decision(decision: Decision) -> None:
        if decision.decision in ("hold", "not_leader"):
            return
        while pending:  # the traffic of the previous step, now that it is over
            _record_step(summary, fleet, say, *pending.pop())
        say(f"    controller: {decision}")
        if decision.revision is None:
            return
        report = publisher.wait_propagated(decision.revision, timeout=5)
        say("    " + _reached(report))
        if decision.decision in ("start", "advance"):
            title = f"controller: {decision.percent:g} % of paid users on the candidate"
            pending.append((title, decision.revision, report, decision.percent))
            if decision.percent == 25:
                threading.Timer(0.2, degrade).start()
        if decision.decision == "rollback":
            breach = next(g for g in decision.guards if g.verdict == "breach")
            regression.update(
                kill_revision=decision.revision,
                detected_after_s=round(time.monotonic() - regression.get("started", 0), 2),
                guard=breach.guard,
                window_s=plan.window_s,
                candidate_rate=breach.left,
                threshold=breach.right,
                **_propagation(report),
            )

    final = controller.run(tick_s=0.25, timeout_s=phase_s * 12, on_decision=on_decision)
    if final.decision != "rollback" or "kill_revision" not in regression:
        raise RuntimeError(f"the controller did not roll back: {final}")
    say(
        f"    rolled back {regression['detected_after_s']:.1f} s after the regression began "
        f"(metrics window {plan.window_s:g} s, flushed every 0.5 s)"
    )
    return regression


def _prompt_for_paid(publisher: Publisher) -> dict[str, Any]:
    stored = publisher.get("prompt-template-v2")
    if stored is None:
        raise RuntimeError("prompt-template-v2 is missing from the demo flags")
    import msgspec  # noqa: PLC0415

    definition: dict[str, Any] = msgspec.to_builtins(stored.flag)
    definition["rules"] = [
        {
            "name": "paid-users",
            "when": [{"attr": "plan", "op": "in", "values": ["paid", "enterprise"]}],
            "serve": "on",
        }
    ]
    return definition


@contextmanager
def _workers(url: str, options: DemoOptions) -> Iterator[_Fleet]:
    fleet = _Fleet()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for index in range(options.workers):
            process = subprocess.Popen(  # noqa: S603 - our own worker module
                [sys.executable, "-m", WORKER_MODULE, "--url", url,
                 "--namespace", options.namespace, "--index", str(index),
                 "--rps", str(options.rps), "--report-interval", "0.25", "--stop-on-stdin-eof",
                 "--metrics-interval", "0.5"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True, env=env,
            )  # fmt: skip
            fleet.processes.append(process)
            threading.Thread(
                target=_read_reports, args=(fleet, index, process), daemon=True
            ).start()
        yield fleet
    finally:
        for process in fleet.processes:
            if process.stdin is not None and not process.stdin.closed:
                process.stdin.close()
        for process in fleet.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _read_reports(fleet: _Fleet, index: int, process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        try:
            report = json.loads(line)
        except json.JSONDecodeError:
            continue
        with fleet.lock:
            fleet.latest[index] = report


def _wait_for_workers(publisher: Publisher, count: int, revision: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = [w for w in publisher.workers() if w.revision >= revision]
        if len(ready) >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"only {len(ready)}/{count} workers synced within 30 s")


def _traffic(rows: list[list[Any]], revision: int, *, at_least: bool = False) -> dict[str, Any]:
    """Per-variant traffic of requests served at `revision` (or later, with `at_least`)."""
    variants: dict[str, list[float]] = {}
    in_rule: dict[str, float] = {}
    for row_revision, variant, rule, *values in rows:
        if row_revision == revision or (at_least and row_revision >= revision):
            totals = variants.setdefault(variant, [0.0] * len(_FIELDS))
            for position, value in enumerate(values):
                totals[position] += value
            if rule == RAMP_RULE:
                in_rule[variant] = in_rule.get(variant, 0) + values[0]
    requests = sum(values[0] for values in variants.values())
    rule_total = sum(in_rule.values())
    return {
        "requests": requests,
        "variants": {
            variant: {
                "requests": values[0],
                "share": round(values[0] / requests, 4) if requests else 0.0,
                "cost_per_request": round(values[4] / values[0], 6) if values[0] else 0.0,
                "thumbs_down_rate": round(values[5] / values[0], 4) if values[0] else 0.0,
                "mean_latency_ms": round(values[2] / values[0], 1) if values[0] else 0.0,
            }
            for variant, values in sorted(variants.items())
        },
        "paid_ramp_share": round(in_rule.get("candidate", 0) / rule_total, 4)
        if rule_total
        else 0.0,
        "paid_ramp_requests": rule_total,
    }


def _by_variant(rows: list[list[Any]]) -> dict[str, list[float]]:
    totals: dict[str, list[float]] = {}
    for _revision, variant, _rule, *values in rows:
        current = totals.setdefault(variant, [0.0] * len(_FIELDS))
        for position, value in enumerate(values):
            current[position] += value
    return totals


def shares_in_tenths(counts: list[float]) -> list[int]:
    """Each count's share in tenths of a percent, summing to exactly 1000 (largest
    remainders get the leftover tenths), so printed percentages add up to 100.0 %."""
    total = sum(counts)
    if total <= 0:
        return [0] * len(counts)
    exact = [count * 1000 / total for count in counts]
    tenths = [int(value) for value in exact]
    by_remainder = sorted(range(len(counts)), key=lambda i: exact[i] - tenths[i], reverse=True)
    for index in by_remainder[: 1000 - sum(tenths)]:
        tenths[index] += 1
    return tenths


def _describe_traffic(result: dict[str, Any]) -> str:
    parts = []
    rows = list(result["variants"].items())
    tenths = shares_in_tenths([row["requests"] for _, row in rows])
    for (variant, row), share in zip(rows, tenths, strict=True):
        parts.append(
            f"{variant} {share / 10:.1f}% (${row['cost_per_request']:.4f}/req, "
            f"thumbs-down {row['thumbs_down_rate']:.1%})"
        )
    return (
        f"    {result['requests']:,.0f} requests: "
        + "; ".join(parts)
        + f"\n    paid users on the candidate: {result['paid_ramp_share']:.1%} "
        f"of {result['paid_ramp_requests']:,.0f}"
    )


def _propagation(report: PropagationReport) -> dict[str, Any]:
    return {
        "reached": len(report.reached),
        "total": len(report.reached) + len(report.missing),
        "max_latency_ms": report.max_latency_ms,
    }


def _reached(report: PropagationReport) -> str:
    return propagation(report) + " (measured by the workers)"


def _narrator(out: IO[str]) -> Callable[[str], None]:
    def say(line: str) -> None:
        print(line, file=out, flush=True)

    return say


def _redacted(url: str) -> str:
    from flagsync._connection import redact_url  # noqa: PLC0415

    return redact_url(url)
