"""Compile a validated flag into a small evaluator: the hot path's only code.

A compiled flag enumerates every outcome it can produce up front (variant, reason,
rule) and reduces evaluation to one `select(context) -> outcome index` closure, with
thresholds, sets and regexes prepared. The value path (`variation`) and the explained
path (`detail`) share that one closure, so they can never disagree. Flags without
rules, prerequisites or rollouts are *static*: they need no closure at all.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

import mmh3

from flagsync._operators import Predicate, compile_clause
from flagsync._validation import json_kind
from flagsync.bucketing import BUCKETS, bucket_bounds, bucketing_text
from flagsync.evaluation import ErrorCode, Reason
from flagsync.model import Clause, Flag, Rollout, Serve

__all__ = ["SERVE_DEFAULT", "CompiledFlag", "Outcome", "compile_flag"]

SERVE_DEFAULT: Final[Any] = object()
"""Sentinel in `CompiledFlag.values`: serve the caller's default (e.g. no bucketing key)."""

_NONE_TYPE: Final = type(None)
_ACCEPTED_DEFAULTS: Final[Mapping[str, frozenset[type]]] = {
    "boolean": frozenset({bool, _NONE_TYPE}),
    "number": frozenset({int, float, _NONE_TYPE}),
    "string": frozenset({str, _NONE_TYPE}),
    "object": frozenset({dict, _NONE_TYPE}),
    "array": frozenset({list, _NONE_TYPE}),
}
_hash = mmh3.hash

Selector = Callable[[Mapping[str, Any]], int]


class Outcome(NamedTuple):
    """One thing a flag can serve, with the explanation `detail()` reports."""

    value: Any
    variant: str | None
    reason: Reason
    rule: str | None
    error_code: ErrorCode | None


TableEntry = tuple[Selector | None, Any, frozenset[type], tuple[Any, ...], "CompiledFlag"]
"""What the client's lookup table holds per flag, unpacked in one step on the hot path:
(select or None if static, static value, default types accepted, value per outcome, flag)."""


class CompiledFlag:
    """An immutable evaluator for one flag, built by `compile_flag`."""

    __slots__ = (
        "accepts",
        "definition",
        "entry",
        "key",
        "kind",
        "outcomes",
        "select",
        "static_outcome",
        "values",
    )

    key: str
    definition: Flag
    kind: str
    accepts: frozenset[type]
    outcomes: tuple[Outcome, ...]
    values: tuple[Any, ...]
    select: Selector | None
    static_outcome: Outcome | None
    entry: TableEntry

    def outcome_for(self, context: Mapping[str, Any]) -> Outcome:
        """The outcome for `context` (may raise on a non-mapping context; callers guard)."""
        if self.select is None:
            return self.static_outcome  # type: ignore[return-value]
        return self.outcomes[self.select(context)]

    def __repr__(self) -> str:
        shape = "static" if self.select is None else f"{len(self.outcomes)} outcomes"
        return f"<CompiledFlag {self.key!r} {self.kind} {shape}>"


def compile_flag(
    key: str,
    flag: Flag,
    segments: Mapping[str, frozenset[str]],
    prerequisites: Mapping[str, CompiledFlag],
) -> CompiledFlag:
    """Compile a validated flag.

    `segments` maps segment names to key sets; `prerequisites` holds the compiled flags
    this one requires (a missing one makes the prerequisite fail, never raise).
    """
    builder = _OutcomeTable(flag)
    compiled = CompiledFlag()
    compiled.key = key
    compiled.definition = flag
    compiled.kind = json_kind(next(iter(flag.variants.values())))
    compiled.accepts = _ACCEPTED_DEFAULTS[compiled.kind]

    select: Selector | None = None
    static_index: int | None = None
    if not flag.enabled:
        static_index = builder.add(flag.off, Reason.DISABLED, None)
    elif not flag.rules and not flag.requires and isinstance(flag.default, str):
        static_index = builder.add(flag.default, Reason.STATIC, None)
    else:
        select = _build_selector(key, flag, builder, segments, prerequisites)

    compiled.outcomes = tuple(builder.outcomes)
    compiled.values = tuple(outcome.value for outcome in builder.outcomes)
    compiled.select = select
    compiled.static_outcome = None if static_index is None else builder.outcomes[static_index]
    static_value = None if compiled.static_outcome is None else compiled.static_outcome.value
    compiled.entry = (select, static_value, compiled.accepts, compiled.values, compiled)
    return compiled


