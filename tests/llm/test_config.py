"""`client.llm_config` and `llm_config_detail`: a frozen config per served variant, rendered
safely, with a version that follows the flag's own definition only."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from flagsync import FlagClient, FlagsyncError, load_flags
from flagsync.client import MeteredFlagClient
from flagsync.evaluation import ErrorCode, Reason
from flagsync.llm import LLMConfig
from flagsync.llm.template import render
from flagsync.snapshot import Snapshot
from tests.llm.support import FLAGS_FILE

FREE = {"key": "user-1", "plan": "free"}


def offline() -> FlagClient:
    return FlagClient.offline(FLAGS_FILE)


def edited(change: dict[str, Any]) -> FlagClient:
    """A client on the example file with top-level flags replaced or added."""
    doc = load_flags(FLAGS_FILE).to_builtins()
    doc["flags"].update(change)
    return FlagClient.offline(doc)


class TestServedConfig:
    """What `llm_config` returns for a served variant."""

    def test_fields(self) -> None:
        """Provider, model, params, messages, fallbacks, window, retrieval and variant are set."""
        config = offline().llm_config("chat-llm", FREE, None)
        assert config is not None
        assert (config.provider, config.model, config.variant) == ("openai", "gpt-4o", "current")
        assert dict(config.params) == {"temperature": 0.2, "top_p": 1.0, "max_tokens": 800}
        assert config.context_window == 128000
        assert config.retrieval == {"strategy": "hybrid", "top_k": 8}
        assert [o.label for o in config.options] == ["openai/gpt-4o", "anthropic/claude-sonnet-4"]
        assert config.fallbacks[0].on == frozenset({"429", "5xx", "timeout"})

    def test_frozen(self) -> None:
        """The config cannot be changed, nor can its params."""
        config = offline().llm_config("chat-llm", FREE, None)
        assert config is not None
        with pytest.raises(AttributeError):
            config.model = "x"  # type: ignore[misc]
        with pytest.raises(TypeError):
            config.params["temperature"] = 1.0  # type: ignore[index]

    def test_same_object_for_the_same_variant(self) -> None:
        """Serving a variant again returns the cached config (no rebuild per call)."""
        client = offline()
        first = client.llm_config("chat-llm", FREE, None)
        assert client.llm_config("chat-llm", {"key": "user-2", "plan": "free"}, None) is first

    def test_kwargs_are_fresh_copies(self) -> None:
        """Editing the returned kwargs never changes the config."""
        config = offline().llm_config("chat-llm", FREE, None)
        assert config is not None
        kwargs = config.to_openai_kwargs()
        kwargs["messages"].append({"role": "user", "content": "x"})
        kwargs["temperature"] = 2
        assert config.to_openai_kwargs()["temperature"] == 0.2
        assert len(config.to_openai_kwargs()["messages"]) == 2


class TestRendering:
    """`{{name}}` substitution: safe, single pass, never raising."""

    def test_variables_rendered_in_primary_and_fallbacks(self) -> None:
        """Variables fill the messages of the config and of its fallbacks."""
        variables = {"product": "Acme", "plan": "free", "question": "hi"}
        config = offline().llm_config("chat-llm", FREE, None, variables)
        assert config is not None
        assert config.messages[0].content == "You are Acme's assistant. Plan: free."
        assert config.fallbacks[0].messages[0].content == config.messages[0].content
        assert config.problems == ()

    def test_missing_variable_is_listed_not_raised(self) -> None:
        """A missing variable leaves its placeholder and appears on `problems`."""
        config = offline().llm_config("chat-llm", FREE, None, {"product": "Acme"})
        assert config is not None
        assert config.messages[0].content == "You are Acme's assistant. Plan: {{plan}}."
        assert config.problems == ("missing variable 'plan'", "missing variable 'question'")

    def test_braces_in_values_are_not_expanded(self) -> None:
        """A value containing `{{plan}}` is inserted as text, never rendered again."""
        text, missing = render("A {{a}} B {{b}}", {"a": "{{b}}", "b": "{x}"})
        assert (text, missing) == ("A {{b}} B {x}", ())

    def test_unicode_and_non_strings(self) -> None:
        """Unicode values and numbers render as text; spaces inside braces are allowed."""
        text, missing = render("{{ who }} → {{n}} {{ gone }}", {"who": "Zoë 🚀", "n": 3})
        assert (text, missing) == ("Zoë 🚀 → 3 {{ gone }}", ("gone",))

    def test_no_attribute_access(self) -> None:
        """`{{a.b}}` is not a placeholder: no attribute or item access is possible."""
        text, missing = render("{{a.b}} {{a}}", {"a": "x"})
        assert (text, missing) == ("{{a.b}} x", ())


class TestVersion:
    """The version changes with this flag's definition, not with other flags."""

    def test_unchanged_by_edits_to_other_flags(self) -> None:
        """Editing another flag leaves the version (and the config) as it was."""
        before = offline().llm_config("chat-llm", FREE, None)
        other = {"other-flag": {"variants": {"a": 5, "b": 6}, "off": "b", "default": "b"}}
        after = edited(other).llm_config("chat-llm", FREE, None)
        assert before is not None
        assert after is not None
        assert before.version == after.version

    def test_changes_with_this_flag(self) -> None:
        """Offline (no store version: `0`), changing this flag's config changes its hash."""
        client = offline()
        before = client.llm_config("chat-llm", FREE, None)
        doc = load_flags(FLAGS_FILE).to_builtins()
        doc["flags"]["chat-llm"]["variants"]["current"]["params"]["temperature"] = 0.3
        after = FlagClient.offline(doc).llm_config("chat-llm", FREE, None)
        assert before is not None
        assert after is not None
        assert before.version is not None
        assert after.version is not None
        assert before.version.split(".")[0] == after.version.split(".")[0] == "0"
        assert before.version.split(".")[1] != after.version.split(".")[1]

    def test_same_across_processes(self) -> None:
        """Two clients built from the same file agree on the version (a content hash)."""
        first = offline().llm_config("chat-llm", FREE, None)
        second = offline().llm_config("chat-llm", FREE, None)
        assert first is not None
        assert second is not None
        assert first.version == second.version


