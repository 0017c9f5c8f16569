"""Send the write script and confirm its replication (`WAIT`) on one connection, and say
honestly when the outcome is unknown.

`WAIT` counts the replicas that acknowledged *this connection's* writes, so the script
and the `WAIT` go out together on one connection taken from the pool. Where a failure
happens decides what it means: before anything was sent (no connection, no primary
named, a refused reply such as READONLY or NOSCRIPT) nothing was written and the call may
be retried; after the script was sent and before its reply (or its `WAIT` reply) the
write may be in the store or lost in a failover, and that is `WriteOutcomeUnknownError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec
import redis

from flagsync.errors import WriteOutcomeUnknownError
from flagsync.store import WriteApplied, parse_write_reply

__all__ = ["ConfirmedWriter", "Replication"]

_REPLICA_COUNT_TTL_S: Final = 1.0
"""How long the primary's replica count (`INFO replication`) is reused between writes."""
_PREVIOUS_PRIMARY: Final = "previous master is now a slave"
"""redis-py's Sentinel connection turns a READONLY reply into a ConnectionError with these
words: the script was refused by a demoted primary, nothing was written."""


class Replication(msgspec.Struct, frozen=True):
    """How many replicas acknowledged a write (`WAIT`) before the publisher returned.

    `replicas` is how many were connected to the primary (`INFO replication`), or None
    when not known (credentials without `+info`, a client with no single connection
    pool); `required` is the publisher's `min_replicas`.
    """

    acked: int
    replicas: int | None
    required: int

    @property
    def confirmed(self) -> bool:
        """True when at least `required` replicas acknowledged the write."""
        return self.acked >= self.required

    def __str__(self) -> str:
        if self.replicas == 0 and self.acked == 0:
            return "no replicas"
        if self.replicas is None and self.required == 0:
            return "replication not checked"
        of = "?" if self.replicas is None else str(max(self.replicas, self.acked))
        return f"replicated to {self.acked}/{of} replicas"


class ConfirmedWriter:
    """Runs the write script with its `WAIT` for one publisher (see the module doc)."""

    def __init__(
        self,
        client: Any,
        script: Any,
        namespace: str,
        *,
        min_replicas: int,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(min_replicas, bool) or not isinstance(min_replicas, int) or min_replicas < 0:
            raise ValueError(f"min_replicas: must be an integer >= 0, got {min_replicas!r}")
        if not isinstance(timeout_s, int | float) or not 0 < timeout_s <= 3600:
            raise ValueError(
                f"replication_timeout_s: must be a number of seconds in (0, 3600], "
                f"got {timeout_s!r}"
            )
        self._client = client
        self._script = script
        self._namespace = namespace
        self.min_replicas = min_replicas
        self.timeout_s = float(timeout_s)
        self._clock = clock
        self._replicas: tuple[int | None, float] | None = None
        self.last: Replication | None = None
        """The replication of the last write this writer sent."""

    def forget_replicas(self) -> None:
        """Ask the primary again next time (after a connection error: maybe a new one)."""
        self._replicas = None

    def replica_count(self) -> int | None:
        """The primary's connected replicas (cached briefly), None if INFO is refused."""
        now = self._clock()
        if self._replicas is not None and self._replicas[1] > now:
            return self._replicas[0]
        try:
            info = self._client.info("replication")
            count: int | None = int(info.get("connected_slaves", 0))
        except redis.exceptions.NoPermissionError:
            count = None  # an operator user without +info: WAIT for min_replicas only
        self._replicas = (count, now + _REPLICA_COUNT_TTL_S)
        return count

    def run(self, keys: Sequence[str], args: Sequence[object], op: str) -> Any:
        """The script's reply; `self.last` says how far it replicated.

        Raises redis-py's error when nothing was written (retryable by the caller),
        `WriteOutcomeUnknownError` when the script was sent and the outcome is unknown.
        """
        if getattr(self._client, "connection_pool", None) is None:
            # No single pool (a cluster client): the script through redis-py, replication
            # not checked (reported as such, never as confirmed beyond min_replicas=0).
            reply = self._script(keys=keys, args=args)
            if isinstance(parse_write_reply(reply), WriteApplied):
                self.last = Replication(0, None, self.min_replicas)
            return reply
        replicas = self.replica_count()
        wait_for = self.min_replicas if replicas is None else max(replicas, self.min_replicas)
        for attempt in range(2):
            reply, acked = self._send(keys, args, op, wait_for)
            if reply is not _NO_SCRIPT:
                break
            if attempt:
                raise redis.exceptions.NoScriptError("the write script could not be loaded")
            self._client.script_load(self._script.script)
        result = parse_write_reply(reply)
        if isinstance(result, WriteApplied):
            self.last = Replication(acked, replicas, self.min_replicas)
        return reply

    def _send(
        self, keys: Sequence[str], args: Sequence[object], op: str, wait_for: int
    ) -> tuple[Any, int]:
        pool = self._client.connection_pool
        connection = pool.get_connection()  # a failure here: nothing was sent
        clean = False
        try:
            commands: list[tuple[object, ...]] = [
                ("EVALSHA", self._script.sha, len(keys), *keys, *args)
            ]
            if wait_for:
                commands.append(("WAIT", wait_for, int(self.timeout_s * 1000)))
            try:
                connection.send_packed_command(connection.pack_commands(commands))
            except redis.RedisError as error:
                self.forget_replicas()
                raise self._unknown(op, None, error) from None
            try:
                reply = connection.read_response()
            except redis.exceptions.NoScriptError:
                return _NO_SCRIPT, 0  # refused, not run: load it and send again
            except redis.exceptions.ResponseError:
                raise  # refused (READONLY, LOADING, MASTERDOWN, ...): nothing was written
            except (redis.ConnectionError, redis.TimeoutError) as error:
                self.forget_replicas()
                if _PREVIOUS_PRIMARY in str(error):
                    raise  # a demoted primary refused the script (READONLY)
                raise self._unknown(op, None, error) from None
            acked = 0
            if wait_for:
                try:
                    acked = int(connection.read_response(timeout=self._wait_read_s(connection)))
                except redis.RedisError as error:
                    self.forget_replicas()
                    result = parse_write_reply(reply)
                    if not isinstance(result, WriteApplied):
                        return reply, 0  # refused (a conflict): nothing was written
                    raise self._unknown(op, result.revision, error) from None
            clean = True
            return reply, acked
        finally:
            if not clean:
                connection.disconnect()  # a reply may still be unread on it
            pool.release(connection)

    def _wait_read_s(self, connection: Any) -> float:
        """How long to wait for WAIT's reply: its own timeout plus the socket timeout."""
        socket_timeout = getattr(connection, "socket_timeout", None) or 5.0
        return self.timeout_s + float(socket_timeout)

    def _unknown(
        self, op: str, revision: int | None, error: BaseException
    ) -> WriteOutcomeUnknownError:
        cause = f"{type(error).__name__}: {error}"
        return WriteOutcomeUnknownError(self._namespace, op, revision, cause)


_NO_SCRIPT: Final = object()
