"""The last-known-good file: the flags a client starts with while the store is unreachable.

Written (atomically: a temporary file, then a rename) after every swap, read once at
connect. An unreadable file is skipped with a warning: defaults are served instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from flagsync._sync.logs import SafeLogger
from flagsync._validation import parse_flagset
from flagsync.errors import InvalidFlagError
from flagsync.snapshot import Snapshot

__all__ = ["read_lkg", "write_lkg"]

_log = SafeLogger("flagsync.subscriber")  # never raises: see flagsync._sync.logs


class _LastKnownGood(msgspec.Struct):
    epoch: str | None
    revision: int
    definitions: dict[str, Any]
    versions: dict[str, int] = msgspec.field(default_factory=dict)
    """`Snapshot.versions` (absent from files written before it: empty)."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_LastKnownGood)


def write_lkg(path: Path, snapshot: Snapshot) -> None:
    """Save `snapshot` to `path`; a failure is logged, never raised (syncing goes on)."""
    record = _LastKnownGood(
        snapshot.epoch or None,
        snapshot.revision,
        snapshot.definitions.to_builtins(),
        dict(snapshot.versions),
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(_encoder.encode(record))
        temporary.replace(path)
    except OSError as error:
        _log.warning("lkg_write_failed", path=str(path), error=str(error))


def read_lkg(path: Path) -> Snapshot | None:
    """The snapshot saved at `path`; None when there is none or it cannot be used."""
    try:
        record = _decoder.decode(path.read_bytes())
        definitions = parse_flagset(record.definitions)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError, InvalidFlagError) as error:
        _log.warning("lkg_unreadable", path=str(path), error=str(error)[:500])
        return None
    _log.info("lkg_loaded", path=str(path), revision=record.revision, flags=len(definitions.flags))
    return Snapshot.build(
        definitions,
        revision=record.revision,
        epoch=record.epoch or "",
        versions={key: v for key, v in record.versions.items() if key in definitions.flags},
    )
