"""Compiling a validated flag: the outcomes it can produce, static flags, prerequisites, and
agreement between the value path and the explained path."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flagsync import CompiledFlag, ErrorCode, Flag, Reason, compile_flag, load_flags
from flagsync.model import MAX_CLAUSES, MAX_RULES
from tests.unit.builders import DATA_DIR, Document, client_for, document, flag, rollout

NO_SEGMENTS: dict[str, frozenset[str]] = {}


def _definition(raw: Document, key: str = "f", **others: Document) -> Flag:
    """The validated `Flag` for `raw` (with `others` defined beside it for prerequisites)."""
    return load_flags(document({key: raw, **others})).flags[key]


def _compile(raw: Document, prerequisites: dict[str, CompiledFlag] | None = None) -> CompiledFlag:
    return compile_flag("f", _definition(raw), NO_SEGMENTS, prerequisites or {})


class TestStaticFlags:
    """Flags whose outcome cannot depend on the context need no selector."""

    def test_fixed_default_without_rules_is_static(self) -> None:
        """No rules, no prerequisites and a fixed default: one STATIC outcome, no selector."""
        compiled = _compile(flag(default="b"))
        assert compiled.select is None
        assert compiled.static_outcome is not None
        assert compiled.static_outcome.variant == "b"
        assert compiled.static_outcome.value == "y"
        assert compiled.static_outcome.reason is Reason.STATIC
        assert compiled.outcome_for({}) == compiled.static_outcome
        assert "static" in repr(compiled)

    def test_disabled_flag_is_static(self) -> None:
        """A disabled flag compiles to its off variant with DISABLED, whatever its rules say."""
        compiled = _compile(
            flag(off="b", enabled=False, rules=[{"serve": "a"}], default=rollout(("a", 100)))
        )
        assert compiled.select is None
        assert compiled.static_outcome is not None
        assert (compiled.static_outcome.variant, compiled.static_outcome.reason) == (
            "b",
            Reason.DISABLED,
        )

    @pytest.mark.parametrize(
        "raw",
        [
            flag(rules=[{"serve": "b"}]),
            flag(default=rollout(("a", 50), ("b", 50))),
        ],
        ids=["rules", "rollout"],
    )
    def test_rules_or_rollouts_need_a_selector(self, raw: Document) -> None:
        """A flag with rules or a rollout default gets a selector."""
        compiled = _compile(raw)
        assert compiled.select is not None
        assert compiled.static_outcome is None
        assert "outcomes" in repr(compiled)

    def test_prerequisites_need_a_selector(self) -> None:
        """A flag with prerequisites is not static: its outcome depends on another flag."""
        raw = flag(requires={"g": "a"})
        definition = _definition(raw, g=flag())
        compiled = compile_flag("f", definition, NO_SEGMENTS, {})
        assert compiled.select is not None


class TestOutcomes:
    """A compiled flag lists every outcome it can produce, with its explanation."""

    def test_outcomes_of_the_design_example(self) -> None:
        """`llm-model-version` can serve exactly its rule, split, default and error outcomes."""
        definition = load_flags(DATA_DIR / "flags.yaml").flags["llm-model-version"]
        compiled = compile_flag("llm-model-version", definition, NO_SEGMENTS, {})
        explained = {
            (outcome.variant, outcome.reason, outcome.rule, outcome.error_code)
            for outcome in compiled.outcomes
        }
        assert explained == {
            ("current", Reason.PREREQUISITE_FAILED, None, None),
            ("candidate", Reason.TARGETING_MATCH, "staff-first", None),
            ("candidate", Reason.SPLIT, "paid-ramp", None),
            ("current", Reason.SPLIT, "paid-ramp", None),
            (None, Reason.ERROR, "paid-ramp", ErrorCode.TARGETING_KEY_MISSING),
            ("current", Reason.DEFAULT, None, None),
        }
        assert compiled.kind == "string"
        assert compiled.key == "llm-model-version"
        assert compiled.definition == definition

    @pytest.mark.parametrize(
        ("variants", "kind"),
        [
            ({"on": True, "off": False}, "boolean"),
            ({"a": 1, "b": 2.5}, "number"),
            ({"a": "x"}, "string"),
            ({"a": {"t": 0.2}}, "object"),
            ({"a": [1]}, "array"),
        ],
    )
    def test_kind_is_the_json_type_of_the_variants(
        self, variants: dict[str, Any], kind: str
    ) -> None:
        """`kind` names the JSON type all variants share."""
        assert _compile(flag(variants)).kind == kind

    def test_missing_prerequisite_fails_without_raising(self) -> None:
        """Compiled without its prerequisite, a flag serves `off` with PREREQUISITE_FAILED."""
        definition = _definition(flag(off="b", requires={"g": "a"}), g=flag())
        compiled = compile_flag("f", definition, NO_SEGMENTS, {})
        outcome = compiled.outcome_for({"key": "u"})
        assert (outcome.variant, outcome.reason) == ("b", Reason.PREREQUISITE_FAILED)

    def test_given_prerequisite_is_evaluated(self) -> None:
        """Compiled with its prerequisite, a flag follows that prerequisite's verdict."""
        other = compile_flag(
            "g",
            _definition(
                flag(
                    rules=[
                        {
                            "name": "paid",
                            "when": [{"attr": "plan", "op": "eq", "values": ["paid"]}],
                            "serve": "b",
                        }
                    ]
                ),
                key="g",
            ),
            NO_SEGMENTS,
            {},
        )
        definition = _definition(flag(off="a", default="b", requires={"g": "b"}), g=flag())
        compiled = compile_flag("f", definition, NO_SEGMENTS, {"g": other})
        assert compiled.outcome_for({"plan": "paid"}).variant == "b"
        assert compiled.outcome_for({"plan": "free"}).reason is Reason.PREREQUISITE_FAILED

    def test_segments_come_from_the_given_sets(self) -> None:
        """`in_segment` uses the key sets passed to `compile_flag`."""
        clause = {"attr": "key", "op": "in_segment", "values": ["beta"]}
        raw = flag(rules=[{"name": "beta", "when": [clause], "serve": "b"}])
        definition = load_flags(document({"f": raw}, {"beta": {"keys": []}})).flags["f"]
        compiled = compile_flag("f", definition, {"beta": frozenset({"user-7"})}, {})
        assert compiled.outcome_for({"key": "user-7"}).rule == "beta"
        assert compiled.outcome_for({"key": "user-8"}).reason is Reason.DEFAULT


