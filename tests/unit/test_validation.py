"""Validation of flag documents given as plain dicts: every problem, with the path of the bad
field, reported together in one `InvalidFlagError` (DESIGN.md, "Flag definition format")."""

from __future__ import annotations

import math
from typing import Any

import pytest

from flagsync import FlagSet, FlagsyncError, InvalidFlagError, ValidationIssue, load_flags
from flagsync.model import MAX_CLAUSES, MAX_FLAG_BYTES, MAX_RULES, MAX_TEXT_CHARS
from tests.unit.builders import KEY_HINT, Document, document, flag, issues_of, rollout

MODEL_VARIANTS = {"current": "gpt-4o", "candidate": "gpt-4.1"}


def _model_flag(**fields: Any) -> Document:
    return flag(MODEL_VARIANTS, **fields)


def _one_rule(*clauses: Document, serve: Any = "b") -> Document:
    """A flag with a single rule made of `clauses`."""
    return flag(rules=[{"when": list(clauses), "serve": serve}])


class TestValidDocuments:
    """Well-formed documents load into a `FlagSet` equal to what they describe."""

    def test_full_flag_round_trips(self) -> None:
        """A flag using every field survives `to_builtins()` and a second validation."""
        doc = document(
            {
                "llm-model-version": _model_flag(
                    description="Which model serves chat completions",
                    enabled=False,
                    rules=[
                        {
                            "name": "staff-first",
                            "when": [
                                {
                                    "attr": "email",
                                    "op": "ends_with",
                                    "values": ["@acme.com"],
                                    "negate": True,
                                }
                            ],
                            "serve": "candidate",
                        },
                        {"serve": rollout(("candidate", 12.345), ("current", 87.655))},
                    ],
                    default=rollout(("candidate", 50), ("current", 50), by="org_id", salt="s1"),
                    requires={"kill-chat": "on"},
                ),
                "kill-chat": flag({"on": True, "off": False}),
            },
            {"beta-testers": {"keys": ["user-1"], "description": "early users"}},
        )
        flags = load_flags(doc)
        assert isinstance(flags, FlagSet)
        assert load_flags(flags.to_builtins()) == flags
        assert load_flags(flags) == flags
        assert flags.to_builtins() == doc

    def test_empty_document_is_valid(self) -> None:
        """A document with no flags and no segments is a valid, empty `FlagSet`."""
        assert load_flags({}) == FlagSet()
        assert load_flags({"flags": None, "segments": None}) == FlagSet()

    @pytest.mark.parametrize(
        "variants",
        [
            {"on": True, "off": False},
            {"small": 8192, "large": 32768.5},
            {"a": "gpt-4o", "b": ""},
            {"a": {"temperature": 0.2, "stop": None}, "b": {}},
            {"a": [1, "two", None], "b": []},
        ],
        ids=["boolean", "number", "string", "object", "array"],
    )
    def test_every_json_type_is_a_variant_value(self, variants: dict[str, Any]) -> None:
        """Booleans, numbers (ints and floats together), strings, objects and arrays are
        variant values; JSON containers may hold null."""
        load_flags(document({"f": flag(variants)}))

    @pytest.mark.parametrize("key", ["a", "0", "a" * 128, "llm-model.v2_beta", "9-lives"])
    def test_valid_keys(self, key: str) -> None:
        """Keys of 1-128 lower-case letters, digits, `.`, `_` and `-` starting with a letter or
        digit are accepted for flags, variants and segments."""
        load_flags(document({key: flag({key: 1})}, {key: {"keys": []}}))


