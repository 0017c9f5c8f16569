"""Exposure and outcome metrics: counted in process, flushed to Redis in the background.

The hot path only increments numbers in a per-thread table (no lock, no I/O): which
variant each evaluation served (exposures) and what the application reported about it
(`client.track(key, context, metric, value)`). A flusher turns the tables into
*series* — (flag, variant, metric) -> count, sum, sum of squares and a log-scale
histogram — and appends one entry per flag to the stream `{fs:<ns>}:metrics:<flag>`,
whose entry ids are the server's millisecond clock, so a controller can read any time
window. While Redis is down, series wait in memory (bounded); what does not fit is
dropped and counted, never silently.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from flagsync.errors import FlagsyncError

if TYPE_CHECKING:
    from flagsync.compile import CompiledFlag
    from flagsync.store import StoreKeys

__all__ = [
    "EXPOSURES",
    "HISTOGRAM_BASE",
    "MetricStat",
    "MetricsTables",
    "PendingSeries",
    "check_metric_name",
    "decode_entry",
    "encode_series",
    "flush_commands",
    "merge_window",
    "percentile",
]

EXPOSURES: Final = "exposures"
"""The metric name under which evaluations (which variant was served) are counted."""
HISTOGRAM_BASE: Final = 2**0.25
"""Histogram buckets grow by ~19 %: percentiles are exact to that resolution."""
_LOG_BASE: Final = math.log(HISTOGRAM_BASE)
METRIC_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")


def check_metric_name(metric: str) -> None:
    """Refuse names that cannot be stored (they become stream field parts)."""
    if not isinstance(metric, str) or not METRIC_NAME.match(metric):
        raise FlagsyncError(
            f"invalid metric name {metric!r}: use 1-64 of a-z 0-9 . _ - starting with a letter"
            " or digit"
        )


@dataclass
class MetricStat:
    """Running totals of one (flag, variant, metric)."""

    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    histogram: dict[int, int] = field(default_factory=dict)

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.squares += value * value
        bucket = _bucket(value)
        self.histogram[bucket] = self.histogram.get(bucket, 0) + 1

    def merge(self, other: MetricStat) -> None:
        self.count += other.count
        self.total += other.total
        self.squares += other.squares
        for bucket, count in other.histogram.items():
            self.histogram[bucket] = self.histogram.get(bucket, 0) + count

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    @property
    def variance(self) -> float:
        if self.count < 2:
            return math.nan
        return max(0.0, (self.squares - self.total * self.total / self.count) / (self.count - 1))


def _bucket(value: float) -> int:
    """Histogram bucket of a value: 0 for <= 0, else 1 + floor(log_base(value)) + 10_000."""
    if value <= 0 or not math.isfinite(value):
        return 0
    return 10_000 + 1 + math.floor(math.log(value) / _LOG_BASE)


def _bucket_upper(bucket: int) -> float:
    return 0.0 if bucket == 0 else HISTOGRAM_BASE ** (bucket - 10_000)


def percentile(stat: MetricStat, percent: float) -> float:
    """The `percent` percentile from the histogram (upper edge of its bucket)."""
    if not stat.histogram:
        return math.nan
    rank = percent / 100 * sum(stat.histogram.values())
    seen = 0
    for bucket in sorted(stat.histogram):
        seen += stat.histogram[bucket]
        if seen >= rank:
            return _bucket_upper(bucket)
    return _bucket_upper(max(stat.histogram))


class MetricsTables:
    """In-process counts: exposures (lock-free, on the hot path) and tracked outcomes.

    Exposures live on the compiled flags themselves (`CompiledFlag.counts`, one slot per
    outcome), so counting costs one list-slot increment; `drain` reads each slot and
    subtracts what it read. Under threads, an increment that races a thread switch can,
    rarely, be lost (counts are approximate there, exact in a single thread). Tracked
    outcomes are rarer and take a lock.
    """

    def __init__(self, flags: Callable[[], Iterable[CompiledFlag]] | None = None) -> None:
        self.flags: Callable[[], Iterable[CompiledFlag]] = flags or tuple
        """Where the live compiled flags are (the client's current snapshot)."""
        self._retired: list[CompiledFlag] = []
        self._outcomes: dict[tuple[CompiledFlag, int, str], MetricStat] = {}
        self._lock = threading.Lock()
        self._exposed: dict[str, dict[str, int]] = {}
        """Exposures drained so far, per flag and variant (see `exposure_totals`)."""
        self._totals_lock = threading.Lock()
        """Held while exposures move from the flags to `_exposed` (taken before `_lock`,
        never after), so totals never miss or double them; `record` never waits on it."""

    def count_exposure(self, flag: CompiledFlag, index: int) -> None:
        """One evaluation of `flag` served outcome `index`."""
        flag.counts[index] += 1

    def retire(self, flags: Iterable[CompiledFlag]) -> None:
        """Flags of a snapshot being replaced: drained once more, then forgotten."""
        with self._lock:
            self._retired.extend(flags)

    def record(self, flag: CompiledFlag, index: int, metric: str, value: float) -> None:
        """The application reported `value` of `metric` for a context served outcome `index`."""
        with self._lock:
            stat = self._outcomes.get((flag, index, metric))
            if stat is None:
                stat = self._outcomes[(flag, index, metric)] = MetricStat()
            stat.add(value)

    def drain(self) -> dict[tuple[str, str, str], MetricStat]:
        """Swap out the counts and sum them as (flag, variant, metric) series."""
        with self._totals_lock:
            with self._lock:
                outcomes, self._outcomes = self._outcomes, {}
                retired, self._retired = self._retired, []
            series: dict[tuple[str, str, str], MetricStat] = {}
            for flag in (*self.flags(), *retired):
                counts = flag.counts
                for index in range(len(counts)):
                    count = counts[index]
                    if count:
                        counts[index] -= count  # subtract what was read: racing increments stay
                        variant = flag.outcomes[index].variant or "default"
                        stat = series.setdefault((flag.key, variant, EXPOSURES), MetricStat())
                        stat.count += count
                        stat.total += count
                        stat.squares += count
                        totals = self._exposed.setdefault(flag.key, {})
                        totals[variant] = totals.get(variant, 0) + count
        for (flag, index, metric), stat in outcomes.items():
            variant = flag.outcomes[index].variant or "default"
            series.setdefault((flag.key, variant, metric), MetricStat()).merge(stat)
        return series

    def exposure_totals(self) -> dict[str, dict[str, int]]:
        """Exposures per flag and variant since these tables were made: those drained
        (flushed) plus those still counted on the flags (read, not taken)."""
        with self._totals_lock:
            totals = {key: dict(variants) for key, variants in self._exposed.items()}
            with self._lock:
                retired = list(self._retired)
            # A flag carried over into a new snapshot is both live and retired: once.
            flags = {id(flag): flag for flag in (*self.flags(), *retired)}
            for flag in flags.values():
                counts = flag.counts
                for index in range(len(counts)):
                    count = counts[index]
                    if count:
                        variant = flag.outcomes[index].variant or "default"
                        here = totals.setdefault(flag.key, {})
                        here[variant] = here.get(variant, 0) + count
        return totals


class PendingSeries:
    """Series waiting to be flushed, bounded: beyond `max_series`, new ones are dropped
    (and counted) rather than growing memory while Redis is down."""

    def __init__(self, max_series: int = 10_000) -> None:
        self.max_series = max_series
        self.series: dict[tuple[str, str, str], MetricStat] = {}
        self.dropped = 0

    def add(self, series: Mapping[tuple[str, str, str], MetricStat]) -> None:
        for key, stat in series.items():
            current = self.series.get(key)
            if current is not None:
                current.merge(stat)
            elif len(self.series) < self.max_series:
                self.series[key] = stat
            else:
                self.dropped += stat.count

    def by_flag(self) -> dict[str, dict[str, str]]:
        """Stream entry fields per flag."""
        entries: dict[str, dict[str, str]] = {}
        for (flag, variant, metric), stat in self.series.items():
            entries.setdefault(flag, {}).update(encode_series(variant, metric, stat))
        return entries


def encode_series(variant: str, metric: str, stat: MetricStat) -> dict[str, str]:
    """Stream fields of one series: `<variant>|<metric>|c` (count), `|s`, `|q`, `|h`."""
    prefix = f"{variant}|{metric}|"
    fields = {prefix + "c": str(stat.count), prefix + "s": repr(stat.total)}
    if metric != EXPOSURES:
        fields[prefix + "q"] = repr(stat.squares)
        fields[prefix + "h"] = ",".join(f"{b}:{n}" for b, n in sorted(stat.histogram.items()))
    return fields


def decode_entry(
    fields: Mapping[bytes | str, bytes | str], into: dict[tuple[str, str], MetricStat]
) -> int:
    """Add one stream entry's series into `into` ((variant, metric) -> stat); returns how
    many fields were skipped as malformed.

    A metrics entry is written with a worker's credentials, so it is never trusted to be
    well-formed, and each series is taken whole or not at all: a series with any field a
    reporter cannot have written (unknown part, negative count, non-finite sum, a
    histogram that does not add up to the count, a sum without samples) is skipped, so a
    crafted field cannot, say, subtract from the honest workers' sums. The caller that
    decides on the result (the rollout controller) learns that something was skipped.
    """
    malformed = 0
    grouped: dict[tuple[str, str], dict[str, str]] = {}
    for raw_name, raw_value in fields.items():
        try:
            name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
            value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
        except UnicodeDecodeError:
            malformed += 1
            continue
        variant, _, rest = name.partition("|")
        metric, _, part = rest.rpartition("|")
        if not variant or not metric:
            malformed += 1
            continue
        grouped.setdefault((variant, metric), {})[part] = value
    for series, parts in grouped.items():
        try:
            stat = _series_stat(parts)
        except ValueError:
            malformed += len(parts)
            continue
        into.setdefault(series, MetricStat()).merge(stat)
    return malformed


def _series_stat(parts: Mapping[str, str]) -> MetricStat:
    """One series of an entry as a stat; `ValueError` unless it is what a reporter writes."""
    if not parts.keys() <= _PARTS:
        raise ValueError("unknown part")
    count = int(parts.get("c", "0"))
    total, squares = float(parts.get("s", "0")), float(parts.get("q", "0"))
    if count < 0 or not math.isfinite(total) or not math.isfinite(squares) or squares < 0:
        raise ValueError("negative count or non-finite sum")
    if count == 0 and (total or squares):
        raise ValueError("a sum without samples")
    histogram: dict[int, int] = {}
    if parts.get("h"):
        for item in parts["h"].split(","):
            bucket, _, raw_count = item.partition(":")
            histogram[int(bucket)] = histogram.get(int(bucket), 0) + int(raw_count)
        if any(n < 0 for n in histogram.values()) or sum(histogram.values()) != count:
            raise ValueError("histogram does not add up to the count")
    return MetricStat(count, total, squares, histogram)


_PARTS: Final = frozenset("csqh")


def merge_window(
    entries: Iterable[Mapping[bytes | str, bytes | str]],
) -> dict[tuple[str, str], MetricStat]:
    """Sum the series of many stream entries (malformed fields skipped)."""
    totals: dict[tuple[str, str], MetricStat] = {}
    for fields in entries:
        decode_entry(fields, totals)
    return totals


def flush_commands(
    keys: StoreKeys,
    entries: Mapping[str, Mapping[str, str]],
    retention_ms: int,
    now_ms: int,
    worker_id: str | None = None,
) -> list[tuple[Any, ...]]:
    """XADD commands for a flush: one entry per flag, trimming entries older than retention.

    With `worker_id`, each goes to the worker's own stream (`StoreKeys.worker_metrics`), which
    also expires `retention_ms` after its last flush, so streams of workers long gone do
    not accumulate; without it, to the flag's shared stream (older workers, tests).
    """
    commands: list[tuple[Any, ...]] = []
    for flag, fields in entries.items():
        key = keys.metrics(flag) if worker_id is None else keys.worker_metrics(flag, worker_id)
        commands.append(
            ("XADD", key, "MINID", "~", str(now_ms - retention_ms), "*",
             *[part for item in fields.items() for part in item])
        )  # fmt: skip
        if worker_id is not None:
            commands.append(("PEXPIRE", key, retention_ms))
    return commands