class TestSameShapeFlags:
    """Flags of the same shape but different values never share values when compiled."""

    def test_operands_salts_and_weights_stay_per_flag(self) -> None:
        """Two flags differing only in operands, weights and salt each use their own."""

        def shaped(plan: str, weight: float, salt: str) -> Document:
            rule = {
                "name": "r",
                "when": [{"attr": "plan", "op": "in", "values": [plan]}],
                "serve": "b",
            }
            return flag(
                rules=[rule], default=rollout(("a", weight), ("b", 100 - weight), salt=salt)
            )

        client = client_for({"one": shaped("paid", 0, "s1"), "two": shaped("free", 100, "s2")})
        assert client.detail("one", {"plan": "paid", "key": "u"}).rule == "r"
        assert client.detail("two", {"plan": "paid", "key": "u"}).variant == "a"
        assert client.detail("two", {"plan": "free", "key": "u"}).rule == "r"
        assert client.detail("one", {"plan": "free", "key": "u"}).variant == "b"


class TestGeneratedSelectors:
    """Selectors are generated code; definition values never become code, and limits compile."""

    def test_python_syntax_in_values_is_data(self) -> None:
        """Attribute names, operands, rule names and salts full of quotes, braces and newlines
        are matched literally."""
        attr = "a'b\"c\n{v}) or (True"
        operand = "x'); raise SystemExit('{c}"
        rule = {
            "name": "r",
            "when": [{"attr": attr, "op": "in", "values": [operand]}],
            "serve": "b",
        }
        salt = "s'\"\n{prefix}"
        client = client_for({"f": flag(rules=[rule], default=rollout(("a", 100), salt=salt))})
        assert client.detail("f", {attr: operand}).rule == "r"
        assert client.detail("f", {attr: "x", "key": "u"}).reason is Reason.SPLIT
        assert client.detail("f", {"a": operand, "key": "u"}).reason is Reason.SPLIT

    def test_rule_with_max_clauses_and_a_rollout(self) -> None:
        """A rule of MAX_CLAUSES clauses serving a rollout compiles and needs every clause."""
        clauses = [{"attr": f"a{i}", "op": "eq", "values": [i]} for i in range(MAX_CLAUSES)]
        rule = {"name": "deep", "when": clauses, "serve": rollout(("a", 50), ("b", 50))}
        client = client_for({"f": flag(rules=[rule])})
        context: dict[str, Any] = {f"a{i}": i for i in range(MAX_CLAUSES)}
        context["key"] = "u"
        assert client.detail("f", context).rule == "deep"
        context["a49"] = -1
        assert client.detail("f", context).reason is Reason.DEFAULT

    def test_max_rules(self) -> None:
        """A flag with MAX_RULES rules compiles, and the last rule can still match."""
        rules = [
            {"name": f"r{i}", "when": [{"attr": "n", "op": "eq", "values": [i]}], "serve": "b"}
            for i in range(MAX_RULES)
        ]
        client = client_for({"f": flag(rules=rules)})
        assert client.detail("f", {"n": MAX_RULES - 1}).rule == f"r{MAX_RULES - 1}"
        assert client.detail("f", {"n": MAX_RULES}).reason is Reason.DEFAULT


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["paid", "free", "user-1", "a@acme.com", "1.2.3", "2.0.0-rc.1", ""])
    | st.text(max_size=8)
)
_CONTEXTS = st.dictionaries(
    st.sampled_from(["key", "plan", "email", "org_id", "app", "tokens", "session_id"]),
    _SCALARS | st.lists(_SCALARS, max_size=3),
)
_RICH = client_for(
    {
        "model": flag(
            {"current": "gpt-4o", "candidate": "gpt-4.1"},
            rules=[
                {
                    "name": "staff",
                    "when": [{"attr": "email", "op": "ends_with", "values": ["@acme.com"]}],
                    "serve": "candidate",
                },
                {
                    "when": [
                        {"attr": "plan", "op": "in", "values": ["paid", 1, True]},
                        {"attr": "app", "op": "semver_gt", "values": ["1.0.0"], "negate": True},
                    ],
                    "serve": rollout(("candidate", 20), ("current", 80)),
                },
                {
                    "name": "beta",
                    "when": [{"attr": "key", "op": "in_segment", "values": ["beta"]}],
                    "serve": "candidate",
                },
                {
                    "name": "big",
                    "when": [{"attr": "tokens", "op": "gte", "values": [3]}],
                    "serve": "candidate",
                },
            ],
            default=rollout(("candidate", 50), ("current", 50), by="org_id"),
        ),
        "window": flag({"small": 1, "large": 2}, default="large", requires={"model": "candidate"}),
    },
    {"beta": {"keys": ["user-1"]}},
)


class TestValueAndDetailAgree:
    """`variation` and `detail` share one selector, so they never disagree."""

    @settings(max_examples=300, deadline=None)
    @given(context=_CONTEXTS)
    def test_variation_equals_detail_value(self, context: dict[str, Any]) -> None:
        """For any context, `variation()` returns `detail().value` and `detail()` never raises."""
        for key in ("model", "window"):
            detail = _RICH.detail(key, context, None)
            assert _RICH.variation(key, context) == detail.value
            assert detail.reason in set(Reason)
            if detail.reason is Reason.ERROR:
                assert detail.error_code is ErrorCode.TARGETING_KEY_MISSING
                assert detail.variant is None
