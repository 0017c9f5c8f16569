"""An inference worker: serves simulated chat requests, choosing everything from flags.

    python -m flagsync.examples.inference --url redis://127.0.0.1:6379 --index 0 --rps 300

Per request it evaluates the model (`llm-model-version`), the prompt template
(`prompt-template-v2`), sampling parameters (`sampling-params`, JSON), the context
window (`context-window`), the retrieval strategy (`retrieval-strategy`) and the
fallback route (`fallback-provider`), then calls a SIMULATED backend
(`flagsync.examples.simulation`). When the namespace has the LLM config flag `chat-llm`
(`flagsync/data/llm-configs.yaml`), each request also sends its config through a
`FallbackRouter` to SIMULATED providers; SIGUSR2 makes the primary provider answer 429
until the next SIGUSR2 (the demo's fallback episode), and the router records which
option served into the flag's metrics. It counts requests, errors, latency, tokens, cost and
thumbs-down per (revision, model variant, matched rule) and prints the cumulative
counters as JSON lines on stdout; logs go to stderr (warnings; `-v` for INFO).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections import defaultdict
from typing import Any

import structlog

from flagsync import FlagClient
from flagsync.examples.simulation import Backend
from flagsync.llm import AllOptionsFailedError, FallbackRouter, LLMConfig

log = structlog.get_logger("flagsync.examples.inference")

PLANS = ("free", "free", "free", "free", "free", "free", "paid", "paid", "paid", "enterprise")
REGIONS = ("us", "eu", "apac")
COUNTER_FIELDS = ("requests", "errors", "latency_ms", "tokens", "cost", "thumbs_down", "fallbacks")
LLM_FLAG = "chat-llm"
"""The LLM config flag a worker routes through when the namespace has it."""


def user_context(user_id: int) -> dict[str, Any]:
    """The same user always has the same attributes (plan, region, staff e-mail, org)."""
    mix = (user_id * 2654435761) % 2**32
    return {
        "key": f"user-{user_id}",
        "plan": PLANS[mix % len(PLANS)],
        "region": REGIONS[(mix >> 8) % len(REGIONS)],
        "email": f"u{user_id}@acme.com" if user_id % 50 == 0 else f"u{user_id}@example.com",
        "org_id": f"org-{user_id % 500}",
        "session_id": f"s-{user_id}-{mix % 7}",
    }


class Worker:
    """One worker process's request loop and counters."""

    def __init__(self, client: FlagClient, index: int, backend: Backend) -> None:
        self.client = client
        self.index = index
        self.backend = backend
        self.random = random.Random(index)
        self.counters: dict[tuple[int, str, str], list[float]] = defaultdict(
            lambda: [0.0] * len(COUNTER_FIELDS)
        )
        self.router = FallbackRouter(client, cooldown_s=0.5, wait_deadline_s=0.0)

    def _send(self, option: LLMConfig) -> tuple[int, int]:
        return self.backend.call_provider(option.provider, option.model)

    def route_llm(self, context: dict[str, Any]) -> None:
        """Send `chat-llm`'s config for `context` (if the flag exists) through the router,
        tracked with `llm_call`: the router records `fallback` (0/1) and the tracker
        latency, tokens and errors against the variant that served the config."""
        config = self.client.llm_config(LLM_FLAG, context, None, {"product": "Acme"})
        if config is None:
            return
        try:
            with self.client.llm_call(config) as call:
                routed = self.router.call(config, self._send)
                call.served_by(routed.option)
                call.usage(*routed.value)
        except AllOptionsFailedError:
            log.warning("llm_unserved", flag=LLM_FLAG, variant=config.variant)

    def serve_one(self, population: int) -> None:
        """Handle one simulated chat request end to end."""
        client = self.client
        revision = client.revision  # read before evaluating: snapshots only move forward
        context = user_context(self.random.randrange(population))
        model = client.detail("llm-model-version", context, "gpt-4o")
        prompt_v2 = client.bool_value("prompt-template-v2", context, False)
        sampling = client.json_value("sampling-params", context, {"temperature": 0.2})
        window = client.number_value("context-window", context, 8192)
        client.string_value("retrieval-strategy", context, "bm25")  # picks the retriever
        fallback = client.string_value("fallback-provider", context, "none")
        self.route_llm(context)
        completion = self.backend.complete(
            model.value,
            prompt_v2=prompt_v2,
            temperature=float(sampling.get("temperature", 0.2)),
            context_tokens=int(window),
            fallback=fallback,
        )
        # The outcome signals a guarded rollout decides on (flushed in the background).
        client.track("llm-model-version", context, "thumbs_down", float(completion.thumbs_down))
        client.track("llm-model-version", context, "cost", completion.cost)
        client.track("llm-model-version", context, "latency_ms", completion.latency_ms)
        row = self.counters[(revision, model.variant or "default", model.rule or "")]
        row[0] += 1
        row[1] += completion.error
        row[2] += completion.latency_ms
        row[3] += completion.tokens
        row[4] += completion.cost
        row[5] += completion.thumbs_down
        row[6] += completion.provider != "primary"

    def report(self) -> dict[str, Any]:
        """Cumulative counters as plain data."""
        return {
            "type": "stats",
            "worker": self.index,
            "pid": os.getpid(),
            "revision": self.client.revision,
            "status": str(self.client.status().state),
            "counters": [
                [revision, variant, rule, *values]
                for (revision, variant, rule), values in sorted(self.counters.items())
            ],
        }


