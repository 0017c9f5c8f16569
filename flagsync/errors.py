"""The exceptions flagsync raises at its edges (validation, store, configuration).

Evaluation never raises: it reports problems as data (a reason and an error code).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec


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
