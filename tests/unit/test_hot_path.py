"""The one hot path: `variation`, the typed getters, `detail` and the metered client are
generated from one template (flagsync._hot_path) and must agree on every flag and context."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flagsync import FlagClient, Snapshot, load_flags
from flagsync._hot_path import method_source
from flagsync.client import MeteredFlagClient
from flagsync.model import FlagSet

KIND_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "boolean": st.booleans(),
    "string": st.sampled_from(["gpt-4o", "gpt-4.1", "", "é"]),
    "number": st.one_of(st.integers(-5, 5), st.sampled_from([0.5, 2.25])),
    "object": st.fixed_dictionaries({"t": st.integers(0, 3)}),
    "array": st.lists(st.integers(0, 3), max_size=2),
}
GETTERS = {
    "boolean": ("bool_value", True),
    "string": ("string_value", "fallback"),
    "number": ("number_value", -1.5),
    "object": ("json_value", {"fallback": True}),
    "array": ("json_value", ["fallback"]),
}
ATTRIBUTES = ["plan", "email", "age", "version", "org"]
CLAUSES = st.one_of(
    st.fixed_dictionaries(
        {
            "attr": st.sampled_from(ATTRIBUTES),
            "op": st.sampled_from(["in", "not_in", "starts_with", "ends_with", "contains"]),
            "values": st.lists(
                st.sampled_from(["paid", "free", "@acme.com", "u1", "1"]), min_size=1, max_size=2
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "attr": st.sampled_from(ATTRIBUTES),
            "op": st.sampled_from(["lt", "gte"]),
            "values": st.lists(st.sampled_from([18, 30.5]), min_size=1, max_size=1),
        }
    ),
    st.fixed_dictionaries(
        {
            "attr": st.just("version"),
            "op": st.sampled_from(["semver_lt", "semver_gt"]),
            "values": st.just(["1.2.0"]),
        }
    ),
    st.fixed_dictionaries(
        {"attr": st.just("key"), "op": st.just("in_segment"), "values": st.just(["beta"])}
    ),
)
CONTEXT_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.sampled_from([12.0, 30.5, float("nan")]),
    st.sampled_from(["paid", "free", "u1@acme.com", "1.3.0", "1.0.0", "ü-user", "\ud800"]),
    st.lists(st.sampled_from(["paid", "free", 1]), max_size=2),
)
CONTEXTS = st.dictionaries(st.sampled_from(["key", *ATTRIBUTES]), CONTEXT_VALUES, max_size=6)


@st.composite
def serves(draw: st.DrawFn, names: list[str]) -> Any:
    """A variant name, or a rollout over the variants whose weights sum to 100."""
    if draw(st.booleans()):
        return draw(st.sampled_from(names))
    cut = draw(st.sampled_from([0, 12.5, 50, 100]))
    first, second = draw(st.sampled_from(names)), draw(st.sampled_from(names))
    weights = {first: cut} if first == second else {first: cut, second: 100 - cut}
    if first == second:
        weights[first] = 100
    rollout: dict[str, Any] = {"rollout": weights}
    if draw(st.booleans()):
        rollout["by"] = draw(st.sampled_from(["org", "age"]))
    return rollout


@st.composite
def flag_sets(draw: st.DrawFn) -> FlagSet:
    """Two to four valid flags of random kinds, rules and rollouts; later flags may
    require earlier ones."""
    flags: dict[str, Any] = {}
    for index in range(draw(st.integers(2, 4))):
        kind = draw(st.sampled_from(list(KIND_VALUES)))
        values = draw(st.lists(KIND_VALUES[kind], min_size=1, max_size=3))
        names = [f"v{position}" for position in range(len(values))]
        definition: dict[str, Any] = {
            "variants": dict(zip(names, values, strict=True)),
            "off": draw(st.sampled_from(names)),
            "enabled": draw(st.booleans()),
            "default": draw(serves(names)),
            "rules": [
                {"when": draw(st.lists(CLAUSES, max_size=2)), "serve": draw(serves(names))}
                for _ in range(draw(st.integers(0, 2)))
            ],
        }
        if index and draw(st.booleans()):
            other = f"f{draw(st.integers(0, index - 1))}"
            definition["requires"] = {other: draw(st.sampled_from(list(flags[other]["variants"])))}
        flags[f"f{index}"] = definition
    segments = {"beta": {"keys": ["u1", "u2", "7"]}}
    return load_flags({"flags": flags, "segments": segments})


def _detail(detail: Any) -> tuple[Any, ...]:
    return (detail.value, detail.variant, detail.reason, detail.rule, detail.error_code)


def _counted(client: MeteredFlagClient) -> int:
    return sum(sum(flag.counts) for flag in client.snapshot.compiled_flags())


class TestOneHotPath:
    """Every evaluation entry point gives the same answer as every other."""

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(definitions=flag_sets(), contexts=st.lists(CONTEXTS, min_size=1, max_size=4))
    def test_all_entry_points_agree(
        self, definitions: FlagSet, contexts: list[dict[str, Any]]
    ) -> None:
        """variation, the typed getters, detail and the metered client return the same
        values and details, on first use (not compiled yet) and once compiled."""
        fresh = FlagClient(Snapshot.build(definitions))
        compiled = FlagClient(Snapshot.build(definitions, compile_all=True))
        metered = MeteredFlagClient(Snapshot.build(definitions))
        for key in definitions.flags:
            kind = compiled.snapshot.flags[key].kind
            getter, typed_default = GETTERS[kind]
            for context in contexts:
                for default in (None, typed_default, object()):
                    value = compiled.variation(key, context, default)
                    detail = _detail(compiled.detail(key, context, default))
                    assert detail[0] is value or detail[0] == value
                    assert fresh.variation(key, context, default) == value
                    assert _detail(fresh.detail(key, context, default)) == detail
                    assert metered.variation(key, context, default) == value
                    assert _detail(metered.detail(key, context, default)) == detail
                typed = getattr(compiled, getter)(key, context, typed_default)
                assert typed == compiled.variation(key, context, typed_default)
                assert getattr(fresh, getter)(key, context, typed_default) == typed
                assert getattr(metered, getter)(key, context, typed_default) == typed
                for other, (other_getter, other_default) in GETTERS.items():
                    if other_getter != getter:
                        served = getattr(compiled, other_getter)(key, context, other_default)
                        assert served is other_default, (other, served)

    @settings(max_examples=60, deadline=None)
    @given(definitions=flag_sets(), context=CONTEXTS)
    def test_metered_client_counts_each_dynamic_evaluation_once(
        self, definitions: FlagSet, context: dict[str, Any]
    ) -> None:
        """Each evaluation of a flag whose outcome depends on the context counts one
        exposure, whichever entry point served it; static flags count nothing."""
        metered = MeteredFlagClient(Snapshot.build(definitions))
        for key in definitions.flags:
            flag = metered.snapshot.flags[key]
            getter, typed_default = GETTERS[flag.kind]
            if not isinstance(context, dict):
                continue
            before = _counted(metered)
            metered.variation(key, context, None)
            getattr(metered, getter)(key, context, typed_default)
            metered.detail(key, context, None)
            raised = _raises(flag, context)
            expected = 0 if flag.select is None or raised else 3
            assert _counted(metered) - before == expected


def _raises(flag: Any, context: dict[str, Any]) -> bool:
    try:
        flag.index_for(context)
    except Exception:  # noqa: BLE001 - the question is only whether it raised
        return True
    return False


class TestGeneratedSource:
    """The generated methods differ only where they must."""

    def test_one_template_two_differences(self) -> None:
        """variation and a typed getter differ in the default check alone, and the
        metered variant only adds the count."""
        plain = method_source("variation", counted=False)
        typed = method_source("string_value", counted=False)
        counted = method_source("variation", counted=True)
        differing = [
            (a, b) for a, b in zip(plain.splitlines(), typed.splitlines(), strict=True) if a != b
        ]
        assert len(differing) == 3  # the signature and the check, on both paths
        assert "counts[index] += 1" in counted
        assert "counts" not in plain

    def test_methods_carry_their_names_and_docs(self) -> None:
        """Generated methods read like written ones in tracebacks and help()."""
        assert FlagClient.variation.__qualname__ == "FlagClient.variation"
        assert MeteredFlagClient.bool_value.__qualname__ == "MeteredFlagClient.bool_value"
        assert FlagClient.string_value.__doc__ is not None
        assert "string" in FlagClient.string_value.__doc__
