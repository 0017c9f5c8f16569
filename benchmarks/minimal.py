"""The floor the hot path is measured against (issue #10): a *minimal evaluator*.

A plain function with the flag table bound as a default argument: one lookup, one
attribute test, and for a rollout the same hash and bucket arithmetic as flagsync, with
nothing else (no type check, no error handling, no explanation). flagsync's `variation`
is reported as a ratio to it, timed in the same loop of the same run.
"""

from __future__ import annotations

from bisect import bisect
from collections.abc import Callable, Mapping
from typing import Any

import mmh3

Rule = tuple[str, Any, tuple[Any, ...], tuple[int, ...]]
"""(attribute, wanted value, variants in order, cumulative bucket bounds)."""
Table = Mapping[str, tuple[Any, Rule | None]]
"""Per flag key: (value served when no rule matches, the one rule or None)."""


def minimal_evaluator(table: Table) -> Callable[[str, Mapping[str, Any], Any], Any]:
    """The minimal evaluator over `table`, exactly as the issue describes it."""

    def evaluate(key: str, ctx: Mapping[str, Any], default: Any, table: Table = table) -> Any:
        value, rule = table[key]
        if rule is not None:
            attr, wanted, variants, cuts = rule
            if ctx.get(attr) == wanted:
                return variants[bisect(cuts, mmh3.hash(key + "/" + ctx["key"], 0, False) % 100_000)]
        return value

    return evaluate
