"""`FallbackRouter`: call the served config, fall back in order on listed failures.

The flag says what to try and when (`fallbacks: [{..., on: [429, 5xx, timeout]}]`);
the router does it, per process:

- a failure is classified (`429`, `503`, `timeout`, `connection_error`,
  `context_length`, or whatever the caller maps an exception type to); the next
  option tried is the first later fallback whose `on` lists it (`5xx` covers 500-599);
  a failure of the request (a 400, a context overflow) that no later fallback lists is
  raised as it is;
- an option that failed with a provider-health failure (429, 5xx, timeout, connection
  error) cools down for `cooldown_s`: it is skipped, as if it had failed that way again;
- when every eligible option is cooling down, the router waits for the first to come
  back, up to `wait_deadline_s`, rather than fail (LiteLLM #3646);
- which option served, and why, goes to the metrics of the flag and variant that served
  the config: `fallback` is 1 or 0 per call, so a guard can read `fallback_rate(v)`;
  each fallen-back call also adds one sample to `fallback_<why>` (`fallback_429`,
  `fallback_503`, `fallback_timeout`, ...: a primary skipped while it cools down counts
  under the failure that cooled it), whose count per variant says why calls moved.

Time comes from an injected clock (`monotonic()` and `sleep()`), so tests never sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar, runtime_checkable

import structlog

from flagsync.errors import FlagsyncError
from flagsync.llm.config import LLMConfig
from flagsync.llm.serve import record_outcome

if TYPE_CHECKING:
    from flagsync.client import FlagClient

__all__ = [
    "AllOptionsFailedError",
    "Attempt",
    "Clock",
    "FallbackRouter",
    "Routed",
    "SystemClock",
    "classify_error",
    "trigger_matches",
]

_log = structlog.get_logger("flagsync.llm")
_T = TypeVar("_T")
PRIMARY: Final = "primary"
COOLING: Final = "cooldown"
_HEALTH_FAILURES: Final = frozenset({"429", "timeout", "connection_error"})
_MAX_ROUNDS: Final = 1_000


@runtime_checkable
class Clock(Protocol):
    """Where the router reads time and waits (`time` by default; a fake one in tests)."""

    def monotonic(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _FunctionClock:
    """A clock made of a time function and a sleep function (`clock=fake_time, sleep=...`)."""

    def __init__(self, now: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self._now = now
        self._sleep = sleep

    def monotonic(self) -> float:
        return self._now()

    def sleep(self, seconds: float) -> None:
        self._sleep(seconds)


def _clock(
    clock: Clock | Callable[[], float] | None, sleep: Callable[[float], None] | None
) -> Clock:
    if clock is None:
        return SystemClock() if sleep is None else _FunctionClock(time.monotonic, sleep)
    if isinstance(clock, Clock):
        return clock if sleep is None else _FunctionClock(clock.monotonic, sleep)
    return _FunctionClock(clock, sleep or time.sleep)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One option tried (or skipped while cooling down) and what came of it."""

    option: LLMConfig
    outcome: str
    """`ok`, a failure kind (`429`, `503`, `timeout`, ...), or `cooldown` (skipped)."""


@dataclass(frozen=True, slots=True)
class Routed(Generic[_T]):
    """What `FallbackRouter.call` returns: the answer and who gave it."""

    value: _T
    option: LLMConfig
    index: int
    """0 for the primary, i for `fallbacks[i-1]`."""
    reason: str
    """`primary`, or the failure that moved the call to this option (`429`, `5xx`, ...)."""
    attempts: tuple[Attempt, ...]
    waited_s: float

    @property
    def fell_back(self) -> bool:
        return self.index > 0


class AllOptionsFailedError(FlagsyncError):
    """No option of a config answered within the deadline; `attempts` says what happened."""

    def __init__(self, config: LLMConfig, attempts: tuple[Attempt, ...]) -> None:
        self.attempts = attempts
        tried = ", ".join(f"{a.option.label}: {a.outcome}" for a in attempts) or "nothing"
        super().__init__(f"no option of {config.key or 'the config'} answered ({tried})")


def _why(reason: str) -> str:
    """The metric a fallback for `reason` is counted under: `fallback_<reason>` (`429`,
    `503`, `timeout`, ..., or a caller's kind, folded to a metric name)."""
    folded = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in reason)
    return f"fallback_{folded.lower()}"[:64]


def trigger_matches(triggers: frozenset[str], failure: str) -> bool:
    """Whether a fallback listing `triggers` takes over after `failure`."""
    if failure in triggers:
        return True
    return len(failure) == 3 and failure.isdigit() and f"{failure[0]}xx" in triggers


def classify_error(error: BaseException) -> str | None:
    """The failure kind of an SDK exception (openai's and anthropic's share the shape):
    the HTTP status, `timeout`, `connection_error` or `context_length`; None otherwise."""
    name = type(error).__name__
    body = str(getattr(error, "code", "") or "") + " " + str(error)
    if "context_length" in body or "prompt is too long" in body:
        return "context_length"
    if "Timeout" in name or isinstance(error, TimeoutError):
        return "timeout"
    if "Connection" in name or isinstance(error, ConnectionError):
        return "connection_error"
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and 100 <= status <= 599:
        return str(status)
    return None


