"""The read side of the protocol: the commands a follower sends to load a whole
namespace or check its (epoch, revision, digest), and how their replies are parsed.

Built as plain tuples so the sync and the async subscriber send exactly the same thing;
the I/O stays in the drivers. Re-exported by `flagsync.store`, where the keys are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from flagsync.store import StoreKeys

__all__ = [
    "Command",
    "LoadedStore",
    "StoreState",
    "load_commands",
    "parse_load",
    "parse_revision",
    "parse_state",
    "quick_state_commands",
    "revision_command",
    "state_commands",
    "text",
]

Command = tuple[Any, ...]


class LoadedStore(msgspec.Struct, frozen=True):
    """A consistent read of a namespace: everything at one (epoch, revision)."""

    epoch: str | None
    revision: int
    flags: dict[str, bytes]
    segments: dict[str, bytes]
    digest: str | None = None
    """The digest the store states for this revision (None: a store older than digests)."""
    signature: str | None = None
    """The signature record of this state (signed mode), None when unsigned."""
    llm: bytes | None = None
    """The namespace's stored `llm:` section (msgpack), None when none is stored. The write
    script stores it with the revision it bumps, so it belongs to this revision too."""


class StoreState(msgspec.Struct, frozen=True):
    """What a periodic check compares: the store's (epoch, revision, digest)."""

    revision: int
    epoch: str | None
    digest: str | None
    entries: int | None = None
    """Flags + segments the store holds (None: not read): a hash deleted or changed behind
    the write script's back shows here while revision and digest stay the same."""

    @property
    def place(self) -> tuple[int, str | None, str | None]:
        """(revision, epoch, digest): what names a state in history."""
        return self.revision, self.epoch, self.digest


def load_commands(keys: StoreKeys) -> list[Command]:
    """Pipelined reads of a whole namespace, bracketed by two revision reads.

    No MULTI: a least-privilege worker may not have it. Every write bumps the revision
    atomically with its data, so equal (epoch, revision) before and after proves the
    hashes in between belong to that revision. The `llm:` section (prices, allow-list)
    comes in the same round trip, so `llm_call` never reads the store itself.
    """
    revision = ("MGET", keys.revision, keys.epoch, keys.digest, keys.signature)
    return [
        revision,
        ("HGETALL", keys.flags),
        ("HGETALL", keys.segments),
        ("GET", keys.llm),
        revision,
    ]


def parse_load(results: Sequence[Any]) -> LoadedStore | None:
    """The loaded store, or None when a write slipped in between (read again)."""
    before, flags, segments, llm, after = results
    if before != after:
        return None
    revision, epoch = _parse_revision(before[:2])
    digest, signature = (None if value is None else text(value) for value in before[2:4])
    return LoadedStore(
        epoch=epoch,
        revision=revision,
        flags=_blobs(flags),
        segments=_blobs(segments),
        digest=digest,
        signature=signature,
        llm=llm if isinstance(llm, bytes) or llm is None else text(llm).encode(),
    )


def state_commands(keys: StoreKeys) -> list[Command]:
    """The cheap check, pipelined in one round trip of small replies: the store's
    (revision, epoch, digest) and how many flags and segments it holds."""
    return [
        ("MGET", keys.revision, keys.epoch, keys.digest),
        ("HLEN", keys.flags),
        ("HLEN", keys.segments),
    ]


def quick_state_commands(keys: StoreKeys) -> list[Command]:
    """The check while beacon heartbeats flow: one MGET of (revision, epoch, digest). The
    entry counts come with each heartbeat, whose disagreement triggers a full check."""
    return [("MGET", keys.revision, keys.epoch, keys.digest)]


def parse_state(results: Sequence[Any]) -> StoreState:
    """`state_commands`' (or `quick_state_commands`') replies."""
    header = results[0]
    revision, epoch = _parse_revision(header[:2])
    digest = None if header[2] is None else text(header[2])
    if len(results) == 1:
        return StoreState(revision, epoch, digest)
    return StoreState(revision, epoch, digest, int(results[1]) + int(results[2]))


def revision_command(keys: StoreKeys) -> Command:
    """Read the store's (revision, epoch)."""
    return ("MGET", keys.revision, keys.epoch)


def parse_revision(result: Sequence[Any]) -> tuple[int, str | None]:
    """(revision, epoch) from `revision_command`'s reply; (0, None) for an empty store."""
    return _parse_revision(result)


def _parse_revision(result: Sequence[Any]) -> tuple[int, str | None]:
    raw_revision, raw_epoch = result
    epoch = None if raw_epoch is None else text(raw_epoch)
    try:
        revision = int(raw_revision) if raw_revision is not None else 0
    except ValueError:
        revision = 0
    return revision, epoch


def text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _blobs(reply: Mapping[Any, Any]) -> dict[str, bytes]:
    """An HGETALL reply as {text: bytes}: `text` and `bytes` inlined for the usual types
    (twice as fast at 10,000 entries: this runs on every cold start)."""
    return {
        key.decode("utf-8", "replace") if key.__class__ is bytes else key: (
            value if value.__class__ is bytes else bytes(value)
        )
        for key, value in reply.items()
    }
