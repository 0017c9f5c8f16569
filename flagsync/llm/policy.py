"""The namespace's `llm:` section (the models each provider may serve, prices) in the store.

`Publisher.apply` stores a file's `llm:` section beside the flags (`{fs:<ns>}:llm`,
msgpack) in the same atomic write script run as the flags, and bumps its version (the
`llm:settings` field of the versions hash). Every later write of an llm flag — `apply`
of a file without the section, `put`, the dashboard's — is checked against the stored
allow-list and carries a guard on that version, so the script refuses it
(`ConflictError`) if the section changed in between: a model nobody approved is
refused before anything is written, whoever writes, whatever races.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from flagsync.errors import InvalidFlagError
from flagsync.llm.validate import check_models
from flagsync.model import Flag, LLMSettings

__all__ = [
    "SETTINGS_FIELD",
    "check_against_stored",
    "encode_settings",
    "fetch_settings",
    "read_settings",
    "read_versioned",
]

SETTINGS_FIELD: Final = ("llm", "settings")
"""(kind, key) of the section's version in the versions hash (`llm:settings`)."""

_decoder: Final = msgspec.msgpack.Decoder(LLMSettings)
_encoder: Final = msgspec.msgpack.Encoder()


def read_settings(redis: Any, key: str) -> LLMSettings | None:
    """The stored `llm:` section, or None (none stored, or unreadable: then no allow-list)."""
    return _decoded(redis.get(key))


def read_versioned(
    redis: Any, llm_key: str, versions_key: str
) -> tuple[LLMSettings | None, bytes | None, int]:
    """The stored section, its bytes and its version, read together (MULTI): a write
    guarded on that version was checked against exactly that section."""
    pipe = redis.pipeline(transaction=True)
    pipe.get(llm_key)
    pipe.hget(versions_key, ":".join(SETTINGS_FIELD))
    blob, version = pipe.execute()
    return _decoded(blob), blob, int(version or 0)


def encode_settings(settings: LLMSettings) -> bytes:
    """The stored form of a file's `llm:` section."""
    return _encoder.encode(settings)


def _decoded(blob: bytes | None) -> LLMSettings | None:
    if blob is None:
        return None
    try:
        return _decoder.decode(blob)
    except msgspec.DecodeError:
        return None


def check_against_stored(flags: Mapping[str, Flag], settings: LLMSettings | None) -> None:
    """Refuse (`InvalidFlagError`, with paths) llm flags naming a model not allowed."""
    issues = check_models(flags, settings)
    if issues:
        raise InvalidFlagError(issues)


def fetch_settings(
    url: str | None = None, namespace: str = "default", *, timeout_s: float = 2.0
) -> LLMSettings | None:
    """The namespace's stored `llm:` section, read once over a short-lived connection (for
    tools; a connected client's sync keeps its own copy: see `flagsync._sync.llm_section`)."""
    from flagsync._connection import connect, resolve_url, store_errors  # noqa: PLC0415
    from flagsync.store import StoreKeys  # noqa: PLC0415

    resolved = resolve_url(url)
    redis = connect(resolved, timeout_s=timeout_s, connect_timeout_s=timeout_s)
    try:
        with store_errors(resolved):
            return read_settings(redis, StoreKeys(namespace).llm)
    finally:
        redis.close()
