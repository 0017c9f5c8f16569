"""Metrics per variant over time, and the small SVG line charts that show them.

The series come from the flag's metrics stream (entry ids are the server's ms clock):
each entry is added to the time slot it falls in. The SVG is built here, by hand, with
every text escaped: no charting library, no script, readable without JS.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any, Final

from flagsync.metrics import EXPOSURES, MetricStat, decode_entry, percentile

__all__ = ["Chart", "MetricSeries", "line_chart", "series_from_entries"]

_COLOURS: Final = ("#1f6feb", "#d9480f", "#2f9e44", "#9c36b5", "#e8590c", "#0c8599")
_WIDTH: Final = 320
_HEIGHT: Final = 120
_PAD: Final = 28
_ERROR_METRICS: Final = ("error", "errors")
_LATENCY_METRICS: Final = ("latency_ms", "latency")
_COST_METRICS: Final = ("cost", "cost_usd")


@dataclass
class Chart:
    """One chart: a title, and per variant one value (or None) per time slot."""

    title: str
    unit: str
    lines: dict[str, list[float | None]] = field(default_factory=dict)


@dataclass
class MetricSeries:
    """The charts of one flag over `[since_ms, until_ms]` cut into equal slots."""

    since_ms: int
    until_ms: int
    slots: int
    charts: list[Chart]

    @property
    def empty(self) -> bool:
        """True when no metrics arrived in the window."""
        return not any(line for chart in self.charts for line in chart.lines.values())


def series_from_entries(
    entries: Iterable[tuple[bytes | str, Mapping[bytes | str, bytes | str]]],
    since_ms: int,
    until_ms: int,
    slots: int,
) -> MetricSeries:
    """Bucket stream entries into `slots` and derive each chart's value per slot."""
    width = max(1, (until_ms - since_ms) / slots)
    buckets: list[dict[tuple[str, str], MetricStat]] = [{} for _ in range(slots)]
    for entry_id, fields in entries:
        text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        try:
            at = int(text.partition("-")[0])
        except ValueError:
            continue
        index = min(slots - 1, max(0, int((at - since_ms) / width)))
        decode_entry(fields, buckets[index])
    variants = sorted({v for bucket in buckets for (v, _m) in bucket})
    metrics = sorted({m for bucket in buckets for (_v, m) in bucket} - {EXPOSURES})
    charts = [_chart("requests", "/slot", buckets, variants, EXPOSURES, _count)]
    for metric in metrics:
        if metric in _ERROR_METRICS:
            charts.append(_chart("error rate", "", buckets, variants, metric, _mean))
        elif metric in _LATENCY_METRICS:
            charts.append(_chart(f"p95 {metric}", "ms", buckets, variants, metric, _p95))
        elif metric in _COST_METRICS:
            charts.append(_chart("cost per request", "$", buckets, variants, metric, _mean))
        else:
            charts.append(_chart(f"{metric} rate", "", buckets, variants, metric, _mean))
    return MetricSeries(since_ms, until_ms, slots, charts)


def _count(stat: MetricStat) -> float | None:
    return float(stat.count)


def _mean(stat: MetricStat) -> float | None:
    return stat.mean if stat.count else None


def _p95(stat: MetricStat) -> float | None:
    return percentile(stat, 95) if stat.count else None


def _chart(  # noqa: PLR0917 - private; one call shape per chart kind
    title: str,
    unit: str,
    buckets: Sequence[Mapping[tuple[str, str], MetricStat]],
    variants: Sequence[str],
    metric: str,
    value: Any,
) -> Chart:
    chart = Chart(title, unit)
    for variant in variants:
        points = [
            value(bucket[(variant, metric)]) if (variant, metric) in bucket else None
            for bucket in buckets
        ]
        if any(point is not None for point in points):
            chart.lines[variant] = points
    return chart


def _fmt(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _with_unit(value: float, unit: str) -> str:
    if unit == "$":
        return f"${value:.4g}"
    if unit == "/slot":
        return f"{_fmt(value)} per slot"
    return _fmt(value) + (f" {unit}" if unit else "")


def line_chart(chart: Chart, slots: int) -> str:
    """An accessible SVG line chart (a title, one polyline per variant, a legend)."""
    values = [p for line in chart.lines.values() for p in line if p is not None]
    top = max(values, default=0.0) or 1.0
    inner_w, inner_h = _WIDTH - 2 * _PAD, _HEIGHT - 2 * _PAD
    step = inner_w / max(1, slots - 1)
    title = escape(chart.title)
    parts = [
        f'<svg class="chart" role="img" aria-label="{title} per variant" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" height="{_HEIGHT}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{title} per variant</title>",
        f'<text x="{_PAD}" y="14" class="chart-title">{title}</text>',
        f'<text x="{_WIDTH - _PAD}" y="14" text-anchor="end" class="chart-max">'
        f"max {escape(_with_unit(top, chart.unit))}</text>",
        f'<line x1="{_PAD}" y1="{_HEIGHT - _PAD}" x2="{_WIDTH - _PAD}" y2="{_HEIGHT - _PAD}" '
        'class="axis"/>',
    ]
    for index, (variant, line) in enumerate(sorted(chart.lines.items())):
        colour = _COLOURS[index % len(_COLOURS)]
        runs: list[list[str]] = [[]]
        for slot, point in enumerate(line):
            if point is None:
                runs.append([])
                continue
            x = _PAD + slot * step
            y = _HEIGHT - _PAD - (point / top) * inner_h
            runs[-1].append(f"{x:.1f},{y:.1f}")
        for run in runs:
            if len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
            elif run:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                    f'points="{" ".join(run)}"/>'
                )
        legend_x = _PAD + index * 90
        parts.append(
            f'<text x="{legend_x}" y="{_HEIGHT - 8}" fill="{colour}" class="legend">'
            f"&#9632; {escape(variant)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
