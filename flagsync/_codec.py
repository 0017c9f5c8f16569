"""Blob encodings: stored definitions, change sets and worker presence records.

Everything stored or published is msgpack, encoded and decoded by reused msgspec
instances. Decoding is strict and bounded: a blob that is truncated or of the wrong
shape raises `MalformedMessageError`, which the subscriber answers with a resync, never
with a partial apply.

The change message around a `ChangeSet` (the
`fs2|<epoch>|<revision>|<server µs>|<digest>|<signature>|` header the write script
prepends) belongs to the wire protocol: `flagsync.store`. An
empty payload means "too large to inline: fetch the snapshot".
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from flagsync.errors import FlagsyncError

MAX_INLINE_PAYLOAD_BYTES: Final = 512 * 1024
"""Change sets larger than this are not inlined in the message; subscribers resync."""


class MalformedMessageError(FlagsyncError, ValueError):
    """A stored blob or channel message could not be decoded or failed its checks."""


class StoredDefinition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the store holds per flag or segment: the definition bound to its key and version."""

    kind: str
    key: str
    version: int
    definition: dict[str, Any]


class Change(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One flag or segment written (or deleted: `blob` is None) in a revision."""

    kind: str
    key: str
    op: str
    blob: bytes | None = None


class ChangeSet(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Everything one revision changed, as published to subscribers."""

    actor: str
    reason: str
    changes: list[Change]


class Message(msgspec.Struct, frozen=True):
    """A decoded channel message; `changes` is None when the subscriber must resync."""

    epoch: str
    revision: int
    published_us: int
    """Server time (µs since the epoch) of the write."""
    changes: ChangeSet | None
    digest: str = ""
    """The state digest the write script computed for this revision."""
    signature: str = ""
    """The signature record (signed mode), empty when unsigned."""
    payload_sha256: str = ""
    """SHA-256 (hex) of the payload bytes, which a signature covers."""


class WorkerInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A worker's heartbeat record: who it is, which revision it has applied, and when."""

    id: str
    host: str
    pid: int
    namespace: str
    epoch: str
    revision: int
    applied_us: int
    """Wall-clock µs when the worker swapped in `revision`."""
    published_us: int
    """Server µs when `revision` was written (0 if it arrived by a resync, not a message)."""
    started_ms: int
    heartbeat_ms: int
    state: str
    held: tuple[str, ...] = ()
    """While the store is missing data this worker serves (FLUSHALL, a deleted hash):
    the keys of every flag it still serves, so a publisher re-seeding the namespace can
    tell what a partial re-seed would drop. Empty (and not encoded) otherwise."""


_definition_encoder = msgspec.msgpack.Encoder()
_definition_decoder = msgspec.msgpack.Decoder(StoredDefinition)
_changeset_encoder = msgspec.msgpack.Encoder()
_changeset_decoder = msgspec.msgpack.Decoder(ChangeSet)
_presence_encoder = msgspec.msgpack.Encoder()
_presence_decoder = msgspec.msgpack.Decoder(WorkerInfo)


def encode_definition(kind: str, key: str, version: int, definition: dict[str, Any]) -> bytes:
    """The stored blob of one flag or segment definition (plain data, file format)."""
    return _definition_encoder.encode(StoredDefinition(kind, key, version, definition))


def decode_definition(blob: bytes, kind: str, key: str) -> StoredDefinition:
    """Decode a stored blob and check it belongs where it was found."""
    try:
        stored = _definition_decoder.decode(blob)
    except (msgspec.DecodeError, RecursionError) as error:
        raise MalformedMessageError(f"{kind} {key!r}: undecodable definition: {error}") from error
    if stored.kind != kind or stored.key != key:
        raise MalformedMessageError(
            f"{kind} {key!r}: blob is for {stored.kind} {stored.key!r} (copied or tampered)"
        )
    # msgspec keeps the last of repeated map keys; flag files refuse them (flagsync.loader),
    # and so does the store: another decoder could keep the first and serve something else.
    # A blob that re-encodes to itself (what our publisher writes) has no repeated key, and
    # re-encoding is ~5x cheaper than walking the bytes, which only the rest need.
    if _definition_encoder.encode(stored) == blob:
        return stored
    if _map_pairs(blob) != _STORED_FIELDS + _dict_entries(stored.definition):
        raise MalformedMessageError(f"{kind} {key!r}: a map in the definition repeats a key")
    return stored


_STORED_FIELDS: Final = len(StoredDefinition.__struct_fields__)

# msgpack type bytes -> bytes to skip after them (fixed-size scalars and fixext: type + data).
_FIXED_SIZE: Final = dict(
    zip(range(0xCA, 0xD9), [4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 2, 3, 5, 9, 17], strict=True)
)
# msgpack type bytes -> (width of the length that follows, bytes to add to it).
_SIZED: Final = {
    0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),  # bin
    0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),  # ext: one type byte, then the data
    0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),  # str
}  # fmt: skip


def _map_pairs(data: bytes) -> int:
    """How many key-value pairs the maps of a (well-formed) msgpack document declare."""
    pairs, position, pending = 0, 0, 1
    while pending:
        byte = data[position]
        position += 1
        pending -= 1
        if byte <= 0x7F or byte >= 0xE0 or byte in (0xC0, 0xC2, 0xC3):
            continue  # fixint, nil, bool
        if byte <= 0x8F:
            pairs += byte & 0x0F
            pending += 2 * (byte & 0x0F)
        elif byte <= 0x9F:
            pending += byte & 0x0F
        elif byte <= 0xBF:
            position += byte & 0x1F
        elif byte in _FIXED_SIZE:
            position += _FIXED_SIZE[byte]
        elif byte in _SIZED:
            width, extra = _SIZED[byte]
            position += width + extra + int.from_bytes(data[position : position + width], "big")
        else:  # 0xDC/0xDD array16/32, 0xDE/0xDF map16/32
            width = 2 if byte in (0xDC, 0xDE) else 4
            count = int.from_bytes(data[position : position + width], "big")
            position += width
            if byte >= 0xDE:
                pairs += count
                count *= 2
            pending += count
    return pairs


def _dict_entries(value: Any) -> int:
    """How many key-value pairs the dicts nested in `value` hold, all levels together."""
    entries, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            entries += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return entries


def encode_changeset(changes: ChangeSet) -> bytes:
    """The payload the write script publishes; empty when it is too large to inline."""
    payload = _changeset_encoder.encode(changes)
    return b"" if len(payload) > MAX_INLINE_PAYLOAD_BYTES else payload


def decode_changeset(payload: bytes) -> ChangeSet:
    """Decode a change message's payload; raises `MalformedMessageError`."""
    try:
        return _changeset_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError) as error:
        raise MalformedMessageError(f"bad message payload: {error}") from error


def encode_presence(presence: WorkerInfo) -> bytes:
    """A worker's presence record."""
    return _presence_encoder.encode(presence)


def decode_presence(blob: bytes) -> WorkerInfo:
    """Decode a presence record; raises `MalformedMessageError`."""
    try:
        return _presence_decoder.decode(blob)
    except (msgspec.DecodeError, RecursionError) as error:
        raise MalformedMessageError(f"bad presence record: {error}") from error
