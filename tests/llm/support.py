"""Builders for the llm tests: llm flag documents in the file's shape, and clients on them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Final

import pytest

from flagsync import InvalidFlagError, load_flags

FLAGS_FILE: Final = Path(__file__).resolve().parent / "flags.yaml"
"""The issue's example flag (`chat-llm`), a plain flag, and an `llm:` section."""

PRIMARY: Final[dict[str, Any]] = {
    "provider": "openai",
    "model": "gpt-4o",
    "params": {"temperature": 0.2, "top_p": 1.0, "max_tokens": 800},
    "messages": [{"role": "system", "content": "You are {{product}}'s assistant."}],
    "fallbacks": [{"provider": "anthropic", "model": "claude-sonnet-4", "on": [429, "5xx"]}],
    "context_window": 128000,
    "retrieval": {"strategy": "hybrid", "top_k": 8},
}


def variant(**changes: Any) -> dict[str, Any]:
    """The issue's primary config with fields replaced (a value of None removes the field)."""
    result = copy.deepcopy(PRIMARY)
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def llm_document(*variants: dict[str, Any], llm: dict[str, Any] | None = None) -> dict[str, Any]:
    """A document with one llm flag `chat` whose variants are `v0`, `v1`, ..."""
    named = {f"v{index}": value for index, value in enumerate(variants)}
    doc: dict[str, Any] = {
        "flags": {"chat": {"kind": "llm", "variants": named, "off": "v0", "default": "v0"}}
    }
    if llm is not None:
        doc["llm"] = llm
    return doc


def problems(doc: dict[str, Any]) -> dict[str, str]:
    """The validation problems of `doc`, path -> message (it must be refused)."""
    with pytest.raises(InvalidFlagError) as caught:
        load_flags(doc)
    return {issue.path: issue.message for issue in caught.value.issues}
