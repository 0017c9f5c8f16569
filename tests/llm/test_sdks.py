"""The parameter tables match the installed SDKs, and the kwargs a config produces are what
the real `openai` and `anthropic` SDKs send (to a loopback recorder, never the network)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
from anthropic.resources.messages import Messages
from openai.resources.chat.completions import Completions

from flagsync import FlagClient
from flagsync.llm.params import PROVIDERS
from tests.llm.recorder import Recorder
from tests.llm.support import FLAGS_FILE

SDK_METHODS: dict[str, Callable[..., Any]] = {
    "openai": Completions.create,
    "anthropic": Messages.create,
}
VARIABLES = {"product": "Acme", "plan": "paid", "question": "¿Qué tal? {{not_a_var}}"}


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """A recorder on a free loopback port; proxies are bypassed for it."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with Recorder() as running:
        yield running


def openai_client(recorder: Recorder) -> openai.OpenAI:
    return openai.OpenAI(api_key="test", base_url=f"{recorder.url}/v1", max_retries=0)


def anthropic_client(recorder: Recorder) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="test", base_url=recorder.url, max_retries=0)


class TestTablesMatchTheSdks:
    """A table that accepts a name the installed SDK does not take fails here."""

    @pytest.mark.parametrize("provider", sorted(PROVIDERS))
    def test_every_table_name_is_an_sdk_parameter(self, provider: str) -> None:
        """Each parameter a provider's table accepts is a keyword of the SDK's create()."""
        accepted = set(inspect.signature(SDK_METHODS[provider]).parameters)
        assert set(PROVIDERS[provider]) - accepted == set()

    def test_anthropic_has_no_sampling_parameters(self) -> None:
        """The installed anthropic SDK takes neither temperature nor top_p (so neither do we)."""
        accepted = set(inspect.signature(Messages.create).parameters)
        assert {"temperature", "top_p"} & accepted == set()
        assert {"temperature", "top_p"} & set(PROVIDERS["anthropic"]) == set()


class TestWhatTheSdksSend:
    """kwargs handed to the real SDKs become the requests we expect."""

    def _config(self, plan: str) -> Any:
        client = FlagClient.offline(FLAGS_FILE)
        return client.llm_config("chat-llm", {"key": "user-1", "plan": plan}, None, VARIABLES)

    def test_openai_request(self, recorder: Recorder) -> None:
        """The openai SDK posts the model, rendered messages and params to /v1/chat/completions."""
        config = self._config("free")
        reply = openai_client(recorder).chat.completions.create(**config.to_openai_kwargs())
        assert reply.choices[0].message.content == "hi"
        (sent,) = recorder.requests
        assert sent.path == "/v1/chat/completions"
        assert sent.body == {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are Acme's assistant. Plan: paid."},
                {"role": "user", "content": "¿Qué tal? {{not_a_var}}"},
            ],
            "temperature": 0.2,
            "top_p": 1.0,
            "max_tokens": 800,
        }

    def test_anthropic_fallback_request(self, recorder: Recorder) -> None:
        """The fallback's kwargs: a top-level system, max_tokens inherited, no temperature."""
        fallback = self._config("free").fallbacks[0]
        reply = anthropic_client(recorder).messages.create(**fallback.to_anthropic_kwargs())
        assert reply.content[0].type == "text"
        (sent,) = recorder.requests
        assert sent.path == "/v1/messages"
        assert sent.body == {
            "model": "claude-sonnet-4",
            "max_tokens": 800,
            "system": "You are Acme's assistant. Plan: paid.",
            "messages": [{"role": "user", "content": "¿Qué tal? {{not_a_var}}"}],
        }

    def test_anthropic_effort_in_output_config(self, recorder: Recorder) -> None:
        """A fallback's own output_config.effort reaches the API as output_config."""
        candidate = self._paid_candidate()
        anthropic_client(recorder).messages.create(**candidate.fallbacks[0].to_anthropic_kwargs())
        assert recorder.requests[0].body["output_config"] == {"effort": "medium"}
        assert recorder.requests[0].body["max_tokens"] == 900

    def test_openai_reasoning_effort(self, recorder: Recorder) -> None:
        """The candidate's reasoning_effort and max_completion_tokens reach openai as given."""
        candidate = self._paid_candidate()
        openai_client(recorder).chat.completions.create(**candidate.to_openai_kwargs())
        body = recorder.requests[0].body
        assert body["reasoning_effort"] == "high"
        assert body["max_completion_tokens"] == 1000

    def test_openai_config_translated_for_anthropic(self, recorder: Recorder) -> None:
        """An openai config sent to anthropic keeps only what anthropic takes (effort mapped)."""
        candidate = self._paid_candidate()
        anthropic_client(recorder).messages.create(**candidate.to_anthropic_kwargs())
        body = recorder.requests[0].body
        assert body["max_tokens"] == 1000
        assert body["output_config"] == {"effort": "high"}
        assert "temperature" not in body

    def _paid_candidate(self) -> Any:
        client = FlagClient.offline(FLAGS_FILE)
        for index in range(200):
            config = client.llm_config("chat-llm", {"key": f"u{index}", "plan": "paid"}, None)
            if config is not None and config.variant == "candidate":
                return config.render(VARIABLES)
        raise AssertionError("no paid user of 200 got the candidate at 50%")
