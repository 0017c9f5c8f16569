"""flagsync: feature flags for LLM inference fleets, evaluated in-process in microseconds.

The evaluation core is imported eagerly. Everything that talks to a store (`Publisher`,
`Fleet`, their results) and the store errors and status types are imported on first use
(PEP 562), so `import flagsync` on an offline worker never imports redis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

from flagsync.bucketing import BUCKETS, bucket_of
from flagsync.client import FlagClient
from flagsync.compile import CompiledFlag, compile_flag
from flagsync.errors import FlagsyncError, InvalidFlagError, ValidationIssue
from flagsync.evaluation import ErrorCode, EvaluationDetail, Reason
from flagsync.loader import FlagSource, load_flags
from flagsync.model import Clause, Flag, FlagSet, Rollout, Rule, Segment
from flagsync.snapshot import Snapshot

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers
    from flagsync.errors import (
        ConflictError,
        FlagNotFoundError,
        PartialReseedError,
        PermissionDeniedError,
        ReplicationUnconfirmedError,
        StoreError,
        StoreUnavailableError,
        StoreURLError,
        WriteOutcomeUnknownError,
    )
    from flagsync.fleet import Fleet, HistoryEntry, PropagationReport, WorkerAck, WorkerInfo
    from flagsync.llm.config import LLMConfig, LLMMessage
    from flagsync.llm.router import FallbackRouter
    from flagsync.llm.tracker import LLMCall
    from flagsync.publisher import (
        DefinitionChange,
        Publisher,
        Replication,
        StoredFlag,
        WriteResult,
    )
    from flagsync.status import ClientStatus, SyncState

__all__ = [
    "BUCKETS",
    "Clause",
    "ClientStatus",
    "CompiledFlag",
    "ConflictError",
    "DefinitionChange",
    "ErrorCode",
    "EvaluationDetail",
    "FallbackRouter",
    "Flag",
    "FlagClient",
    "FlagNotFoundError",
    "FlagSet",
    "FlagSource",
    "FlagsyncError",
    "Fleet",
    "HistoryEntry",
    "InvalidFlagError",
    "LLMCall",
    "LLMConfig",
    "LLMMessage",
    "PartialReseedError",
    "PermissionDeniedError",
    "PropagationReport",
    "Publisher",
    "Reason",
    "Replication",
    "ReplicationUnconfirmedError",
    "Rollout",
    "Rule",
    "Segment",
    "Snapshot",
    "StoreError",
    "StoreURLError",
    "StoreUnavailableError",
    "StoredFlag",
    "SyncState",
    "ValidationIssue",
    "WorkerAck",
    "WorkerInfo",
    "WriteOutcomeUnknownError",
    "WriteResult",
    "bucket_of",
    "compile_flag",
    "load_flags",
]

_LAZY: Final = {
    "ClientStatus": "flagsync.status",
    "ConflictError": "flagsync.errors",
    "DefinitionChange": "flagsync.publisher",
    "FallbackRouter": "flagsync.llm.router",
    "FlagNotFoundError": "flagsync.errors",
    "Fleet": "flagsync.fleet",
    "HistoryEntry": "flagsync.fleet",
    "LLMCall": "flagsync.llm.tracker",
    "LLMConfig": "flagsync.llm.config",
    "LLMMessage": "flagsync.llm.config",
    "PartialReseedError": "flagsync.errors",
    "PermissionDeniedError": "flagsync.errors",
    "PropagationReport": "flagsync.fleet",
    "Publisher": "flagsync.publisher",
    "Replication": "flagsync.publisher",
    "ReplicationUnconfirmedError": "flagsync.errors",
    "StoreError": "flagsync.errors",
    "StoreURLError": "flagsync.errors",
    "StoreUnavailableError": "flagsync.errors",
    "StoredFlag": "flagsync.publisher",
    "SyncState": "flagsync.status",
    "WorkerAck": "flagsync.fleet",
    "WorkerInfo": "flagsync.fleet",
    "WriteOutcomeUnknownError": "flagsync.errors",
    "WriteResult": "flagsync.publisher",
}
"""Public names imported on first access: name -> the module that defines or re-exports it."""


def __getattr__(name: str) -> object:
    """Import a lazy public name on first use and keep it (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flagsync' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, lazy ones included (for `dir()` and completion)."""
    return sorted(set(globals()) | set(_LAZY))
