"""Clause operators, evaluated through the public API (DESIGN.md, "Flag definition format" and
"Evaluation semantics"): positive and negative cases, negation, missing and None attributes,
type-strict equality, list attributes, invalid operands in the context."""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Mapping
from typing import Any

import pytest

from flagsync import FlagClient
from tests.unit.builders import client_for, flag

SEGMENTS = {"beta-testers": {"keys": ["user-1", "user-2", "42"]}, "staff": {"keys": ["ann"]}}


class _Plan(enum.StrEnum):
    """A str subclass, as applications pass enums as attribute values."""

    PAID = "paid"


class _Tokens(enum.IntEnum):
    """An int subclass (not exactly `int`), for the numeric operators."""

    MANY = 5000


def _client(op: str, values: list[Any], *, negate: bool = False) -> FlagClient:
    clause = {"attr": "attr", "op": op, "values": values, "negate": negate}
    rule = {"name": "hit", "when": [clause], "serve": "yes"}
    return client_for(
        {"f": flag({"yes": True, "no": False}, off="no", default="no", rules=[rule])}, SEGMENTS
    )


def matches(
    op: str, values: list[Any], context: Mapping[str, Any], *, negate: bool = False
) -> bool:
    """Whether a single clause `attr <op> values` holds for `context`."""
    detail = _client(op, values, negate=negate).detail("f", context)
    assert detail.variant in ("yes", "no"), detail
    return detail.variant == "yes"


