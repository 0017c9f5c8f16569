"""What an evaluation reports besides its value: OpenFeature's reasons and error codes."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

__all__ = ["ErrorCode", "EvaluationDetail", "Reason"]


class Reason(StrEnum):
    """Why a value was served (OpenFeature's vocabulary; compares equal to the plain string)."""

    STATIC = "STATIC"
    """The flag has no rules and a fixed default."""
    TARGETING_MATCH = "TARGETING_MATCH"
    """A rule matched and served a fixed variant."""
    SPLIT = "SPLIT"
    """A percentage rollout picked the variant (in a rule or the default)."""
    DEFAULT = "DEFAULT"
    """No rule matched; the flag's fixed default was served."""
    DISABLED = "DISABLED"
    """The kill switch is off: the `off` variant was served."""
    PREREQUISITE_FAILED = "PREREQUISITE_FAILED"
    """A required flag did not serve the required variant: the `off` variant was served."""
    STALE = "STALE"
    """The value came from a snapshot older than the client's grace period."""
    ERROR = "ERROR"
    """The caller's default was served; `error_code` says why."""


class ErrorCode(StrEnum):
    """Why the caller's default was served (set only when the reason is ERROR)."""

    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    PARSE_ERROR = "PARSE_ERROR"
    PROVIDER_NOT_READY = "PROVIDER_NOT_READY"
    GENERAL = "GENERAL"


class EvaluationDetail(msgspec.Struct, frozen=True):
    """The value served and why; `detail()` returns one, and never raises."""

    value: Any
    variant: str | None
    reason: Reason
    rule: str | None = None
    """The matched rule's name (or `rules[i]` when it has none); None when no rule matched."""
    error_code: ErrorCode | None = None
    stale: bool = False
    """True when the snapshot is older than the grace period (the reason is then STALE)."""
