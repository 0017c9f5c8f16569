"""`FlagClient` evaluation semantics and reasons (DESIGN.md, "Evaluation semantics"):
kill switch, prerequisites, rule order, rollouts, fallthrough, typed getters, and errors
returned as data, never raised."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from flagsync import ErrorCode, EvaluationDetail, FlagClient, Reason, Snapshot, load_flags
from tests.unit.builders import DATA_DIR, Document, client_for, document, flag, rollout

MODEL = {"current": "gpt-4o", "candidate": "gpt-4.1"}
STAFF = {"attr": "email", "op": "ends_with", "values": ["@acme.com"]}
PAID = {"attr": "plan", "op": "in", "values": ["paid"]}


def _explained(detail: EvaluationDetail) -> tuple[Any, ...]:
    return (detail.value, detail.variant, detail.reason, detail.rule, detail.error_code)


@pytest.fixture
def design() -> FlagClient:
    """A client over the DESIGN.md example flags."""
    return FlagClient.offline(DATA_DIR / "flags.yaml")


class TestKillSwitch:
    """A disabled flag serves `off` with DISABLED, whatever its rules say."""

    def test_disabled_serves_off_even_when_a_rule_matches(self) -> None:
        """A disabled flag serves its off variant with reason DISABLED."""
        client = client_for(
            {
                "m": flag(
                    MODEL,
                    enabled=False,
                    off="current",
                    rules=[{"name": "staff", "when": [STAFF], "serve": "candidate"}],
                    default="candidate",
                )
            }
        )
        detail = client.detail("m", {"email": "bob@acme.com"})
        assert _explained(detail) == ("gpt-4o", "current", Reason.DISABLED, None, None)
        assert client.variation("m", {"email": "bob@acme.com"}) == "gpt-4o"

    def test_disabled_ignores_prerequisites_and_context(self) -> None:
        """A disabled flag serves `off` with DISABLED even with failing prerequisites or no
        context at all."""
        client = client_for(
            {
                "m": flag(MODEL, enabled=False, off="candidate", requires={"ghost": "b"}),
                "ghost": flag(),
            }
        )
        assert client.detail("m", None).reason is Reason.DISABLED  # type: ignore[arg-type]
        assert client.variation("m", {}) == "gpt-4.1"


class TestPrerequisites:
    """A prerequisite not met serves `off` with PREREQUISITE_FAILED, before any rule."""

    @staticmethod
    def _client(prerequisite: Document) -> FlagClient:
        window = flag(
            {"small": 8192, "large": 32768},
            off="small",
            requires={"llm-model-version": "candidate"},
            rules=[{"name": "everyone", "serve": "large"}],
        )
        return client_for({"llm-model-version": prerequisite, "context-window": window})

    def test_met(self) -> None:
        """When the prerequisite serves the required variant, the flag evaluates normally."""
        client = self._client(flag(MODEL, default="candidate"))
        detail = client.detail("context-window", {"key": "u"})
        assert _explained(detail) == (32768, "large", Reason.TARGETING_MATCH, "everyone", None)

    def test_other_variant(self) -> None:
        """When the prerequisite serves another variant, the flag serves `off`."""
        client = self._client(flag(MODEL, default="current"))
        detail = client.detail("context-window", {"key": "u"})
        assert _explained(detail) == (8192, "small", Reason.PREREQUISITE_FAILED, None, None)

    def test_per_context(self) -> None:
        """The prerequisite is evaluated for the same context (staff meet it, others do not)."""
        prerequisite = flag(
            MODEL, rules=[{"when": [STAFF], "serve": "candidate"}], default="current"
        )
        client = self._client(prerequisite)
        assert client.variation("context-window", {"email": "a@acme.com"}) == 32768
        assert client.variation("context-window", {"email": "a@other.com"}) == 8192

    def test_disabled_prerequisite(self) -> None:
        """A disabled prerequisite (serving its `off`, not the required variant) fails it."""
        client = self._client(flag(MODEL, enabled=False, off="current", default="candidate"))
        assert client.detail("context-window", {"key": "u"}).reason is Reason.PREREQUISITE_FAILED

    def test_prerequisite_missing_after_delete(self) -> None:
        """Once `Snapshot.apply` deletes the prerequisite, the dependent fails it."""
        client = self._client(flag(MODEL, default="candidate"))
        snapshot, _ = client.snapshot.apply(flags={"llm-model-version": None}, revision=1)
        client._install(snapshot)
        detail = client.detail("context-window", {"key": "u"})
        assert _explained(detail) == (8192, "small", Reason.PREREQUISITE_FAILED, None, None)

    def test_prerequisite_without_targeting_key(self) -> None:
        """A prerequisite that cannot bucket the context (no `key`) is not met."""
        client = self._client(flag(MODEL, default=rollout(("candidate", 100), ("current", 0))))
        assert client.variation("context-window", {"key": "u"}) == 32768
        assert client.detail("context-window", {}).reason is Reason.PREREQUISITE_FAILED

    def test_chain(self) -> None:
        """Prerequisites chain: a requires b requires c; failing c fails a."""
        client = client_for(
            {
                "a": flag(default="b", requires={"b": "b"}),
                "b": flag(default="b", requires={"c": "b"}),
                "c": flag(rules=[{"when": [PAID], "serve": "b"}]),
            }
        )
        assert client.variation("a", {"plan": "paid"}) == "y"
        assert client.detail("a", {"plan": "free"}).reason is Reason.PREREQUISITE_FAILED

    def test_all_prerequisites_must_hold(self) -> None:
        """With two prerequisites, both must serve their required variants."""
        client = client_for(
            {
                "f": flag(default="b", requires={"g": "b", "h": "b"}),
                "g": flag(default="b"),
                "h": flag(rules=[{"when": [PAID], "serve": "b"}]),
            }
        )
        assert client.variation("f", {"plan": "paid"}) == "y"
        assert client.variation("f", {"plan": "free"}) == "x"

    def test_no_rules_and_fixed_default_reports_static(self) -> None:
        """A met prerequisite on a flag without rules and with a fixed default reports STATIC."""
        raw = flag(
            {"small": 1, "large": 2}, default="large", requires={"llm-model-version": "candidate"}
        )
        client = client_for({"llm-model-version": flag(MODEL, default="candidate"), "w": raw})
        assert _explained(client.detail("w", {})) == (2, "large", Reason.STATIC, None, None)


class TestRules:
    """Rules are tried in order; the first match serves."""

    def test_first_match_wins(self, design: FlagClient) -> None:
        """A paid staff user matches `staff-first`, listed before `paid-ramp`."""
        detail = design.detail(
            "llm-model-version", {"key": "u", "plan": "paid", "email": "a@acme.com"}
        )
        assert _explained(detail) == (
            "gpt-4.1",
            "candidate",
            Reason.TARGETING_MATCH,
            "staff-first",
            None,
        )

    def test_order_not_specificity_decides(self) -> None:
        """A broad rule listed first shadows a narrower one listed later."""
        client = client_for(
            {
                "f": flag(
                    rules=[
                        {"name": "everyone", "serve": "a"},
                        {"name": "paid", "when": [PAID], "serve": "b"},
                    ]
                )
            }
        )
        assert client.detail("f", {"plan": "paid"}).rule == "everyone"

    def test_unnamed_rule_is_reported_by_position(self) -> None:
        """An unnamed rule is reported as `rules[i]`."""
        client = client_for(
            {
                "f": flag(
                    rules=[
                        {"name": "staff", "when": [STAFF], "serve": "b"},
                        {"when": [PAID], "serve": "b"},
                    ]
                )
            }
        )
        assert _explained(client.detail("f", {"plan": "paid"})) == (
            "y",
            "b",
            Reason.TARGETING_MATCH,
            "rules[1]",
            None,
        )

    def test_split_in_a_rule(self, design: FlagClient) -> None:
        """A rollout in a rule reports SPLIT with the rule's name, and serves both variants."""
        seen = set()
        for index in range(200):
            detail = design.detail("llm-model-version", {"key": f"user-{index}", "plan": "paid"})
            assert (detail.reason, detail.rule) == (Reason.SPLIT, "paid-ramp")
            seen.add(detail.variant)
        assert seen == {"candidate", "current"}

    def test_split_in_an_unnamed_rule(self) -> None:
        """A rollout in an unnamed rule reports SPLIT with `rules[i]`."""
        client = client_for({"f": flag(rules=[{"serve": rollout(("a", 50), ("b", 50))}])})
        assert client.detail("f", {"key": "u"}).rule == "rules[0]"


