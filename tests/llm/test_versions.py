"""The store versions a snapshot keeps for llm flags: carried over by changes, dropped
with the flag, saved in and read back from the last-known-good file."""

from __future__ import annotations

from pathlib import Path

from flagsync import load_flags
from flagsync._sync.lkg import read_lkg, write_lkg
from flagsync.snapshot import Snapshot
from tests.llm.support import FLAGS_FILE


def _snapshot() -> Snapshot:
    return Snapshot.build(load_flags(FLAGS_FILE), revision=3, epoch="e", versions={"chat-llm": 4})


class TestSnapshotVersions:
    """`Snapshot.versions` follows the changes applied."""

    def test_other_changes_keep_it(self) -> None:
        """A change of another flag keeps the llm flag's version."""
        snapshot = _snapshot()
        other = load_flags(FLAGS_FILE).flags["other-flag"]
        updated, _ = snapshot.apply(flags={"other-flag": other}, revision=4)
        assert dict(updated.versions) == {"chat-llm": 4}

    def test_a_change_replaces_it_and_a_delete_drops_it(self) -> None:
        """The changed flag takes the version given; a deleted one has none."""
        snapshot = _snapshot()
        flag = snapshot.definitions.flags["chat-llm"]
        updated, _ = snapshot.apply(flags={"chat-llm": flag}, revision=4, versions={"chat-llm": 5})
        assert dict(updated.versions) == {"chat-llm": 5}
        deleted, _ = updated.apply(flags={"chat-llm": None}, revision=5)
        assert dict(deleted.versions) == {}


class TestLastKnownGood:
    """A worker started from its last-known-good file serves the same config versions."""

    def test_round_trip(self, tmp_path: Path) -> None:
        """Versions written with the snapshot are read back with it."""
        path = tmp_path / "lkg.bin"
        write_lkg(path, _snapshot())
        restored = read_lkg(path)
        assert restored is not None
        assert dict(restored.versions) == {"chat-llm": 4}
