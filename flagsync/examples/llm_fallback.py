"""A fallback episode with an LLM config flag, on SIMULATED providers and a virtual clock.

    python -m flagsync.examples.llm_fallback [--requests 3000] [--json]

Every request evaluates `chat-llm` (flagsync/data/llm-configs.yaml) with `llm_config`,
sends it through a `FallbackRouter` to a simulated provider, and records the call with
the tracker (`LLMCall`) and a thumbs-down by call id. For a third of the run the primary
provider answers 429: requests move to the fallback, the primary cools down and is
probed again every few (virtual) seconds. Each phase prints what the flag's metrics say
per variant — the series a guarded rollout reads — and a `fallback_rate` guard.
Nothing calls a model and nothing sleeps: time is virtual, so the run is reproducible.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog

from flagsync import load_flags
from flagsync.client import MeteredFlagClient
from flagsync.guards import evaluate_guard, parse_guard
from flagsync.llm import FallbackRouter, LLMCall, LLMConfig
from flagsync.metrics import MetricStat
from flagsync.snapshot import Snapshot

FLAGS: Final = Path(__file__).resolve().parent.parent / "data" / "llm-configs.yaml"
PLANS: Final = ("free", "free", "paid", "enterprise")
LATENCY_MS: Final = {"gpt-4o": 620.0, "gpt-4.1": 540.0, "claude-sonnet-4": 700.0}
GUARD: Final = "fallback_rate(candidate) <= 0.05"


class VirtualClock:
    """Seconds that advance only when told (the router's `sleep`, the request arrivals)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def __call__(self) -> float:
        return self.now


class RateLimitedError(Exception):
    """What the simulated primary raises during its outage (HTTP 429, like the SDKs)."""

    status_code = 429


@dataclass
class SimulatedProviders:
    """SIMULATED completions: latency and tokens per model; the primary provider
    (openai) answers 429 while `outage` is set."""

    clock: VirtualClock
    draw: random.Random
    outage: bool = False

    def send(self, option: LLMConfig) -> tuple[int, int]:
        if self.outage and option.provider == "openai":
            self.clock.now += 0.03
            raise RateLimitedError("429 Too Many Requests (simulated)")
        self.clock.now += LATENCY_MS[option.model] * (0.7 + 0.6 * self.draw.random()) / 1000
        return 600 + self.draw.randrange(400), 150 + self.draw.randrange(250)


def run(requests: int, seed: int = 7) -> list[dict[str, Any]]:
    """Play the episode; one summary per phase (before, during and after the outage)."""
    client = MeteredFlagClient(Snapshot.build(load_flags(FLAGS)))
    clock = VirtualClock()
    draw = random.Random(seed)
    providers = SimulatedProviders(clock, draw)
    router = FallbackRouter(client, clock=clock, cooldown_s=2.0, wait_deadline_s=5.0)
    phases = [("before", False), ("primary answers 429", True), ("after", False)]
    summaries = []
    for name, outage in phases:
        providers.outage = outage
        served: dict[str, int] = {}
        for _ in range(requests // len(phases)):
            clock.now += 0.02  # 50 requests per virtual second
            user = draw.randrange(10_000)
            context = {"key": f"user-{user}", "plan": PLANS[user % len(PLANS)]}
            variables = {"product": "Acme", "plan": context["plan"], "question": "Hi"}
            config = client.llm_config("chat-llm", context, None, variables)
            if config is None:
                continue
            with LLMCall(client, config, clock=clock) as call:
                routed = router.call(config, providers.send)
                call.served_by(routed.option)
                call.usage(*routed.value)
            served[routed.option.label] = served.get(routed.option.label, 0) + 1
            if call.id is not None and draw.random() < 0.04:
                client.llm_feedback(call.id, "thumbs_down", 1.0)
        summaries.append(_summary(name, client, served))
    return summaries


def _summary(name: str, client: MeteredFlagClient, served: dict[str, int]) -> dict[str, Any]:
    window: dict[tuple[str, str], MetricStat] = {  # what a reporter would have flushed
        (variant, metric): stat
        for (key, variant, metric), stat in client.take_metrics().items()
        if key == "chat-llm"
    }
    variants = {}
    for variant in ("current", "candidate"):
        requests = window.get((variant, "fallback"), MetricStat())
        cost = window.get((variant, "cost"), MetricStat())
        variants[variant] = {
            "requests": requests.count,
            "fallback_rate": round(requests.mean, 3) if requests.count else None,
            "cost_per_request": round(cost.mean, 5) if cost.count else None,
        }
    verdict = evaluate_guard(parse_guard(GUARD), window, min_samples=50)
    return {"phase": name, "served_by": served, "variants": variants, "guard": str(verdict)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flagsync.examples.llm_fallback",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON")
    args = parser.parse_args(argv)
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    summaries = run(args.requests)
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    print("SIMULATED providers, virtual clock; the flag, router, tracker and metrics are real")
    for summary in summaries:
        served = ", ".join(
            f"{label} {count}" for label, count in sorted(summary["served_by"].items())
        )
        print(f"[{summary['phase']}] served by: {served}")
        for variant, row in summary["variants"].items():
            print(
                f"    {variant:<9} {row['requests']:>5} requests"
                f"  fallback_rate {row['fallback_rate']}  cost/request ${row['cost_per_request']}"
            )
        print(f"    guard {summary['guard']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