class TestFallthrough:
    """The default serves when no rule matches: DEFAULT, STATIC or SPLIT."""

    def test_default_with_rules(self, design: FlagClient) -> None:
        """No rule matching on a flag with rules reports DEFAULT."""
        detail = design.detail("llm-model-version", {"key": "u", "plan": "free"})
        assert _explained(detail) == ("gpt-4o", "current", Reason.DEFAULT, None, None)

    def test_static_without_rules(self) -> None:
        """A flag without rules and a fixed default reports STATIC, for any context."""
        client = client_for({"f": flag(default="b")})
        contexts: list[Any] = [{}, {"key": "u"}, None, []]
        for context in contexts:
            assert _explained(client.detail("f", context)) == (
                "y",
                "b",
                Reason.STATIC,
                None,
                None,
            )

    def test_split_in_the_default(self, design: FlagClient) -> None:
        """A rollout default reports SPLIT with no rule."""
        detail = design.detail("prompt-template-v2", {"key": "user-42"})
        assert (detail.reason, detail.rule, detail.error_code) == (Reason.SPLIT, None, None)
        assert (detail.variant, detail.value) in {("on", True), ("off", False)}

    def test_split_default_with_rules(self) -> None:
        """A rollout default behind unmatched rules reports SPLIT, not DEFAULT."""
        client = client_for(
            {"f": flag(rules=[{"when": [PAID], "serve": "b"}], default=rollout(("a", 100)))}
        )
        assert _explained(client.detail("f", {"key": "u"})) == ("x", "a", Reason.SPLIT, None, None)


