"""Compile one clause into a predicate over a context mapping.

Everything that can be prepared is prepared here, once: value lists become sets split
by JSON type (equality is type-strict: `1` never equals `True` or `"1"`), regexes are
compiled, semantic versions parsed, numeric bounds reduced to one comparison.

Semantics shared by every operator: a missing (or null) attribute makes the clause
false, and `negate` does not make it true. A list attribute matches when any element
does. An operand of the wrong type (a non-number for `lt`, an invalid semver) simply
does not match, and `negate` flips that like any other non-match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from flagsync._semver import parse_semver
from flagsync.bucketing import bucketing_text
from flagsync.model import Clause

Predicate = Callable[[Mapping[str, Any]], bool]
_Test = Callable[[Any], bool]

_NEGATED_FORMS = {"not_in": "in", "neq": "eq"}


def compile_clause(clause: Clause, segments: Mapping[str, frozenset[str]]) -> Predicate:
    """A predicate for a validated clause; `segments` maps segment names to their key sets."""
    op = _NEGATED_FORMS.get(clause.op, clause.op)
    negate = clause.negate != (op != clause.op)
    test = _build_test(op, clause.values, segments)
    return _wrap(clause.attr, test, negate)


def _wrap(attr: str, test: _Test, negate: bool) -> Predicate:
    def matches(context: Mapping[str, Any]) -> bool:
        value = context.get(attr)
        if value is None:
            return False
        if value.__class__ is list or value.__class__ is tuple:
            return any(item is not None and test(item) for item in value)
        return test(value)

    if not negate:
        return matches

    def does_not_match(context: Mapping[str, Any]) -> bool:
        value = context.get(attr)
        if value is None:
            return False
        if value.__class__ is list or value.__class__ is tuple:
            return not any(item is not None and test(item) for item in value)
        return not test(value)

    return does_not_match


def _build_test(op: str, values: list[Any], segments: Mapping[str, frozenset[str]]) -> _Test:
    if op in ("in", "eq"):
        return _equality_test(values)
    if op == "starts_with":
        prefixes = tuple(values)
        return lambda value: isinstance(value, str) and value.startswith(prefixes)
    if op == "ends_with":
        suffixes = tuple(values)
        return lambda value: isinstance(value, str) and value.endswith(suffixes)
    if op == "contains":
        needles = tuple(values)
        return lambda value: isinstance(value, str) and any(n in value for n in needles)
    if op == "matches":
        patterns = tuple(re.compile(pattern) for pattern in values)
        return lambda value: isinstance(value, str) and any(p.search(value) for p in patterns)
    if op in ("lt", "lte", "gt", "gte"):
        return _number_test(op, values)
    if op in ("semver_lt", "semver_eq", "semver_gt"):
        return _semver_test(op, values)
    if op == "in_segment":
        members = frozenset().union(*(segments.get(name, frozenset()) for name in values))
        return lambda value: bucketing_text(value) in members
    raise ValueError(f"unknown operator {op!r}")  # validation refuses this earlier


def _equality_test(values: list[Any]) -> _Test:
    strings = frozenset(v for v in values if isinstance(v, str))
    booleans = frozenset(v for v in values if isinstance(v, bool))
    numbers = frozenset(v for v in values if isinstance(v, int | float) and not isinstance(v, bool))
    if not booleans and not numbers:
        return lambda value: isinstance(value, str) and value in strings

    def equals_one(value: Any) -> bool:
        if isinstance(value, str):
            return value in strings
        if isinstance(value, bool):
            return value in booleans
        if isinstance(value, int | float):
            return value in numbers
        return False

    return equals_one


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number_test(op: str, values: list[Any]) -> _Test:
    # "any of the values" reduces to the loosest bound.
    if op == "lt":
        upper = max(values)
        return lambda value: _is_number(value) and value < upper
    if op == "lte":
        upper = max(values)
        return lambda value: _is_number(value) and value <= upper
    lower = min(values)
    if op == "gt":
        return lambda value: _is_number(value) and value > lower
    return lambda value: _is_number(value) and value >= lower


def _semver_test(op: str, values: list[Any]) -> _Test:
    keys = [key for key in map(parse_semver, values) if key is not None]

    def version_of(value: Any) -> Any:
        return parse_semver(value) if isinstance(value, str) else None

    if op == "semver_eq":
        wanted = frozenset(keys)
        return lambda value: version_of(value) in wanted
    if op == "semver_lt":
        upper = max(keys)

        def below(value: Any) -> bool:
            version = version_of(value)
            return version is not None and version < upper

        return below
    lower = min(keys)

    def above(value: Any) -> bool:
        version = version_of(value)
        return version is not None and version > lower

    return above