class _OutcomeTable:
    """Collects the distinct outcomes of one flag and hands out their indices."""

    def __init__(self, flag: Flag) -> None:
        self.variants = flag.variants
        self.outcomes: list[Outcome] = []
        self._index: dict[tuple[str | None, Reason, str | None, ErrorCode | None], int] = {}

    def add(
        self,
        variant: str | None,
        reason: Reason,
        rule: str | None,
        error_code: ErrorCode | None = None,
    ) -> int:
        signature = (variant, reason, rule, error_code)
        index = self._index.get(signature)
        if index is None:
            value = SERVE_DEFAULT if variant is None else self.variants[variant]
            index = self._index[signature] = len(self.outcomes)
            self.outcomes.append(Outcome(value, variant, reason, rule, error_code))
        return index


def _build_selector(
    key: str,
    flag: Flag,
    table: _OutcomeTable,
    segments: Mapping[str, frozenset[str]],
    prerequisites: Mapping[str, CompiledFlag],
) -> Selector:
    prerequisite_failed = table.add(flag.off, Reason.PREREQUISITE_FAILED, None)
    required = tuple(
        (prerequisites.get(other), variant) for other, variant in flag.requires.items()
    )
    rules: list[tuple[Predicate, int, Selector | None]] = []
    for position, rule in enumerate(flag.rules):
        name = rule.name or f"rules[{position}]"
        fixed, pick = _compile_serve(key, rule.serve, table, Reason.TARGETING_MATCH, name)
        rules.append((_all_of(rule.when, segments), fixed, pick))
    fallthrough = Reason.DEFAULT if flag.rules else Reason.STATIC
    default_fixed, default_pick = _compile_serve(key, flag.default, table, fallthrough, None)

    if not rules and not required and default_pick is not None:
        return default_pick
    rule_tuple = tuple(rules)

    def select(context: Mapping[str, Any]) -> int:
        for prerequisite, wanted in required:
            if prerequisite is None or prerequisite.outcome_for(context).variant != wanted:
                return prerequisite_failed
        for matches, fixed, pick in rule_tuple:
            if matches(context):
                return fixed if pick is None else pick(context)
        return default_fixed if default_pick is None else default_pick(context)

    return select


def _compile_serve(
    key: str, serve: Serve, table: _OutcomeTable, fixed_reason: Reason, rule: str | None
) -> tuple[int, Selector | None]:
    """A fixed outcome index, or a rollout selector (then the index is unused, -1)."""
    if isinstance(serve, str):
        return table.add(serve, fixed_reason, rule), None
    return -1, _compile_rollout(key, serve, table, rule)


def _compile_rollout(key: str, serve: Rollout, table: _OutcomeTable, rule: str | None) -> Selector:
    indices = tuple(table.add(variant, Reason.SPLIT, rule) for variant in serve.rollout)
    missing = table.add(None, Reason.ERROR, rule, ErrorCode.TARGETING_KEY_MISSING)
    bounds = bucket_bounds(serve.rollout)
    prefix = f"{serve.salt or key}/"
    attribute = serve.by
    buckets = BUCKETS

    def pick(context: Mapping[str, Any]) -> int:
        value = context.get(attribute)
        if value.__class__ is not str:
            value = bucketing_text(value)
            if value is None:
                return missing
        return indices[bisect_right(bounds, _hash(prefix + value, 0, False) % buckets)]

    return pick


def _all_of(clauses: list[Clause], segments: Mapping[str, frozenset[str]]) -> Predicate:
    predicates = tuple(compile_clause(clause, segments) for clause in clauses)
    if not predicates:
        return _always
    if len(predicates) == 1:
        return predicates[0]

    def all_hold(context: Mapping[str, Any]) -> bool:
        for predicate in predicates:  # noqa: SIM110 - a loop is faster than all(generator)
            if not predicate(context):
                return False
        return True

    return all_hold


def _always(context: Mapping[str, Any]) -> bool:
    return True
