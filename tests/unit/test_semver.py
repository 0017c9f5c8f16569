"""Oversized semantic versions (issue #11 item 5): an attribute whose numeric parts have
thousands of digits is simply not a version (the clause is false, as for `"banana"`),
never an ERROR that serves the caller's default and so skips a blocking rule."""

from __future__ import annotations

from typing import Any

import pytest

from flagsync import FlagClient, Reason
from flagsync._semver import MAX_SEMVER_CHARS, parse_semver
from tests.unit.builders import client_for, document, flag, issues_of

DIGITS = "9" * 5_000
"""More than CPython's 4,300-digit limit for `int(str)`."""

OVERSIZED = [
    f"{DIGITS}.0.0",
    f"1.{DIGITS}.0",
    f"1.0.{DIGITS}",
    f"1.0.0-{DIGITS}",
    f"1.0.0-rc.{DIGITS}",
    f"v{DIGITS}",
    f"1.0.0+{DIGITS}",
]
"""5,000-digit components in every numeric place (and the build metadata)."""

SEMVER_OPS = ["semver_lt", "semver_eq", "semver_gt"]


def blocking_client(op: str, *, negate: bool = False) -> FlagClient:
    """`access` serves `blocked` when `app_version <op> 2.0.0` holds, else `allowed`."""
    clause = {"attr": "app_version", "op": op, "values": ["2.0.0"], "negate": negate}
    rule = {"name": "block", "when": [clause], "serve": "blocked"}
    variants = {"allowed": "allowed", "blocked": "blocked"}
    return client_for({"access": flag(variants, off="blocked", default="allowed", rules=[rule])})


class TestOversizedAttribute:
    """A 5,000-digit version in the context is an invalid value: the clause is decided."""

    @pytest.mark.parametrize("op", SEMVER_OPS)
    @pytest.mark.parametrize("version", OVERSIZED, ids=lambda v: v.replace(DIGITS, "<5000>"))
    def test_clause_is_false_never_error(self, op: str, version: str) -> None:
        """The rule does not match and the flag's own default is served, with no ERROR."""
        detail = blocking_client(op).detail("access", {"app_version": version}, "caller-default")
        assert detail.reason is Reason.DEFAULT, detail
        assert detail.error_code is None
        assert detail.value == "allowed"

    @pytest.mark.parametrize("op", SEMVER_OPS)
    @pytest.mark.parametrize("version", OVERSIZED, ids=lambda v: v.replace(DIGITS, "<5000>"))
    def test_negated_clause_decides_like_any_invalid_version(self, op: str, version: str) -> None:
        """Negated, an oversized version is decided exactly as `"banana"` is (never ERROR):
        the rule's variant, as the operator docs say negation flips an invalid value's
        non-match."""
        client = blocking_client(op, negate=True)
        oversized = client.detail("access", {"app_version": version}, "caller-default")
        banana = client.detail("access", {"app_version": "banana"}, "caller-default")
        assert oversized.error_code is None
        assert oversized.reason is banana.reason is Reason.TARGETING_MATCH
        assert oversized.value == banana.value == "blocked"

    def test_oversized_element_of_a_list_attribute(self) -> None:
        """In a list attribute an oversized element is skipped and a valid one still counts."""
        client = blocking_client("semver_lt")
        detail = client.detail("access", {"app_version": [OVERSIZED[0], "1.5.0"]}, "x")
        assert detail.reason is Reason.TARGETING_MATCH
        assert detail.value == "blocked"


class TestLengthLimit:
    """Versions up to the limit parse and compare exactly; longer text is not a version."""

    def test_long_components_below_the_limit_compare_numerically(self) -> None:
        """A 120-digit major still compares by value (no `int()` limit is near)."""
        big = "1" + "0" * 119
        assert parse_semver(f"{big}.0.0") is not None
        client = blocking_client("semver_gt")
        assert client.variation("access", {"app_version": f"{big}.0.0"}, None) == "blocked"
        assert client.variation("access", {"app_version": "1.99.99"}, None) == "allowed"

    def test_limit_boundary(self) -> None:
        """Exactly `MAX_SEMVER_CHARS` characters parse; one more does not."""
        at_limit = "1.0.0-" + "a" * (MAX_SEMVER_CHARS - 6)
        assert len(at_limit) == MAX_SEMVER_CHARS
        assert parse_semver(at_limit) is not None
        assert parse_semver(at_limit + "a") is None

    @pytest.mark.parametrize("op", SEMVER_OPS)
    def test_oversized_operand_refused_at_validation(self, op: str) -> None:
        """An operand of 5,000 digits is an invalid semantic version at `values[i]`."""
        clause: dict[str, Any] = {"attr": "v", "op": op, "values": ["1.0.0", f"{DIGITS}.0.0"]}
        issues = issues_of(document({"f": flag(rules=[{"when": [clause], "serve": "a"}])}))
        assert len(issues) == 1
        assert issues[0].startswith("flags.f.rules[0].when[0].values[1]: invalid semantic version")
