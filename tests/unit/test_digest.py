"""The state digest in Python (`flagsync._digest`): incremental updates end where a full
recomputation does, and it binds every blob to its kind and key. Its equality with the
write script's Lua half is pinned on real servers in tests/faults/test_integrity.py."""

from __future__ import annotations

import random

from flagsync._digest import EMPTY_DIGEST, StateDigest, digest_after, touched_buckets

FLAGS = {f"flag-{index}": f"blob-{index}".encode() for index in range(600)}
SEGMENTS = {"beta": b"segment-blob"}


class TestStateDigest:
    """Incremental and whole-store digests agree; any content difference changes it."""

    def test_incremental_updates_equal_a_full_recomputation(self) -> None:
        """Puts, replacements and deletes applied one by one end at the full digest."""
        digest = StateDigest.of_store({}, {})
        assert digest.value == EMPTY_DIGEST
        digest.update(("flag", key, blob) for key, blob in FLAGS.items())
        digest.update([("segment", "beta", b"segment-blob")])
        assert digest.value == StateDigest.of_store(FLAGS, SEGMENTS).value
        changed = dict(FLAGS, **{"flag-3": b"new"})
        del changed["flag-7"]
        digest.update([("flag", "flag-3", b"new"), ("flag", "flag-7", None)])
        assert digest.value == StateDigest.of_store(changed, SEGMENTS).value

    def test_order_does_not_matter(self) -> None:
        """The same content inserted in another order has the same digest."""
        items = list(FLAGS.items())
        random.Random(7).shuffle(items)
        assert StateDigest.of_store(dict(items), {}).value == StateDigest.of_store(FLAGS, {}).value

    def test_preview_changes_nothing(self) -> None:
        """`preview` returns what `update` will give and leaves the digest as it was."""
        digest = StateDigest.of_store(FLAGS, SEGMENTS)
        before = digest.value
        preview = digest.preview([("flag", "flag-1", b"x")])
        assert digest.value == before
        assert digest.update([("flag", "flag-1", b"x")]) == preview != before

    def test_blob_is_bound_to_kind_and_key(self) -> None:
        """The same blob under another key or kind is another state."""
        base = StateDigest.of_store({"a": b"x"}, {}).value
        assert StateDigest.of_store({"b": b"x"}, {}).value != base
        assert StateDigest.of_store({}, {"a": b"x"}).value != base
        assert StateDigest.of_store({"a": b"x", "b": b"x"}, {}).value != base

    def test_deleting_everything_is_the_empty_digest(self) -> None:
        """A store whose every entry was deleted has the digest of an empty store."""
        digest = StateDigest.of_store(FLAGS, {})
        assert digest.update(("flag", key, None) for key in FLAGS) == EMPTY_DIGEST

    def test_prediction_from_bucket_records(self) -> None:
        """`digest_after` (the signing publisher's prediction from the script's records)
        equals the worker's incremental digest."""
        digest = StateDigest.of_store(FLAGS, SEGMENTS)
        changes = [("flag", "flag-5", FLAGS["flag-5"], b"v2"), ("flag", "new", None, b"n")]
        touched = touched_buckets(changes)
        members = {
            bucket: "".join(sorted(digest._buckets.get(bucket, set()))) for bucket in touched
        }
        predicted = digest_after(members, digest.bucket_digests(), changes)
        assert predicted == digest.update((k, key, after) for k, key, _, after in changes)
