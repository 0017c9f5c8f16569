"""`FallbackRouter` against scripted failures and cooldowns, on an injected clock (no sleeping),
and once through the real SDKs' exceptions from the loopback recorder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest

from flagsync import FlagClient, load_flags
from flagsync.client import MeteredFlagClient
from flagsync.guards import evaluate_guard, parse_guard
from flagsync.llm import AllOptionsFailedError, FallbackRouter, LLMConfig
from flagsync.llm.router import classify_error
from flagsync.snapshot import Snapshot
from tests.llm.recorder import Recorder
from tests.llm.support import FLAGS_FILE

FREE = {"key": "user-1", "plan": "free"}


@dataclass
class FakeClock:
    """Time that moves only when the router sleeps (or a test says so)."""

    now: float = 1000.0
    slept: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class StatusError(Exception):
    """An SDK-like error carrying an HTTP status."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code


class Script:
    """`send` for the router: per option label, a list of outcomes to play in order
    (an exception to raise, or anything else to return); the last one repeats."""

    def __init__(self, **outcomes: list[Any]) -> None:
        self.outcomes = {
            label.replace("__", "/").replace("_", "-"): list(v) for label, v in outcomes.items()
        }
        self.calls: list[str] = []

    def __call__(self, option: LLMConfig) -> Any:
        self.calls.append(option.label)
        queue = self.outcomes[option.label]
        outcome = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def config(client: FlagClient | None = None) -> LLMConfig:
    chosen = client or FlagClient.offline(FLAGS_FILE)
    served = chosen.llm_config("chat-llm", FREE, None)
    assert served is not None
    return served


def script(primary: list[Any], fallback: list[Any]) -> Script:
    made = Script()
    made.outcomes = {"openai/gpt-4o": primary, "anthropic/claude-sonnet-4": fallback}
    return made


class TestFallingBack:
    """Listed failures move to the next option; others are raised."""

    def test_primary_serves(self) -> None:
        """Without a failure the primary answers and the reason is `primary`."""
        routed = FallbackRouter(clock=FakeClock()).call(config(), script(["a"], ["b"]))
        assert (routed.value, routed.index, routed.reason) == ("a", 0, "primary")

    @pytest.mark.parametrize(
        ("error", "reason"),
        [(StatusError(429), "429"), (StatusError(503), "503"), (TimeoutError(), "timeout")],
    )
    def test_listed_failure_falls_back(self, error: Exception, reason: str) -> None:
        """429, a 5xx and a timeout (all in `on`) move the call to the fallback."""
        routed = FallbackRouter(clock=FakeClock()).call(config(), script([error], ["b"]))
        assert (routed.value, routed.index, routed.reason) == ("b", 1, reason)
        assert [a.outcome for a in routed.attempts] == [reason, "ok"]

    def test_unlisted_failure_is_raised(self) -> None:
        """A 400 (not in `on`) is raised as it is, and nothing else is tried."""
        sent = script([StatusError(400)], ["b"])
        with pytest.raises(StatusError):
            FallbackRouter(clock=FakeClock()).call(config(), sent)
        assert sent.calls == ["openai/gpt-4o"]

    def test_caller_maps_exception_types(self) -> None:
        """An exception type the caller maps to `429` triggers the fallback."""

        class QuotaError(Exception):
            pass

        router = FallbackRouter(clock=FakeClock(), errors={QuotaError: "429"})
        assert router.call(config(), script([QuotaError()], ["b"])).index == 1

    def test_all_failing_raises_with_attempts(self) -> None:
        """When the fallback also fails (and cools down) past the deadline, the error lists both."""
        router = FallbackRouter(clock=FakeClock(), cooldown_s=30, wait_deadline_s=5)
        with pytest.raises(AllOptionsFailedError) as caught:
            router.call(config(), script([StatusError(429)], [StatusError(503)]))
        assert [a.outcome for a in caught.value.attempts] == ["429", "503"]


class TestCooldowns:
    """A failing provider is skipped for a while; when all cool, the router waits."""

    def test_cooling_primary_is_skipped(self) -> None:
        """After a 429, the next call goes straight to the fallback without trying the primary."""
        clock = FakeClock()
        router = FallbackRouter(clock=clock, cooldown_s=30)
        sent = script([StatusError(429), "a"], ["b"])
        router.call(config(), sent)
        clock.now += 10
        routed = router.call(config(), sent)
        assert (routed.value, routed.reason) == ("b", "429")
        assert sent.calls == [
            "openai/gpt-4o",
            "anthropic/claude-sonnet-4",
            "anthropic/claude-sonnet-4",
        ]
        assert [a.outcome for a in routed.attempts] == ["cooldown", "ok"]

    def test_primary_comes_back_after_cooldown(self) -> None:
        """Once the cooldown is over, the primary is tried (and serves) again."""
        clock = FakeClock()
        router = FallbackRouter(clock=clock, cooldown_s=30)
        sent = script([StatusError(429), "a"], ["b"])
        router.call(config(), sent)
        clock.now += 30
        assert router.call(config(), sent).value == "a"
        assert router.cooling() == {}

    def test_waits_when_everything_cools(self) -> None:
        """Both options cooling: the router sleeps until the first is back, within the deadline."""
        clock = FakeClock()
        router = FallbackRouter(clock=clock, cooldown_s=3, wait_deadline_s=5)
        sent = script([StatusError(429), "a"], [StatusError(503), "b"])
        routed = router.call(config(), sent)
        assert (routed.value, routed.index) == ("a", 0)
        assert clock.slept == [3.0]
        assert routed.waited_s == 3.0

    def test_does_not_wait_past_the_deadline(self) -> None:
        """A cooldown longer than the deadline fails at once instead of waiting."""
        clock = FakeClock()
        router = FallbackRouter(clock=clock, cooldown_s=60, wait_deadline_s=5)
        with pytest.raises(AllOptionsFailedError):
            router.call(config(), script([StatusError(429)], [StatusError(503)]))
        assert clock.slept == []

    def test_request_errors_do_not_cool(self) -> None:
        """A context-length failure is about the request, not the provider: no cooldown."""
        fallbacks = load_flags(FLAGS_FILE).to_builtins()
        fallbacks["flags"]["chat-llm"]["variants"]["current"]["fallbacks"][0]["on"] = [
            "context_length"
        ]
        client = FlagClient.offline(fallbacks)
        router = FallbackRouter(clock=FakeClock())
        error = StatusError(400)
        error.args = ("This model's maximum context_length is 128000 tokens",)
        assert router.call(config(client), script([error], ["b"])).reason == "context_length"
        assert router.cooling() == {}


