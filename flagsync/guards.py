"""Rollout guards: `thumbs_down_rate(candidate) <= thumbs_down_rate(current) * 1.10`.

A guard compares a metric of the new variant with a constant or with the control's
metric over the same window, and decides with counts, not just ratios:

- too few samples on either side -> `insufficient` (never decide on noise);
- a mean (`<metric>_rate`, `<metric>_per_request`, `mean_<metric>`) is compared with a
  one-sided 95 % test: it is a `breach` only when the difference exceeds its standard
  error times 1.645 (both sides' variances when the right side is the control);
- a percentile (`p95_<metric>`, `p99_...`) from the histogram is a `breach` when it is
  past the limit with enough samples.

Functions name a metric recorded with `client.track(key, context, metric, value)`:
`thumbs_down_rate(v)` is the mean of `thumbs_down`, `cost_per_request(v)` the mean of
`cost`, `p95_latency_ms(v)` the 95th percentile of `latency_ms`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final

import msgspec

from flagsync.errors import InvalidFlagError, ValidationIssue
from flagsync.metrics import MetricStat, percentile

__all__ = ["Guard", "GuardResult", "Side", "evaluate_guard", "parse_guard"]

Z_ONE_SIDED_95: Final = 1.645
_NUMBER = r"-?[0-9.]+(?:e-?\d+)?"
_SIDE = (
    r"(?:(?P<{n}fn>[a-z][a-z0-9_]*)\((?P<{n}var>[a-z0-9][a-z0-9._-]*)\)"
    r"(?:\s*\*\s*(?P<{n}factor>" + _NUMBER + r"))?|(?P<{n}num>" + _NUMBER + r"))"
)
_GUARD = re.compile(
    r"^\s*" + _SIDE.format(n="l") + r"\s*(?P<op><=|>=|<|>)\s*" + _SIDE.format(n="r") + r"\s*\Z"
)
_PERCENTILE = re.compile(r"^p(?P<pct>[0-9]{1,2}(?:\.[0-9])?)_(?P<metric>[a-z0-9][a-z0-9._]*)\Z")


class Side(msgspec.Struct, frozen=True):
    """One side of a guard: a metric function of a variant (times a factor) or a number."""

    function: str | None = None
    metric: str | None = None
    variant: str | None = None
    factor: float = 1.0
    number: float | None = None
    percentile: float | None = None

    def __str__(self) -> str:
        if self.number is not None:
            return f"{self.number:g}"
        text = f"{self.function}({self.variant})"
        return text if self.factor == 1.0 else f"{text} * {self.factor:g}"


class Guard(msgspec.Struct, frozen=True):
    """A parsed guard expression."""

    text: str
    left: Side
    op: str
    right: Side


class GuardResult(msgspec.Struct, frozen=True):
    """A guard's verdict on a window, with the numbers it was based on."""

    guard: str
    verdict: str
    """`pass`, `breach` or `insufficient`."""
    left: float | None
    right: float | None
    left_samples: int
    right_samples: int | None

    def __str__(self) -> str:
        return f"{self.verdict}: {self.summary}"

    @property
    def summary(self) -> str:
        """The guard and its numbers, without the verdict (for a line that states it)."""

        def show(value: float | None) -> str:
            return "n/a" if value is None or math.isnan(value) else f"{value:.4g}"

        right = show(self.right) + (
            f" [n={self.right_samples}]" if self.right_samples is not None else ""
        )
        return f"{self.guard}  ({show(self.left)} [n={self.left_samples}] vs {right})"


def parse_guard(text: str, *, path: str = "guards") -> Guard:
    """Parse a guard; `InvalidFlagError` naming `path` when it is malformed."""
    match = _GUARD.match(text)
    if match is None:
        raise InvalidFlagError(
            [ValidationIssue(path, f"cannot parse guard {text!r}: want e.g. 'thumbs_down_rate"
                                   "(candidate) <= thumbs_down_rate(current) * 1.1'")]
        )  # fmt: skip
    left, right = _side(match, "l", text, path), _side(match, "r", text, path)
    if left.number is not None:
        raise InvalidFlagError(
            [ValidationIssue(path, f"the left side of {text!r} must be a metric")]
        )
    return Guard(text=text.strip(), left=left, op=match["op"], right=right)