class TestRollouts:
    """Rollouts bucket by `key`, or by the `by:` attribute, salted by the flag key or `salt`."""

    def test_missing_bucketing_attribute(self) -> None:
        """A rollout whose `by` attribute is missing serves the caller's default with
        TARGETING_KEY_MISSING and no variant."""
        client = client_for({"f": flag(default=rollout(("a", 50), ("b", 50), by="org_id"))})
        detail = client.detail("f", {"key": "user-1"}, "fallback")
        assert _explained(detail) == (
            "fallback",
            None,
            Reason.ERROR,
            None,
            ErrorCode.TARGETING_KEY_MISSING,
        )
        assert client.variation("f", {"key": "user-1"}, "fallback") == "fallback"
        assert client.string_value("f", {"key": "user-1"}, "fallback") == "fallback"

    def test_missing_key_in_a_rule_rollout(self, design: FlagClient) -> None:
        """A rule's rollout without `key` names the rule beside TARGETING_KEY_MISSING."""
        detail = design.detail("llm-model-version", {"plan": "paid"}, "gpt-3.5")
        assert _explained(detail) == (
            "gpt-3.5",
            None,
            Reason.ERROR,
            "paid-ramp",
            ErrorCode.TARGETING_KEY_MISSING,
        )

    def test_by_org_id(self) -> None:
        """Bucketing `by: org_id` gives every user of one organization the same variant."""
        client = client_for({"f": flag(default=rollout(("a", 50), ("b", 50), by="org_id"))})
        for org in range(50):
            variants = {
                client.variation("f", {"key": f"user-{u}", "org_id": org}) for u in range(10)
            }
            assert len(variants) == 1
        served = {client.variation("f", {"org_id": org}) for org in range(50)}
        assert served == {"x", "y"}

    def test_custom_salt(self) -> None:
        """A `salt` replaces the flag key in the hash: renaming the flag keeps assignments."""
        split = rollout(("a", 50), ("b", 50), salt="llm-model-version")
        renamed = client_for({"model-v2": flag(default=split)})
        original = client_for({"llm-model-version": flag(default=rollout(("a", 50), ("b", 50)))})
        for index in range(300):
            context = {"key": f"user-{index}"}
            assert renamed.variation("model-v2", context) == original.variation(
                "llm-model-version", context
            )


