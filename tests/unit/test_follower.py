"""The follower's decisions without a server: what it applies, when it asks for a resync,
what it reports, and the presence rule after a fork (DESIGN.md "Failure policy").

Messages and store reads are built byte for byte as the write script and the load
pipeline produce them; time is a fake clock the tests move.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from flagsync._codec import Change, ChangeSet, decode_presence, encode_changeset, encode_definition
from flagsync._digest import StateDigest
from flagsync._sync.follower import Follower
from flagsync._sync.lkg import read_lkg, write_lkg
from flagsync._sync.options import SyncOptions
from flagsync._sync.presence import Presence
from flagsync._sync.timers import backoff_delay, is_permanent, retry_cap_s
from flagsync.loader import load_flags
from flagsync.model import MAX_SEGMENTS
from flagsync.snapshot import Snapshot
from flagsync.status import SyncState
from flagsync.store import LoadedStore, StoreKeys, StoreState
from tests.logs import captured_logs, events

EPOCH = "e1"
KEYS = StoreKeys("unit")
OPTIONS = SyncOptions(stale_after_s=1.0, presence_ttl_s=5.0)


def flag_doc(value: str) -> dict[str, Any]:
    """A one-variant string flag serving `value`."""
    return {"variants": {"only": value}, "off": "only", "default": "only"}


def blob(key: str, value: str, version: int = 1) -> bytes:
    """A stored flag blob, as the publisher writes it."""
    return encode_definition("flag", key, version, flag_doc(value))


def loaded(revision: int, flags: dict[str, str], epoch: str | None = EPOCH) -> LoadedStore:
    """A consistent whole-store read at (`epoch`, `revision`)."""
    return LoadedStore(
        epoch=epoch,
        revision=revision,
        flags={key: blob(key, value) for key, value in flags.items()},
        segments={},
    )


DIGEST = b"0" * 40
"""A well-formed digest field for hand-made messages."""
SYNCED = {"a": "x", "b": "y"}
"""The flags the `synced` fixture loaded at revision 5."""


def message(
    revision: int,
    changes: dict[str, str | None],
    epoch: str = EPOCH,
    base: dict[str, bytes] | None = None,
) -> bytes:
    """A channel message `fs2|epoch|rev|µs|digest||payload` putting (or deleting: None)
    flags, with the digest the write script computes on top of `base` (default: the
    `synced` fixture's store)."""
    blobs = [
        (key, None if value is None else blob(key, value, revision))
        for key, value in changes.items()
    ]
    payload = encode_changeset(
        ChangeSet(
            actor="unit",
            reason="test",
            changes=[Change("flag", key, "put", data) for key, data in blobs],
        )
    )
    store = base if base is not None else {key: blob(key, value) for key, value in SYNCED.items()}
    digest = StateDigest.of_store(store, {}).update(("flag", key, data) for key, data in blobs)
    for key, data in blobs:
        if data is None:
            store.pop(key, None)
        else:
            store[key] = data
    return f"fs2|{epoch}|{revision}|{revision * 1000}|{digest}||".encode() + payload


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A follower with a fake clock, recording every install and every listener call."""

    def __init__(self, initial: Snapshot | None = None) -> None:
        self.clock = Clock()
        self.installed: list[Snapshot] = []
        self.persisted: list[int] = []
        self.swaps: list[tuple[int, frozenset[str]]] = []
        self.follower = Follower(
            KEYS,
            OPTIONS,
            self.installed.append,
            initial=initial,
            persist=lambda snapshot: self.persisted.append(snapshot.revision),
            clock=self.clock,
            wall_us=lambda: 42,
        )
        self.follower.listeners.append(lambda revision, keys: self.swaps.append((revision, keys)))

    def values(self) -> dict[str, Any]:
        """What the installed snapshot serves for every flag."""
        snapshot = self.installed[-1]
        return {key: snapshot.flags[key].outcomes[0][0] for key in snapshot}


@pytest.fixture
def synced() -> Harness:
    """A follower that loaded revision 5 with flags a=x and b=y."""
    harness = Harness()
    assert harness.follower.on_loaded(loaded(5, SYNCED))
    return harness


class TestLoad:
    """A whole-store read replaces the snapshot, except when it would empty it."""

    def test_first_load_installs_and_is_ready(self, synced: Harness) -> None:
        """The first load installs the flags once, marks ready, persists and notifies."""
        follower = synced.follower
        assert follower.ready.is_set()
        assert len(synced.installed) == 1
        assert synced.values() == {"a": "x", "b": "y"}
        assert (follower.snapshot.epoch, follower.snapshot.revision) == (EPOCH, 5)
        assert synced.persisted == [5]
        assert synced.swaps == [(5, frozenset({"a", "b"}))]
        assert follower.status().state is SyncState.READY

    def test_a_forked_child_logs_its_own_first_load_even_unchanged(self, synced: Harness) -> None:
        """A re-read of the revision held swaps nothing and logs nothing, except as the
        first load of a forked child, which says `snapshot_loaded` (unchanged) once."""
        follower = synced.follower
        with captured_logs() as logs:
            assert follower.on_loaded(loaded(5, SYNCED))
            follower.reset_after_fork()
            assert follower.on_loaded(loaded(5, SYNCED))
            assert follower.on_loaded(loaded(5, SYNCED))
        loads = events(logs, "snapshot_loaded")
        assert [(entry["revision"], entry.get("unchanged")) for entry in loads] == [(5, True)]
        assert len(synced.installed) == 1

    def test_same_store_again_only_confirms(self, synced: Harness) -> None:
        """Reading the same store again installs nothing and counts one more resync."""
        synced.clock.now += 5
        assert synced.follower.is_stale()
        assert synced.follower.on_loaded(loaded(5, {"a": "x", "b": "y"}))
        assert len(synced.installed) == 1
        assert not synced.follower.is_stale()
        assert synced.follower.counts["resyncs"] == 2

    def test_empty_namespace_is_ready_without_flags(self) -> None:
        """A namespace nobody wrote yet (no epoch) is ready, with nothing installed, and
        the status says the store has no data."""
        harness = Harness()
        assert harness.follower.on_loaded(loaded(0, {}, epoch=None))
        assert harness.follower.ready.is_set()
        assert harness.installed == []
        assert harness.follower.status().snapshot_missing

    def test_lkg_kept_on_empty_store(self) -> None:
        """A store without data never replaces a last-known-good snapshot: it is reported
        missing, stays unready, and nothing new is installed."""
        initial = Snapshot.build(load_flags({"flags": {"a": flag_doc("kept")}}), revision=9)
        harness = Harness(initial)
        assert harness.installed == [initial]
        with captured_logs() as logs:
            assert not harness.follower.on_loaded(loaded(0, {}, epoch=None))
            assert not harness.follower.on_loaded(loaded(0, {}, epoch=None))
        assert harness.installed == [initial]
        assert harness.follower.snapshot_missing
        assert not harness.follower.ready.is_set()
        assert len(events(logs, "snapshot_missing")) == 1  # once per transition

    def test_vanished_flags_are_missing_not_all_off(self, synced: Harness) -> None:
        """Flags deleted behind the protocol (same epoch, revision not past ours) keep the
        snapshot and report it missing; a later write of the same epoch is loaded."""
        assert not synced.follower.on_loaded(loaded(5, {}))
        assert synced.follower.snapshot_missing
        assert len(synced.installed) == 1
        assert synced.follower.on_loaded(loaded(6, {"a": "z"}))
        assert not synced.follower.snapshot_missing
        assert synced.values() == {"a": "z"}

    def test_store_over_the_limits_is_rejected_whole(self, synced: Harness) -> None:
        """A store with more segments than allowed (no quarantine can fix that) is refused
        as a whole: counted, reported, snapshot kept; a valid read then clears the report."""
        bad = loaded(6, {"a": "x2"})
        segment = encode_definition("segment", "s", 1, {"keys": ["u"]})
        bad.segments.update({f"s{index}": segment for index in range(MAX_SEGMENTS + 1)})
        with captured_logs() as logs:
            assert not synced.follower.on_loaded(bad)
        assert synced.follower.counts["rejected_snapshots"] == 1
        assert (synced.follower.status().last_error or "").startswith("snapshot rejected")
        assert synced.follower.snapshot.revision == 5
        assert len(events(logs, "snapshot_rejected")) == 1
        assert synced.follower.on_loaded(loaded(7, {"a": "x3"}))
        assert synced.follower.status().last_error is None

    def test_reading_the_applied_revision_again_notifies_nobody(self, synced: Harness) -> None:
        """A resync that reads the revision just applied from its message swaps nothing:
        each revision reaches a listener once."""
        assert synced.follower.on_message(message(6, {"a": "x2"})) == "applied"
        assert synced.follower.on_loaded(loaded(6, {"a": "x2", "b": "y"}))
        assert [revision for revision, _ in synced.swaps] == [5, 6]
        assert len(synced.installed) == 2
        assert synced.persisted == [5, 6]


class TestMessages:
    """Revision r applies only on top of r-1 of the same epoch with the digest that follows
    from ours; anything else asks for a cheap check."""

    def test_next_revision_applies(self, synced: Harness) -> None:
        """r+1 of our epoch is applied from the message, with its changed keys and times."""
        assert synced.follower.on_message(message(6, {"a": "x2"})) == "applied"
        assert synced.values() == {"a": "x2", "b": "y"}
        assert synced.swaps[-1] == (6, frozenset({"a"}))
        assert (synced.follower.published_us, synced.follower.applied_us) == (6000, 42)
        assert synced.follower.counts["applied_changes"] == 1
        assert synced.persisted == [5, 6]

    def test_deletion_applies(self, synced: Harness) -> None:
        """A change without a blob deletes the flag."""
        assert synced.follower.on_message(message(6, {"b": None})) == "applied"
        assert synced.values() == {"a": "x"}

    def test_gap_asks_for_a_check(self, synced: Harness) -> None:
        """r+2 on top of r is not applied: the driver must read the store."""
        assert synced.follower.on_message(message(7, {"a": "x2"})) == "check"
        assert len(synced.installed) == 1

    def test_epoch_change_asks_for_a_check(self, synced: Harness) -> None:
        """r+1 of another epoch is not trusted."""
        assert synced.follower.on_message(message(6, {"a": "x2"}, epoch="e2")) == "check"
        assert len(synced.installed) == 1

    def test_old_revisions_are_ignored(self, synced: Harness) -> None:
        """An older revision changes nothing and is counted as ignored."""
        assert synced.follower.on_message(message(3, {"a": "old"})) == "ignored"
        assert synced.follower.counts["ignored_messages"] == 1
        assert len(synced.installed) == 1

    def test_duplicate_of_our_state_is_ignored(self, synced: Harness) -> None:
        """The message of the revision we applied, received again, is ignored."""
        data = message(6, {"a": "x2"})
        assert synced.follower.on_message(data) == "applied"
        assert synced.follower.on_message(data) == "ignored"
        assert synced.follower.counts["ignored_messages"] == 1

    def test_our_revision_with_another_digest_asks_for_a_check(self, synced: Harness) -> None:
        """Our revision number with other content is no duplicate: one of us diverged."""
        assert synced.follower.on_message(message(5, {"a": "forged"})) == "check"
        assert synced.follower.counts["ignored_messages"] == 0

    def test_next_revision_with_a_wrong_digest_is_not_applied(self, synced: Harness) -> None:
        """r+1 whose digest does not follow from our state (forged, or we diverged) is checked."""
        parts = message(6, {"a": "x2"}).split(b"|", 6)
        parts[4] = b"1" * 40
        data = b"|".join(parts)
        assert synced.follower.on_message(data) == "check"
        assert len(synced.installed) == 1

    def test_before_any_load_every_message_asks_for_a_check(self) -> None:
        """With no epoch yet there is nothing to apply on top of."""
        assert Harness().follower.on_message(message(1, {"a": "x"})) == "check"

    def test_message_while_store_missing_asks_for_a_check(self, synced: Harness) -> None:
        """Once the store was seen empty, only a whole load shows what is left."""
        synced.follower.on_revision(StoreState(0, None, None))
        assert synced.follower.on_message(message(6, {"a": "x2"})) == "check"

    @pytest.mark.parametrize(
        "data",
        [
            b"\x00\xff garbage",
            b"fs9|e1|6|0|" + DIGEST + b"||",
            b"fs2|e1|not-a-number|0|" + DIGEST + b"||",
            message(6, {"a": "x2"})[:-3],
            b"fs2|e1|6|0|" + DIGEST + b"||" + msgspec.msgpack.encode({"actor": 1, "changes": "no"}),
            "not bytes at all",
        ],
        ids=["garbage", "schema", "header", "truncated", "wrong-types", "str"],
    )
    def test_malformed_message_checks_and_counts(self, synced: Harness, data: Any) -> None:
        """A malformed message is counted, logged (rate-limited), and answered by a check."""
        with captured_logs() as logs:
            assert synced.follower.on_message(data) == "check"
            assert synced.follower.on_message(data) == "check"
        assert synced.follower.counts["malformed_messages"] == 2
        assert len(events(logs, "message_rejected")) == 1
        assert len(synced.installed) == 1

    def test_invalid_definition_checks(self, synced: Harness) -> None:
        """A well-formed message carrying an invalid flag is malformed as a whole."""
        bad = encode_definition("flag", "a", 6, {"variants": {}, "off": "x", "default": "x"})
        payload = encode_changeset(ChangeSet("unit", "test", [Change("flag", "a", "put", bad)]))
        store = StateDigest.of_store({key: blob(key, value) for key, value in SYNCED.items()}, {})
        digest = store.update([("flag", "a", bad)]).encode()
        data = b"fs2|e1|6|0|" + digest + b"||" + payload
        assert synced.follower.on_message(data) == "check"
        assert synced.follower.counts["malformed_messages"] == 1

    def test_empty_payload_checks(self, synced: Harness) -> None:
        """A change too large to inline (empty payload) is fetched after a check."""
        assert synced.follower.on_message(b"fs2|e1|6|0|" + DIGEST + b"||") == "check"

    def test_failing_listener_does_not_stop_the_follower(self, synced: Harness) -> None:
        """A listener that raises is logged; the swap and later listeners still happen."""

        def broken(revision: int, changed: frozenset[str]) -> None:
            raise RuntimeError("boom")

        synced.follower.listeners.insert(0, broken)
        with captured_logs() as logs:
            assert synced.follower.on_message(message(6, {"a": "x2"})) == "applied"
        assert synced.swaps[-1][0] == 6
        assert len(events(logs, "listener_failed")) == 1


class TestRevisionCheck:
    """The periodic (epoch, revision, digest) check confirms, resyncs or reports a missing store."""

    def test_same_revision_confirms(self, synced: Harness) -> None:
        """An equal (epoch, revision) refreshes the confirmation."""
        synced.clock.now += 5
        assert synced.follower.on_revision(StoreState(5, EPOCH, None)) == "confirmed"
        assert not synced.follower.is_stale()

    @pytest.mark.parametrize(("revision", "epoch"), [(6, EPOCH), (4, EPOCH), (5, "e2")])
    def test_any_difference_resyncs(self, synced: Harness, revision: int, epoch: str) -> None:
        """A newer revision, a lower one (history lost) or another epoch asks for a load."""
        assert synced.follower.on_revision(StoreState(revision, epoch, None)) == "resync"

    def test_lower_stored_revision_is_adopted_by_the_load(self, synced: Harness) -> None:
        """After a resync the store's lower revision of the same epoch is believed."""
        assert synced.follower.on_message(message(6, {"a": "x2"})) == "applied"
        assert synced.follower.on_revision(StoreState(5, EPOCH, None)) == "resync"
        assert synced.follower.on_loaded(loaded(5, {"a": "x", "b": "y"}))
        assert synced.follower.snapshot.revision == 5
        assert synced.values() == {"a": "x", "b": "y"}

    def test_missing_store_then_data_back(self, synced: Harness) -> None:
        """No epoch: `missing` (snapshot kept); the same revision back still resyncs once."""
        assert synced.follower.on_revision(StoreState(0, None, None)) == "missing"
        assert synced.follower.status().snapshot_missing
        assert synced.follower.on_revision(StoreState(5, EPOCH, None)) == "resync"
        assert synced.follower.on_loaded(loaded(5, {"a": "x", "b": "y"}))
        assert not synced.follower.snapshot_missing
        assert synced.follower.on_revision(StoreState(5, EPOCH, None)) == "confirmed"

    def test_same_revision_other_digest_resyncs_and_counts(self, synced: Harness) -> None:
        """Same (epoch, revision) with another digest is a divergence: logged once, counted."""
        with captured_logs() as logs:
            for _ in range(3):
                assert synced.follower.on_revision(StoreState(5, EPOCH, "0" * 40)) == "resync"
        assert synced.follower.counts["state_diverged"] == 1
        assert len(events(logs, "state_diverged")) == 1

    def test_same_state_with_digest_confirms(self, synced: Harness) -> None:
        """The store's digest equal to the one of our state confirms it."""
        digest = StateDigest.of_store({k: blob(k, v) for k, v in SYNCED.items()}, {}).value
        assert synced.follower.on_revision(StoreState(5, EPOCH, digest)) == "confirmed"

    def test_missing_store_with_nothing_held_is_confirmed(self) -> None:
        """With no flags held, an empty store is simply in sync."""
        assert Harness().follower.on_revision(StoreState(0, None, None)) == "confirmed"


class TestState:
    """Readiness, staleness, health and the reported state follow the fake clock."""

    def test_connecting_ready_stale_closed(self) -> None:
        """CONNECTING before the first load, READY within the grace, STALE past it, CLOSED."""
        harness = Harness()
        follower = harness.follower
        assert follower.state() is SyncState.CONNECTING
        assert follower.is_stale()
        assert follower.seconds_since_sync() is None
        follower.on_loaded(loaded(1, {"a": "x"}))
        harness.clock.now += 0.9
        assert follower.state() is SyncState.READY
        assert follower.is_healthy()
        assert not follower.is_healthy(max_stale_s=0.5)
        harness.clock.now += 0.2
        assert follower.state() is SyncState.STALE
        assert not follower.is_healthy()
        follower.closed = True
        assert follower.state() is SyncState.CLOSED

    def test_status_counts_and_worker_id(self, synced: Harness) -> None:
        """The status carries the snapshot's identity, the counters and the worker id."""
        synced.follower.on_message(message(6, {"a": "x2"}))
        status = synced.follower.status("w-1")
        assert (status.epoch, status.revision, status.flags) == (EPOCH, 6, 2)
        assert (status.resyncs, status.applied_changes, status.worker_id) == (1, 1, "w-1")

    def test_connection_loss_logged_once_per_transition(self, synced: Harness) -> None:
        """Retries failing the same way log nothing more; turning permanent logs again."""
        follower = synced.follower
        follower.on_connected(reconnect=False)
        with captured_logs() as logs:
            follower.on_disconnected(ConnectionError("refused"), permanent=False)
            follower.on_disconnected(ConnectionError("refused again"), permanent=False)
            follower.on_disconnected(PermissionError("WRONGPASS"), permanent=True)
            follower.on_connected(reconnect=True)
        lost = events(logs, "connection_lost")
        assert [entry["permanent"] for entry in lost] == [False, True]
        assert lost[0]["serving_revision"] == 5
        assert len(events(logs, "connection_restored")) == 1
        assert follower.counts["reconnects"] == 1
        assert follower.status().last_error == "PermissionError: WRONGPASS"


class TestPresence:
    """The heartbeat writes this worker's record, except for a forking parent that does
    not evaluate (gunicorn `--preload`'s master)."""

    def test_heartbeat_writes_the_record_with_a_ttl(self, synced: Harness) -> None:
        """A process that never forked is listed at every heartbeat."""
        presence = Presence(synced.follower, "w-1")
        command = presence.heartbeat_command()
        assert command is not None
        verb, key, record, px, ttl_ms = command
        assert (verb, key, px, ttl_ms) == ("SET", KEYS.worker("w-1"), "PX", 5000)
        assert isinstance(record, bytes)
        info = decode_presence(record)
        assert (info.id, info.pid, info.epoch, info.revision) == ("w-1", os.getpid(), EPOCH, 5)
        assert info.state == "ready"

    def test_forking_parent_withdraws_until_it_evaluates(self, synced: Harness) -> None:
        """After a fork the parent's record is deleted once and not written again until a
        flag is evaluated; the snapshot served stays the same revision."""
        presence = Presence(synced.follower, "w-1")
        assert presence.heartbeat_command() is not None
        presence.after_fork_in_parent()
        assert synced.installed[-1].revision == 5
        assert synced.installed[-1].compiled_flags() == []
        assert presence.heartbeat_command() == ("DEL", KEYS.worker("w-1"))
        assert presence.heartbeat_command() is None
        assert synced.installed[-1].entry("a") is not None  # what evaluating a flag does
        command = presence.heartbeat_command()
        assert command is not None
        assert command[0] == "SET"

    def test_evaluation_before_a_swap_still_counts(self, synced: Harness) -> None:
        """An evaluation is noticed even when a change replaced its compiled flag since."""
        presence = Presence(synced.follower, "w-1")
        presence.after_fork_in_parent()
        assert synced.installed[-1].entry("a") is not None
        assert synced.follower.on_message(message(6, {"a": "x2"})) == "applied"
        assert synced.installed[-1].compiled_flags() == []  # the changed flag is recompiled
        command = presence.heartbeat_command()
        assert command is not None
        assert command[0] == "SET"

    def test_forked_child_counts_with_a_new_identity(self, synced: Harness) -> None:
        """In a child the record is written at once under a new worker id."""
        presence = Presence(synced.follower, "w-1")
        presence.after_fork_in_parent()
        presence.after_fork_in_child()
        assert presence.worker_id != "w-1"
        command = presence.heartbeat_command()
        assert command is not None
        assert command[:2] == ("SET", KEYS.worker(presence.worker_id))


class TestBackoff:
    """Retries wait redis-py's full-jitter delays, capped longer for permanent errors."""

    def test_delays_are_jittered_and_capped(self) -> None:
        """Each delay lies in [0, min(cap, initial * 2**attempt)], and they differ."""
        delays = [backoff_delay(attempt, 0.05, 2.0) for attempt in range(40)]
        assert all(0 <= d <= min(2.0, 0.05 * 2**a) for a, d in enumerate(delays))
        assert len(set(delays[10:])) == 30

    def test_a_long_outage_does_not_overflow(self) -> None:
        """Attempt 5,000 (hours of retries) still yields a delay within the cap."""
        assert 0 <= backoff_delay(5_000, 0.05, 2.0) <= 2.0

    def test_permanent_errors_get_the_long_cap(self) -> None:
        """Bad credentials and ACL denials are permanent; a refused connection is not."""

        assert is_permanent(redis.AuthenticationError("invalid password"))
        assert is_permanent(redis.ResponseError("NOPERM this user has no permissions"))
        assert not is_permanent(redis.ConnectionError("refused"))
        assert retry_cap_s(OPTIONS, permanent=True) == OPTIONS.backoff_max_permanent_s
        assert retry_cap_s(OPTIONS, permanent=False) == OPTIONS.backoff_max_s


class TestLastKnownGoodFile:
    """The LKG file round-trips a snapshot; an unusable one is skipped."""

    def test_round_trip(self, synced: Harness, tmp_path: Path) -> None:
        """What is written is read back with its epoch, revision and flags."""
        path = tmp_path / "flags.lkg"
        write_lkg(path, synced.follower.snapshot)
        restored = read_lkg(path)
        assert restored is not None
        assert (restored.epoch, restored.revision, sorted(restored)) == (EPOCH, 5, ["a", "b"])

    def test_missing_or_corrupt_file_is_none(self, tmp_path: Path) -> None:
        """No file is silent; a corrupt one is logged and ignored."""
        path = tmp_path / "flags.lkg"
        assert read_lkg(path) is None
        path.write_bytes(b"\x00garbage")
        with captured_logs() as logs:
            assert read_lkg(path) is None
        assert len(events(logs, "lkg_unreadable")) == 1
