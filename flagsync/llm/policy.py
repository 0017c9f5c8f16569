"""The namespace's `llm:` section (the models each provider may serve, prices) in the store.

`Publisher.apply` stores a file's `llm:` section beside the flags (`{fs:<ns>}:llm`,
msgpack); every later write — `apply` of a file without the section, `put`, the
dashboard's — is checked against the stored allow-list, so a model nobody approved is
refused before anything is written, whoever writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from flagsync.errors import InvalidFlagError
from flagsync.llm.validate import check_models
from flagsync.model import Flag, LLMSettings

__all__ = ["check_against_stored", "fetch_settings", "read_settings", "store_settings"]

_decoder: Final = msgspec.msgpack.Decoder(LLMSettings)
_encoder: Final = msgspec.msgpack.Encoder()


def read_settings(redis: Any, key: str) -> LLMSettings | None:
    """The stored `llm:` section, or None (none stored, or unreadable: then no allow-list)."""
    blob = redis.get(key)
    if blob is None:
        return None
    try:
        return _decoder.decode(blob)
    except msgspec.DecodeError:
        return None


def store_settings(redis: Any, key: str, settings: LLMSettings) -> None:
    """Store a file's `llm:` section (replacing the previous one)."""
    redis.set(key, _encoder.encode(settings))


def check_against_stored(flags: Mapping[str, Flag], settings: LLMSettings | None) -> None:
    """Refuse (`InvalidFlagError`, with paths) llm flags naming a model not allowed."""
    issues = check_models(flags, settings)
    if issues:
        raise InvalidFlagError(issues)


def fetch_settings(url: str | None = None, namespace: str = "default") -> LLMSettings | None:
    """The namespace's stored `llm:` section, read once over a short-lived connection —
    how a connected worker gets the price table for `client.llm_call(..., prices=...)`
    (the sync itself follows flags and segments only)."""
    from flagsync._connection import connect, resolve_url, store_errors  # noqa: PLC0415
    from flagsync.store import StoreKeys  # noqa: PLC0415

    resolved = resolve_url(url)
    redis = connect(resolved)
    try:
        with store_errors(resolved):
            return read_settings(redis, StoreKeys(namespace).llm)
    finally:
        redis.close()