class TestKeys:
    """Flag, variant, segment and rule-name keys follow `^[a-z0-9][a-z0-9._-]{0,127}$`."""

    @pytest.mark.parametrize(
        "key", ["", "A", "LLM_Model", "-lead", ".lead", "a" * 129, "sp ace", "flag\n", "ü"]
    )
    def test_bad_flag_key(self, key: str) -> None:
        """A bad flag key is reported at `flags.<key>`."""
        assert issues_of(document({key: flag()})) == [
            f"flags.{key}: invalid key {key!r}: {KEY_HINT}"
        ]

    def test_bad_variant_key(self) -> None:
        """A bad variant key is reported at the flag's `variants`."""
        assert issues_of(document({"f": flag({"a": 1, "Big": 2})})) == [
            f"flags.f.variants: invalid key 'Big': {KEY_HINT}"
        ]

    def test_bad_segment_key(self) -> None:
        """A bad segment key is reported at `segments.<key>`."""
        assert issues_of(document({}, {"Beta Testers": {"keys": ["u"]}})) == [
            f"segments.Beta Testers: invalid key 'Beta Testers': {KEY_HINT}"
        ]

    def test_bad_and_duplicate_rule_names(self) -> None:
        """A rule name must be a valid key and unique within its flag."""
        rules = [{"name": "Staff", "serve": "a"}, {"name": "x", "serve": "a"}]
        rules.append({"name": "x", "serve": "b"})
        assert issues_of(document({"f": flag(rules=rules)})) == [
            f"flags.f.rules[0].name: invalid key 'Staff': {KEY_HINT}",
            "flags.f.rules[2].name: duplicate rule name 'x'",
        ]

    def test_bad_prerequisite_key(self) -> None:
        """A prerequisite naming an invalid key is reported at `requires`."""
        assert issues_of(document({"f": flag(requires={"Other": "a"})})) == [
            f"flags.f.requires: invalid key 'Other': {KEY_HINT}"
        ]


class TestVariantValues:
    """Variant values are finite JSON values, and all variants of a flag share one type."""

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            (None, "null is not a variant value"),
            (math.nan, "nan is not a JSON number"),
            (math.inf, "inf is not a JSON number"),
            (-math.inf, "-inf is not a JSON number"),
        ],
    )
    def test_null_and_non_finite_values(self, value: Any, problem: str) -> None:
        """null, NaN and infinities are refused at `variants.<name>`."""
        assert issues_of(document({"f": flag({"a": 1.5, "b": value})})) == [
            f"flags.f.variants.b: {problem}"
        ]

    def test_nan_nested_in_an_object(self) -> None:
        """A NaN anywhere inside an object variant is refused."""
        variants = {"a": {"p": [0.9]}, "b": {"p": [math.nan]}}
        assert issues_of(document({"f": flag(variants)})) == [
            "flags.f.variants.b: nan is not a JSON number"
        ]

    @pytest.mark.parametrize(
        "raw",
        [
            flag({"a": "\ud800"}),
            flag({"a": {"k": ["\udfff"]}}),
            flag(default=rollout(("a", 100), salt="\ud800")),
        ],
        ids=["variant", "nested", "salt"],
    )
    def test_text_that_is_not_unicode(self, raw: Document) -> None:
        """A lone surrogate (JSON allows `"\\ud800"`) is refused: it cannot be encoded."""
        assert issues_of(document({"f": raw})) == [
            "flags.f: contains text that is not valid Unicode: surrogates not allowed"
        ]

    def test_non_json_value(self) -> None:
        """A value that is no JSON type (e.g. a set) is refused."""
        assert issues_of(document({"f": flag({"a": {1, 2}})})) == [
            "flags.f.variants.a: set is not a JSON value"
        ]

    @pytest.mark.parametrize(
        ("variants", "listing"),
        [
            ({"a": "x", "b": 1}, "a=string, b=number"),
            ({"a": 1, "b": True}, "a=number, b=boolean"),
            ({"a": {"k": 1}, "b": [1]}, "a=object, b=array"),
            ({"a": "true", "b": False}, "a=string, b=boolean"),
        ],
    )
    def test_mixed_types(self, variants: dict[str, Any], listing: str) -> None:
        """Variants of different JSON types are refused, naming each variant's type."""
        assert issues_of(document({"f": flag(variants)})) == [
            f"flags.f.variants: all variants must share one type, got {listing}"
        ]

    def test_no_variants(self) -> None:
        """A flag needs at least one variant."""
        issues = issues_of(document({"f": flag({}, off="a", default="a")}))
        assert issues[0] == "flags.f.variants: at least one variant is required"