class TestMetrics:
    """Which option served goes to the flag's metrics: `fallback_rate(v)` works in guards."""

    def test_fallback_rate_guard(self) -> None:
        """Three calls, one fallen back: fallback_rate(current) is 1/3 in the drained series."""
        client = MeteredFlagClient(Snapshot.build(load_flags(FLAGS_FILE)))
        router = FallbackRouter(client, clock=FakeClock(), cooldown_s=0)
        sent = script(["a", StatusError(429), "a"], ["b"])
        for _ in range(3):
            router.call(config(client), sent)
        assert client._metrics is not None
        window = {(v, m): s for (k, v, m), s in client._metrics.drain().items() if k == "chat-llm"}
        assert window[("current", "fallback")].count == 3
        assert window[("current", "fallback")].mean == pytest.approx(1 / 3)
        result = evaluate_guard(parse_guard("fallback_rate(current) <= 0.5"), window, min_samples=3)
        assert result.verdict == "pass"

    def test_why_it_fell_back_is_counted(self) -> None:
        """Each fallen-back call adds a sample to `fallback_<why>`: the primary's 429 (also
        while it cools down after it: skipped as if it failed so again); a served primary
        adds none."""
        client = MeteredFlagClient(Snapshot.build(load_flags(FLAGS_FILE)))
        router = FallbackRouter(client, clock=FakeClock(), cooldown_s=30)
        sent = script([StatusError(429)], ["b"])
        for _ in range(3):
            router.call(config(client), sent)
        assert client._metrics is not None
        window = {(v, m): s for (k, v, m), s in client._metrics.drain().items() if k == "chat-llm"}
        assert window[("current", "fallback")].mean == 1.0
        assert window[("current", "fallback_429")].count == 3
        assert sent.calls.count("openai/gpt-4o") == 1  # then skipped while cooling
        routed = FallbackRouter(client, clock=FakeClock()).call(config(client), script(["a"], []))
        assert routed.reason == "primary"
        window = {(v, m): s for (k, v, m), s in client._metrics.drain().items() if k == "chat-llm"}
        assert {m for (v, m) in window if m.startswith("fallback")} == {"fallback"}


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with Recorder() as running:
        yield running


class TestThroughTheRealSdks:
    """The SDKs' own exceptions are classified and routed."""

    def test_openai_429_falls_back_to_anthropic(self, recorder: Recorder) -> None:
        """The recorder answers openai with 429: the router sends the anthropic fallback."""
        oai = openai.OpenAI(api_key="t", base_url=f"{recorder.url}/v1", max_retries=0)
        ant = anthropic.Anthropic(api_key="t", base_url=recorder.url, max_retries=0)
        send: dict[str, Callable[[LLMConfig], Any]] = {
            "openai": lambda o: oai.chat.completions.create(**o.to_openai_kwargs()),
            "anthropic": lambda o: ant.messages.create(**o.to_anthropic_kwargs()),
        }
        recorder.statuses.append(429)
        routed = FallbackRouter(clock=FakeClock()).call(config(), lambda o: send[o.provider](o))
        assert (routed.index, routed.reason) == (1, "429")
        assert [r.path for r in recorder.requests] == ["/v1/chat/completions", "/v1/messages"]

    def test_sdk_errors_classified(self, recorder: Recorder) -> None:
        """openai's 503 and connection errors map to `503` and `connection_error`."""
        oai = openai.OpenAI(api_key="t", base_url=f"{recorder.url}/v1", max_retries=0)
        recorder.statuses.append(503)
        with pytest.raises(openai.APIStatusError) as caught:
            oai.chat.completions.create(model="m", messages=[])
        assert classify_error(caught.value) == "503"
        closed = openai.OpenAI(api_key="t", base_url="http://127.0.0.1:1/v1", max_retries=0)
        with pytest.raises(openai.APIConnectionError) as refused:
            closed.chat.completions.create(model="m", messages=[])
        assert classify_error(refused.value) == "connection_error"


class TestClockInjection:
    """The clock may be a `Clock` object or a time function with a `sleep` function."""

    def test_time_function_and_sleep(self) -> None:
        """With every option cooling, the router waits on the given `sleep`, not for real."""
        now = [50.0]
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            now[0] += seconds

        router = FallbackRouter(clock=lambda: now[0], sleep=sleep, cooldown_s=2, wait_deadline_s=5)
        sent = script([StatusError(429), "a"], [StatusError(503), "b"])
        assert router.call(config(), sent).value == "a"
        assert slept == [2.0]