# (op, operands, attribute value, whether the clause holds)
CASES: list[tuple[str, list[Any], Any, bool]] = [
    # in / not_in / eq / neq: type-strict equality against any operand
    ("in", ["paid", "team"], "paid", True),
    ("in", ["paid", "team"], "free", False),
    ("in", ["paid"], "Paid", False),
    ("in", ["paid"], _Plan.PAID, True),
    ("in", [1], True, False),
    ("in", [True], 1, False),
    ("in", ["1"], 1, False),
    ("in", [1], "1", False),
    ("in", [1], 1.0, True),
    ("in", [1.0], 1, True),
    ("in", [1, "1", True], 1, True),
    ("in", [0], False, False),
    ("in", [False], False, True),
    ("in", [False], 0, False),
    ("in", [2.5], 2.5, True),
    ("in", [1], math.nan, False),
    ("in", ["x"], {"x": 1}, False),
    ("not_in", ["free"], "paid", True),
    ("not_in", ["paid"], "paid", False),
    ("not_in", [1], True, True),
    ("eq", ["gpt-4o"], "gpt-4o", True),
    ("eq", ["gpt-4o"], "gpt-4o-mini", False),
    ("eq", [5], 5, True),
    ("eq", [5], "5", False),
    ("eq", [True], True, True),
    ("neq", ["free"], "paid", True),
    ("neq", ["paid"], "paid", False),
    ("neq", [1], True, True),
    # string operators: strings only, any operand
    ("starts_with", ["gpt-", "o1"], "gpt-4o", True),
    ("starts_with", ["gpt-"], "chat-gpt-4o", False),
    ("starts_with", ["1"], 12, False),
    ("ends_with", ["@acme.com", "@acme.io"], "bob@acme.io", True),
    ("ends_with", ["@acme.com"], "bob@acme.com.evil", False),
    ("ends_with", ["@acme.com"], _Plan.PAID, False),
    ("contains", ["beta"], "app-beta-7", True),
    ("contains", ["beta"], "app-alpha", False),
    ("contains", ["1"], 123, False),
    # matches: a regex searched anywhere in the value (not anchored unless the pattern is)
    ("matches", [r"acme\.com"], "bob@acme.com", True),
    ("matches", [r"^acme"], "bob@acme.com", False),
    ("matches", [r"^user-\d+$"], "user-42", True),
    ("matches", [r"^user-\d+$"], "user-42x", False),
    ("matches", [r"zzz", r"b+c"], "abbbc", True),
    ("matches", [r"\d"], 7, False),
    # numeric operators: numbers only (never booleans or numeric strings); the loosest bound
    ("lt", [10], 5, True),
    ("lt", [10], 10, False),
    ("lt", [10], 9.5, True),
    ("lt", [10.5], 10, True),
    ("lt", [5, 10], 7, True),
    ("lt", [10], "5", False),
    ("lt", [10], True, False),
    ("lt", [10], math.nan, False),
    ("lt", [10], {"n": 1}, False),
    ("lte", [10], 10, True),
    ("lte", [10], 10.001, False),
    ("gt", [10], 11, True),
    ("gt", [10], 10, False),
    ("gt", [5, 10], 7, True),
    ("gt", [10], 10**30, True),
    ("gt", [0], True, False),
    ("gt", [1000], _Tokens.MANY, True),
    ("gte", [10], 10, True),
    ("gte", [10], 9.999, False),
    ("gte", [10], math.inf, True),
    ("gte", [10], math.nan, False),
    # semantic versions (semver.org precedence); invalid versions never match
    ("semver_lt", ["2.0.0"], "1.10.0", True),
    ("semver_lt", ["2.0.0"], "2.0.0", False),
    ("semver_lt", ["2.0.0"], "2.0.0-rc.1", True),
    ("semver_lt", ["1.0.0", "2.0.0"], "1.5.0", True),
    ("semver_lt", ["2.0.0"], "banana", False),
    ("semver_lt", ["2.0.0"], 1, False),
    ("semver_lt", ["2.0.0"], "01.0.0", False),
    ("semver_eq", ["1.2.3"], "1.2.3", True),
    ("semver_eq", ["1.2.3"], "1.2.3+build.7", True),
    ("semver_eq", ["1.2.3"], "1.2.4", False),
    ("semver_eq", ["1.0.0", "1.2.3"], "1.2.3", True),
    ("semver_eq", ["1.0.0"], "1.0.0\n", False),
    ("semver_eq", ["13.0.0"], "1\u0663.0.0", False),
    ("semver_gt", ["1.9.0"], "1.10.0", True),
    ("semver_gt", ["1.0.0"], "1.0.0-rc.1", False),
    ("semver_gt", ["1.0.0"], "1.0.0", False),
    ("semver_gt", ["1.0.0"], "1.0.0.0", False),
    # segments: the attribute's string form is looked up in the named segments' keys
    ("in_segment", ["beta-testers"], "user-1", True),
    ("in_segment", ["beta-testers"], "user-3", False),
    ("in_segment", ["beta-testers"], 42, True),
    ("in_segment", ["staff", "beta-testers"], "ann", True),
    ("in_segment", ["beta-testers"], True, False),
    # list attributes: the clause holds when any element does
    ("in", ["x"], ["y", "x"], True),
    ("in", ["x"], ["y", "z"], False),
    ("in", ["x"], ("y", "x"), True),
    ("in", ["x"], ["x", None], True),
    ("in", ["1"], [1], False),
    ("lt", [10], [50, 3], True),
    ("lt", [10], ["3"], False),
    ("ends_with", ["@acme.com"], ["a@b.com", "c@acme.com"], True),
    ("in_segment", ["staff"], ["bob", "ann"], True),
    ("semver_gt", ["1.0.0"], ["bogus", "2.0.0"], True),
]


def _case_id(case: tuple[str, list[Any], Any, bool]) -> str:
    op, values, value, expected = case
    return f"{op}{values!r}-{value!r}-{expected}"


ONE_CLAUSE_PER_OPERATOR: list[tuple[str, list[Any]]] = [
    ("in", ["paid"]),
    ("not_in", ["paid"]),
    ("eq", ["paid"]),
    ("neq", ["paid"]),
    ("starts_with", ["p"]),
    ("ends_with", ["d"]),
    ("contains", ["a"]),
    ("matches", ["."]),
    ("lt", [10]),
    ("lte", [10]),
    ("gt", [10]),
    ("gte", [10]),
    ("semver_lt", ["1.0.0"]),
    ("semver_eq", ["1.0.0"]),
    ("semver_gt", ["1.0.0"]),
    ("in_segment", ["beta-testers"]),
]


SEMVER_ORDER = (
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "2.0.0",
)
"""semver.org's precedence example, extended with releases: each sorts below the next."""


