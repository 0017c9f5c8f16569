"""The exceptions flagsync raises at its edges (validation, store, configuration).

Evaluation never raises: it reports problems as data (a reason and an error code).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import msgspec

__all__ = [
    "ConflictError",
    "FlagNotFoundError",
    "FlagsyncError",
    "InvalidFlagError",
    "PartialReseedError",
    "PermissionDeniedError",
    "ReplicationUnconfirmedError",
    "StoreError",
    "StoreURLError",
    "StoreUnavailableError",
    "ValidationIssue",
    "WriteOutcomeUnknownError",
]


class FlagsyncError(Exception):
    """Root of every exception flagsync raises, so callers can catch one type."""


class ValidationIssue(msgspec.Struct, frozen=True):
    """One problem found in a flag definition: where it is and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidFlagError(FlagsyncError, ValueError):
    """A flag definition broke the format or its rules; every issue is listed at once."""

    def __init__(self, issues: Sequence[ValidationIssue]) -> None:
        self.issues: tuple[ValidationIssue, ...] = tuple(issues)
        count = len(self.issues)
        header = f"{count} problem{'s' if count != 1 else ''} in flag definitions"
        super().__init__(header + ":\n" + "\n".join(f"  {issue}" for issue in self.issues))

    @classmethod
    def single(cls, path: str, message: str) -> InvalidFlagError:
        """An error with one issue."""
        return cls([ValidationIssue(path, message)])


class ConflictError(FlagsyncError):
    """A write was refused because the definition changed since it was read.

    Optimistic concurrency: nothing was written. Re-read, look at the change, retry.
    """

    def __init__(self, kind: str, key: str, expected_version: int, actual_version: int) -> None:
        self.kind = kind
        self.key = key
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            f"conflict: {kind} {key!r} changed since you read it "
            f"(v{expected_version} -> v{actual_version}); re-read to see the change and retry"
        )


class FlagNotFoundError(FlagsyncError, KeyError):
    """The store has no flag (or segment) with that key."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"no {kind} {key!r} in the store")

    def __str__(self) -> str:
        return str(self.args[0])


class PartialReseedError(FlagsyncError):
    """A write into a wiped namespace would drop flags that live workers still serve.

    After a FLUSHALL (or a deleted flags hash) workers keep serving their last-known-good
    flags; content written then replaces all of them. Nothing was written. If the new
    content is complete, say so: `apply(..., complete=True)`, CLI `apply --complete`.
    """

    _LISTED = 20

    def __init__(self, namespace: str, dropped: Mapping[str, Sequence[str]]) -> None:
        self.namespace = namespace
        self.dropped: dict[str, tuple[str, ...]] = {
            key: tuple(workers) for key, workers in sorted(dropped.items())
        }
        """Each flag live workers serve that the new content lacks, with those workers."""
        workers = {worker for holders in self.dropped.values() for worker in holders}
        keys = list(self.dropped)
        listing = ", ".join(keys[: self._LISTED])
        if len(keys) > self._LISTED:
            listing += f", ... ({len(keys) - self._LISTED} more)"
        super().__init__(
            f"namespace {namespace!r} was wiped, yet {len(workers)} live worker(s) still "
            f"serve {len(keys)} flag(s) this content lacks: {listing}. Writing it would "
            "make them serve the caller's defaults for those flags; nothing was written. "
            "If the new content is complete, apply it with complete=True "
            "(CLI: apply --complete)."
        )


class StoreError(FlagsyncError):
    """The store answered a command with an error (see `flagsync.store.store_errors`).

    The subclasses name the usual causes; this class itself covers the rest (a key of the
    wrong type, a script error), with the server's own words in the message.
    """


class StoreUnavailableError(StoreError):
    """The store could not be reached, did not answer in time, or does not speak the Redis
    protocol (nothing was changed)."""


class PermissionDeniedError(StoreError):
    """The store refused the command for these credentials (ACL); nothing was changed."""


class WriteOutcomeUnknownError(StoreError):
    """The connection failed after a write was sent and before its reply (or before its
    replication was confirmed): the write may or may not be in the store, and a failover
    may have lost it. Never a success, never retried blindly: check with `flagsync
    history`, then write again if it is not there.

    `revision` is the revision the store gave the write, when its reply arrived (then only
    its replication is unknown), else None.
    """

    def __init__(self, namespace: str, op: str, revision: int | None, cause: str) -> None:
        self.namespace = namespace
        self.op = op
        self.revision = revision
        written = (
            f"was written as revision {revision}, but its replication is unknown"
            if revision is not None
            else "was sent, but no reply came"
        )
        super().__init__(
            f"outcome unknown: the {op} on namespace {namespace!r} {written} ({cause}); "
            "it may have been lost in a failover. Check with `flagsync history -n "
            f"{namespace}` and write again if it is not there"
        )


class ReplicationUnconfirmedError(StoreError):
    """The write was applied on the primary as `revision`, but fewer replicas than
    required acknowledged it in time (`WAIT`): if the primary fails now, a failover may
    lose it. Not a success; the store and workers may still show it."""

    def __init__(
        self, namespace: str, revision: int, acked: int, replicas: int, required: int
    ) -> None:
        self.namespace = namespace
        self.revision = revision
        self.acked = acked
        self.replicas = replicas
        self.required = required
        super().__init__(
            f"not confirmed: revision {revision} of namespace {namespace!r} was written on "
            f"the primary but replicated to {acked}/{replicas} replicas (required: "
            f"{required}); a failover now could lose it"
        )


class StoreURLError(FlagsyncError, ValueError):
    """No store URL was given, or it is not a Redis URL (scheme, port); nothing was sent."""