class TestStorableNumbersAndDepth:
    """Values the stored form (msgpack) cannot hold are refused with their path, never with a
    bare OverflowError or RecursionError (issue #10, section 3)."""

    @pytest.mark.parametrize(
        ("value", "shown"),
        [
            (2**64, "18446744073709551616"),
            (-(2**63) - 1, "-9223372036854775809"),
            (10**400, "of 401 digits"),
        ],
    )
    def test_integer_variant_beyond_msgpack(self, value: int, shown: str) -> None:
        """An integer variant outside -2**63..2**64-1 is refused at `variants.<name>`."""
        assert issues_of(document({"f": flag({"a": 1, "b": value})})) == [
            f"flags.f.variants.b: integer {shown} is outside -2**63..2**64-1"
        ]

    def test_integer_nested_in_an_object_variant(self) -> None:
        """An out-of-range integer anywhere inside an object variant is refused."""
        variants = {"a": {"n": [1]}, "b": {"n": [2**70]}}
        assert issues_of(document({"f": flag(variants)})) == [
            "flags.f.variants.b.n[0]: integer 1180591620717411303424 is outside -2**63..2**64-1"
        ]

    def test_limits_themselves_are_storable(self) -> None:
        """-2**63 and 2**64-1 are accepted: the check is exactly msgpack's range."""
        loaded = load_flags(document({"f": flag({"a": -(2**63), "b": 2**64 - 1})}))
        assert loaded.flags["f"].variants == {"a": -(2**63), "b": 2**64 - 1}

    @pytest.mark.parametrize("op", ["lt", "in"])
    def test_integer_operand_beyond_msgpack(self, op: str) -> None:
        """An out-of-range integer clause value is refused at `values[<i>]`."""
        raw = _one_rule({"attr": "n", "op": op, "values": [1, 10**400]})
        assert issues_of(document({"f": raw})) == [
            "flags.f.rules[0].when[0].values[1]: integer of 401 digits is outside -2**63..2**64-1"
        ]

    def test_deeply_nested_variant(self) -> None:
        """A variant nested 100,000 levels deep is refused by depth, not by recursion (the
        loader's whole-document limit of 64 levels answers before the variant's 32)."""
        nested: dict[str, Any] = {}
        inner = nested
        for _ in range(100_000):
            inner["k"] = {}
            inner = inner["k"]
        (issue,) = issues_of(document({"f": flag({"a": {}, "b": nested})}))
        assert issue.startswith("flags.f.variants.b.k.k.")
        assert issue.endswith(": nested deeper than 64 levels")


class TestUnknownVariants:
    """Every place that names a variant must name one the flag defines."""

    def test_off(self) -> None:
        """An unknown `off` variant is reported at `off`."""
        assert issues_of(document({"f": flag(off="c")})) == ["flags.f.off: unknown variant 'c'"]

    def test_default(self) -> None:
        """An unknown fixed default is reported at `default`."""
        assert issues_of(document({"f": flag(default="c")})) == [
            "flags.f.default: unknown variant 'c'"
        ]

    def test_rule_serve(self) -> None:
        """A typo in a rule's serve is reported at `rules[i].serve` (the issue's example)."""
        model = _model_flag(
            off="current",
            default="current",
            rules=[
                {"name": "staff-first", "serve": "candidate"},
                {"name": "paid-ramp", "serve": "candidat"},
            ],
        )
        issues = issues_of(document({"llm-model-version": model}))
        assert issues == ["flags.llm-model-version.rules[1].serve: unknown variant 'candidat'"]

    def test_rollout_variant(self) -> None:
        """An unknown variant in a rollout is reported at `rollout.<name>`."""
        serve = rollout(("candidat", 20), ("current", 80))
        assert issues_of(document({"m": _model_flag(rules=[{"serve": serve}])})) == [
            "flags.m.rules[0].serve.rollout.candidat: unknown variant 'candidat'"
        ]

    def test_default_rollout_variant(self) -> None:
        """An unknown variant in the default rollout is reported at `default.rollout.<name>`."""
        serve = rollout(("current", 80), ("candidat", 20))
        assert issues_of(document({"m": _model_flag(default=serve)})) == [
            "flags.m.default.rollout.candidat: unknown variant 'candidat'"
        ]


