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
    bucket(field)          = first two hex digits of sha1hex(field)
    bucket digest          = sha1hex(sorted entry hashes of the bucket, concatenated)
    state digest           = sha1hex(concat of bucket id (2 hex) + bucket digest, ascending)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["EMPTY_DIGEST", "StateDigest", "bucket_of", "entry_hash"]

EMPTY_DIGEST: Final = hashlib.sha1(b"").hexdigest()  # noqa: S324 - see the module docstring
"""The digest of a namespace holding nothing."""


def entry_hash(kind: str, key: str, blob: bytes) -> str:
    """The hash of one stored flag or segment, bound to where it is stored."""
    field = f"{kind}:{key}".encode()
    return hashlib.sha1(b"%d:%s%s" % (len(field), field, blob)).hexdigest()  # noqa: S324


def bucket_of(kind: str, key: str) -> str:
    """The bucket (two hex digits) of one flag or segment."""
    return hashlib.sha1(f"{kind}:{key}".encode()).hexdigest()[:2]  # noqa: S324


def bucket_digest(members: Iterable[str]) -> str:
    """The digest of one bucket from its members' entry hashes (any order)."""
    return hashlib.sha1("".join(sorted(members)).encode()).hexdigest()  # noqa: S324


def combine(bucket_digests: Mapping[str, str]) -> str:
    """The state digest from the digests of the non-empty buckets."""
    joined = "".join(bucket + bucket_digests[bucket] for bucket in sorted(bucket_digests))
    return hashlib.sha1(joined.encode()).hexdigest()  # noqa: S324


class StateDigest:
    """The digest of a worker's state, updated entry by entry as changes apply.

    Holds each entry's hash and each bucket's members and digest, so an update costs the
    touched buckets only. `preview` computes the digest a change set would give without
    changing anything (a message is verified before it is applied); `update` applies it.
    """

    __slots__ = ("_bucket_digests", "_buckets", "_entries", "value")

    def __init__(self) -> None:
        self._entries: dict[str, str] = {}
        """field (kind:key) -> entry hash"""
        self._buckets: dict[str, set[str]] = {}
        self._bucket_digests: dict[str, str] = {}
        self.value = EMPTY_DIGEST

    def __len__(self) -> int:
        """How many flags and segments the digest covers."""
        return len(self._entries)

    @classmethod
    def of_store(cls, flags: Mapping[str, bytes], segments: Mapping[str, bytes]) -> StateDigest:
        """The digest of a whole loaded store."""
        digest = cls()
        for kind, blobs in (("flag", flags), ("segment", segments)):
            for key, blob in blobs.items():
                entry = entry_hash(kind, key, blob)
                digest._entries[f"{kind}:{key}"] = entry
                digest._buckets.setdefault(bucket_of(kind, key), set()).add(entry)
        digest._bucket_digests = {
            bucket: bucket_digest(members) for bucket, members in digest._buckets.items()
        }
        digest.value = combine(digest._bucket_digests)
        return digest

    def preview(self, changes: Iterable[tuple[str, str, bytes | None]]) -> str:
        """The digest after putting (or deleting: None) each (kind, key, blob), unchanged self."""
        return self._changed(changes)[0]

    def update(self, changes: Iterable[tuple[str, str, bytes | None]]) -> str:
        """Apply each (kind, key, blob) put (None: delete); returns the new digest."""
        value, entries, buckets, digests = self._changed(changes)
        for field, entry in entries.items():
            if entry is None:
                self._entries.pop(field, None)
            else:
                self._entries[field] = entry
        for bucket, members in buckets.items():
            if members:
                self._buckets[bucket] = members
                self._bucket_digests[bucket] = digests[bucket]
            else:
                self._buckets.pop(bucket, None)
                self._bucket_digests.pop(bucket, None)
        self.value = value
        return value

    def _changed(
        self, changes: Iterable[tuple[str, str, bytes | None]]
    ) -> tuple[str, dict[str, str | None], dict[str, set[str]], dict[str, str]]:
        entries: dict[str, str | None] = {}
        buckets: dict[str, set[str]] = {}
        for kind, key, blob in changes:
            field = f"{kind}:{key}"
            bucket = bucket_of(kind, key)
            members = buckets.get(bucket)
            if members is None:
                members = buckets[bucket] = set(self._buckets.get(bucket, ()))
            old = entries[field] if field in entries else self._entries.get(field)
            if old is not None:
                members.discard(old)
            new = None if blob is None else entry_hash(kind, key, blob)
            if new is not None:
                members.add(new)
            entries[field] = new
        digests = dict(self._bucket_digests)
        for bucket, members in buckets.items():
            if members:
                digests[bucket] = bucket_digest(members)
            else:
                digests.pop(bucket, None)
        return combine(digests), entries, buckets, digests


def digest_after(
    bucket_members: Mapping[str, str],
    bucket_digests: Mapping[str, str],
    changes: Iterable[tuple[str, str, bytes | None, bytes | None]],
) -> str:
    """The digest a write will leave, from the store's digest records (the signing
    publisher predicts what the script will compute).

    `bucket_members`: the touched buckets' members as the script stores them
    (concatenated 40-hex entry hashes); `bucket_digests`: every non-empty bucket's
    digest; `changes`: (kind, key, blob before or None, blob after or None).
    """
    members = {bucket: _split(joined) for bucket, joined in bucket_members.items()}
    digests = dict(bucket_digests)
    touched: set[str] = set()
    for kind, key, before, after in changes:
        bucket = bucket_of(kind, key)
        group = members.setdefault(bucket, set())
        if before is not None:
            group.discard(entry_hash(kind, key, before))
        if after is not None:
            group.add(entry_hash(kind, key, after))
        touched.add(bucket)
    for bucket in touched:
        if members[bucket]:
            digests[bucket] = bucket_digest(members[bucket])
        else:
            digests.pop(bucket, None)
    return combine(digests)


def _split(joined: str) -> set[str]:
    return {joined[start : start + 40] for start in range(0, len(joined), 40)}