class TestTypes:
    """A default of the wrong type, or a typed getter of the wrong kind, serves the default."""

    def test_variation_with_wrong_typed_default(self, design: FlagClient) -> None:
        """`variation` with a default of another JSON type returns the default; `detail` says
        TYPE_MISMATCH."""
        assert design.variation("llm-model-version", {"key": "u"}, 42) == 42
        assert design.variation("prompt-template-v2", {"key": "u"}, "on") == "on"
        detail = design.detail("llm-model-version", {"key": "u"}, 42)
        assert _explained(detail) == (42, None, Reason.ERROR, None, ErrorCode.TYPE_MISMATCH)

    @pytest.mark.parametrize(
        ("variants", "good", "bad"),
        [
            ({"on": True, "off": False}, False, [0, "false", None.__class__]),
            ({"a": 1, "b": 2.5}, 0.0, [False, "0", [0]]),
            ({"a": "x"}, "", [b"", 0, ["x"]]),
            ({"a": {"k": 1}}, {}, [[], "{}", 0]),
            ({"a": [1]}, [], [{}, (), "[]"]),
        ],
        ids=["boolean", "number", "string", "object", "array"],
    )
    def test_accepted_defaults(self, variants: dict[str, Any], good: Any, bad: list[Any]) -> None:
        """Each kind accepts defaults of its own JSON type (and None) and refuses others."""
        client = client_for({"f": flag(variants)})
        value = next(iter(variants.values()))
        assert client.variation("f", {}, good) == value
        assert client.variation("f", {}) == value
        if isinstance(good, float):
            assert client.variation("f", {}, 0) == value
        for default in bad:
            assert client.variation("f", {}, default) is default
            assert client.detail("f", {}, default).error_code is ErrorCode.TYPE_MISMATCH

    def test_typed_getters_on_their_own_kind(self) -> None:
        """Each typed getter returns the value of a flag of its kind."""
        client = client_for(
            {
                "b": flag({"on": True}),
                "n": flag({"a": 2.5}),
                "s": flag({"a": "gpt-4o"}),
                "o": flag({"a": {"temperature": 0.2}}),
                "l": flag({"a": ["x"]}),
            }
        )
        assert client.bool_value("b", {}, False) is True
        assert client.number_value("n", {}, 0.0) == 2.5
        assert client.string_value("s", {}, "") == "gpt-4o"
        assert client.json_value("o", {}, None) == {"temperature": 0.2}
        assert client.json_value("l", {}, None) == ["x"]

    def test_typed_getters_on_another_kind(self) -> None:
        """A typed getter on a flag of another kind returns the caller's default."""
        client = client_for(
            {"b": flag({"on": True}), "n": flag({"a": 1}), "s": flag({"a": "true"})}
        )
        assert client.bool_value("s", {}, False) is False
        assert client.bool_value("n", {}, False) is False
        assert client.number_value("b", {}, 7) == 7
        assert client.number_value("s", {}, 7) == 7
        assert client.string_value("b", {}, "d") == "d"
        assert client.string_value("n", {}, "d") == "d"
        assert client.json_value("s", {}, {"d": 1}) == {"d": 1}
        assert client.json_value("b", {}, [0]) == [0]
        assert client.json_value("n", {}, None) is None

    def test_typed_getters_on_unknown_flag(self) -> None:
        """Typed getters return the default for an unknown flag."""
        client = client_for({})
        assert client.bool_value("nope", {}, True) is True
        assert client.number_value("nope", {}, 1.5) == 1.5
        assert client.string_value("nope", {}, "d") == "d"
        assert client.json_value("nope", {}, {"d": 1}) == {"d": 1}