class TestOperators:
    """Each operator, positive and negative."""

    @pytest.mark.parametrize("case", CASES, ids=_case_id)
    def test_clause(self, case: tuple[str, list[Any], Any, bool]) -> None:
        """The clause holds exactly when the operator's definition says so."""
        op, values, value, expected = case
        assert matches(op, values, {"attr": value}) is expected

    @pytest.mark.parametrize("case", CASES, ids=_case_id)
    def test_negated_clause(self, case: tuple[str, list[Any], Any, bool]) -> None:
        """On a present attribute, `negate: true` flips the verdict (a type mismatch included)."""
        op, values, value, expected = case
        assert matches(op, values, {"attr": value}, negate=True) is (not expected)

    def test_every_operator_is_covered(self) -> None:
        """The cases above exercise every operator the format defines, both ways."""
        from flagsync.model import OPERATORS

        assert {op for op, *_ in CASES} == OPERATORS
        assert {op for op, _ in ONE_CLAUSE_PER_OPERATOR} == OPERATORS
        for op in OPERATORS:
            verdicts = {expected for case_op, _, _, expected in CASES if case_op == op}
            assert verdicts == {True, False}, op


class TestMissingAttribute:
    """A clause on a missing or None attribute is false, and negation does not make it true."""

    @pytest.mark.parametrize(("op", "values"), ONE_CLAUSE_PER_OPERATOR)
    @pytest.mark.parametrize("negate", [False, True])
    def test_missing(self, op: str, values: list[Any], negate: bool) -> None:
        """An absent attribute never matches, negated or not."""
        assert not matches(op, values, {"other": "paid"}, negate=negate)

    @pytest.mark.parametrize(("op", "values"), ONE_CLAUSE_PER_OPERATOR)
    @pytest.mark.parametrize("negate", [False, True])
    def test_none(self, op: str, values: list[Any], negate: bool) -> None:
        """An attribute set to None counts as missing, negated or not."""
        assert not matches(op, values, {"attr": None}, negate=negate)

    def test_not_in_on_missing_attribute(self) -> None:
        """`not_in` (a negative operator) is also false on a missing attribute."""
        assert not matches("not_in", ["paid"], {})
        assert not matches("neq", ["paid"], {})


class TestSemverPrecedence:
    """Versions compare by semver.org 2.0.0 precedence, pre-releases included."""

    @pytest.mark.parametrize(("lower", "higher"), list(itertools.combinations(SEMVER_ORDER, 2)))
    def test_order(self, lower: str, higher: str) -> None:
        """Each version is below every later one in the spec's example order."""
        assert matches("semver_lt", [higher], {"attr": lower})
        assert matches("semver_gt", [lower], {"attr": higher})
        assert not matches("semver_eq", [lower], {"attr": higher})
        assert not matches("semver_lt", [lower], {"attr": higher})

    def test_build_metadata_is_ignored(self) -> None:
        """`1.0.0+a` and `1.0.0+b` have the same precedence."""
        assert matches("semver_eq", ["1.0.0+a"], {"attr": "1.0.0+b"})
        assert not matches("semver_lt", ["1.0.0+a"], {"attr": "1.0.0+b"})


class TestClauseCombination:
    """A rule's clauses must all hold; one clause can test several values."""

    def test_all_clauses_must_hold(self) -> None:
        """A rule with two clauses matches only when both hold."""
        rule = {
            "name": "paid-staff",
            "when": [
                {"attr": "plan", "op": "in", "values": ["paid"]},
                {"attr": "email", "op": "ends_with", "values": ["@acme.com"]},
            ],
            "serve": "b",
        }
        client = client_for({"f": flag(rules=[rule])})
        assert client.variation("f", {"plan": "paid", "email": "a@acme.com"}) == "y"
        assert client.variation("f", {"plan": "paid", "email": "a@other.com"}) == "x"
        assert client.variation("f", {"plan": "free", "email": "a@acme.com"}) == "x"
        assert client.variation("f", {"email": "a@acme.com"}) == "x"

    def test_rule_without_clauses_matches_everyone(self) -> None:
        """A rule with no clauses matches every context, even an empty one."""
        client = client_for({"f": flag(rules=[{"name": "all", "serve": "b"}])})
        assert client.detail("f", {}).rule == "all"
