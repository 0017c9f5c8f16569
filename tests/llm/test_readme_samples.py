"""The README's LLM, OpenFeature and Prometheus samples run as shown, against a real server.

Each sample is taken from the README as it is, with only its store URL and namespace
pointed at the test's server and namespace (and, for the LLM sample, the SDKs' base URLs
at the loopback recorder: their documented environment variables, so the sample's own
`openai.OpenAI()` / `anthropic.Anthropic()` lines are what run).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flagsync import FlagClient, load_flags
from flagsync.loader import parse_document
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from tests.llm.recorder import Recorder

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
LOCAL_URL = "redis://127.0.0.1:6379"


def block(section: str, language: str) -> str:
    """The first ```language block after the `## section` heading (within that section)."""
    start = README.index(f"\n## {section}\n")
    end = README.find("\n## ", start + 1)
    text = README[start : end if end != -1 else len(README)]
    found = re.search(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)
    assert found is not None, f"no {language} block in README section {section!r}"
    return found.group(1)


def pointed(code: str, url: str, namespace: str) -> str:
    """The sample with its store URL and namespace replaced (and nothing else)."""
    assert LOCAL_URL in code
    code = code.replace(LOCAL_URL, url)
    return code.replace('namespace="default"', f"namespace={namespace!r}").replace(
        '"default")', f"{namespace!r})"
    )


def run(code: str, **names: Any) -> dict[str, Any]:
    """Execute a sample as a module would run (with `names` predefined, e.g. a `print`
    that keeps what the sample prints apart from the logs), returning its globals."""
    scope: dict[str, Any] = {"__name__": "readme_sample", **names}
    exec(compile(code, "<README sample>", "exec"), scope)  # noqa: S102 - the README's own code
    return scope


def readme_flags() -> dict[str, Any]:
    """The `## LLM configs` flag file, parsed."""
    document = parse_document(block("LLM configs", "yaml"), "yaml")
    assert isinstance(document, dict)
    return document


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """The providers' APIs on loopback, set the way the SDKs read it: the environment."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with Recorder() as running:
        monkeypatch.setenv("OPENAI_BASE_URL", f"{running.url}/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", running.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test")
        yield running


def close_clients(scope: dict[str, Any]) -> None:
    for value in scope.values():
        if isinstance(value, FlagClient):
            value.close()


class TestLLMSample:
    """`## LLM configs`: the flag file is valid, and the code runs on it end to end."""

    def test_the_flag_file_is_valid(self) -> None:
        """The README's llm flag file loads (every field checked) with its `llm:` section."""
        flags = load_flags(readme_flags())
        assert flags.flags["chat-llm"].kind == "llm"
        assert flags.llm is not None

    def test_the_code_runs_with_a_fallback(
        self, server: ServerProcess, publisher: Publisher, recorder: Recorder, namespace: str
    ) -> None:
        """Applied, the sample serves the candidate or current config, calls both SDKs,
        routes a call (openai answers 429: anthropic serves), tracks it and records feedback."""
        publisher.apply(readme_flags())
        code = pointed(block("LLM configs", "python"), server.url, namespace)
        # the two direct SDK calls answer 200; then the routed primary gets a 429
        recorder.statuses.extend([200, 200, 429])
        scope = run(code)
        try:
            config, routed, call = scope["config"], scope["routed"], scope["call"]
            assert config.key == "chat-llm"
            assert config.variant in {"candidate", "current"}
            assert config.problems == ()
            assert "Acme" in config.messages[0].content
            assert routed.reason == "429"
            assert routed.option.provider == "anthropic"
            assert call.id is not None
            assert call.cost is not None  # priced from the stored `llm.prices`
            paths = [request.path for request in recorder.requests]
            assert paths == [
                "/v1/chat/completions",
                "/v1/messages",
                "/v1/chat/completions",
                "/v1/messages",
            ]
            assert recorder.requests[1].body["system"].startswith("You are Acme's assistant.")
            assert scope["client"].llm_config_detail("chat-llm", scope["user"]).variant
        finally:
            close_clients(scope)


class TestOpenFeatureSample:
    """`## OpenFeature`: the sample runs and gets what its comment says."""

    def test_the_code_runs_and_resolves_as_shown(
        self, server: ServerProcess, publisher: Publisher, namespace: str
    ) -> None:
        pytest.importorskip("openfeature")
        from openfeature import api

        publisher.apply(ROOT / "examples" / "flags.yaml")
        code = pointed(block("OpenFeature", "python"), server.url, namespace)
        try:
            scope = run(code)
            details = scope["details"]
            assert (details.value, details.variant, details.reason) == (
                "gpt-4o",
                "current",
                "SPLIT",
            )
            assert dict(details.flag_metadata) == {
                "revision": 1,
                "namespace": namespace,
                "stale": False,
                "rule": "paid-ramp",
            }
        finally:
            api.shutdown()  # the provider owns its client: closed here


class TestPrometheusSample:
    """`## Prometheus`: the sample runs; what it prints parses with prometheus-client's parser."""

    def test_the_code_runs_and_prints_an_exposition(
        self,
        server: ServerProcess,
        publisher: Publisher,
        namespace: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        prometheus_client = pytest.importorskip("prometheus_client")
        from prometheus_client.parser import text_string_to_metric_families

        from flagsync.prometheus import FlagsyncCollector

        servers: list[Any] = []
        real = prometheus_client.start_http_server

        def on_a_free_port(port: int, *args: Any, **kwargs: Any) -> Any:
            started = real(0, *args, **kwargs)  # the sample's 9464 may be taken here
            servers.append(started)
            return started

        monkeypatch.setattr(prometheus_client, "start_http_server", on_a_free_port)
        publisher.apply(ROOT / "examples" / "flags.yaml")
        code = pointed(block("Prometheus", "python"), server.url, namespace)
        scope: dict[str, Any] = {}
        try:
            printed: list[str] = []
            scope = run(code, print=printed.append)
            samples = {
                (sample.name, sample.labels.get("state"), sample.labels.get("namespace")): sample
                for family in text_string_to_metric_families("".join(printed))
                for sample in family.samples
            }
            assert samples["flagsync_sync_state", "ready", namespace].value == 1.0
            assert samples["flagsync_revision", None, namespace].value == 1.0
            assert ("flagsync_lag_seconds", None, namespace) in samples
        finally:
            registry = prometheus_client.REGISTRY
            for collector in list(registry._collector_to_names):
                if isinstance(collector, FlagsyncCollector):
                    registry.unregister(collector)
            for started in servers:
                if isinstance(started, tuple):
                    started[0].shutdown()
                    started[0].server_close()
            close_clients(scope)