class _ExplodingMapping(Mapping[str, Any]):
    """A mapping whose every read raises."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        raise RuntimeError("boom")


class _ExplodingObject:
    """Not a mapping, with a `.get` that raises."""

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("boom")


class TestErrors:
    """Problems are reported as a reason and error code; evaluation never raises."""

    def test_unknown_flag(self, design: FlagClient) -> None:
        """An unknown flag serves the caller's default with FLAG_NOT_FOUND."""
        assert design.variation("nope", {"key": "u"}, "d") == "d"
        assert design.variation("nope", {"key": "u"}) is None
        detail = design.detail("nope", {"key": "u"}, "d")
        assert _explained(detail) == ("d", None, Reason.ERROR, None, ErrorCode.FLAG_NOT_FOUND)

    def test_deleted_flag(self, design: FlagClient) -> None:
        """A flag deleted by `Snapshot.apply` is reported as FLAG_NOT_FOUND."""
        snapshot, _ = design.snapshot.apply(flags={"prompt-template-v2": None}, revision=1)
        design._install(snapshot)
        assert design.detail("prompt-template-v2", {"key": "u"}, True).error_code is (
            ErrorCode.FLAG_NOT_FOUND
        )
        assert design.bool_value("prompt-template-v2", {"key": "u"}, True) is True

    @pytest.mark.parametrize(
        "context", [None, ["key", "u"], "user-1", 42, _ExplodingObject()], ids=repr
    )
    def test_non_mapping_context(self, design: FlagClient, context: Any) -> None:
        """A non-mapping context on a non-static flag serves the default with INVALID_CONTEXT."""
        for key, default in (("llm-model-version", "d"), ("prompt-template-v2", True)):
            detail = design.detail(key, context, default)
            assert _explained(detail) == (
                default,
                None,
                Reason.ERROR,
                None,
                ErrorCode.INVALID_CONTEXT,
            )
            assert design.variation(key, context, default) is default
        assert design.bool_value("prompt-template-v2", context, True) is True
        assert design.string_value("llm-model-version", context, "d") == "d"

    def test_mapping_that_raises(self, design: FlagClient) -> None:
        """A mapping whose reads raise serves the default with ERROR (GENERAL), never raising."""
        context = _ExplodingMapping()
        detail = design.detail("llm-model-version", context, "d")
        assert _explained(detail) == ("d", None, Reason.ERROR, None, ErrorCode.GENERAL)
        assert design.variation("llm-model-version", context, "d") == "d"
        assert design.string_value("llm-model-version", context, "d") == "d"

    @pytest.mark.parametrize("key", [None, 42, ("a",), ["unhashable"], {"k": 1}], ids=repr)
    def test_bad_flag_keys_never_raise(self, design: FlagClient, key: Any) -> None:
        """Even a key that is not a string (or not hashable) serves the default."""
        assert design.variation(key, {}, "d") == "d"
        assert design.detail(key, {}, "d").error_code is ErrorCode.FLAG_NOT_FOUND
        assert design.string_value(key, {}, "d") == "d"
        assert design.json_value(key, {}, None) is None


class TestClient:
    """The client's own surface: snapshot, revision, keys, repr."""

    def test_empty_client(self) -> None:
        """A client built without a snapshot has no flags and serves every default."""
        client = FlagClient()
        assert list(client.keys()) == []
        assert client.revision == 0
        assert client.variation("f", {}, 3) == 3

    def test_offline_exposes_its_snapshot(self) -> None:
        """An offline client reports revision 0, its flags in file order, and its snapshot."""
        client = FlagClient.offline(DATA_DIR / "flags.yaml")
        assert client.revision == 0
        assert list(client.keys()) == ["llm-model-version", "prompt-template-v2"]
        assert client.snapshot.definitions == load_flags(DATA_DIR / "flags.yaml")
        assert repr(client) == "<FlagClient revision=0 flags=2>"

    def test_client_over_a_given_snapshot(self) -> None:
        """A client built on a snapshot evaluates that snapshot."""
        snapshot = Snapshot.build(load_flags(document({"f": flag(default="b")})), revision=7)
        client = FlagClient(snapshot)
        assert client.snapshot is snapshot
        assert client.revision == 7
        assert client.variation("f", {}) == "y"