def _side(match: re.Match[str], n: str, text: str, path: str) -> Side:
    if match[f"{n}num"] is not None:
        return Side(number=_number(match[f"{n}num"], text, path))
    function = match[f"{n}fn"]
    factor = _number(match[f"{n}factor"], text, path) if match[f"{n}factor"] else 1.0
    variant = match[f"{n}var"]
    percent = _PERCENTILE.match(function)
    if percent is not None:
        return Side(function, percent["metric"], variant, factor, None, float(percent["pct"]))
    for suffix in ("_rate", "_per_request"):
        if function.endswith(suffix) and len(function) > len(suffix):
            return Side(function, function[: -len(suffix)], variant, factor)
    if function.startswith("mean_") and len(function) > 5:
        return Side(function, function[5:], variant, factor)
    raise InvalidFlagError(
        [ValidationIssue(path, f"unknown function {function!r} in {text!r}: use <metric>_rate, "
                               "<metric>_per_request, mean_<metric> or p<NN>_<metric>")]
    )  # fmt: skip


def _number(raw: str, text: str, path: str) -> float:
    """A number of a guard: the pattern admits e.g. `1.2.3` or `1e999`, which are refused."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InvalidFlagError(
            [ValidationIssue(path, f"cannot parse guard {text!r}: {raw!r} is not a finite number")]
        )
    return value


def evaluate_guard(
    guard: Guard, window: Mapping[tuple[str, str], MetricStat], min_samples: int
) -> GuardResult:
    """Decide `guard` on a window of (variant, metric) -> stats."""
    left_stat = _stat(window, guard.left)
    left_value = _value(left_stat, guard.left) * guard.left.factor
    if guard.right.number is not None:
        right_stat, right_value = None, guard.right.number
    else:
        right_stat = _stat(window, guard.right)
        right_value = _value(right_stat, guard.right) * guard.right.factor
    enough = left_stat.count >= min_samples and (
        right_stat is None or right_stat.count >= min_samples
    )

    def result(verdict: str) -> GuardResult:
        return GuardResult(
            guard.text,
            verdict,
            None if math.isnan(left_value) else left_value,
            None if math.isnan(right_value) else right_value,
            left_stat.count,
            None if right_stat is None else right_stat.count,
        )

    if not enough or math.isnan(left_value) or math.isnan(right_value):
        return result("insufficient")
    difference = left_value - right_value  # the guard wants this <= 0 for `<=`, >= 0 for `>=`
    # Rounding must not breach `<=`/`>=` at equality (150 x 0.004 averages 0.004000...03).
    slack = 1e-9 * max(1.0, abs(right_value))
    margin = 0.0
    if guard.left.percentile is None:
        variance = left_stat.variance * guard.left.factor**2 / left_stat.count
        if right_stat is not None and guard.right.percentile is None:
            variance += right_stat.variance * guard.right.factor**2 / right_stat.count
        margin = Z_ONE_SIDED_95 * math.sqrt(variance) if not math.isnan(variance) else 0.0
    if guard.op in ("<=", "<"):
        breached = difference - margin > slack if guard.op == "<=" else difference - margin >= 0
    else:
        breached = difference + margin < -slack if guard.op == ">=" else difference + margin <= 0
    return result("breach" if breached else "pass")


def _stat(window: Mapping[tuple[str, str], MetricStat], side: Side) -> MetricStat:
    return window.get((side.variant or "", side.metric or ""), MetricStat())


def _value(stat: MetricStat, side: Side) -> float:
    if side.percentile is not None:
        return percentile(stat, side.percentile)
    return stat.mean
