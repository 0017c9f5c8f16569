"""The publisher's retries while a store fails over: bounded, backed off, logged once.

During a Sentinel failover there is no writable primary for a few seconds (2.3 s
measured with `down-after-milliseconds 1000`): connections are refused or reset, the
sentinels name no primary, a demoted primary answers READONLY, a restarted one LOADING.
Each of these means the command was not executed, so the whole operation (its reads and
its write) is run again after a jittered exponential pause, until `timeout_s` has
passed; then the last error is raised, saying how long it was retried. One warning per
episode, not one per attempt.

A connection error is only retried on a store this publisher reached before, or behind
Sentinel: a mistyped URL still fails at once. A write whose outcome is unknown
(`WriteOutcomeUnknownError`) is retried only for operations that are idempotent in effect (a
kill re-reads the flag and finds it killed); any other is reported.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Final, TypeVar

import redis
import structlog

from flagsync._connection import redact_url, store_error
from flagsync._topology import is_sentinel_url
from flagsync.errors import (
    FlagsyncError,
    PermissionDeniedError,
    StoreError,
    StoreUnavailableError,
    WriteOutcomeUnknownError,
)

__all__ = ["FailoverRetry", "is_transient"]

_log = structlog.get_logger("flagsync.publisher")
_T = TypeVar("_T")
_FIRST_PAUSE_S: Final = 0.05
_LARGEST_PAUSE_S: Final = 0.5
_NOT_NOW_REPLIES: Final = ("READONLY", "LOADING", "MASTERDOWN", "TRYAGAIN")
"""Replies of a node that cannot take the write yet (a demoted or restarting primary)."""


def is_transient(error: BaseException, *, reached: bool, sentinel: bool) -> bool:
    """True when `error` (a redis-py error, or flagsync's for one) means nothing was
    executed and another attempt may find a primary."""
    if isinstance(error, PermissionDeniedError | WriteOutcomeUnknownError):
        return False
    cause = error.__context__ if isinstance(error, FlagsyncError) else error
    if isinstance(cause, redis.exceptions.AuthenticationError):
        return False
    if isinstance(cause, redis.sentinel.MasterNotFoundError):
        return True  # the sentinels name no primary (yet)
    if isinstance(cause, redis.ConnectionError | redis.TimeoutError):
        return reached or sentinel or "previous master is now a slave" in str(cause)
    if isinstance(cause, redis.RedisError):
        return str(cause).startswith(_NOT_NOW_REPLIES)
    return False


class FailoverRetry:
    """Runs one publisher's operations, retrying them through a failover (module doc)."""

    def __init__(
        self,
        url: str,
        namespace: str,
        timeout_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not isinstance(timeout_s, int | float) or not 0 <= timeout_s <= 3600:
            raise ValueError(
                f"failover_timeout_s: must be a number of seconds in [0, 3600], got {timeout_s!r}"
            )
        self.url = url
        self.namespace = namespace
        self.timeout_s = float(timeout_s)
        self.sentinel = is_sentinel_url(url)
        self.reached = False
        """True once an operation succeeded: a later connection error is a failover."""
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self._depth = 0

    def call(self, operation: Callable[[], _T], *, idempotent: bool) -> _T:
        """`operation()`, run again while it fails transiently, up to `timeout_s`.

        `idempotent`: the operation re-reads before it writes and its effect does not
        depend on how often it lands, so an unknown outcome may be retried too.
        """
        if self._depth:  # an operation calling another (rollback -> put): one episode
            return operation()
        self._depth += 1
        try:
            return self._episode(operation, idempotent)
        finally:
            self._depth -= 1

    def _episode(self, operation: Callable[[], _T], idempotent: bool) -> _T:
        started = self._clock()
        attempts = 0
        unknown: WriteOutcomeUnknownError | None = None
        while True:
            try:
                result = operation()
            except (FlagsyncError, redis.RedisError) as error:
                if isinstance(error, WriteOutcomeUnknownError) and idempotent:
                    unknown = error
                    self.reached = True  # it was sent: the store is there, failing over
                elif not is_transient(error, reached=self.reached, sentinel=self.sentinel):
                    if unknown is not None:
                        raise unknown from error  # still unknown whether it was written
                    raise
                waited = self._clock() - started
                if waited >= self.timeout_s:
                    raise self._give_up(error, unknown, attempts + 1, waited) from None
                if attempts == 0:
                    _log.warning(
                        "store_failover_retrying",
                        namespace=self.namespace,
                        url=redact_url(self.url),
                        error=str(error),
                        timeout_s=self.timeout_s,
                    )
                pause = min(_LARGEST_PAUSE_S, _FIRST_PAUSE_S * 2**attempts)
                pause *= 0.5 + 0.5 * self._jitter()  # jittered, never zero
                self._sleep(min(pause, max(0.0, self.timeout_s - waited)))
                attempts += 1
                continue
            self.reached = True
            if attempts:
                _log.info(
                    "store_failover_recovered",
                    namespace=self.namespace,
                    attempts=attempts + 1,
                    waited_s=round(self._clock() - started, 3),
                )
            return result

    def _give_up(
        self,
        error: BaseException,
        unknown: WriteOutcomeUnknownError | None,
        attempts: int,
        waited: float,
    ) -> FlagsyncError:
        """The error to raise after the deadline: an earlier unknown outcome stays one."""
        _log.error(
            "store_failover_gave_up",
            namespace=self.namespace,
            attempts=attempts,
            waited_s=round(waited, 3),
            error=str(error),
        )
        if unknown is not None:
            return unknown
        if isinstance(error, redis.RedisError):
            mapped: StoreError = store_error(self.url, error)
        elif isinstance(error, StoreError):
            mapped = error
        else:  # only store errors are transient: anything else was raised before here
            mapped = StoreUnavailableError(str(error))
        if attempts == 1:
            return mapped
        cls = type(mapped) if isinstance(mapped, StoreUnavailableError) else StoreUnavailableError
        return cls(
            f"{mapped} (tried {attempts} times over {waited:.1f} s: no writable primary "
            f"answered within failover_timeout_s={self.timeout_s:g})"
        )
