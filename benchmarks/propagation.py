"""Sync benchmarks: propagation to N subscriber processes, cold start, publisher throughput.

Propagation is publish -> applied in every subscriber's snapshot, from the server's
clock at the write (the Lua script's TIME, in the change log) to the wall clock at
which each subscriber process swapped the snapshot in. Beside it, the floor of the same
run: N plain redis-py subscriber processes, timed from the server clock at PUBLISH to
the message being read. Both run one round at a time on an otherwise idle server.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import redis

from benchmarks._timing import median, seconds
from benchmarks.engine import many_flags
from flagsync import FlagClient
from flagsync.publisher import Publisher
from flagsync.server import redis_url

_PUBLISH_AND_TIME = """
local now = redis.call('TIME')
redis.call('PUBLISH', KEYS[1], ARGV[1])
return now
"""


def run(*, quick: bool) -> dict[str, Any]:
    """Every sync measurement, against `REDIS_URL` or an embedded Valkey."""
    counts = (1, 10) if quick else (1, 10, 50)
    # 100 rounds even in the quick run: a p99 over 20 samples is their maximum, and one
    # scheduling hiccup on a 2-core runner then fails the budget (seen: 3.7x from one 1.8 ms).
    rounds = 100 if quick else 200
    results: dict[str, Any] = {"propagation": {}, "cold_start": {}}
    with redis_url() as url:
        for count in counts:
            raw = _raw_latencies_ms(url, count, rounds)
            ours = _flagsync_latencies_ms(url, count, rounds)
            results["propagation"][f"subscribers_{count}"] = {
                "raw_pubsub_ms": _summary(raw),
                "flagsync_ms": _summary(ours),
                "p50_ratio": round(_percentile(ours, 50) / _percentile(raw, 50), 2),
                "p99_ratio": round(_percentile(ours, 99) / _percentile(raw, 99), 2),
            }
        for flags in (1_000, 10_000):
            results["cold_start"][f"flags_{flags}"] = _cold_start(url, flags, 5 if quick else 9)
        results["cold_start"]["flags_10000_distinct"] = _cold_start(
            url, 10_000, 5 if quick else 9, distinct=True
        )
        results["publisher"] = _throughput(url, 1.0 if quick else 3.0)
    return results


def _raw_latencies_ms(url: str, count: int, rounds: int) -> list[float]:
    channel = f"bench-raw-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(url, protocol=2)
    publish = client.register_script(_PUBLISH_AND_TIME)
    padding = "x" * 400  # about the size of a one-flag change message
    sent_us: dict[int, int] = {}
    with _listeners("raw", url, channel, count) as collect:
        for sequence in range(1, rounds + 1):
            seconds_part, micros = publish(keys=[channel], args=[f"{sequence}|{padding}"])
            sent_us[sequence] = int(seconds_part) * 1_000_000 + int(micros)
            time.sleep(0.01 + count * 0.0004)
        records = collect()
    client.close()
    return _latencies(records, sent_us, count, rounds)


def _flagsync_latencies_ms(url: str, count: int, rounds: int) -> list[float]:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    with Publisher(url, namespace, actor="benchmark") as publisher:
        publisher.apply(
            {
                "flags": {
                    "llm-model-version": {
                        "variants": {"current": "gpt-4o", "candidate": "gpt-4.1"},
                        "off": "current",
                        "default": "candidate",
                    }
                }
            }
        )
        revisions: list[int] = []
        with _listeners("flagsync", url, namespace, count) as collect:
            for sequence in range(rounds):
                write = publisher.kill if sequence % 2 == 0 else publisher.enable
                revision = write("llm-model-version", reason="propagation benchmark")
                revisions.append(revision)
                time.sleep(0.01 + count * 0.0004)  # the same pacing as the raw floor
                report = publisher.wait_propagated(revision, timeout=5)
                if not report.complete or len(report.reached) != count:
                    raise AssertionError(
                        f"revision {revision} reached {len(report.reached)}/{count}"
                    )
            records = collect()
        sent_us = {entry.revision: entry.time_us for entry in publisher.history(limit=rounds + 5)}
    published = {revision: sent_us[revision] for revision in revisions}
    return _latencies(records, published, count, rounds)


@contextmanager
def _listeners(
    mode: str, url: str, name: str, count: int
) -> Iterator[Callable[[], list[list[tuple[int, int]]]]]:
    """Start `count` listener processes, wait for READY; yields a function that stops
    them and returns each one's records."""
    with ExitStack() as stack:
        processes = []
        for _ in range(count):
            process = subprocess.Popen(  # noqa: S603 - our own module, our own arguments
                [sys.executable, "-m", "benchmarks._listener", mode, url, name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            stack.callback(_reap, process)
            processes.append(process)
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if line.strip() != "READY":
                raise RuntimeError(f"listener failed to start: {line!r}")

        def collect() -> list[list[tuple[int, int]]]:
            time.sleep(0.05)
            outputs = []
            for process in processes:
                stdout, _ = process.communicate(input="", timeout=30)
                outputs.append(
                    [tuple(item) for item in json.loads(stdout.strip().splitlines()[-1])]
                )
            return outputs

        yield collect


def _reap(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def _latencies(
    records: list[list[tuple[int, int]]], sent_us: dict[int, int], count: int, rounds: int
) -> list[float]:
    latencies: list[float] = []
    for received in records:
        arrivals = {sequence: t_ns for sequence, t_ns in received if sequence in sent_us}
        if len(arrivals) != len(sent_us):
            raise AssertionError(f"a subscriber saw {len(arrivals)} of {len(sent_us)} changes")
        latencies.extend((arrivals[seq] / 1000 - sent_us[seq]) / 1000 for seq in sent_us)
    if len(latencies) != count * rounds:
        raise AssertionError(f"{len(latencies)} latencies, expected {count * rounds}")
    return latencies


def _percentile(samples: Sequence[float], percent: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))
    return ordered[index]


def _summary(samples: Sequence[float]) -> dict[str, float]:
    return {
        "p50": round(_percentile(samples, 50), 3),
        "p99": round(_percentile(samples, 99), 3),
        "max": round(max(samples), 3),
        "mean": round(statistics.fmean(samples), 3),
        "samples": len(samples),
    }


def _cold_start(url: str, flags: int, repeats: int, *, distinct: bool = False) -> dict[str, float]:
    """Connect + load (ready to evaluate) of a namespace with `flags` flags, in-process,
    against the floor of a plain HGETALL of the same hash, timed in turn in every round
    (issue #10: <= 5x at 10,000 flags on a quiet machine).

    `many_flags` has four shapes, so most flags share a definition with others (as
    release toggles do) and the loader checks each distinct definition once; `distinct`
    gives every flag its own description, the worst case, where every one is checked."""
    namespace = f"bench-cold-{flags}-{uuid.uuid4().hex[:6]}"
    document = many_flags(flags)
    if distinct:
        for number, definition in enumerate(document["flags"].values()):
            definition["description"] = f"flag number {number}"
    with Publisher(url, namespace, actor="benchmark") as publisher:
        publisher.apply(document)
        flags_key = publisher.keys.flags
    plain = redis.Redis.from_url(url, protocol=2)

    def hgetall() -> None:
        if len(plain.hgetall(flags_key)) != flags:
            raise AssertionError("cold start: HGETALL returned the wrong number of flags")

    def connect(compile_all: bool) -> float:
        """Seconds from connect to ready (and evaluating; all compiled with `compile_all`).

        Closing is not timed: it joins the sync thread, which may still be hashing the
        state digest it computes once the client is ready (off the cold-start path)."""
        gc.collect()
        started = time.perf_counter()
        follower = FlagClient.connect(url, namespace)
        try:
            if not follower.wait_ready(30):
                raise AssertionError("cold start: client never became ready")
            if len(follower.snapshot) != flags:
                raise AssertionError("cold start: wrong number of flags loaded")
            if follower.variation("flag-00001", {}, "x") != "a":  # shape 1: killed, "a"
                raise AssertionError("cold start: a loaded flag evaluates wrongly")
            if compile_all:
                follower.snapshot.compile_all()
            return time.perf_counter() - started
        finally:
            follower.close()

    hgetall_s: list[float] = []
    ready_s: list[float] = []
    compiled_s: list[float] = []
    for _ in range(repeats):
        hgetall_s.extend(seconds(hgetall, 1))
        ready_s.append(connect(compile_all=False))
        compiled_s.append(connect(compile_all=True))
    plain.close()
    ratios = [ready / floor for ready, floor in zip(ready_s, hgetall_s, strict=True)]
    return {
        "hgetall_floor_ms": round(median(hgetall_s) * 1000, 1),
        "connect_load_ms": round(median(ready_s) * 1000, 1),
        "connect_load_compile_all_ms": round(median(compiled_s) * 1000, 1),
        "ratio_to_hgetall": round(median(ratios), 1),
    }


def _throughput(url: str, duration_s: float) -> dict[str, float]:
    """Sequential kill/enable writes per second, against plain PUBLISH round trips."""
    namespace = f"bench-tp-{uuid.uuid4().hex[:8]}"
    with Publisher(url, namespace, actor="benchmark") as publisher:
        publisher.apply(
            {
                "flags": {
                    "f": {"variants": {"on": True, "off": False}, "off": "off", "default": "on"}
                }
            }
        )
        writes = 0
        started = time.perf_counter()
        while time.perf_counter() - started < duration_s:
            (publisher.kill if writes % 2 == 0 else publisher.enable)("f")
            writes += 1
        ours = writes / (time.perf_counter() - started)
    client = redis.Redis.from_url(url, protocol=2)
    publishes = 0
    started = time.perf_counter()
    while time.perf_counter() - started < duration_s / 2:
        client.publish("bench-tp-raw", b"x" * 400)
        publishes += 1
    raw = publishes / (time.perf_counter() - started)
    client.close()
    return {
        "changes_per_s": round(ours),
        "raw_publish_per_s": round(raw),
        "cost_ratio_to_publish": round(raw / ours, 1),
    }