class TestDefaults:
    """The caller's default is served, as a config, with the reason in the detail."""

    DEFAULT: ClassVar[dict[str, Any]] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "params": {"temperature": 0.0},
    }

    def test_unknown_flag(self) -> None:
        """An unknown flag serves the default with FLAG_NOT_FOUND."""
        detail = offline().llm_config_detail("nope", FREE, self.DEFAULT)
        assert isinstance(detail.value, LLMConfig)
        assert detail.value.model == "gpt-4o-mini"
        assert (detail.reason, detail.error_code) == (Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)

    def test_not_an_llm_flag(self) -> None:
        """A plain flag serves the default with TYPE_MISMATCH."""
        detail = offline().llm_config_detail("other-flag", FREE, self.DEFAULT)
        assert detail.error_code == ErrorCode.TYPE_MISMATCH
        assert offline().llm_config("other-flag", FREE, None) is None

    def test_bad_context(self) -> None:
        """A context that is not a mapping serves the default, without raising."""
        config = offline().llm_config("chat-llm", "user-1", self.DEFAULT)  # type: ignore[call-overload]
        assert config.model == "gpt-4o-mini"

    def test_invalid_default_lists_problems(self) -> None:
        """A default mapping that breaks the rules is still served, its problems listed."""
        config = offline().llm_config("nope", FREE, {"provider": "anthropic", "model": "claude"})
        assert any("max_tokens" in problem for problem in config.problems)

    def test_detail_reasons(self) -> None:
        """The detail gives the variant, rule and reason like `detail()`."""
        client = offline()
        plain = client.detail("chat-llm", {"key": "user-9", "plan": "paid"})
        detail = client.llm_config_detail("chat-llm", {"key": "user-9", "plan": "paid"})
        assert (detail.variant, detail.reason, detail.rule) == (
            plain.variant,
            Reason.SPLIT,
            "paid-ramp",
        )

    def test_killed_flag_serves_off(self) -> None:
        """A killed llm flag serves its `off` variant's config with DISABLED."""
        doc = load_flags(FLAGS_FILE).to_builtins()
        doc["flags"]["chat-llm"]["enabled"] = False
        detail = FlagClient.offline(doc).llm_config_detail("chat-llm", {"key": "u", "plan": "paid"})
        assert (detail.variant, detail.reason) == ("current", Reason.DISABLED)


class TestExposures:
    """A metered client counts the variant `llm_config` serves, on the cached path too."""

    def test_counted_once_per_call(self) -> None:
        """Ten calls for paid users count ten exposures of the flag."""
        client = MeteredFlagClient(Snapshot.build(load_flags(FLAGS_FILE)))
        for index in range(10):
            client.llm_config("chat-llm", {"key": f"u{index}", "plan": "paid"}, None)
        assert client._metrics is not None
        series = client._metrics.drain()
        assert sum(s.count for (key, _, metric), s in series.items() if key == "chat-llm") == 10


class TestKwargsTranslation:
    """A config written for one provider maps onto the other's call shape, or says why not."""

    def test_openai_params_for_anthropic(self) -> None:
        """`stop` becomes `stop_sequences`, `reasoning_effort` becomes `output_config`."""
        config = LLMConfig(
            provider="openai",
            model="m",
            params={"max_tokens": 10, "stop": "END", "reasoning_effort": "high", "top_p": 0.5},
        )
        assert config.to_anthropic_kwargs() == {
            "model": "m",
            "max_tokens": 10,
            "messages": [],
            "stop_sequences": ["END"],
            "output_config": {"effort": "high"},
        }

    def test_anthropic_params_for_openai(self) -> None:
        """`output_config.effort` becomes `reasoning_effort`, `stop_sequences` becomes `stop`."""
        config = LLMConfig(
            provider="anthropic",
            model="m",
            params={"max_tokens": 10, "stop_sequences": ["x"], "output_config": {"effort": "low"}},
        )
        assert config.to_openai_kwargs() == {
            "model": "m",
            "messages": [],
            "max_tokens": 10,
            "stop": ["x"],
            "reasoning_effort": "low",
        }

    def test_anthropic_without_max_tokens_is_refused(self) -> None:
        """anthropic cannot be called without max_tokens: the error names the field."""
        config = LLMConfig(provider="openai", model="m", params={"temperature": 0.1})
        with pytest.raises(FlagsyncError, match=r"params\.max_tokens"):
            config.to_anthropic_kwargs()
