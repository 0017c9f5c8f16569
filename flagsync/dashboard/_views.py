"""Templates and the small functions that turn definitions into readable text.

Autoescaping is on for every template: flag text (descriptions, values, reasons,
actors) is operator input and is never trusted as HTML.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import jinja2
import msgspec
from markupsafe import Markup

from flagsync.dashboard._charts import line_chart
from flagsync.model import Clause, Flag, Rollout, Rule

__all__ = ["TEMPLATES", "environment", "rule_text", "serve_text"]

TEMPLATES: Final = Path(__file__).with_name("templates")
_MAX_VALUES_SHOWN: Final = 8


def serve_text(serve: str | Rollout) -> str:
    """`candidate`, or `candidate 20% / current 80%` (by key)."""
    if isinstance(serve, str):
        return serve
    split = " / ".join(f"{variant} {weight:g}%" for variant, weight in serve.rollout.items())
    return split if serve.by == "key" else f"{split} (by {serve.by})"


def clause_text(clause: Clause) -> str:
    """`plan in [paid, enterprise]`, `not email ends_with "@acme.com"`."""
    shown = [json.dumps(value) for value in clause.values[:_MAX_VALUES_SHOWN]]
    if len(clause.values) > _MAX_VALUES_SHOWN:
        shown.append(f"… {len(clause.values) - _MAX_VALUES_SHOWN} more")
    values = shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]"
    return f"{'not ' if clause.negate else ''}{clause.attr} {clause.op} {values}"


def rule_text(rule: Rule) -> str:
    """`if plan in ["paid"] and … → candidate 20% / current 80%`."""
    condition = " and ".join(clause_text(clause) for clause in rule.when) or "always"
    return f"if {condition} → {serve_text(rule.serve)}"


def rollouts(flag: Flag) -> list[tuple[str | None, str, Rollout]]:
    """Every percentage rollout of a flag: (rule name or None for the fallthrough, label,
    rollout)."""
    found: list[tuple[str | None, str, Rollout]] = []
    for index, rule in enumerate(flag.rules):
        if isinstance(rule.serve, Rollout):
            name = rule.name or f"rules[{index}]"
            found.append((name, f"rule {name}", rule.serve))
    if isinstance(flag.default, Rollout):
        found.append((None, "fallthrough", flag.default))
    return found


def when(time_us: int | float) -> str:
    """A change-log time as `2026-11-25 03:28:51Z`."""
    moment = datetime.fromtimestamp(time_us / 1e6 if time_us > 1e11 else time_us, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def value_text(value: Any) -> str:
    """A variant value or diff side as compact JSON (None: absent)."""
    if value is None:
        return "(absent)"
    return msgspec.json.encode(value).decode()


def _chart_markup(chart: Any, slots: int) -> Markup:
    """The chart's SVG, trusted by the templates: `line_chart` escapes every text it holds."""
    return Markup(line_chart(chart, slots))  # noqa: S704 - built from escaped parts only


def _asset_version() -> str:
    """A hash of the static files, for their URLs (`?v=`): cached, yet never stale."""
    digest = hashlib.sha256()
    for path in sorted(TEMPLATES.with_name("static").iterdir()):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def environment() -> jinja2.Environment:
    """The template environment (autoescaped, undefined names are errors)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        asset_version=_asset_version(),
        serve_text=serve_text,
        rule_text=rule_text,
        rollouts=rollouts,
        when=when,
        value_text=value_text,
        line_chart=_chart_markup,
    )
    return env
