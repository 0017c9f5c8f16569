"""Read a flag's metrics for the rollout controller without trusting what workers wrote.

Workers append to their own streams (`{fs:<ns>}:metrics:<flag>:<worker-id>`; older ones
to the shared `{fs:<ns>}:metrics:<flag>`), with credentials that can write those keys.
So each stream is read separately and anything wrong — a key that is not a stream (a
worker credential can replace it with a string: WRONGTYPE), fields no reporter writes —
is reported as a problem of the window, never raised: the controller then keeps guarding
(a breach on the readable data still rolls back) but does not advance. The samples each
stream contributed are kept per stream, so a plan can refuse to advance when one worker
supplies most of them (`RolloutPlan.max_source_share`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import redis

from flagsync._cluster import scan_keys
from flagsync._connection import store_errors
from flagsync.metrics import MetricStat, decode_entry
from flagsync.store import StoreKeys

__all__ = ["MetricsWindow", "read_window"]

_SCAN_COUNT: Final = 1000


@dataclass
class MetricsWindow:
    """The summed samples of a window, what each stream gave, and what could not be read."""

    stats: dict[tuple[str, str], MetricStat] = field(default_factory=dict)
    """(variant, metric) -> the stat over every readable stream."""
    by_source: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)
    """stream key -> (variant, metric) -> samples it contributed."""
    problems: list[str] = field(default_factory=list)
    """One line per unreadable stream or stream with malformed fields."""

    def largest_share(self, variant: str, metric: str) -> tuple[float, str | None]:
        """The largest fraction of (variant, metric)'s samples from one stream, and which."""
        total = self.stats.get((variant, metric), MetricStat()).count
        if total <= 0:
            return 0.0, None
        counts = {src: per.get((variant, metric), 0) for src, per in self.by_source.items()}
        source = max(counts, key=lambda src: counts[src])
        return counts[source] / total, source


def read_window(client: Any, url: str, keys: StoreKeys, flag: str, since_ms: int) -> MetricsWindow:
    """Every metrics stream of `flag` from `since_ms` on; connection failures raise
    (`StoreError`), bad data is reported in `problems`."""
    shared = keys.metrics(flag)
    with store_errors(url):
        found = scan_keys(client, keys.worker_metrics_pattern(flag), _SCAN_COUNT)
        streams = [shared, *sorted({_text(key) for key in found})]
        pipe = client.pipeline(transaction=False)
        for key in streams:
            pipe.xrange(key, min=str(since_ms), max="+")
        replies = pipe.execute(raise_on_error=False)
    window = MetricsWindow()
    for key, reply in zip(streams, replies, strict=True):
        if isinstance(reply, redis.exceptions.ResponseError):
            window.problems.append(f"{key}: unreadable ({reply})")
            continue
        if isinstance(reply, Exception):  # a connection error: not a data problem
            with store_errors(url):
                raise reply
        contributed: dict[tuple[str, str], int] = {}
        malformed = 0
        for _, fields in reply:
            entry: dict[tuple[str, str], MetricStat] = {}
            malformed += decode_entry(fields, entry)
            for series, stat in entry.items():
                window.stats.setdefault(series, MetricStat()).merge(stat)
                contributed[series] = contributed.get(series, 0) + stat.count
        if malformed:
            window.problems.append(f"{key}: {malformed} malformed field(s) skipped")
        if contributed:
            window.by_source[key] = contributed
    return window


def _text(key: bytes | str) -> str:
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else key