class TestRolloutWeights:
    """Rollout weights are percentages in 0..100 with at most 3 decimals, summing to 100."""

    def test_weights_not_summing_to_100(self) -> None:
        """Weights summing to 90 are refused at `rollout`."""
        assert issues_of(document({"f": flag(default=rollout(("a", 20), ("b", 70)))})) == [
            "flags.f.default.rollout: weights sum to 90, not 100"
        ]

    def test_weights_summing_over_100(self) -> None:
        """Weights summing to 100.001 are refused."""
        serve = rollout(("a", 50.001), ("b", 50))
        assert issues_of(document({"f": flag(default=serve)})) == [
            "flags.f.default.rollout: weights sum to 100.001, not 100"
        ]

    def test_more_than_three_decimals(self) -> None:
        """A weight with four decimals is refused, naming it."""
        serve = rollout(("a", 33.3333), ("b", 66.6667))
        assert issues_of(document({"f": flag(default=serve)})) == [
            "flags.f.default.rollout.a: weight 33.3333 has more than 3 decimals"
        ]

    @pytest.mark.parametrize("weight", [-5, 150, -0.001, 100.5])
    def test_weight_out_of_range(self, weight: float) -> None:
        """A negative weight or one above 100 is refused."""
        serve = rollout(("a", weight), ("b", 100 - weight))
        assert issues_of(document({"f": flag(default=serve)})) == [
            f"flags.f.default.rollout.a: weight {weight!r} is not in 0..100"
        ]

    def test_three_decimals_and_zero_weights_are_fine(self) -> None:
        """33.333 + 33.333 + 33.334 sums to exactly 100, and a 0 weight is allowed."""
        serve = rollout(("a", 33.333), ("b", 33.333), ("c", 33.334), ("d", 0))
        load_flags(document({"f": flag({"a": 1, "b": 2, "c": 3, "d": 4}, default=serve)}))

    def test_empty_rollout(self) -> None:
        """A rollout with no variants is refused."""
        assert issues_of(document({"f": flag(default={"rollout": {}})})) == [
            "flags.f.default.rollout: a rollout needs at least one variant"
        ]

    def test_empty_by_and_salt(self) -> None:
        """An empty bucketing attribute or salt is refused."""
        serve = rollout(("a", 50), ("b", 50), by="", salt="")
        assert issues_of(document({"f": flag(default=serve)})) == [
            "flags.f.default.by: the bucketing attribute must not be empty",
            "flags.f.default.salt: the salt must not be empty",
        ]

    @pytest.mark.parametrize("weight", ["50", True, None])
    def test_non_number_weight(self, weight: Any) -> None:
        """A weight that is not a number is a shape error under `default.rollout`."""
        issues = issues_of(document({"f": flag(default={"rollout": {"a": weight, "b": 50}})}))
        assert len(issues) == 1
        assert issues[0].startswith("flags.f.default.rollout")
        assert "expected `int | float`" in issues[0]