class FallbackRouter:
    """Routes calls over a config's options; one per process (cooldowns are shared).

    `clock`: an object with `monotonic()` and `sleep(seconds)` (default: the real ones),
    or a function returning the time (then `sleep`, default `time.sleep`, waits); tests
    inject a fake one and never sleep."""

    def __init__(
        self,
        client: FlagClient | None = None,
        *,
        clock: Clock | Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        cooldown_s: float = 30.0,
        wait_deadline_s: float = 5.0,
        errors: Mapping[type[BaseException], str] | None = None,
        classify: Callable[[BaseException], str | None] = classify_error,
    ) -> None:
        self.client = client
        self.clock: Clock = _clock(clock, sleep)
        self.cooldown_s = cooldown_s
        self.wait_deadline_s = wait_deadline_s
        self._errors = dict(errors or {})
        self._classify = classify
        self._cooling: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def cooling(self) -> dict[str, float]:
        """Options cooling down now: `provider/model` -> seconds left."""
        now = self.clock.monotonic()
        with self._lock:
            return {
                label: until - now for label, (until, _) in self._cooling.items() if until > now
            }

    def call(self, config: LLMConfig, send: Callable[[LLMConfig], _T]) -> Routed[_T]:
        """`send(option)` for the primary, then the fallbacks its failures allow; raises a
        request failure no fallback lists as it is, or `AllOptionsFailedError` (its cause:
        the last failure) when no option answers by the deadline."""
        start = self.clock.monotonic()
        deadline = start + self.wait_deadline_s
        attempts: list[Attempt] = []
        last_error: BaseException | None = None
        for _ in range(_MAX_ROUNDS):
            wake = None  # the earliest end of a cooldown that blocked an eligible option
            failure: str | None = None
            for index, option in enumerate(config.options):
                if index and (failure is None or not trigger_matches(option.on, failure)):
                    continue
                cooling = self._cooling_until(option)
                if cooling is not None:
                    attempts.append(Attempt(option, COOLING))
                    wake = cooling[0] if wake is None else min(wake, cooling[0])
                    failure = cooling[1]
                    continue
                try:
                    value = send(option)
                except Exception as error:
                    kind = self._kind(error)
                    attempts.append(Attempt(option, kind or type(error).__name__))
                    until = self._fail(option, kind)
                    listed = kind is not None and self._listed_later(config, index, kind)
                    if until is None and not listed:
                        raise  # a failure of the request that no fallback takes over
                    if until is not None:
                        wake = until if wake is None else min(wake, until)
                    last_error = error
                    failure = kind
                    continue
                attempts.append(Attempt(option, "ok"))
                return self._served(
                    config,
                    value=value,
                    option=option,
                    index=index,
                    failure=failure,
                    attempts=attempts,
                    start=start,
                )
            now = self.clock.monotonic()
            if wake is None or wake > deadline:
                break
            self.clock.sleep(max(0.0, wake - now))
        raise AllOptionsFailedError(config, tuple(attempts)) from last_error

    def _served(
        self,
        config: LLMConfig,
        *,
        value: _T,
        option: LLMConfig,
        index: int,
        failure: str | None,
        attempts: list[Attempt],
        start: float,
    ) -> Routed[_T]:
        reason = PRIMARY if index == 0 else failure or COOLING
        if self.client is not None and config.key and config.variant:
            record_outcome(self.client, config.key, config.variant, "fallback", float(index > 0))
            if index:  # why: one sample per fallen-back call, e.g. `fallback_429`
                record_outcome(self.client, config.key, config.variant, _why(reason), 1.0)
        if index:
            _log.info(
                "llm.fallback",
                flag=config.key,
                variant=config.variant,
                version=config.version,
                served=option.label,
                reason=reason,
            )
        waited = self.clock.monotonic() - start
        return Routed(value, option, index, reason, tuple(attempts), waited)

    def _kind(self, error: BaseException) -> str | None:
        for error_type, kind in self._errors.items():
            if isinstance(error, error_type):
                return kind
        return self._classify(error)

    @staticmethod
    def _listed_later(config: LLMConfig, index: int, kind: str) -> bool:
        return any(trigger_matches(option.on, kind) for option in config.fallbacks[index:])

    def _cooling_until(self, option: LLMConfig) -> tuple[float, str] | None:
        with self._lock:
            entry = self._cooling.get(option.label)
            if entry is None:
                return None
            if entry[0] <= self.clock.monotonic():
                del self._cooling[option.label]
                return None
            return entry

    def _fail(self, option: LLMConfig, kind: str | None) -> float | None:
        """Cool an option down after a failure of the provider, not of the request; the
        end of its cooldown (None: not cooled)."""
        if kind is None or not (kind in _HEALTH_FAILURES or kind.startswith("5")):
            return None
        until = self.clock.monotonic() + self.cooldown_s
        with self._lock:
            self._cooling[option.label] = (until, kind)
        return until
