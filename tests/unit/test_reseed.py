"""Which flags a re-seed would take from live workers, and how workers report them."""

from __future__ import annotations

import msgspec
import pytest

from flagsync._codec import WorkerInfo, decode_presence, encode_presence
from flagsync._reseed import dropped_by_reseed
from flagsync._sync.presence import Presence
from flagsync.errors import PartialReseedError
from flagsync.store import StoreState
from tests.unit.test_follower import Harness, loaded


def worker(
    worker_id: str, held: tuple[str, ...], epoch: str = "e1", revision: int = 5
) -> WorkerInfo:
    """A presence record of a worker at (`epoch`, `revision`) holding `held`."""
    return WorkerInfo(
        id=worker_id,
        host="h",
        pid=1,
        namespace="unit",
        epoch=epoch,
        revision=revision,
        applied_us=0,
        published_us=0,
        started_ms=0,
        heartbeat_ms=0,
        state="stale",
        held=held,
    )


class TestDroppedByReseed:
    """Held flags count while the store shows nothing newer than the worker's state."""

    def test_wiped_store_lists_what_the_content_lacks(self) -> None:
        """No epoch in the store: every held key missing from the content, by worker."""
        workers = [worker("w1", ("a", "b", "c")), worker("w2", ("b", "d")), worker("w3", ())]
        assert dropped_by_reseed(workers, None, 0, {"a"}) == {
            "b": ["w1", "w2"],
            "c": ["w1"],
            "d": ["w2"],
        }
        assert dropped_by_reseed(workers, None, 0, {"a", "b", "c", "d", "e"}) == {}

    @pytest.mark.parametrize(
        ("epoch", "revision", "counts"),
        [("e1", 5, True), ("e1", 4, True), ("e1", 6, False), ("e2", 1, False)],
        ids=["hash-deleted", "lower-revision", "written-since", "new-epoch"],
    )
    def test_reports_older_than_the_store_are_ignored(
        self, epoch: str, revision: int, *, counts: bool
    ) -> None:
        """The worker's own epoch at a revision not past its own still counts (a deleted
        flags hash); a newer revision or epoch means a re-seed was written since."""
        dropped = dropped_by_reseed([worker("w1", ("a", "b"))], epoch, revision, {"a"})
        assert dropped == ({"b": ["w1"]} if counts else {})

    def test_error_lists_the_flags(self) -> None:
        """The refusal names the namespace, the counts, the first flags and the way out."""
        error = PartialReseedError("ns", {f"f{index:02d}": ["w1"] for index in range(25)})
        message = str(error)
        assert message.startswith("namespace 'ns' was wiped, yet 1 live worker(s) still serve 25")
        assert "f00, f01" in message
        assert "f19, ... (5 more)" in message
        assert "complete=True (CLI: apply --complete)" in message
        assert len(error.dropped) == 25


class TestPresenceHeld:
    """A worker lists its flags in its presence record only while the store is missing."""

    def test_held_only_while_missing(self) -> None:
        """Synced: no `held` field at all (records as before); missing: every key, sorted."""
        harness = Harness()
        harness.follower.on_loaded(loaded(5, {"b": "y", "a": "x"}))
        presence = Presence(harness.follower, worker_id="w1")
        synced = presence.record()
        assert b"held" not in synced
        assert decode_presence(synced).held == ()
        harness.follower.on_revision(StoreState(0, None, None))
        assert decode_presence(presence.record()).held == ("a", "b")

    def test_record_without_held_decodes(self) -> None:
        """A record written before `held` existed (no such field) still decodes."""
        record = msgspec.to_builtins(worker("w1", ()))
        assert "held" not in record
        assert decode_presence(encode_presence(worker("w1", ()))) == worker("w1", ())
