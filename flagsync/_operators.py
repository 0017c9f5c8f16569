"""Compile one clause into a predicate over a context mapping.

Everything that can be prepared is prepared here, once: value lists become sets split
by JSON type (equality is type-strict: `1` never equals `True` or `"1"`), regexes are
compiled (RE2, linear time: see `flagsync._regex`), semantic versions parsed, numeric
bounds reduced to one comparison.

Semantics shared by every operator: a missing (or null) attribute makes the clause
false, and `negate` does not make it true. A list attribute matches when any element
does. An operand of the wrong type (a non-number for `lt`, an invalid semver) simply
does not match, and `negate` flips that like any other non-match.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from flagsync._regex import compile_search
from flagsync._semver import parse_semver
from flagsync.bucketing import bucketing_text
from flagsync.model import Clause

Predicate = Callable[[Mapping[str, Any]], bool]
ValueTest = Callable[[Any], bool]

_NEGATED_FORMS = {"not_in": "in", "neq": "eq"}


class ClausePlan(NamedTuple):
    """A prepared clause: a value test plus, where one exists, an inline fast path.

    `test` decides one present, scalar value (negation not applied). `fast_class` and
    `fast_expr` let the selector generator inline the common case: when the value's
    class is exactly `fast_class`, `fast_expr` (a Python expression over `{v}` and the
    bound `{c}` = `constant`) gives the same answer as `test`.
    """

    attr: str
    test: ValueTest
    negate: bool
    fast_class: type | None = None
    fast_expr: str | None = None
    constant: Any = None


def plan_clause(clause: Clause, segments: Mapping[str, frozenset[str]]) -> ClausePlan:
    """Prepare a validated clause; `segments` maps segment names to their key sets."""
    op = _NEGATED_FORMS.get(clause.op, clause.op)
    negate = clause.negate != (op != clause.op)
    values = clause.values
    attr = clause.attr
    if op in ("in", "eq"):
        test = _equality_test(values)
        strings = frozenset(v for v in values if isinstance(v, str))
        return ClausePlan(attr, test, negate, str, "{v} in {c}", strings)
    if op == "starts_with":
        prefixes = tuple(values)
        return ClausePlan(
            attr,
            lambda value: isinstance(value, str) and value.startswith(prefixes),
            negate,
            str,
            "{v}.startswith({c})",
            prefixes,
        )
    if op == "ends_with":
        suffixes = tuple(values)
        return ClausePlan(
            attr,
            lambda value: isinstance(value, str) and value.endswith(suffixes),
            negate,
            str,
            "{v}.endswith({c})",
            suffixes,
        )
    if op == "contains":
        needles = tuple(values)
        return ClausePlan(
            attr, lambda value: isinstance(value, str) and any(n in value for n in needles), negate
        )
    if op == "matches":
        searches = tuple(compile_search(pattern) for pattern in values)
        return ClausePlan(
            attr,
            lambda value: isinstance(value, str) and any(search(value) for search in searches),
            negate,
        )
    if op in ("lt", "lte", "gt", "gte"):
        return _number_plan(attr, op, values, negate)
    if op in ("semver_lt", "semver_eq", "semver_gt"):
        return ClausePlan(attr, _semver_test(op, values), negate)
    if op == "in_segment":
        members = frozenset().union(*(segments.get(name, frozenset()) for name in values))
        return ClausePlan(
            attr,
            lambda value: bucketing_text(value) in members,
            negate,
            str,
            "{v} in {c}",
            members,
        )
    raise ValueError(f"unknown operator {op!r}")  # validation refuses this earlier


def value_matcher(plan: ClausePlan) -> ValueTest:
    """The clause's full verdict on a raw attribute value (None, lists and negation included)."""
    test, negate = plan.test, plan.negate

    def matches(value: Any) -> bool:
        if value is None:
            return False
        if value.__class__ is list or value.__class__ is tuple:
            return any(item is not None and test(item) for item in value) != negate
        return test(value) != negate

    return matches


def compile_clause(clause: Clause, segments: Mapping[str, frozenset[str]]) -> Predicate:
    """A predicate over a whole context (the general path; selectors inline the fast one)."""
    plan = plan_clause(clause, segments)
    matches = value_matcher(plan)
    attr = plan.attr
    return lambda context: matches(context.get(attr))


def _equality_test(values: list[Any]) -> ValueTest:
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


_NUMBER_SYMBOLS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


def _number_plan(attr: str, op: str, values: list[Any], negate: bool) -> ClausePlan:
    # "Any of the values" reduces to the loosest bound.
    bound = max(values) if op in ("lt", "lte") else min(values)
    symbol = _NUMBER_SYMBOLS[op]
    compare: Callable[[Any, Any], bool] = {
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
    }[op]

    def test(value: Any) -> bool:
        return _is_number(value) and compare(value, bound)

    return ClausePlan(attr, test, negate, int, "{v} " + symbol + " {c}", bound)


def _semver_test(op: str, values: list[Any]) -> ValueTest:
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
