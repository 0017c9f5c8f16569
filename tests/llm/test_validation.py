"""`kind: llm` flags are validated at the edge: every problem of every variant, with its path."""

from __future__ import annotations

from typing import Any

import pytest

from flagsync import load_flags
from tests.llm.support import FLAGS_FILE, llm_document, problems, variant

AT = "flags.chat.variants.v0"


class TestValidConfigs:
    """Well-formed llm flags load, including the issue's example."""

    def test_the_issue_example_loads(self) -> None:
        """The example file (two variants, fallbacks, retrieval, an `llm:` section) is valid."""
        flags = load_flags(FLAGS_FILE)
        assert flags.flags["chat-llm"].kind == "llm"
        assert flags.llm is not None
        assert flags.llm.models["anthropic"] == ["claude-sonnet-4"]

    def test_a_plain_flag_has_no_kind(self) -> None:
        """Flags without `kind` keep today's meaning, and their stored form has no new field."""
        flags = load_flags(FLAGS_FILE)
        assert flags.flags["other-flag"].kind is None
        assert "kind" not in flags.to_builtins()["flags"]["other-flag"]

    def test_the_document_round_trips(self) -> None:
        """`to_builtins()` of a loaded llm document validates again to an equal document."""
        flags = load_flags(FLAGS_FILE)
        assert load_flags(flags.to_builtins()) == flags


class TestFieldsAndKinds:
    """Known fields only; unknown ones are refused with a hint to use `extra:`."""

    def test_unknown_kind(self) -> None:
        """A kind other than `llm` is refused at `kind`."""
        doc = llm_document(variant())
        doc["flags"]["chat"]["kind"] = "embedding"
        assert problems(doc) == {"flags.chat.kind": "unknown kind 'embedding' (known: llm)"}

    def test_unknown_variant_field_points_to_extra(self) -> None:
        """An unknown top-level field of a config is refused and `extra:` is suggested."""
        found = problems(llm_document(variant(team="search")))
        assert found[f"{AT}.team"].startswith("unknown field (put it under extra:)")

    def test_extra_takes_anything(self) -> None:
        """Fields under `extra:` are the application's and are not checked."""
        load_flags(llm_document(variant(extra={"team": "search", "nested": {"x": [1]}})))

    def test_variant_must_be_a_mapping(self) -> None:
        """A string variant in an llm flag is refused."""
        assert problems(llm_document("gpt-4o"))[AT] == "an llm variant is a mapping, got str"  # type: ignore[arg-type]

    def test_provider_and_model_required(self) -> None:
        """Missing provider and model are both reported."""
        found = problems(llm_document(variant(provider=None, model=None)))
        assert set(found) == {f"{AT}.provider", f"{AT}.model"}

    def test_unknown_provider(self) -> None:
        """A provider without a parameter table is refused."""
        found = problems(llm_document(variant(provider="mistral")))
        assert found[f"{AT}.provider"] == "unknown provider 'mistral' (known: openai, anthropic)"

    def test_unknown_retrieval_field(self) -> None:
        """Retrieval has known fields only, and `top_k` must be a positive integer."""
        found = problems(
            llm_document(variant(retrieval={"strategy": "hybrid", "top_k": 0, "k": 1}))
        )
        assert set(found) == {f"{AT}.retrieval.k", f"{AT}.retrieval.top_k"}