class TestClauses:
    """Clauses name an attribute, a known operator and operands of the right kind."""

    def test_unknown_operator(self) -> None:
        """An unknown operator is reported at `when[i].op`, listing the known ones."""
        issues = issues_of(document({"f": _one_rule({"attr": "a", "op": "like", "values": ["x"]})}))
        assert issues == [
            "flags.f.rules[0].when[0].op: unknown operator 'like' (known: contains, ends_with, "
            "eq, gt, gte, in, in_segment, lt, lte, matches, neq, not_in, semver_eq, semver_gt, "
            "semver_lt, starts_with)"
        ]

    def test_bad_regex(self) -> None:
        """A regex that does not compile is reported at `values[i]` with the reason."""
        clause = {"attr": "email", "op": "matches", "values": [r".*@acme\.com", "(unclosed"]}
        issues = issues_of(document({"f": _one_rule(clause)}))
        assert issues == [
            "flags.f.rules[0].when[0].values[1]: invalid regex '(unclosed': missing ): (unclosed"
        ]

    def test_regex_too_long(self) -> None:
        """A regex longer than the limit is refused."""
        clause = {"attr": "email", "op": "matches", "values": ["a" * 1001]}
        assert issues_of(document({"f": _one_rule(clause)})) == [
            "flags.f.rules[0].when[0].values[0]: pattern longer than 1000 chars"
        ]

    def test_unknown_segment(self) -> None:
        """`in_segment` naming an undefined segment is refused at `values[i]`."""
        clause = {"attr": "key", "op": "in_segment", "values": ["beta-testers", "beta-tester"]}
        doc = document({"f": _one_rule(clause)}, {"beta-testers": {"keys": ["u"]}})
        assert issues_of(doc) == [
            "flags.f.rules[0].when[0].values[1]: unknown segment 'beta-tester'"
        ]

    def test_invalid_semver_operand(self) -> None:
        """A `semver_*` operand that is not a version is refused."""
        clause = {"attr": "app", "op": "semver_gt", "values": ["1.2.3", "1.2.x", "1.0.0\n"]}
        assert issues_of(document({"f": _one_rule(clause)})) == [
            "flags.f.rules[0].when[0].values[1]: invalid semantic version '1.2.x'",
            "flags.f.rules[0].when[0].values[2]: invalid semantic version '1.0.0\\n'",
        ]

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            ("3", "lt needs a number, got str"),
            (True, "lt needs a number, got bool"),
            (math.nan, "nan is not a JSON number"),
        ],
    )
    def test_numeric_operand(self, value: Any, problem: str) -> None:
        """Numeric operators need finite numbers (booleans are not numbers)."""
        clause = {"attr": "tokens", "op": "lt", "values": [value]}
        assert issues_of(document({"f": _one_rule(clause)})) == [
            f"flags.f.rules[0].when[0].values[0]: {problem}"
        ]

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            (None, "in compares strings, numbers and booleans, got null"),
            (["x"], "in compares strings, numbers and booleans, got list"),
            (math.inf, "inf is not a JSON number"),
        ],
    )
    def test_equality_operand(self, value: Any, problem: str) -> None:
        """Equality operators compare scalars only."""
        clause = {"attr": "plan", "op": "in", "values": ["paid", value]}
        assert issues_of(document({"f": _one_rule(clause)})) == [
            f"flags.f.rules[0].when[0].values[1]: {problem}"
        ]

    @pytest.mark.parametrize("op", ["starts_with", "ends_with", "contains", "matches"])
    def test_string_operand(self, op: str) -> None:
        """String operators need string operands."""
        clause = {"attr": "email", "op": op, "values": [7]}
        assert issues_of(document({"f": _one_rule(clause)})) == [
            f"flags.f.rules[0].when[0].values[0]: {op} needs a string, got int"
        ]

    def test_no_values_and_empty_attribute(self) -> None:
        """A clause needs an attribute name and at least one value."""
        clause = {"attr": "", "op": "in", "values": []}
        assert issues_of(document({"f": _one_rule(clause)})) == [
            "flags.f.rules[0].when[0].attr: the attribute name must not be empty",
            "flags.f.rules[0].when[0].values: in needs at least one value",
        ]


class TestPrerequisites:
    """Prerequisites name existing flags and variants, and never form a cycle."""

    def test_unknown_flag(self) -> None:
        """Requiring a flag that is not defined is refused."""
        assert issues_of(document({"f": flag(requires={"ghost": "on"})})) == [
            "flags.f.requires.ghost: unknown flag 'ghost'"
        ]

    def test_unknown_variant(self) -> None:
        """Requiring a variant the other flag does not have is refused."""
        doc = document({"f": flag(requires={"g": "c"}), "g": flag()})
        assert issues_of(doc) == ["flags.f.requires.g: flag 'g' has no variant 'c'"]

    def test_self(self) -> None:
        """A flag requiring itself is refused."""
        issues = issues_of(document({"f": flag(requires={"f": "a"})}))
        assert "flags.f.requires.f: a flag cannot require itself" in issues

    def test_empty_required_variant(self) -> None:
        """A prerequisite must name a variant."""
        doc = document({"f": flag(requires={"g": ""}), "g": flag()})
        assert "flags.f.requires.g: expected a variant name" in issues_of(doc)

    def test_two_cycle(self) -> None:
        """a -> b -> a is refused once, showing the cycle."""
        doc = document({"a": flag(requires={"b": "a"}), "b": flag(requires={"a": "a"})})
        assert issues_of(doc) == ["flags.a.requires: prerequisite cycle: a -> b -> a"]

    def test_three_cycle(self) -> None:
        """a -> b -> c -> a is refused once, showing the cycle."""
        doc = document(
            {
                "a": flag(requires={"b": "a"}),
                "b": flag(requires={"c": "a"}),
                "c": flag(requires={"a": "a"}),
            }
        )
        assert issues_of(doc) == ["flags.a.requires: prerequisite cycle: a -> b -> c -> a"]

    def test_chains_and_diamonds_are_fine(self) -> None:
        """Prerequisites forming a chain and a diamond (no cycle) are accepted."""
        load_flags(
            document(
                {
                    "top": flag(requires={"left": "a", "right": "b"}),
                    "left": flag(requires={"base": "a"}),
                    "right": flag(requires={"base": "a"}),
                    "base": flag(),
                }
            )
        )


