"""Helpers for the rollout tests: the flag being ramped, plans, metrics written as a worker
writes them, the ramped weight as stored, captured logs, and the real `flagsync` command.

Metrics written by hand go through `flagsync.metrics`' own encoder and flush commands
(`PendingSeries.by_flag` + `flush_commands`), so the stream entries are byte for byte
what a client's reporter appends; a test that needs the whole client path connects a
real client instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import redis

from flagsync import FlagClient
from flagsync.controller import RolloutPlan
from flagsync.metrics import MetricStat, PendingSeries, flush_commands
from flagsync.model import Rollout
from flagsync.publisher import Publisher
from flagsync.reporter import MetricsReporter
from flagsync.store import StoreKeys

KEY: Final = "model"
"""The flag every controller test ramps."""
RATE_GUARD: Final = "thumbs_down_rate(candidate) <= thumbs_down_rate(current) * 1.1"
COST_GUARD: Final = "cost_per_request(candidate) <= 0.005"
LATENCY_GUARD: Final = "p95_latency_ms(candidate) <= 1500"
SCRIPT: Final = Path(sys.executable).with_name("flagsync")
"""The console script installed next to the interpreter (entry point `flagsync.cli:main`)."""

Samples = Mapping[tuple[str, str], Sequence[float]]
"""(variant, metric) -> the values a worker tracked."""
Feed = Callable[[Samples], None]
"""The `feed` fixture: append one metrics entry for the model flag."""


def model_document() -> dict[str, Any]:
    """One two-variant flag that serves `current` to everyone (nothing ramped yet)."""
    return {
        "flags": {
            KEY: {
                "variants": {"current": "gpt-4o", "candidate": "gpt-4.1"},
                "off": "current",
                "default": "current",
            }
        }
    }


def make_plan(**fields: Any) -> RolloutPlan:
    """A plan ramping `candidate` against `current` in the fallthrough, fast to run in
    tests (no hold, a 30 s window, 50 samples), with `fields` overriding any of that."""
    settings: dict[str, Any] = {
        "variant": "candidate",
        "control": "current",
        "steps": [20.0, 50.0, 100.0],
        "hold_s": 0.0,
        "window_s": 30.0,
        "min_samples": 50,
        "guards": [RATE_GUARD],
        "on_breach": "kill",
    }
    settings.update(fields)
    return RolloutPlan(**settings)


def rates(count: int, bad: int) -> list[float]:
    """`count` values of a 0/1 signal, `bad` of them 1.0."""
    return [1.0] * bad + [0.0] * (count - bad)


def healthy(count: int = 100) -> dict[tuple[str, str], list[float]]:
    """Both variants with the same 5 % thumbs-down rate, cheap and fast."""
    return {
        ("candidate", "thumbs_down"): rates(count, count // 20),
        ("current", "thumbs_down"): rates(count, count // 20),
        ("candidate", "cost"): [0.004] * count,
        ("candidate", "latency_ms"): [800.0 + index % 10 * 50 for index in range(count)],
    }


def write_metrics(raw: redis.Redis, namespace: str, key: str, samples: Samples) -> None:
    """Append one metrics entry for `key`, encoded and trimmed as a reporter's flush does."""
    series: dict[tuple[str, str, str], MetricStat] = {}
    for (variant, metric), values in samples.items():
        stat = series.setdefault((key, variant, metric), MetricStat())
        for value in values:
            stat.add(value)
    pending = PendingSeries()
    pending.add(series)
    now_ms = int(time.time() * 1000)
    for command in flush_commands(StoreKeys(namespace), pending.by_flag(), 60_000, now_ms):
        raw.execute_command(*command)  # type: ignore[no-untyped-call]


def weight_of(publisher: Publisher, variant: str = "candidate", rule: str | None = None) -> float:
    """The stored percentage of `variant` in the fallthrough (or in the rule named `rule`)."""
    stored = publisher.get(KEY)
    assert stored is not None, f"flag {KEY!r} is missing"
    serve = stored.flag.default
    if rule is not None:
        serve = next(r.serve for r in stored.flag.rules if r.name == rule)
    if isinstance(serve, Rollout):
        return float(serve.rollout.get(variant, 0))
    return 100.0 if serve == variant else 0.0


def reporter_of(client: FlagClient) -> MetricsReporter:
    """The metrics reporter of a connected client (what its background thread runs)."""
    handle = client._sync
    assert handle is not None, "the client is not connected"
    assert handle.reporter is not None, "the client was connected with metrics off"
    return handle.reporter


def run_cli(
    url: str, namespace: str, *args: str, timeout_s: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run `flagsync ARGS` against `url` and `namespace` as an operator would."""
    env = {name: value for name, value in os.environ.items() if name != "FLAGSYNC_NAMESPACE"}
    env.update(REDIS_URL=url, FLAGSYNC_NAMESPACE=namespace)
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )
