"""`Publisher` against real servers: atomic, audited, validated writes with optimistic
concurrency, and revisions that never go backwards (DESIGN.md "Redis layout and protocol")."""

from __future__ import annotations

import itertools
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from flagsync import InvalidFlagError, load_flags
from flagsync.acl import acl_setuser_commands
from flagsync.controller import RolloutController
from flagsync.errors import (
    ConflictError,
    FlagNotFoundError,
    PermissionDeniedError,
    StoreUnavailableError,
)
from flagsync.fleet import Fleet
from flagsync.publisher import HistoryEntry, Publisher, Replication, WriteResult
from flagsync.server import ServerProcess
from flagsync.store import StoreKeys, decode_message, encode_message
from tests.integration.conftest import PublisherFactory, RawFactory
from tests.integration.support import base_document, counter_flag, model_flag, store_state
from tests.not_redis import NotRedis, not_redis_server

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


NO_OPS: dict[str, Callable[[Publisher], int]] = {
    "enable-enabled": lambda p: p.enable("model"),
    "set_default-same": lambda p: p.set_default("temperature", "high"),
    "ramp-same-weights": lambda p: p.ramp("model", "candidate", 20, rule="paid-ramp"),
    "set_rollout-same": lambda p: p.set_rollout(
        "model", {"candidate": 20, "current": 80}, rule="paid-ramp"
    ),
    "put-same": lambda p: p.put("model", model_flag()),
    "apply-same": lambda p: p.apply(base_document()),
    "rollback-zero-steps": lambda p: p.rollback("model", steps=0),
}


class TestNoOps:
    """A write that changes nothing issues no revision and says so (`last_write.changed`)."""

    @pytest.mark.parametrize("name", sorted(NO_OPS))
    def test_no_op_keeps_the_revision(
        self, name: str, publisher: Publisher, raw: redis.Redis
    ) -> None:
        """The call returns the current revision, writes nothing and reports changed=False."""
        current = publisher.apply(base_document())
        before = store_state(raw, publisher.keys.namespace)
        assert NO_OPS[name](publisher) == current
        assert store_state(raw, publisher.keys.namespace) == before
        assert publisher.last_write is not None
        assert (publisher.last_write.revision, publisher.last_write.changed) == (current, False)

    def test_kill_of_a_killed_flag(self, publisher: Publisher) -> None:
        """The first kill is a change, the second is reported as a no-op."""
        publisher.apply(base_document())
        killed = publisher.kill("model")
        alone = Replication(acked=0, replicas=0, required=0)  # a primary without replicas
        assert publisher.last_write == WriteResult("kill", "model", killed, True, alone)
        assert str(alone) == "no replicas"
        assert publisher.kill("model") == killed
        assert publisher.last_write == WriteResult("kill", "model", killed, changed=False)

    def test_apply_reports_no_key(self, publisher: Publisher) -> None:
        """A bulk apply is reported with its op and no single key."""
        revision = publisher.apply(base_document())
        assert publisher.last_write is not None
        last = publisher.last_write
        assert (last.op, last.key, last.revision, last.changed) == ("apply", None, revision, True)


def _nested(depth: int) -> dict[str, Any]:
    """An object nested `depth` levels deep."""
    value: dict[str, Any] = {}
    inner = value
    for _ in range(depth):
        inner["k"] = {}
        inner = inner["k"]
    return value


UNSTORABLE: dict[str, tuple[Any, str]] = {
    "int-above-2**64": (
        {"variants": {"a": 1, "b": 2**64}, "off": "a", "default": "a"},
        "flags.big.variants.b: integer 18446744073709551616 is outside -2**63..2**64-1",
    ),
    "huge-int-operand": (
        {
            "variants": {"a": 1, "b": 2},
            "off": "a",
            "rules": [{"when": [{"attr": "n", "op": "gt", "values": [10**400]}], "serve": "b"}],
            "default": "a",
        },
        "flags.big.rules[0].when[0].values[0]: integer of 401 digits is outside",
    ),
    "deeply-nested": (
        {"variants": {"a": {}, "b": _nested(50_000)}, "off": "a", "default": "a"},
        "flags.big.variants.b: nested deeper than 32 levels",
    ),
    "not-a-mapping": ("on", "flags.big: expected `object`, got `str`"),
}


