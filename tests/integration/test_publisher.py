"""`Publisher` against real servers: atomic, audited, validated writes with optimistic
concurrency, and revisions that never go backwards (DESIGN.md "Redis layout and protocol")."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from flagsync import InvalidFlagError, load_flags
from flagsync.errors import ConflictError, FlagNotFoundError
from flagsync.publisher import HistoryEntry, Publisher
from flagsync.server import ServerProcess
from flagsync.store import StoreKeys
from tests.integration.conftest import PublisherFactory, RawFactory
from tests.integration.support import base_document, counter_flag, model_flag, store_state

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def _only(entries: list[HistoryEntry]) -> HistoryEntry:
    assert len(entries) == 1, entries
    return entries[0]


class TestApply:
    """`apply` makes the store match a document as one revision, and only when it differs."""

    def test_apply_is_one_revision(self, publisher: Publisher) -> None:
        """Applying a file of several flags and a segment creates exactly one revision."""
        revision = publisher.apply(DATA_DIR / "flags.yaml", reason="first load")
        epoch, stored = publisher.revision()
        assert (revision, stored) == (1, 1)
        assert epoch
        entries = publisher.history()
        assert {entry.revision for entry in entries} == {1}
        assert {(entry.kind, entry.key) for entry in entries} == {
            ("flag", key) for key in publisher.definitions().flags
        } | {("segment", key) for key in publisher.definitions().segments}
        assert all(entry.op == "apply" and entry.before is None for entry in entries)

    def test_apply_twice_is_a_no_op(self, publisher: Publisher, raw: redis.Redis) -> None:
        """Applying the same document again returns the same revision and writes nothing."""
        first = publisher.apply(base_document())
        before = store_state(raw, publisher.keys.namespace)
        again = publisher.apply(base_document())
        assert again == first
        assert store_state(raw, publisher.keys.namespace) == before

    def test_diff_is_a_dry_run(self, publisher: Publisher, raw: redis.Redis) -> None:
        """`diff` lists what `apply` would add, change and delete, and writes nothing."""
        publisher.apply(base_document())
        before = store_state(raw, publisher.keys.namespace)
        document = base_document()
        document["flags"]["model"] = model_flag(default="current")
        document["flags"]["new-flag"] = counter_flag(1)
        del document["flags"]["beta-ui"]
        changes = publisher.diff(document, prune=True)
        assert {(change.kind, change.key, change.op) for change in changes} == {
            ("flag", "model", "change"),
            ("flag", "new-flag", "add"),
            ("flag", "beta-ui", "delete"),
        }
        model = next(change for change in changes if change.key == "model")
        assert model.version == 1
        assert [field.path for field in model.fields] == ["default"]
        assert store_state(raw, publisher.keys.namespace) == before

    def test_prune_deletes_what_the_document_lacks(self, publisher: Publisher) -> None:
        """With `prune`, flags missing from the document are deleted in the same revision."""
        publisher.apply(base_document())
        document = base_document()
        del document["flags"]["beta-ui"]
        document["flags"]["temperature"]["default"] = "low"
        assert publisher.apply(document) == 2  # without prune, nothing is deleted ...
        assert publisher.get("beta-ui") is not None
        del document["flags"]["temperature"]
        revision = publisher.apply(document, prune=True, reason="cleanup")  # ... with it, it is
        assert revision == 3
        assert publisher.get("beta-ui") is None
        assert publisher.get("temperature") is None
        entries = [entry for entry in publisher.history() if entry.revision == 3]
        assert {(entry.key, entry.op) for entry in entries} == {
            ("beta-ui", "delete"),
            ("temperature", "delete"),
        }
        assert all(entry.after is None and entry.before is not None for entry in entries)

    def test_invalid_document_writes_nothing(self, publisher: Publisher, raw: redis.Redis) -> None:
        """A document with an invalid flag is refused as a whole: no flag changes, no revision."""
        publisher.apply(base_document())
        before = store_state(raw, publisher.keys.namespace)
        document = base_document()
        document["flags"]["temperature"]["default"] = "low"  # a valid change beside a bad flag
        with pytest.raises(InvalidFlagError):
            publisher.apply(document | {"flags": document["flags"] | {"bad": {"variants": {}}}})
        with pytest.raises(InvalidFlagError, match="weight 150"):
            publisher.apply(DATA_DIR / "invalid" / "weights-150.yaml")
        assert store_state(raw, publisher.keys.namespace) == before


Modification = Callable[[Publisher, str], int]
"""A write to the `model` flag with the given reason."""

MODIFICATIONS: dict[str, tuple[Modification, Callable[[dict[str, Any]], Any], Any]] = {
    "kill": (
        lambda p, why: p.kill("model", reason=why),
        lambda after: after.get("enabled", True),
        False,
    ),
    "set_rollout-default": (
        lambda p, why: p.set_rollout("model", {"candidate": 5, "current": 95}, reason=why),
        lambda after: after["default"],
        {"rollout": {"candidate": 5, "current": 95}},
    ),
    "set_rollout-rule": (
        lambda p, why: p.set_rollout(
            "model", {"candidate": 50, "current": 50}, rule="paid-ramp", reason=why
        ),
        lambda after: after["rules"][1]["serve"],
        {"rollout": {"candidate": 50, "current": 50}},
    ),
    "set_default": (
        lambda p, why: p.set_default("model", "current", reason=why),
        lambda after: after["default"],
        "current",
    ),
}
"""Name -> (the write, the field it changes in the definition, the field's new value)."""


class TestFlagWrites:
    """Every single-flag write returns the new revision and is logged with actor, reason,
    before and after."""

    @pytest.mark.parametrize("name", sorted(MODIFICATIONS))
    def test_modification_is_one_logged_revision(
        self, name: str, server: ServerProcess, make_publisher: PublisherFactory
    ) -> None:
        """The write bumps the revision by one and the log shows who, why, before and after."""
        modify, field, expected = MODIFICATIONS[name]
        publisher = make_publisher(server.url, actor="alice")
        start = publisher.apply(base_document())
        revision = modify(publisher, f"because {name}")
        assert revision == start + 1 == publisher.revision()[1]
        entry = publisher.history(limit=1)[0]
        assert (entry.revision, entry.actor, entry.key) == (revision, "alice", "model")
        assert entry.reason == f"because {name}"
        assert entry.op == name.split("-", maxsplit=1)[0]
        assert entry.version == 2
        assert entry.before == load_flags(base_document()).to_builtins()["flags"]["model"]
        assert entry.after is not None
        assert field(entry.after) == expected
        stored = publisher.get("model")
        assert stored is not None
        assert stored.version == 2

    def test_enable_undoes_kill(self, publisher: Publisher) -> None:
        """`enable` after `kill` is its own revision, logged with enabled false -> true."""
        publisher.apply(base_document())
        killed = publisher.kill("model")
        enabled = publisher.enable("model", reason="fixed")
        assert enabled == killed + 1
        entry = publisher.history("model", limit=1)[0]
        assert (entry.op, entry.reason, entry.revision) == ("enable", "fixed", enabled)
        assert entry.before is not None
        assert entry.after is not None
        assert (entry.before["enabled"], entry.after.get("enabled", True)) == (False, True)

    def test_flag_targeting_a_segment_can_be_read_and_killed(self, publisher: Publisher) -> None:
        """`get`, `kill` and `set_rollout` work on a flag whose rule targets a segment."""
        publisher.apply(base_document())
        stored = publisher.get("beta-ui")
        assert stored is not None
        assert stored.flag.rules[0].when[0].op == "in_segment"
        assert publisher.kill("beta-ui", reason="incident") == 2
        assert publisher.set_rollout("beta-ui", {"on": 10, "off": 90}, rule="beta") == 3

    def test_write_without_effect_is_not_a_revision(self, publisher: Publisher) -> None:
        """Killing a killed flag changes nothing and returns the current revision."""
        publisher.apply(base_document())
        killed = publisher.kill("model")
        assert publisher.kill("model") == killed
        assert len(publisher.history("model")) == 2

    def test_unknown_rule_is_refused(self, publisher: Publisher, raw: redis.Redis) -> None:
        """`set_rollout` on a rule the flag lacks raises InvalidFlagError and writes nothing."""
        publisher.apply(base_document())
        before = store_state(raw, publisher.keys.namespace)
        with pytest.raises(InvalidFlagError, match="no rule 'nope'"):
            publisher.set_rollout("model", {"candidate": 50, "current": 50}, rule="nope")
        assert store_state(raw, publisher.keys.namespace) == before

    def test_put_creates_and_replaces(self, publisher: Publisher) -> None:
        """`put` of a new flag and of a changed one each return the next revision and log it."""
        assert publisher.put("counter", counter_flag(1), reason="create") == 1
        assert publisher.put({"counter": counter_flag(2)}, reason="replace") == 2
        latest, first = publisher.history("counter")
        assert (first.op, first.before, first.version, first.reason) == ("put", None, 1, "create")
        assert first.after == counter_flag(1)
        assert (latest.before, latest.after, latest.version) == (
            counter_flag(1),
            counter_flag(2),
            2,
        )

    def test_delete(self, publisher: Publisher) -> None:
        """`delete` removes the flag in a new revision logged with its last definition."""
        publisher.apply(base_document())
        revision = publisher.delete("beta-ui", reason="launched")
        assert revision == 2
        assert publisher.get("beta-ui") is None
        entry = _only(publisher.history("beta-ui", limit=1))
        assert (entry.op, entry.after, entry.reason) == ("delete", None, "launched")
        assert entry.version == 2
        assert entry.before == base_document()["flags"]["beta-ui"]
        with pytest.raises(FlagNotFoundError):
            publisher.delete("beta-ui")

    def test_delete_of_a_prerequisite_is_refused(
        self, publisher: Publisher, raw: redis.Redis
    ) -> None:
        """A flag another flag requires cannot be deleted; nothing is written."""
        publisher.apply(base_document())
        before = store_state(raw, publisher.keys.namespace)
        with pytest.raises(InvalidFlagError, match="required by context-window"):
            publisher.delete("model")
        assert store_state(raw, publisher.keys.namespace) == before

    def test_unknown_prerequisite_is_refused(self, publisher: Publisher, raw: redis.Redis) -> None:
        """`put` of a flag requiring an unknown flag (or variant) is refused; nothing is written."""
        publisher.apply(base_document())
        before = store_state(raw, publisher.keys.namespace)
        orphan = counter_flag(1) | {"requires": {"ghost": "on"}}
        with pytest.raises(InvalidFlagError, match="unknown flag 'ghost'"):
            publisher.put("orphan", orphan)
        with pytest.raises(InvalidFlagError, match="has no variant 'nope'"):
            publisher.put("orphan", counter_flag(1) | {"requires": {"model": "nope"}})
        assert store_state(raw, publisher.keys.namespace) == before

    @pytest.mark.parametrize(
        "definition",
        [
            {"variants": {"a": 1, "b": "two"}, "off": "a", "default": "a"},
            {"variants": {"a": 1}, "off": "a", "default": {"rollout": {"a": 150}}},
            {"variants": {"a": 1}, "off": "missing", "default": "a"},
            {"variants": {"a": 1}, "off": "a", "default": "a", "unknown_field": 1},
        ],
        ids=["mixed-types", "weights-150", "unknown-variant", "unknown-field"],
    )
    def test_invalid_definition_is_refused(
        self, definition: dict[str, Any], publisher: Publisher, raw: redis.Redis
    ) -> None:
        """An invalid definition raises InvalidFlagError before anything is sent."""
        publisher.apply(base_document())
        before = store_state(raw, publisher.keys.namespace)
        with pytest.raises(InvalidFlagError):
            publisher.put("temperature", definition)
        with pytest.raises(InvalidFlagError):
            publisher.put("brand-new", definition)
        assert store_state(raw, publisher.keys.namespace) == before


class TestOptimisticConcurrency:
    """A write based on a stale version is refused with ConflictError and writes nothing."""

    @pytest.mark.parametrize(
        "write",
        [
            lambda p, v: p.put("model", model_flag(default="current"), expected_version=v),
            lambda p, v: p.kill("model", expected_version=v),
            lambda p, v: p.set_default("model", "current", expected_version=v),
            lambda p, v: p.set_rollout("model", {"current": 100}, expected_version=v),
            lambda p, v: p.delete("context-window", expected_version=v),
        ],
        ids=["put", "kill", "set_default", "set_rollout", "delete"],
    )
    def test_stale_expected_version(
        self,
        write: Callable[[Publisher, int], int],
        server: ServerProcess,
        make_publisher: PublisherFactory,
        raw: redis.Redis,
    ) -> None:
        """Another publisher's write in between makes the expected version stale."""
        alice = make_publisher(server.url, actor="alice")
        bob = make_publisher(server.url, actor="bob")
        alice.apply(base_document())
        bob.set_rollout("model", {"candidate": 1, "current": 99}, rule="paid-ramp")
        bob.set_default("context-window", "small")
        before = store_state(raw, alice.keys.namespace)
        with pytest.raises(ConflictError) as caught:
            write(alice, 1)
        assert (caught.value.expected_version, caught.value.actual_version) == (1, 2)
        assert store_state(raw, alice.keys.namespace) == before

    def test_conflict_inside_the_script(
        self,
        publisher: Publisher,
        make_raw: RawFactory,
        server: ServerProcess,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A version bumped between the publisher's read and its script is refused by the script."""
        publisher.put("counter", counter_flag(0))
        raw = make_raw(server.url)
        keys = StoreKeys(publisher.keys.namespace)
        original = publisher._read_all

        def read_then_race() -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
            state = original()
            raw.hincrby(keys.versions, "flag:counter", 1)  # someone wrote right after our read
            return state

        monkeypatch.setattr(publisher, "_read_all", read_then_race)
        revision_before = raw.get(keys.revision)
        with pytest.raises(ConflictError):
            publisher.put("counter", counter_flag(1), expected_version=1)
        assert raw.get(keys.revision) == revision_before
        assert raw.xlen(keys.log) == 1

    def test_no_lost_update_under_concurrent_publishers(
        self, server: ServerProcess, make_publisher: PublisherFactory
    ) -> None:
        """Four publishers incrementing one counter with explicit expected versions lose
        nothing: every refusal is a ConflictError, accepted writes equal new versions, and
        the final value is the last accepted write."""
        writers, increments_each = 4, 15
        setup = make_publisher(server.url, actor="setup")
        start_revision = setup.put("counter", counter_flag(0))
        accepted: list[tuple[int, int, str]] = []
        barrier = threading.Barrier(writers)
        publishers = [make_publisher(server.url, actor=f"w{i}") for i in range(writers)]
        threads = [CounterWriter(p, increments_each, barrier, accepted) for p in publishers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        assert [thread.error for thread in threads] == [None] * writers
        assert [thread.done for thread in threads] == [increments_each] * writers
        assert sum(thread.conflicts for thread in threads) > 0, "no race: the test proves nothing"
        total = writers * increments_each
        stored = setup.get("counter")
        assert stored is not None
        assert stored.version == 1 + total  # one new version per accepted write
        assert stored.flag.variants["value"] == total  # no increment was lost
        assert sorted(revision for revision, _, _ in accepted) == list(
            range(start_revision + 1, start_revision + total + 1)
        )
        last_revision, last_value, last_actor = max(accepted)
        assert stored.flag.variants["value"] == last_value
        assert setup.revision()[1] == last_revision
        log = list(reversed(setup.history("counter", limit=total + 1)))
        assert [entry.version for entry in log] == list(range(1, total + 2))
        for previous, entry in itertools.pairwise(log):
            assert entry.before == previous.after  # each write was based on the one before
        assert log[-1].actor == last_actor


class CounterWriter(threading.Thread):
    """Increments the `counter` flag `times` times, each write with the expected version it
    read; a ConflictError means re-read and retry, anything else is recorded in `error`."""

    def __init__(
        self,
        publisher: Publisher,
        times: int,
        barrier: threading.Barrier,
        accepted: list[tuple[int, int, str]],
    ) -> None:
        super().__init__(name=f"counter-writer-{publisher.actor}", daemon=True)
        self.publisher = publisher
        self.times = times
        self.barrier = barrier
        self.accepted = accepted
        """(revision, value written, actor) of every accepted write, shared by the writers."""
        self.done = 0
        self.conflicts = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.barrier.wait(10)
            for _attempt in range(self.times * 100):
                if self.done == self.times:
                    return
                self._increment()
        except BaseException as error:  # noqa: BLE001 - reported to the test thread
            self.error = error

    def _increment(self) -> None:
        stored = self.publisher.get("counter")
        assert stored is not None
        value = stored.flag.variants["value"] + 1
        try:
            revision = self.publisher.put(
                "counter", counter_flag(value), expected_version=stored.version
            )
        except ConflictError:
            self.conflicts += 1
            return
        self.accepted.append((revision, value, self.publisher.actor))  # list.append is atomic
        self.done += 1


class TestRevisionNeverGoesBackwards:
    """After the store loses its history, a publisher continues above what it saw, in a new
    epoch (DESIGN.md "Failure policy")."""

    @pytest.mark.parametrize("wipe", ["flushall", "restart-empty"])
    def test_next_revision_is_above_the_seen_one(
        self,
        wipe: str,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_raw: RawFactory,
    ) -> None:
        """A publisher that saw revision N writes N+1 after a wipe, with a new epoch."""
        publisher = make_publisher(dedicated_server.url)
        publisher.apply(base_document())
        for value in range(4):
            seen = publisher.put("counter", counter_flag(value))
        old_epoch, _ = publisher.revision()
        assert seen == 5
        if wipe == "flushall":
            make_raw(dedicated_server.url).flushall()
        else:
            dedicated_server.restart()
        assert publisher.revision() == (None, 0)
        revision = publisher.apply(base_document())
        new_epoch, stored = publisher.revision()
        assert revision == stored == seen + 1
        assert new_epoch is not None
        assert new_epoch != old_epoch
        fresh = make_publisher(dedicated_server.url)
        assert fresh.put("counter", counter_flag(9)) == seen + 2  # the stored revision counts too
