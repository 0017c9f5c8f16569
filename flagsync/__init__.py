"""flagsync: feature flags for LLM inference fleets, evaluated in-process in microseconds."""

from __future__ import annotations

from flagsync.bucketing import BUCKETS, bucket_of
from flagsync.client import FlagClient
from flagsync.compile import CompiledFlag, compile_flag
from flagsync.errors import FlagsyncError, InvalidFlagError, ValidationIssue
from flagsync.evaluation import ErrorCode, EvaluationDetail, Reason
from flagsync.loader import FlagSource, load_flags
from flagsync.model import Clause, Flag, FlagSet, Rollout, Rule, Segment
from flagsync.snapshot import Snapshot

__all__ = [
    "BUCKETS",
    "Clause",
    "CompiledFlag",
    "ErrorCode",
    "EvaluationDetail",
    "Flag",
    "FlagClient",
    "FlagSet",
    "FlagSource",
    "FlagsyncError",
    "InvalidFlagError",
    "Reason",
    "Rollout",
    "Rule",
    "Segment",
    "Snapshot",
    "ValidationIssue",
    "bucket_of",
    "compile_flag",
    "load_flags",
]
