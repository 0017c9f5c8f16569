"""Timing helpers shared by the benchmark suites: medians of repeated, GC-free runs."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Evaluate = Callable[[str, Mapping[str, Any], Any], Any]


def ns_per_call(
    evaluate: Evaluate,
    key: str,
    contexts: Sequence[Mapping[str, Any]],
    default: Any,
    repeats: int,
) -> list[float]:
    """Nanoseconds per call of `evaluate(key, context, default)` over `contexts`, per repeat.

    Every repeat walks all contexts (distinct users, so nothing is cached by accident);
    the loop costs the same for the floor, so ratios compare like with like.
    """
    samples: list[float] = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            started = time.perf_counter_ns()
            for context in contexts:
                evaluate(key, context, default)
            samples.append((time.perf_counter_ns() - started) / len(contexts))
    finally:
        if was_enabled:
            gc.enable()
    return samples


def seconds(action: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of each of `repeats` runs of `action`."""
    samples: list[float] = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def median(samples: Sequence[float]) -> float:
    """The median of `samples` (the benchmarks' one summary statistic)."""
    return statistics.median(samples)