class TestLimits:
    """Oversized definitions are refused, so one file cannot exhaust every worker."""

    def test_too_many_rules(self) -> None:
        """More than MAX_RULES rules is refused at `rules`."""
        rules = [{"serve": "a"}] * (MAX_RULES + 1)
        assert issues_of(document({"f": flag(rules=rules)})) == [
            f"flags.f.rules: more than {MAX_RULES} rules"
        ]

    def test_max_rules_is_fine(self) -> None:
        """Exactly MAX_RULES rules is accepted."""
        load_flags(document({"f": flag(rules=[{"serve": "a"}] * MAX_RULES)}))

    def test_too_many_clauses(self) -> None:
        """More than MAX_CLAUSES clauses in a rule is refused."""
        clauses = [{"attr": "a", "op": "eq", "values": [1]}] * (MAX_CLAUSES + 1)
        assert issues_of(document({"f": _one_rule(*clauses)})) == [
            f"flags.f.rules[0].when: more than {MAX_CLAUSES} clauses"
        ]

    def test_definition_over_max_bytes(self) -> None:
        """A flag whose encoded definition exceeds MAX_FLAG_BYTES is refused at the flag."""
        issues = issues_of(document({"f": flag({"a": "x" * MAX_FLAG_BYTES, "b": "y"})}))
        assert len(issues) == 1
        assert issues[0].startswith("flags.f: definition is ")
        assert issues[0].endswith(f" bytes, over {MAX_FLAG_BYTES}")

    def test_description_too_long(self) -> None:
        """A description longer than MAX_TEXT_CHARS is refused."""
        assert issues_of(document({"f": flag(description="d" * (MAX_TEXT_CHARS + 1))})) == [
            f"flags.f.description: longer than {MAX_TEXT_CHARS} chars"
        ]


