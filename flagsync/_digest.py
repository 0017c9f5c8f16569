"""The state digest: one hash of a namespace's whole content, kept by the write script and
recomputed by every worker from what it applied.

Why a content digest and not a chain of changesets: a worker that loads the whole store
can recompute it from the blobs alone, so a full load and a message apply end at the same
value, and one signature (`flagsync._signing`) over (epoch, revision, digest) covers a
full load. Why not a plain XOR or sum of entry hashes: either can be steered to any value
by adding a few hundred crafted entries (linear algebra over GF(2), generalised
birthday), which would let a store writer match a signed digest with other content. So
entries are grouped into 256 buckets; a bucket's digest is the SHA-1 of its members'
entry hashes in sorted order, and the state digest is the SHA-1 of the non-empty
buckets' digests in bucket order: forging it needs a SHA-1 second preimage, while an
update re-hashes only the buckets it touches (about n/256 entries each).

The Lua half is `DIGEST_LUA` in `flagsync.store`; `tests/unit/test_digest.py` pins that
both compute the same value on a real server.

    entry(kind, key, blob) = sha1hex(len(field) ":" field blob), field = kind ":" key
    bucket(entry)          = its first two hex digits
    bucket digest          = sha1hex(sorted entry hashes of the bucket, concatenated)
    state digest           = sha1hex(the 256 bucket digests in bucket order, "-" * 40
                             for an empty bucket)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["EMPTY_DIGEST", "StateDigest", "digest_after", "entry_hash", "touched_buckets"]


EMPTY_DIGEST: Final = hashlib.sha1(("-" * 40 * 256).encode()).hexdigest()  # noqa: S324
"""The digest of a namespace holding nothing."""


def entry_hash(kind: str, key: str, blob: bytes) -> str:
    """The hash of one stored flag or segment, bound to where it is stored."""
    field = f"{kind}:{key}".encode()
    return hashlib.sha1(b"%d:%s%s" % (len(field), field, blob)).hexdigest()  # noqa: S324


def bucket_digest(members: Iterable[str]) -> str:
    """The digest of one bucket from its members' entry hashes (any order)."""
    return hashlib.sha1("".join(sorted(members)).encode()).hexdigest()  # noqa: S324


_BUCKET_IDS: Final = [f"{bucket:02x}" for bucket in range(256)]
EMPTY_SLOT: Final = "-" * 40


def combine(bucket_digests: Mapping[str, str]) -> str:
    """The state digest from the digests of the non-empty buckets."""
    joined = "".join([bucket_digests.get(bucket, EMPTY_SLOT) for bucket in _BUCKET_IDS])
    return hashlib.sha1(joined.encode()).hexdigest()  # noqa: S324


def slots(top: str) -> dict[str, str]:
    """The non-empty bucket digests from the script's `top` record (256 slots of 40)."""
    return {
        bucket: top[index * 40 : index * 40 + 40]
        for index, bucket in enumerate(_BUCKET_IDS)
        if top[index * 40] != "-"
    }


_Changed = tuple[str, dict[str, str | None], dict[str, set[str]], dict[int, str]]
"""A computed change: (new digest, entries, touched buckets' members, their new slots)."""


def _top(slots: list[str]) -> str:
    return hashlib.sha1("".join(slots).encode()).hexdigest()  # noqa: S324


