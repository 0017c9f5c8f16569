"""LLM configs as flags: validated variants, typed configs, provider fallback, telemetry.

A flag with `kind: llm` holds one LLM config per variant (provider, model, params,
messages, fallbacks, ...). `FlagClient.llm_config` serves it as a frozen `LLMConfig`,
`FallbackRouter` calls a provider and falls back on listed failures, and
`FlagClient.llm_call` tracks each call into the rollout metrics.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "LLMConfig": "config",
    "LLMMessage": "config",
    "AllOptionsFailedError": "router",
    "Attempt": "router",
    "FallbackRouter": "router",
    "Routed": "router",
    "CallId": "tracker",
    "LLMCall": "tracker",
    "parse_call_id": "tracker",
}
"""Where each public name lives: imported on first use (PEP 562), so the validation of
flag files, which needs only `flagsync.llm.validate`, loads neither the router nor logging."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'flagsync.llm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"flagsync.llm.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
