"""Send the write script and confirm its replication (`WAIT`) on one connection, and say
honestly when the outcome is unknown.

`WAIT` counts the replicas that acknowledged *this connection's* writes, so the script
and its `WAIT`s go out together, in one round trip, on one connection taken from the
pool: `WAIT min_replicas timeout` (the promise), then `WAIT <all replicas> 50ms` (the
count reported, without making every write wait out a syncing or stalled replica). Where a failure
happens decides what it means: before anything was sent (no connection, no primary
named, a refused reply such as READONLY or NOSCRIPT) nothing was written and the call may
be retried; after the script was sent and before its reply (or its `WAIT` reply) the
write may be in the store or lost in a failover, and that is `WriteOutcomeUnknownError`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec
import redis
from redis.exceptions import RedisClusterException

from flagsync.errors import WriteOutcomeUnknownError
from flagsync.store import WriteApplied, parse_write_reply

__all__ = ["ConfirmedWriter", "Replication"]

_REPLICA_COUNT_TTL_S: Final = 1.0
"""How long the primary's replica count (`INFO replication`) is reused between writes."""
_COUNT_GRACE_S: Final = 0.05
"""After the required replicas acknowledged, how long the others get to be counted: a
replica that is syncing or stalled delays each write by this, not by the full timeout."""
_PREVIOUS_PRIMARY: Final = "previous master is now a slave"
"""redis-py's Sentinel connection turns a READONLY reply into a ConnectionError with these
words: the script was refused by a demoted primary, nothing was written."""


class Replication(msgspec.Struct, frozen=True):
    """How many replicas acknowledged a write (`WAIT`) before the publisher returned.

    `replicas` is how many were connected to the primary (the slot owner on a cluster;
    `INFO replication`), or None when not known (credentials without `+info`);
    `required` is the publisher's `min_replicas`.
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
        self._replicas: tuple[Any, int | None, float] | None = None
        """(the node asked, its replica count, until when it is reused)."""
        self.last: Replication | None = None
        """The replication of the last write this writer sent."""

    def forget_replicas(self) -> None:
        """Ask the primary again next time (after a connection error: maybe a new one)."""
        self._replicas = None

    def replica_count(self, node: Any = None) -> int | None:
        """The primary's connected replicas (cached briefly), None if INFO is refused."""
        node = self._client if node is None else node
        now = self._clock()
        if self._replicas is not None and self._replicas[0] is node and self._replicas[2] > now:
            return self._replicas[1]
        try:
            info = node.info("replication")
            count: int | None = int(info.get("connected_slaves", 0))
        except redis.exceptions.NoPermissionError:
            count = None  # an operator user without +info: WAIT for min_replicas only
        self._replicas = (node, count, now + _REPLICA_COUNT_TTL_S)
        return count

    def run(self, keys: Sequence[str], args: Sequence[object], op: str) -> Any:
        """The script's reply; `self.last` says how far it replicated.

        Raises redis-py's error when nothing was written (retryable by the caller),
        `WriteOutcomeUnknownError` when the script was sent and the outcome is unknown.
        """
        if getattr(self._client, "connection_pool", None) is None:
            return self._run_on_owner(keys, args, op)
        return self._run_on(self._client, keys, args, op)

    def _run_on_owner(self, keys: Sequence[str], args: Sequence[object], op: str) -> Any:
        """A cluster client has a pool per node: the script and its `WAIT`s go to the
        owner of the namespace's slot (one slot: every key shares the hash tag), on one
        of its connections, as on a single primary. A MOVED or ASK reply (nothing was run)
        refreshes the slot map and is sent once more at once; any other failure refreshes
        it for the caller's next attempt."""
        cluster = self._client
        for attempt in range(2):
            try:
                node = cluster.get_redis_connection(cluster.get_node_from_key(keys[0]))
                return self._run_on(node, keys, args, op)
            except (
                redis.exceptions.AskError,  # MovedError too
                redis.exceptions.ClusterDownError,
                redis.exceptions.TryAgainError,
            ):
                self._refresh_slots()
                if attempt:
                    raise
            except (redis.RedisError, WriteOutcomeUnknownError):
                self._refresh_slots()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _refresh_slots(self) -> None:
        """Ask the cluster for its slot map again (a node may be gone or the slot moved)."""
        self.forget_replicas()
        # No seed answering now is no error here: the next attempt asks again.
        with contextlib.suppress(redis.RedisError, RedisClusterException):
            self._client.nodes_manager.initialize()

    def _run_on(self, node: Any, keys: Sequence[str], args: Sequence[object], op: str) -> Any:
        replicas = self.replica_count(node)
        waits = self._waits(replicas)
        for attempt in range(2):
            reply, acked = self._send(node, keys, args, op, waits)
            if reply is not _NO_SCRIPT:
                break
            if attempt:
                raise redis.exceptions.NoScriptError("the write script could not be loaded")
            node.script_load(self._script.script)
        result = parse_write_reply(reply)
        if isinstance(result, WriteApplied):
            self.last = Replication(acked, replicas, self.min_replicas)
        return reply

    def _waits(self, replicas: int | None) -> list[tuple[int, float]]:
        """The `WAIT`s (replicas, timeout in seconds) to send after the script: the
        required count with the full timeout, then every replica with a short grace so
        the report counts those that keep up without the write waiting on the rest."""
        waits: list[tuple[int, float]] = []
        if self.min_replicas:
            waits.append((self.min_replicas, self.timeout_s))
        if replicas is not None and replicas > self.min_replicas:
            waits.append((replicas, min(_COUNT_GRACE_S, self.timeout_s)))
        return waits

    def _send(
        self,
        node: Any,
        keys: Sequence[str],
        args: Sequence[object],
        op: str,
        waits: Sequence[tuple[int, float]],
    ) -> tuple[Any, int]:
        pool = node.connection_pool
        connection = pool.get_connection()  # a failure here: nothing was sent
        clean = False
        try:
            commands: list[tuple[object, ...]] = [
                ("EVALSHA", self._script.sha, len(keys), *keys, *args)
            ]
            commands += [("WAIT", count, max(1, round(s * 1000))) for count, s in waits]
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
            for _, wait_s in waits:
                try:
                    reply_s = wait_s + self._socket_timeout_s(connection)
                    acked = max(acked, int(connection.read_response(timeout=reply_s)))
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

    @staticmethod
    def _socket_timeout_s(connection: Any) -> float:
        """The connection's read timeout: a `WAIT` reply may take its timeout plus this."""
        return float(getattr(connection, "socket_timeout", None) or 5.0)

    def _unknown(
        self, op: str, revision: int | None, error: BaseException
    ) -> WriteOutcomeUnknownError:
        cause = f"{type(error).__name__}: {error}"
        return WriteOutcomeUnknownError(self._namespace, op, revision, cause)


_NO_SCRIPT: Final = object()
