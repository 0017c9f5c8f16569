"""The `matches` operator on RE2 (issue #11 item 4, FAULTS.md S24): linear-time evaluation
of any pattern, refusal at validation of what RE2 cannot compile (with the clause's path),
and the search semantics and never-raise rule kept from before."""

from __future__ import annotations

import time
from typing import Any

import pytest

from flagsync import FlagClient, Reason
from tests.unit.builders import client_for, document, flag, issues_of

PATHOLOGICAL = "^(a+)+$"
"""Nested quantifiers: exponential in the attribute's length for a backtracking engine."""


def regex_client(*patterns: str, negate: bool = False) -> FlagClient:
    """An offline client whose flag `f` serves `yes` when `email` matches any of `patterns`."""
    clause = {"attr": "email", "op": "matches", "values": list(patterns), "negate": negate}
    rule = {"name": "hit", "when": [clause], "serve": "yes"}
    return client_for({"f": flag({"yes": True, "no": False}, off="no", default="no", rules=[rule])})


def one_rule(clause: dict[str, Any]) -> dict[str, Any]:
    """A flag with one rule made of `clause`."""
    return flag(rules=[{"when": [clause], "serve": "a"}])


class TestLinearTime:
    """Any accepted pattern evaluates in time linear in the attribute's length."""

    def test_nested_quantifier_on_a_long_crafted_attribute(self) -> None:
        """`^(a+)+$` against 100,000 `a`s and a `!` (catastrophic for `re`) decides in < 50 ms."""
        client = regex_client(PATHOLOGICAL)
        crafted = "a" * 100_000 + "!"
        started = time.perf_counter()
        detail = client.detail("f", {"email": crafted}, None)
        elapsed_s = time.perf_counter() - started
        assert detail.value is False
        assert detail.reason is Reason.DEFAULT
        assert elapsed_s < 0.05, f"{elapsed_s * 1000:.1f} ms"

    def test_time_grows_linearly_with_the_attribute(self) -> None:
        """Ten times the crafted attribute costs at most about ten times as much (not 2**n)."""
        client = regex_client(PATHOLOGICAL, r"(x+x+)+y", r"(a|aa)+$")

        def best_of_five(text: str) -> float:
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                client.variation("f", {"email": text}, None)
                timings.append(time.perf_counter() - started)
            return min(timings)

        short_s = best_of_five("a" * 20_000 + "!")
        long_s = best_of_five("a" * 200_000 + "!")
        assert long_s < 30 * short_s + 0.005, (short_s, long_s)

    def test_the_pathological_pattern_still_matches_what_it_should(self) -> None:
        """Linear time does not change the verdict: all `a`s match, a trailing `!` does not."""
        client = regex_client(PATHOLOGICAL)
        assert client.variation("f", {"email": "a" * 50_000}, None) is True
        assert client.variation("f", {"email": "a" * 50_000 + "!"}, None) is False


class TestRefusedAtValidation:
    """What RE2 cannot compile is refused when the flag is validated, at the clause's path."""

    @pytest.mark.parametrize(
        ("pattern", "reason"),
        [
            (r"(a)\1", r"invalid escape sequence: \1"),
            (r"foo(?=bar)", "invalid perl operator: (?="),
            (r"foo(?!bar)", "invalid perl operator: (?!"),
            (r"(?<=@)acme", "invalid perl operator: (?<"),
            (r"(?P<x>a)(?P=x)", "invalid perl operator: (?P"),
        ],
    )
    def test_backreferences_and_lookaround(self, pattern: str, reason: str) -> None:
        """A backreference or lookaround is an issue at `values[i]` naming RE2's reason."""
        clause = {"attr": "email", "op": "matches", "values": [r"@acme\.com$", pattern]}
        issues = issues_of(document({"f": one_rule(clause)}))
        assert len(issues) == 1
        assert issues[0].startswith(
            f"flags.f.rules[0].when[0].values[1]: invalid regex {pattern!r}: {reason}"
        ), issues
        assert issues[0].endswith("(RE2 syntax: no backreferences or lookaround)")

    def test_python_only_escape_names_re2s_reason_without_the_hint(self) -> None:
        """`\\Z` (Python's end of text; RE2 spells it `\\z`) is refused with RE2's reason."""
        clause = {"attr": "email", "op": "matches", "values": [r"acme\Z"]}
        assert issues_of(document({"f": one_rule(clause)})) == [
            "flags.f.rules[0].when[0].values[0]: invalid regex 'acme\\\\Z': "
            "invalid escape sequence: \\Z"
        ]

    def test_repetition_past_re2s_limit(self) -> None:
        """A counted repetition above 1,000 is refused with RE2's words, not accepted as huge."""
        clause = {"attr": "email", "op": "matches", "values": ["a{2,1001}"]}
        assert issues_of(document({"f": one_rule(clause)})) == [
            "flags.f.rules[0].when[0].values[0]: invalid regex 'a{2,1001}': "
            "invalid repetition size: {2,1001}"
        ]

    def test_lone_surrogate_in_the_pattern(self) -> None:
        """A pattern that is not valid UTF-8 text is refused, never a crash."""
        clause = {"attr": "email", "op": "matches", "values": ["a\ud800"]}
        issues = issues_of(document({"f": one_rule(clause)}))
        assert len(issues) == 1
        assert issues[0].startswith("flags.f.rules[0].when[0].values[0]: invalid regex")
        assert "UTF-8" in issues[0]


class TestSemantics:
    """The operator's meaning is unchanged: a search anywhere, strings only, never raising."""

    @pytest.mark.parametrize(
        ("patterns", "value", "expected"),
        [
            ([r"acme\.com"], "bob@acme.com", True),  # anywhere, not anchored
            ([r"^acme"], "bob@acme.com", False),
            ([r"(?i)^BOB@"], "bob@acme.com", True),
            ([r"zzz", r"b+c"], "abbbc", True),  # any of the patterns
            ([r"caf\x{e9}$"], "café", True),  # Unicode text, not bytes
            ([r"^.$"], "é", True),  # `.` is one character, not one byte
            ([r"a$"], "a\n", False),  # RE2: `$` is the very end (documented)
        ],
    )
    def test_search_verdicts(self, patterns: list[str], value: str, expected: bool) -> None:
        """The clause holds when any pattern matches somewhere in the string."""
        assert regex_client(*patterns).variation("f", {"email": value}, None) is expected

    @pytest.mark.parametrize("value", [7, 7.5, True, {"a": "acme"}, b"acme"])
    def test_non_string_attributes_do_not_match(self, value: Any) -> None:
        """A number, boolean, mapping or bytes never matches, and negation does not flip it
        into an error: the clause is simply false (negated: true), as for other string ops."""
        assert regex_client(r".").variation("f", {"email": value}, None) is False
        assert regex_client(r".", negate=True).variation("f", {"email": value}, None) is True

    def test_list_attribute_matches_when_any_element_does(self) -> None:
        """A list attribute matches when any string element does; other elements are skipped."""
        client = regex_client(r"@acme\.com$")
        assert client.variation("f", {"email": [3, "x@other.org", "y@acme.com"]}, None) is True
        assert client.variation("f", {"email": [3, "x@other.org"]}, None) is False

    def test_lone_surrogate_in_the_attribute(self) -> None:
        """An attribute holding a lone surrogate (valid in JSON) is matched, never raises."""
        client = regex_client(r"^x.y$", r"acme")
        detail = client.detail("f", {"email": "x\ud800y"}, None)
        assert detail.reason is Reason.TARGETING_MATCH
        assert client.variation("f", {"email": "\udfff"}, None) is False
