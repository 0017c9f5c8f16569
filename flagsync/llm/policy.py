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

import threading
import time
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from flagsync.errors import InvalidFlagError
from flagsync.llm.validate import check_models
from flagsync.model import Flag, LLMSettings

__all__ = [
    "SETTINGS_FIELD",
    "StoredSettings",
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
    """The namespace's stored `llm:` section, read once over a short-lived connection (the
    sync itself follows flags and segments only; a connected client's `llm_call` reads it
    through `StoredSettings`)."""
    from flagsync._connection import connect, resolve_url, store_errors  # noqa: PLC0415
    from flagsync.store import StoreKeys  # noqa: PLC0415

    resolved = resolve_url(url)
    redis = connect(resolved, timeout_s=timeout_s, connect_timeout_s=timeout_s)
    try:
        with store_errors(resolved):
            return read_settings(redis, StoreKeys(namespace).llm)
    finally:
        redis.close()


class StoredSettings:
    """A connected client's copy of its namespace's stored `llm:` section: the price table
    `client.llm_call(config)` costs calls with when the caller gives none.

    Read on the first tracked call, then again on the first tracked call after the client
    applies a new revision (`Publisher.apply` writes a file's section in the same atomic
    write as its flags). One GET over a short-lived connection with a short timeout; while
    the client is STALE, or for `retry_s` after a failed read, the copy in hand is used.
    Never raises."""

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        timeout_s: float = 0.5,
        retry_s: float = 10.0,
        fetch: Any = None,
    ) -> None:
        self.url = url
        self.namespace = namespace
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._fetch = fetch or fetch_settings
        self._lock = threading.Lock()
        self._revision = -1
        self._settings: LLMSettings | None = None
        self._retry_at = 0.0

    def get(self, revision: int, *, stale: bool = False) -> LLMSettings | None:
        """The section as of `revision` (the client's), read from the store when needed."""
        if revision == self._revision or (stale and self._revision >= 0):
            return self._settings
        if time.monotonic() < self._retry_at or not self._lock.acquire(blocking=False):
            return self._settings  # a read failed lately, or another thread is reading
        try:
            settings = self._fetch(self.url, self.namespace, timeout_s=self.timeout_s)
        except Exception:  # noqa: BLE001 - telemetry never breaks the request path
            self._retry_at = time.monotonic() + self.retry_s
            return self._settings
        else:
            self._settings, self._revision = settings, revision
            return settings
        finally:
            self._lock.release()
