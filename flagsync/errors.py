"""The exceptions flagsync raises at its edges (validation, store, configuration).

Evaluation never raises: it reports problems as data (a reason and an error code).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

__all__ = [
    "ConflictError",
    "FlagNotFoundError",
    "FlagsyncError",
    "InvalidFlagError",
    "PermissionDeniedError",
    "StoreError",
    "StoreURLError",
    "StoreUnavailableError",
    "ValidationIssue",
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


class StoreURLError(FlagsyncError, ValueError):
    """No store URL was given, or it is not a Redis URL (scheme, port); nothing was sent."""