class StateDigest:
    """The digest of a worker's state, updated entry by entry as changes apply.

    Holds each entry's hash and each bucket's members and digest, so an update costs the
    touched buckets only. `preview` computes the digest a change set would give without
    changing anything (a message is verified before it is applied); `update` applies it.
    """

    __slots__ = ("_buckets", "_entries", "_previewed", "_slots", "value")

    def __init__(self) -> None:
        self._entries: dict[str, str] = {}
        """field (kind:key) -> entry hash"""
        self._buckets: dict[str, set[str]] = {}
        self._slots = [EMPTY_SLOT] * 256
        """Each bucket's digest in bucket order (`EMPTY_SLOT` when empty): the state
        digest is the SHA-1 of their concatenation."""
        self._previewed: _Changed | None = None
        self.value = EMPTY_DIGEST

    def __len__(self) -> int:
        """How many flags and segments the digest covers."""
        return len(self._entries)

    @classmethod
    def of_store(cls, flags: Mapping[str, bytes], segments: Mapping[str, bytes]) -> StateDigest:
        """The digest of a whole loaded store."""
        digest = cls()
        entries, buckets, sha1 = digest._entries, digest._buckets, hashlib.sha1
        for kind, blobs in (("flag", flags), ("segment", segments)):
            for key, blob in blobs.items():
                field = f"{kind}:{key}"
                encoded = field.encode()
                entry = sha1(b"%d:%s%s" % (len(encoded), encoded, blob)).hexdigest()
                entries[field] = entry
                members = buckets.get(entry[:2])
                if members is None:
                    buckets[entry[:2]] = {entry}
                else:
                    members.add(entry)
        for bucket, members in buckets.items():
            digest._slots[int(bucket, 16)] = bucket_digest(members)
        digest.value = _top(digest._slots)
        return digest

    def bucket_digests(self) -> dict[str, str]:
        """The digest of each non-empty bucket (what the script's `top` record holds)."""
        return slots("".join(self._slots))

    def preview(self, changes: Iterable[tuple[str, str, bytes | None]]) -> str:
        """The digest after putting (or deleting: None) each (kind, key, blob), unchanged
        self; `commit()` then applies exactly this preview without recomputing it."""
        self._previewed = self._changed(changes)
        return self._previewed[0]

    def commit(self) -> str:
        """Apply the last `preview`; returns the new digest."""
        previewed, self._previewed = self._previewed, None
        assert previewed is not None, "commit() without a preview"
        return self._apply(previewed)

    def update(self, changes: Iterable[tuple[str, str, bytes | None]]) -> str:
        """Apply each (kind, key, blob) put (None: delete); returns the new digest."""
        self._previewed = None
        return self._apply(self._changed(changes))

    def _apply(self, changed: _Changed) -> str:
        value, entries, buckets, touched = changed
        for index, slot in touched.items():
            self._slots[index] = slot
        for field, entry in entries.items():
            if entry is None:
                self._entries.pop(field, None)
            else:
                self._entries[field] = entry
        for bucket, members in buckets.items():
            if members:
                self._buckets[bucket] = members
            else:
                self._buckets.pop(bucket, None)
        self.value = value
        return value

    def _changed(self, changes: Iterable[tuple[str, str, bytes | None]]) -> _Changed:
        entries: dict[str, str | None] = {}
        buckets: dict[str, set[str]] = {}

        def group(entry: str) -> set[str]:
            members = buckets.get(entry[:2])
            if members is None:
                members = buckets[entry[:2]] = set(self._buckets.get(entry[:2], ()))
            return members

        for kind, key, blob in changes:
            field = f"{kind}:{key}"
            old = entries[field] if field in entries else self._entries.get(field)
            if old is not None:
                group(old).discard(old)
            new = None if blob is None else entry_hash(kind, key, blob)
            if new is not None:
                group(new).add(new)
            entries[field] = new
        touched = {
            int(bucket, 16): bucket_digest(members) if members else EMPTY_SLOT
            for bucket, members in buckets.items()
        }
        top = self._slots.copy()
        for index, slot in touched.items():
            top[index] = slot
        return _top(top), entries, buckets, touched


def digest_after(
    bucket_members: Mapping[str, str],
    bucket_digests: Mapping[str, str],
    changes: Iterable[tuple[str, str, bytes | None, bytes | None]],
) -> str:
    """The digest a write will leave, from the store's digest records (the signing
    publisher predicts what the script will compute).

    `bucket_members`: the touched buckets' members as the script stores them
    (concatenated 40-hex entry hashes; see `touched_buckets`); `bucket_digests`: every
    non-empty bucket's digest; `changes`: (kind, key, blob before or None, blob after).
    """
    members = {bucket: _split(joined) for bucket, joined in bucket_members.items()}
    digests = dict(bucket_digests)
    touched: set[str] = set()
    for kind, key, before, after in changes:
        if before is not None:
            old = entry_hash(kind, key, before)
            members.setdefault(old[:2], set()).discard(old)
            touched.add(old[:2])
        if after is not None:
            new = entry_hash(kind, key, after)
            members.setdefault(new[:2], set()).add(new)
            touched.add(new[:2])
    for bucket in touched:
        if members[bucket]:
            digests[bucket] = bucket_digest(members[bucket])
        else:
            digests.pop(bucket, None)
    return combine(digests)


def touched_buckets(changes: Iterable[tuple[str, str, bytes | None, bytes | None]]) -> set[str]:
    """The buckets a write changes: those of the entries it removes and adds."""
    return {
        entry_hash(kind, key, blob)[:2]
        for kind, key, before, after in changes
        for blob in (before, after)
        if blob is not None
    }


def _split(joined: str) -> set[str]:
    return {joined[start : start + 40] for start in range(0, len(joined), 40)}