class TestUnstorableInput:
    """`put` refuses what cannot be stored with InvalidFlagError naming the field, never
    with a raw OverflowError, RecursionError or ValueError, and writes nothing."""

    @pytest.mark.parametrize("name", sorted(UNSTORABLE))
    def test_put_refuses(self, name: str, publisher: Publisher, raw: redis.Redis) -> None:
        """The issue names the field and the fact; the store is unchanged."""
        definition, issue = UNSTORABLE[name]
        publisher.apply(base_document())
        before = store_state(raw, publisher.keys.namespace)
        with pytest.raises(InvalidFlagError) as caught:
            publisher.put("big", definition)
        assert str(caught.value.issues[0]).startswith(issue)
        assert store_state(raw, publisher.keys.namespace) == before


class TestRollbackRange:
    """A rollback past the first version says how far back the flag goes."""

    def test_too_many_steps(self, publisher: Publisher) -> None:
        """`steps=999` on v3 says only 2 earlier versions exist."""
        publisher.apply(base_document())
        publisher.kill("model")
        publisher.enable("model")
        with pytest.raises(InvalidFlagError) as caught:
            publisher.rollback("model", steps=999)
        assert [str(issue) for issue in caught.value.issues] == [
            "flags.model: cannot go back 999 steps: only 2 earlier versions exist (current is v3)"
        ]

    def test_single_version(self, publisher: Publisher) -> None:
        """A flag at v1 has no earlier version, in singular-correct words."""
        publisher.apply(base_document())
        with pytest.raises(InvalidFlagError, match="only 0 earlier versions exist"):
            publisher.rollback("model", steps=1)

    def test_unknown_version(self, publisher: Publisher) -> None:
        """`to_version` beyond the current one names the current version."""
        publisher.apply(base_document())
        publisher.kill("model")
        with pytest.raises(InvalidFlagError, match=r"no version 9 \(current is v2\)"):
            publisher.rollback("model", to_version=9)


@pytest.fixture
def not_redis() -> Iterator[NotRedis]:
    """A port where something other than Redis answers, closed after the test."""
    with not_redis_server() as server:
        yield server


class TestStoreErrors:
    """Every command the writer side sends maps redis-py's errors to flagsync's."""

    def test_a_port_that_is_not_redis(self, not_redis: NotRedis) -> None:
        """An HTTP answer (redis-py: 'Protocol error') is StoreUnavailableError saying so."""
        url = f"redis://127.0.0.1:{not_redis.port}"
        with (
            Publisher(url, timeout_s=2.0) as publisher,
            pytest.raises(StoreUnavailableError) as caught,
        ):
            publisher.revision()
        assert "answered, but not as a Redis or Valkey server would" in str(caught.value)
        assert "Protocol error" in str(caught.value)

    def test_controller_commands_are_mapped(self, dedicated_server: ServerProcess) -> None:
        """The rollout controller's own commands raise StoreUnavailableError when the
        store is down, not redis-py's ConnectionError."""
        with Publisher(dedicated_server.url, "ctl", timeout_s=1.0) as publisher:
            publisher.apply(base_document())
            controller = RolloutController(publisher, "model")
            dedicated_server.kill()
            with pytest.raises(StoreUnavailableError, match="cannot reach"):
                controller.state()

    def test_worker_credentials_are_permission_denied(
        self, dedicated_server: ServerProcess, make_raw: RawFactory
    ) -> None:
        """A write with the least-privilege worker ACL user is PermissionDeniedError."""
        admin = make_raw(dedicated_server.url)
        for line in acl_setuser_commands("acl", worker_password="w-secret"):  # noqa: S106
            admin.execute_command(*shlex.split(line))  # type: ignore[no-untyped-call]
        url = dedicated_server.url.replace("redis://", "redis://flagsync-worker:w-secret@")
        with Publisher(url, "acl") as publisher, pytest.raises(PermissionDeniedError) as caught:
            publisher.apply(base_document())
        assert "w-secret" not in str(caught.value)


