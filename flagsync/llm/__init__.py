"""LLM configs as flags: validated variants, typed configs, provider fallback, telemetry.

A flag with `kind: llm` holds one LLM config per variant (provider, model, params,
messages, fallbacks, ...). `FlagClient.llm_config` serves it as a frozen `LLMConfig`,
`FallbackRouter` calls a provider and falls back on listed failures, and
`FlagClient.llm_call` tracks each call into the rollout metrics.
"""

from __future__ import annotations

from flagsync.llm.config import LLMConfig, LLMMessage
from flagsync.llm.router import AllOptionsFailedError, Attempt, FallbackRouter, Routed
from flagsync.llm.tracker import CallId, LLMCall, parse_call_id

__all__ = [
    "AllOptionsFailedError",
    "Attempt",
    "CallId",
    "FallbackRouter",
    "LLMCall",
    "LLMConfig",
    "LLMMessage",
    "Routed",
    "parse_call_id",
]