class TestShape:
    """Unknown fields and wrongly typed fields are refused with the field's path."""

    @pytest.mark.parametrize(
        ("doc", "expected"),
        [
            (
                document({"f": flag(owner="ml")}),
                "flags.f: object contains unknown field `owner`",
            ),
            (
                document({"f": flag(rules=[{"serve": "a", "priority": 1}])}),
                "flags.f.rules[0]: object contains unknown field `priority`",
            ),
            (
                document({"f": _one_rule({"attr": "a", "op": "eq", "values": [1], "not": True})}),
                "flags.f.rules[0].when[0]: object contains unknown field `not`",
            ),
            (
                document({"f": flag(default={"rollout": {"a": 100}, "seed": 1})}),
                "flags.f.default: object contains unknown field `seed`",
            ),
            (
                document({}, {"beta": {"keys": [], "members": []}}),
                "segments.beta: object contains unknown field `members`",
            ),
            ({"flags": {}, "segment": {}}, "segment: unknown top-level field"),
        ],
        ids=["flag", "rule", "clause", "rollout", "segment", "top-level"],
    )
    def test_unknown_fields(self, doc: Document, expected: str) -> None:
        """A field the format does not define is refused where it appears."""
        assert issues_of(doc) == [expected]

    @pytest.mark.parametrize(
        ("doc", "expected"),
        [
            (
                document({"f": flag(enabled="false")}),
                "flags.f.enabled: expected `bool`, got `str`",
            ),
            (
                document({"f": flag(default=5)}),
                "flags.f.default: expected `str | object`, got `int`",
            ),
            (
                document({"f": flag(rules={"serve": "a"})}),
                "flags.f.rules: expected `array`, got `object`",
            ),
            (
                document({"f": flag(rules=[{"serve": "a", "when": [{"attr": 1, "op": "eq"}]}])}),
                "flags.f.rules[0].when[0].attr: expected `str`, got `int`",
            ),
            (
                document({"f": flag(description=["x"])}),
                "flags.f.description: expected `str`, got `array`",
            ),
            (document({"f": "on"}), "flags.f: expected `object`, got `str`"),
            (
                document({}, {"beta": {"keys": [1]}}),
                "segments.beta.keys[0]: expected `str`, got `int`",
            ),
            ({"flags": ["f"]}, "flags: expected a mapping, got list"),
            ({"segments": "beta"}, "segments: expected a mapping, got str"),
        ],
        ids=[
            "enabled",
            "default",
            "rules",
            "attr",
            "description",
            "flag",
            "segment-key",
            "flags",
            "segments",
        ],
    )
    def test_wrong_field_types(self, doc: Document, expected: str) -> None:
        """A field of the wrong type is refused at its path."""
        assert issues_of(doc) == [expected]

    def test_missing_required_field(self) -> None:
        """A flag without `off` is refused, naming the missing field."""
        raw = flag()
        del raw["off"]
        assert issues_of(document({"f": raw})) == ["flags.f: object missing required field `off`"]


class TestManyIssues:
    """Every problem in a document is reported at once, in one `InvalidFlagError`."""

    def test_issues_across_flags_and_segments(self) -> None:
        """Problems in three flags and a segment all appear in `.issues` and in the message."""
        doc = document(
            {
                "llm-model-version": _model_flag(
                    off="curent", default=rollout(("candidate", 20), ("current", 70))
                ),
                "prompt-template-v2": flag({"on": True, "off": 0}),
                "Bad": flag(),
                "context-window": flag(requires={"retrieval-strategy": "hybrid"}),
                "fine": flag(),
            },
            {"Beta": {"keys": []}},
        )
        with pytest.raises(InvalidFlagError) as caught:
            load_flags(doc)
        error = caught.value
        expected = {
            ValidationIssue("flags.llm-model-version.off", "unknown variant 'curent'"),
            ValidationIssue(
                "flags.llm-model-version.default.rollout", "weights sum to 90, not 100"
            ),
            ValidationIssue(
                "flags.prompt-template-v2.variants",
                "all variants must share one type, got on=boolean, off=number",
            ),
            ValidationIssue("flags.Bad", f"invalid key 'Bad': {KEY_HINT}"),
            ValidationIssue(
                "flags.context-window.requires.retrieval-strategy",
                "unknown flag 'retrieval-strategy'",
            ),
            ValidationIssue("segments.Beta", f"invalid key 'Beta': {KEY_HINT}"),
        }
        assert set(error.issues) == expected
        assert len(error.issues) == len(expected)
        message = str(error)
        assert message.startswith("6 problems in flag definitions:\n")
        for issue in expected:
            assert f"  {issue.path}: {issue.message}" in message

    def test_error_is_a_flagsync_error_and_a_value_error(self) -> None:
        """`InvalidFlagError` is caught as `FlagsyncError` and as `ValueError`."""
        with pytest.raises(FlagsyncError):
            load_flags(document({"f": flag(off="c")}))
        with pytest.raises(ValueError, match=r"flags\.f\.off: unknown variant 'c'"):
            load_flags(document({"f": flag(off="c")}))

    def test_single_issue_message(self) -> None:
        """One issue reads `1 problem in flag definitions:` then the issue."""
        error = InvalidFlagError([ValidationIssue("flags.f.off", "unknown variant 'c'")])
        assert str(error) == "1 problem in flag definitions:\n  flags.f.off: unknown variant 'c'"