class TestProviderParameters:
    """Each provider's parameters are checked against what its SDK takes."""

    def test_anthropic_takes_no_temperature_or_top_p(self) -> None:
        """anthropic 2.14 has no temperature or top_p: both refused with the SDK named."""
        config = variant(
            provider="anthropic",
            model="claude-sonnet-4",
            params={"temperature": 0.2, "top_p": 0.9, "max_tokens": 10},
        )
        found = problems(llm_document(config))
        assert found[f"{AT}.params.temperature"].startswith(
            "anthropic 2.14 messages.create takes no 'temperature'"
        )
        assert f"{AT}.params.top_p" in found

    def test_anthropic_requires_max_tokens(self) -> None:
        """An anthropic config without max_tokens is refused at params.max_tokens."""
        config = variant(provider="anthropic", model="claude-sonnet-4", params={})
        found = problems(llm_document(config))
        assert found[f"{AT}.params.max_tokens"] == "required by anthropic 2.14 messages.create"

    def test_anthropic_effort_goes_in_output_config(self) -> None:
        """reasoning_effort is refused for anthropic with a pointer to output_config."""
        config = variant(
            provider="anthropic",
            model="claude-sonnet-4",
            params={"max_tokens": 10, "reasoning_effort": "high"},
        )
        assert (
            "use output_config: {effort: ...}"
            in problems(llm_document(config))[f"{AT}.params.reasoning_effort"]
        )

    def test_anthropic_output_config_effort_values(self) -> None:
        """output_config.effort takes low..max only."""
        config = variant(
            provider="anthropic",
            model="claude-sonnet-4",
            params={"max_tokens": 10, "output_config": {"effort": "minimal"}},
        )
        assert f"{AT}.params.output_config" in problems(llm_document(config))

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("temperature", -0.1),
            ("temperature", 2.01),
            ("temperature", True),
            ("top_p", 0),
            ("top_p", 1.5),
            ("max_tokens", 0),
            ("max_tokens", 1.5),
            ("reasoning_effort", "extreme"),
            ("stop", [1]),
        ],
    )
    def test_openai_ranges(self, name: str, value: Any) -> None:
        """Values outside a parameter's range or type are refused at their path."""
        params = {"temperature": 0.2, "max_tokens": 800, name: value}
        assert f"{AT}.params.{name}" in problems(llm_document(variant(params=params)))

    @pytest.mark.parametrize(
        ("name", "value"), [("temperature", 0), ("temperature", 2), ("top_p", 1)]
    )
    def test_openai_range_edges_accepted(self, name: str, value: float) -> None:
        """temperature 0 and 2 and top_p 1 are inside their ranges."""
        load_flags(llm_document(variant(params={name: value, "max_tokens": 100})))

    def test_max_tokens_below_window(self) -> None:
        """max_tokens equal to the context window is refused (it must leave room for input)."""
        found = problems(llm_document(variant(params={"max_tokens": 128000})))
        assert found[f"{AT}.params.max_tokens"] == (
            "128000 must be below the context window (128000)"
        )

    def test_context_window_positive(self) -> None:
        """A context window of 0 is refused."""
        assert f"{AT}.context_window" in problems(llm_document(variant(context_window=0)))


class TestMessages:
    """Roles come from a fixed set; template variables must be well-formed."""

    def test_unknown_role(self) -> None:
        """A role outside system/developer/user/assistant is refused."""
        found = problems(llm_document(variant(messages=[{"role": "tool", "content": "x"}])))
        assert found[f"{AT}.messages[0].role"].startswith("unknown role 'tool'")

    @pytest.mark.parametrize("content", ["Hi {{ user name }}", "Hi {{1st}}", "Hi {{name", "{{}}"])
    def test_malformed_variable(self, content: str) -> None:
        """A `{{` that does not open a well-formed `{{name}}` is refused."""
        found = problems(llm_document(variant(messages=[{"role": "user", "content": content}])))
        assert found[f"{AT}.messages[0].content"].startswith("malformed template variable")

    def test_single_braces_are_text(self) -> None:
        """JSON-like single braces in a prompt are plain text."""
        message = {"role": "system", "content": 'Answer as {"answer": ...} for {{ name }}.'}
        load_flags(llm_document(variant(messages=[message])))

    def test_content_must_be_text(self) -> None:
        """Message content is a string."""
        found = problems(llm_document(variant(messages=[{"role": "user", "content": 3}])))
        assert found[f"{AT}.messages[0].content"] == "expected text, got int"


