"""`client.llm_call(config)`: latency, time to first token, tokens, errors and cost of each call
recorded against the serving flag and variant; feedback later by call id."""

from __future__ import annotations

import pytest

from flagsync import load_flags
from flagsync.client import MeteredFlagClient
from flagsync.guards import evaluate_guard, parse_guard
from flagsync.llm import LLMConfig, parse_call_id
from flagsync.llm.tracker import LLMCall
from flagsync.metrics import MetricStat
from flagsync.model import ModelPrice
from flagsync.snapshot import Snapshot
from tests.llm.support import FLAGS_FILE

FREE = {"key": "user-1", "plan": "free"}


class Ticks:
    """A clock for the tracker that advances by hand (milliseconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += ms / 1000


def metered() -> MeteredFlagClient:
    return MeteredFlagClient(Snapshot.build(load_flags(FLAGS_FILE)))


def served(client: MeteredFlagClient) -> LLMConfig:
    config = client.llm_config("chat-llm", FREE, None)
    assert config is not None
    return config


def window(client: MeteredFlagClient) -> dict[tuple[str, str], MetricStat]:
    assert client._metrics is not None
    return {(v, m): s for (k, v, m), s in client._metrics.drain().items() if k == "chat-llm"}


class TestRecording:
    """One call's numbers land in the (flag, variant) series guards read."""

    def test_a_successful_call(self) -> None:
        """Latency, TTFT, tokens in/out/total, error 0 and cost from the file's prices."""
        client = metered()
        ticks = Ticks()
        with LLMCall(client, served(client), clock=ticks) as call:
            ticks.advance_ms(120)
            call.first_token()
            ticks.advance_ms(380)
            call.usage(input_tokens=1000, output_tokens=200)
        got = window(client)
        assert got[("current", "latency_ms")].total == pytest.approx(500)
        assert got[("current", "ttft_ms")].total == pytest.approx(120)
        assert got[("current", "tokens_in")].total == 1000
        assert got[("current", "tokens_out")].total == 200
        assert got[("current", "tokens")].total == 1200
        assert got[("current", "error")].total == 0
        # gpt-4o: $2.5 in, $10 out per million tokens
        assert got[("current", "cost")].total == pytest.approx((1000 * 2.5 + 200 * 10) / 1e6)

    def test_an_exception_is_an_error_and_propagates(self) -> None:
        """An exception inside the block records error=1 and is re-raised."""
        client = metered()
        with pytest.raises(RuntimeError), client.llm_call(served(client)):
            raise RuntimeError("provider down")
        assert window(client)[("current", "error")].total == 1

    def test_cost_of_the_fallback_that_served(self) -> None:
        """After `served_by(fallback)`, cost uses the fallback model's price."""
        client = metered()
        config = served(client)
        with client.llm_call(config) as call:
            call.served_by(config.fallbacks[0])
            call.usage(1_000_000, 0)
        assert window(client)[("current", "cost")].total == pytest.approx(3.0)

    def test_caller_prices_win(self) -> None:
        """Prices given by the caller replace the file's table."""
        client = metered()
        prices = {"gpt-4o": ModelPrice(input_per_mtok=1.0, output_per_mtok=1.0)}
        with client.llm_call(served(client), prices=prices) as call:
            call.usage(500_000, 500_000)
        assert window(client)[("current", "cost")].total == pytest.approx(1.0)

    def test_no_price_no_cost(self) -> None:
        """A model without a price records no cost (rather than a wrong zero)."""
        client = metered()
        with client.llm_call(served(client), prices={}) as call:
            call.usage(10, 10)
        assert ("current", "cost") not in window(client)

    def test_default_config_records_nothing(self) -> None:
        """A caller's default (no flag served it) is not attributed to any variant."""
        client = metered()
        default = client.llm_config("missing", FREE, {"provider": "openai", "model": "x"})
        with client.llm_call(default) as call:
            call.usage(1, 1)
        assert call.id is None
        assert window(client) == {}

    def test_guards_read_the_tracked_series(self) -> None:
        """cost_per_request, tokens_per_request, error_rate and p95_latency_ms evaluate."""
        client = metered()
        ticks = Ticks()
        for index in range(20):
            with LLMCall(client, served(client), clock=ticks) as call:
                ticks.advance_ms(100 + index)
                call.usage(100, 50)
                if index == 0:
                    call.fail()
        got = window(client)
        verdicts = {
            text: evaluate_guard(parse_guard(text), got, min_samples=20).verdict
            for text in (
                "cost_per_request(current) <= 0.01",
                "tokens_per_request(current) <= 150",
                "error_rate(current) <= 0.2",
                "p95_latency_ms(current) <= 200",
            )
        }
        assert verdicts == dict.fromkeys(verdicts, "pass")


class TestFeedbackByCallId:
    """Feedback arrives later, maybe in another process, by call id alone."""

    def test_the_id_carries_flag_variant_and_version(self) -> None:
        """A call id parses back into the flag, variant and version that served."""
        client = metered()
        config = served(client)
        call = client.llm_call(config)
        assert call.id is not None
        parsed = parse_call_id(call.id)
        assert parsed is not None
        assert (parsed.key, parsed.variant, parsed.version) == (
            "chat-llm",
            "current",
            config.version,
        )

    def test_feedback_from_another_client(self) -> None:
        """A second client (as another process would) records thumbs-down by id alone."""
        first, second = metered(), metered()
        with first.llm_call(served(first)) as call:
            pass
        assert call.id is not None
        assert second.llm_feedback(call.id, "thumbs_down", 1.0) is True
        assert window(second)[("current", "thumbs_down")].total == 1

    @pytest.mark.parametrize("call_id", ["", "nope", "chat-llm/current", "a/b/zz/123456789abc", 42])
    def test_bad_ids_are_refused_quietly(self, call_id: object) -> None:
        """Something that is not a call id records nothing and raises nothing."""
        client = metered()
        assert client.llm_feedback(call_id, "thumbs_down", 1.0) is False  # type: ignore[arg-type]

    def test_bad_metric_names_are_refused(self) -> None:
        """`exposures` and malformed names cannot be faked through feedback."""
        client = metered()
        call_id = client.llm_call(served(client)).id
        assert call_id is not None
        assert client.llm_feedback(call_id, "exposures", 1.0) is False
        assert client.llm_feedback(call_id, "Bad Name", 1.0) is False
        assert client.llm_feedback(call_id, "thumbs_down", float("nan")) is False