def build_parser() -> argparse.ArgumentParser:
    """The worker's command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m flagsync.examples.inference",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default=os.environ.get("REDIS_URL"), help="default: $REDIS_URL")
    parser.add_argument(
        "-n",
        "--namespace",
        default=os.environ.get("FLAGSYNC_NAMESPACE", "default"),
        help="default: $FLAGSYNC_NAMESPACE or 'default'",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log INFO to stderr (default: warnings)"
    )
    parser.add_argument("--index", type=int, default=0, help="worker number (seeds its users)")
    parser.add_argument("--rps", type=float, default=200.0, help="simulated requests per second")
    parser.add_argument("--population", type=int, default=50_000, help="distinct users")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds (0: until stopped)")
    parser.add_argument("--report-interval", type=float, default=0.5)
    parser.add_argument(
        "--degrade-model",
        default="gpt-4.1",
        help="the model whose simulated quality worsens on SIGUSR1 (the demo's regression)",
    )
    parser.add_argument("--stop-on-stdin-eof", action="store_true")
    parser.add_argument(
        "--metrics-interval", type=float, default=10.0, help="seconds between metric flushes"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a worker until --duration passes, stdin closes, or SIGTERM."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("no server URL: pass --url redis://HOST:PORT or set REDIS_URL")
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.INFO if args.verbose else logging.WARNING
        ),
    )

    stop = threading.Event()
    backend = Backend(seed=args.index)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: backend.degraded.add(args.degrade_model))
    # The fallback episode: the primary LLM provider answers 429 until the next SIGUSR2.
    signal.signal(
        signal.SIGUSR2,
        lambda *_: backend.rate_limited_providers.symmetric_difference_update({"openai"}),
    )
    if args.stop_on_stdin_eof:

        def stop_at_eof() -> None:
            sys.stdin.read()
            stop.set()

        threading.Thread(target=stop_at_eof, daemon=True).start()

    with FlagClient.connect(
        args.url, args.namespace, exposures=True, metrics_interval_s=args.metrics_interval
    ) as client:
        if not client.wait_ready(10):
            log.warning("serving_defaults_until_synced", status=str(client.status().state))
        worker = Worker(client, args.index, backend)
        log.info("worker_started", index=args.index, revision=client.revision, rps=args.rps)
        started = time.monotonic()
        next_report = started + args.report_interval
        served = 0
        while not stop.is_set():
            now = time.monotonic()
            if args.duration and now - started >= args.duration:
                break
            due = int((now - started) * args.rps) - served
            for _ in range(max(0, min(due, 1000))):
                worker.serve_one(args.population)
            served += max(0, due)
            if now >= next_report:
                print(json.dumps(worker.report()), flush=True)
                next_report = now + args.report_interval
            stop.wait(0.005)
        print(json.dumps(worker.report()), flush=True)
        log.info("worker_stopped", index=args.index, served=served)
    return 0


if __name__ == "__main__":
    sys.exit(main())