class TestFallbacks:
    """Fallbacks are validated against their own provider, with a fixed trigger vocabulary."""

    def test_unknown_trigger(self) -> None:
        """`on` takes a status code or a known word; others are refused at their index."""
        config = variant(
            fallbacks=[
                {
                    "provider": "anthropic",
                    "model": "claude-sonnet-4",
                    "on": [429, "6xx", 200, "rate", "4xx"],
                }
            ]
        )
        found = problems(llm_document(config))
        assert set(found) == {f"{AT}.fallbacks[0].on[{i}]" for i in (1, 2, 3, 4)}

    @pytest.mark.parametrize(
        "trigger", [429, "503", "5xx", "timeout", "connection_error", "context_length"]
    )
    def test_known_triggers(self, trigger: Any) -> None:
        """Each trigger of the vocabulary is accepted."""
        config = variant(
            fallbacks=[{"provider": "anthropic", "model": "claude-sonnet-4", "on": [trigger]}]
        )
        load_flags(llm_document(config))

    def test_triggers_required(self) -> None:
        """A fallback without `on` is refused."""
        config = variant(fallbacks=[{"provider": "anthropic", "model": "claude-sonnet-4"}])
        assert f"{AT}.fallbacks[0].on" in problems(llm_document(config))

    def test_own_params_checked_against_own_provider(self) -> None:
        """A fallback's own params are checked against its provider (anthropic: no temperature)."""
        config = variant(
            fallbacks=[
                {
                    "provider": "anthropic",
                    "model": "claude-sonnet-4",
                    "params": {"temperature": 0.5, "max_tokens": 100},
                    "on": [429],
                }
            ]
        )
        assert set(problems(llm_document(config))) == {f"{AT}.fallbacks[0].params.temperature"}

    def test_inherited_params_must_include_required(self) -> None:
        """An anthropic fallback of a primary without max_tokens must set its own."""
        config = variant(params={"temperature": 0.2})
        found = problems(llm_document(config))
        assert "requires 'max_tokens'" in found[f"{AT}.fallbacks[0].params"]

    def test_fallback_with_unknown_field(self) -> None:
        """A fallback has known fields only."""
        config = variant(
            fallbacks=[
                {"provider": "anthropic", "model": "claude-sonnet-4", "on": [429], "weight": 2}
            ]
        )
        assert f"{AT}.fallbacks[0].weight" in problems(llm_document(config))


class TestModelsAllowList:
    """The `llm.models` allow-list is checked for primaries and fallbacks alike."""

    def test_model_not_allowed(self) -> None:
        """A primary and a fallback outside their provider's list are both refused."""
        doc = llm_document(
            variant(), llm={"models": {"openai": ["gpt-4.1"], "anthropic": ["claude-opus-4"]}}
        )
        found = problems(doc)
        assert found[f"{AT}.model"] == "'gpt-4o' is not in llm.models.openai (gpt-4.1)"
        assert f"{AT}.fallbacks[0].model" in found

    def test_provider_without_list_allows_any(self) -> None:
        """A provider not named in `llm.models` is not restricted."""
        load_flags(llm_document(variant(), llm={"models": {"openai": ["gpt-4o"]}}))

    def test_bad_settings(self) -> None:
        """Unknown providers and negative prices in `llm:` are refused with their paths."""
        doc = llm_document(
            variant(),
            llm={
                "models": {"mistral": ["x"]},
                "prices": {"gpt-4o": {"input_per_mtok": -1, "output_per_mtok": 1}},
            },
        )
        assert set(problems(doc)) == {"llm.models.mistral", "llm.prices.gpt-4o.input_per_mtok"}


class TestEveryProblemAtOnce:
    """Like every flag, all problems of a document are listed together."""

    def test_many_problems(self) -> None:
        """Problems in two variants and a fallback are reported in one error."""
        bad = variant(params={"temperature": 3}, messages=[{"role": "bot", "content": "x"}])
        worse = variant(provider="anthropic", model="claude-sonnet-4", params={"top_p": 0.5})
        found = problems(llm_document(bad, worse))
        assert {
            f"{AT}.params.temperature",
            f"{AT}.messages[0].role",
            "flags.chat.variants.v1.params.top_p",
            "flags.chat.variants.v1.params.max_tokens",
        } <= set(found)
