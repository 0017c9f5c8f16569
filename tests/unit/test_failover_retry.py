"""The publisher's failover retries as logic, on an injected clock: which errors are
retried, how the pauses grow, when it gives up and what it then says, one warning per
episode. (The same retries against a real Sentinel failover: tests/topology.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import pytest
import redis
from redis.sentinel import MasterNotFoundError

from flagsync._confirmed_write import ConfirmedWriter, Replication
from flagsync._connection import store_error
from flagsync._failover import FailoverRetry, is_transient
from flagsync.errors import (
    ConflictError,
    PermissionDeniedError,
    StoreError,
    StoreUnavailableError,
    WriteOutcomeUnknownError,
)
from tests.logs import captured_logs, events

URL: Final = "redis://127.0.0.1:6399"
SENTINEL_URL: Final = "redis+sentinel://127.0.0.1:26379/svc"


class Clock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def retry(
    clock: Clock, url: str = URL, timeout_s: float = 5.0, jitter: float = 1.0
) -> FailoverRetry:
    """A `FailoverRetry` on `clock`, with a fixed jitter draw."""
    return FailoverRetry(
        url, "ns", timeout_s, clock=clock, sleep=clock.sleep, jitter=lambda: jitter
    )


def failing(errors: list[BaseException], result: str = "done") -> Callable[[], str]:
    """An operation raising each of `errors` in turn, then returning `result`."""
    calls = iter(errors)

    def operation() -> str:
        error = next(calls, None)
        if error is not None:
            raise error
        return result

    return operation


def mapped(error: redis.RedisError) -> StoreError:
    """`error` as `store_errors` raises it (the redis-py error kept as its context)."""
    try:
        raise error
    except redis.RedisError as raw:
        try:
            raise store_error(URL, raw) from None
        except StoreError as flagsync_error:
            return flagsync_error
    raise AssertionError("unreachable")


class TestWhatIsRetried:
    @pytest.mark.parametrize(
        "error",
        [
            MasterNotFoundError("No master found for 'svc'"),
            redis.ResponseError("READONLY You can't write against a read only replica."),
            redis.ResponseError("LOADING Redis is loading the dataset in memory"),
            redis.ResponseError("MASTERDOWN Link with MASTER is down"),
            redis.ConnectionError("The previous master is now a slave"),
        ],
        ids=["no-master", "readonly", "loading", "masterdown", "demoted"],
    )
    def test_failover_replies_are_transient_even_on_first_contact(
        self, error: redis.RedisError
    ) -> None:
        assert is_transient(error, reached=False, sentinel=False)
        assert is_transient(mapped(error), reached=False, sentinel=False)

    def test_a_refused_connection_is_transient_only_once_reached_or_behind_sentinel(
        self,
    ) -> None:
        """A mistyped URL fails at once; a store that answered before is failing over."""
        error = mapped(redis.ConnectionError("Error 111 connecting. Connection refused."))
        assert not is_transient(error, reached=False, sentinel=False)
        assert is_transient(error, reached=True, sentinel=False)
        assert is_transient(error, reached=False, sentinel=True)

    @pytest.mark.parametrize(
        "error",
        [
            PermissionDeniedError("NOPERM"),
            ConflictError("flag", "a", 1, 2),
            WriteOutcomeUnknownError("ns", "put", None, "timeout"),
            mapped(redis.ResponseError("ERR unknown command")),
            mapped(redis.AuthenticationError("WRONGPASS")),
        ],
        ids=["noperm", "conflict", "unknown-outcome", "refused-command", "wrongpass"],
    )
    def test_answers_that_will_not_change_are_not_retried(self, error: BaseException) -> None:
        assert not is_transient(error, reached=True, sentinel=True)
        clock = Clock()
        with pytest.raises(type(error)):
            retry(clock, SENTINEL_URL).call(failing([error]), idempotent=False)
        assert clock.sleeps == []


class TestEpisode:
    def test_retries_back_off_exponentially_with_jitter_and_log_one_warning(self) -> None:
        """Pauses double from 50 ms up to 0.5 s (jitter keeps each in [50 %, 100 %]); one
        warning for the episode and one info when it ends."""
        clock = Clock()
        errors: list[BaseException] = [MasterNotFoundError("no master")] * 6
        with captured_logs() as logs:
            result = retry(clock, SENTINEL_URL).call(failing(errors), idempotent=False)
        assert result == "done"
        assert clock.sleeps == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5])
        assert len(events(logs, "store_failover_retrying")) == 1
        recovered = events(logs, "store_failover_recovered")
        assert [entry["attempts"] for entry in recovered] == [7]

        low = Clock()
        retry(low, SENTINEL_URL, jitter=0.0).call(failing(errors[:3]), idempotent=False)
        assert low.sleeps == pytest.approx([0.025, 0.05, 0.1])

    def test_gives_up_at_the_deadline_saying_how_long_it_tried(self) -> None:
        clock = Clock()
        error = mapped(MasterNotFoundError("No master found for 'svc'"))
        with captured_logs() as logs, pytest.raises(StoreUnavailableError) as raised:
            retry(clock, SENTINEL_URL, timeout_s=2.0).call(failing([error] * 100), idempotent=False)
        assert sum(clock.sleeps) == pytest.approx(2.0)
        message = str(raised.value)
        assert "No master found" in message
        assert "over 2.0 s" in message
        assert "failover_timeout_s=2" in message
        assert len(events(logs, "store_failover_gave_up")) == 1

    def test_a_zero_timeout_never_retries(self) -> None:
        clock = Clock()
        error = mapped(MasterNotFoundError("No master found"))
        with pytest.raises(StoreUnavailableError) as raised:
            retry(clock, SENTINEL_URL, timeout_s=0).call(failing([error]), idempotent=False)
        assert raised.value is error
        assert clock.sleeps == []

    def test_an_unknown_outcome_is_retried_only_when_idempotent_and_stays_unknown(
        self,
    ) -> None:
        """An idempotent operation retries after an unknown outcome; if the store never
        answers again, the unknown outcome is what is raised (never 'unavailable', which
        would claim nothing was written)."""
        unknown = WriteOutcomeUnknownError("ns", "kill", None, "TimeoutError: reading")
        down = mapped(redis.ConnectionError("Connection refused"))
        clock = Clock()
        assert retry(clock).call(failing([unknown, down]), idempotent=True) == "done"
        refused = PermissionDeniedError("NOPERM")
        with pytest.raises(WriteOutcomeUnknownError) as still:
            retry(Clock()).call(failing([unknown, refused]), idempotent=True)
        assert still.value is unknown
        with pytest.raises(WriteOutcomeUnknownError):
            retry(Clock()).call(failing([unknown]), idempotent=False)
        with pytest.raises(WriteOutcomeUnknownError) as raised:
            retry(Clock(), timeout_s=1.0).call(failing([unknown] + [down] * 50), idempotent=True)
        assert raised.value is unknown

    def test_nested_operations_share_one_episode(self) -> None:
        """rollback -> put: the inner call does not retry (and wait) on its own."""
        clock = Clock()
        outer = retry(clock, SENTINEL_URL, timeout_s=1.0)
        inner = failing([MasterNotFoundError("no master")])

        def operation() -> str:
            return outer.call(inner, idempotent=False)  # raises at once the first time

        assert outer.call(operation, idempotent=False) == "done"
        assert clock.sleeps == pytest.approx([0.05])

    @pytest.mark.parametrize("bad", [-1, "5", float("nan"), 4000])
    def test_a_bad_timeout_is_refused_naming_the_option(self, bad: object) -> None:
        with pytest.raises(ValueError, match="failover_timeout_s"):
            FailoverRetry(URL, "ns", bad)  # type: ignore[arg-type]


class TestReplicationReport:
    @pytest.mark.parametrize(
        ("replication", "text", "confirmed"),
        [
            (Replication(acked=0, replicas=0, required=0), "no replicas", True),
            (Replication(acked=2, replicas=2, required=1), "replicated to 2/2 replicas", True),
            (Replication(acked=1, replicas=2, required=2), "replicated to 1/2 replicas", False),
            (Replication(acked=1, replicas=None, required=1), "replicated to 1/? replicas", True),
            (
                Replication(acked=0, replicas=None, required=0),
                "replication not checked",
                True,
            ),
            (Replication(acked=3, replicas=2, required=0), "replicated to 3/3 replicas", True),
        ],
    )
    def test_text_and_confirmation(
        self, replication: Replication, text: str, confirmed: bool
    ) -> None:
        assert str(replication) == text
        assert replication.confirmed is confirmed

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"min_replicas": -1, "timeout_s": 1.0}, "min_replicas"),
            ({"min_replicas": True, "timeout_s": 1.0}, "min_replicas"),
            ({"min_replicas": 1.5, "timeout_s": 1.0}, "min_replicas"),
            ({"min_replicas": 1, "timeout_s": 0}, "replication_timeout_s"),
            ({"min_replicas": 1, "timeout_s": float("inf")}, "replication_timeout_s"),
        ],
    )
    def test_bad_options_are_refused_naming_the_field(
        self, options: dict[str, object], field: str
    ) -> None:
        with pytest.raises(ValueError, match=field):
            ConfirmedWriter(None, None, "ns", **options)  # type: ignore[arg-type]