class TestWriterImports:
    """The writer never imports the reader side (subscriber, follower, anyio)."""

    def test_publisher_loads_no_sync_code(self, server: ServerProcess, namespace: str) -> None:
        """Constructing a Publisher and writing, in a fresh process, loads no anyio,
        no follower, no subscriber and no client wiring."""
        script = (
            "import sys\n"
            "from flagsync.publisher import Publisher\n"
            f"with Publisher({server.url!r}, {namespace!r}) as publisher:\n"
            "    publisher.put('f', {'variants': {'on': True, 'off': False},"
            " 'off': 'off', 'default': 'on'})\n"
            "    publisher.history()\n"
            "print(' '.join(sorted(sys.modules)))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
        )
        loaded = set(done.stdout.split())
        assert "flagsync.publisher" in loaded
        reader_side = {
            "anyio",
            "flagsync._sync.follower",
            "flagsync._sync.wiring",
            "flagsync._sync.thread_driver",
        }
        assert reader_side & loaded == set()


class TestFleet:
    """The fleet view reads the same log and presence as the publisher, on its own
    connection or the publisher's."""

    def test_standalone_view_matches_the_publisher(
        self, server: ServerProcess, publisher: Publisher
    ) -> None:
        """`Fleet(url, namespace)` sees the publisher's history and revision."""
        revision = publisher.apply(base_document())
        publisher.kill("model", reason="incident")
        with Fleet(server.url, publisher.keys.namespace) as fleet:
            assert fleet.history() == publisher.history()
            assert fleet.revision() == publisher.revision()
            assert fleet.history("model", limit=1)[0].reason == "incident"
            assert fleet.workers() == []
            report = fleet.wait_propagated(revision, timeout=0.1)
        assert (report.complete, report.reached, report.missing) == (True, [], [])

    def test_the_publisher_shares_its_connection(self, publisher: Publisher) -> None:
        """`publisher.fleet` uses the publisher's client; closing the view leaves it open."""
        publisher.apply(base_document())
        publisher.fleet.close()
        assert publisher.fleet.history(limit=1)[0].revision == 1


class TestPublishedMessage:
    """The message the script publishes is exactly what `flagsync.store` encodes."""

    def test_header_matches_the_python_encoder(
        self, publisher: Publisher, raw: redis.Redis
    ) -> None:
        """Decoding the published bytes and re-encoding them gives the same bytes, with the
        revision, epoch and server time the log recorded."""
        pubsub = raw.pubsub()  # type: ignore[no-untyped-call]
        pubsub.subscribe(publisher.keys.channel)
        try:
            assert pubsub.get_message(timeout=2.0) is not None  # the subscribe confirmation
            revision = publisher.apply(base_document())
            message = pubsub.get_message(timeout=2.0)
        finally:
            pubsub.close()
        assert message is not None
        data: bytes = message["data"]
        decoded = decode_message(data)
        entry = publisher.history(limit=1)[0]
        assert (decoded.revision, decoded.epoch, decoded.published_us) == (
            revision,
            entry.epoch,
            entry.time_us,
        )
        payload = data.split(b"|", 6)[6]
        digest = raw_digest(publisher)
        assert decoded.digest == digest
        encoded = encode_message(
            decoded.epoch, revision, decoded.published_us, payload, digest=digest
        )
        assert encoded == data
        assert decoded.changes is not None
        assert {change.key for change in decoded.changes.changes} >= {"model", "temperature"}


def raw_digest(publisher: Publisher) -> str:
    """The state digest the store holds beside the revision."""
    digest = publisher.client.get(publisher.keys.digest)
    assert isinstance(digest, bytes)
    return digest.decode()
