"""The namespace's `llm:` section (model allow-list, prices) as a worker follows it.

`client.llm_call(config)` costs calls with the stored prices. It used to read them itself,
a blocking GET on the first tracked call after each new revision: I/O on the request
path, blocking an async app's event loop. Now the sync carries the section like the
flags: a whole load reads its key in the same pipeline as the flags (`load_commands`),
and a write that changes it publishes it in its change message (a change of kind
`llm`, see `store.encode_payload`); the write script stores both atomically with the
revision. `llm_call` reads the parsed copy from memory.

The section is not part of the state digest (it changes no evaluation): a lost message
that carried it is found like any lost message, by the revision check, whose load
reads it again.
"""

from __future__ import annotations

from typing import Final

import msgspec

from flagsync._codec import MalformedMessageError
from flagsync._sync.logs import SafeLogger
from flagsync.model import LLMSettings

__all__ = ["LLM_CHANGE_KIND", "LLMSection", "decode_section"]

LLM_CHANGE_KIND: Final = "llm"
"""`Change.kind` of the section in a change message (its key: `settings`)."""

_log = SafeLogger("flagsync.subscriber")  # never raises: see flagsync._sync.logs
_decoder: Final = msgspec.msgpack.Decoder(LLMSettings)


def decode_section(blob: bytes) -> LLMSettings:
    """The parsed section; raises `MalformedMessageError` naming what is wrong."""
    try:
        return _decoder.decode(blob)
    except msgspec.DecodeError as error:
        raise MalformedMessageError(f"bad llm section: {error}") from error


class LLMSection:
    """The section this worker holds: the stored bytes and their parsed form.

    Written by the follower (under its lock), read by `llm_call` on any thread: one
    attribute read of `settings`, never I/O."""

    __slots__ = ("blob", "settings")

    def __init__(self) -> None:
        self.blob: bytes | None = None
        self.settings: LLMSettings | None = None
        """None: no section stored (calls are costed only with the caller's prices)."""

    def loaded(self, blob: bytes | None, namespace: str) -> None:
        """Adopt the section a whole load read (None: none stored). An unreadable one
        gives no prices, as the publisher's check reads it (`policy.read_settings`)."""
        if blob == self.blob:
            return
        settings = None
        if blob is not None:
            try:
                settings = decode_section(blob)
            except MalformedMessageError as error:
                _log.warning("llm_section_unreadable", namespace=namespace, error=str(error)[:300])
        self.blob, self.settings = blob, settings

    def changed(self, blob: bytes, settings: LLMSettings) -> None:
        """Adopt the section an applied change message carried (parsed when decoded)."""
        self.blob, self.settings = blob, settings
