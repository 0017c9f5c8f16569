"""Snapshots: immutable compiled flags, replaced whole by `apply`, which reports the keys
whose evaluation may have changed (DESIGN.md, "The data path")."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest

from flagsync import (
    Flag,
    FlagClient,
    InvalidFlagError,
    Reason,
    Segment,
    Snapshot,
    ValidationIssue,
    load_flags,
)
from tests.unit.builders import DATA_DIR, Document, document, flag

BETA = {"attr": "key", "op": "in_segment", "values": ["beta-testers"]}


def _flag(raw: Document, **others: Document) -> Flag:
    """A validated `Flag` from a plain definition (with `others` beside it, for prerequisites)."""
    return load_flags(document({"f": raw, **others})).flags["f"]


def _snapshot() -> Snapshot:
    """model <- window <- tokens (prerequisites), sampling uses a segment, fallback is alone."""
    return Snapshot.build(
        load_flags(
            document(
                {
                    "model": flag(
                        {"current": "gpt-4o", "candidate": "gpt-4.1"}, default="candidate"
                    ),
                    "window": flag(
                        {"small": 1, "large": 2}, default="large", requires={"model": "candidate"}
                    ),
                    "tokens": flag(
                        {"few": 10, "many": 99}, default="many", requires={"window": "large"}
                    ),
                    "sampling": flag(
                        {"conservative": 0.2, "creative": 0.9},
                        rules=[{"name": "beta", "when": [BETA], "serve": "creative"}],
                    ),
                    "fallback": flag({"none": "none", "azure": "azure"}, default="azure"),
                },
                {"beta-testers": {"keys": ["user-1"]}},
            )
        )
    )


def _values(snapshot: Snapshot, context: dict[str, Any]) -> dict[str, Any]:
    client = FlagClient(snapshot)
    return {key: client.variation(key, context) for key in snapshot}


class TestBuild:
    """`Snapshot.build` compiles a validated `FlagSet`."""

    def test_mapping_protocol_and_metadata(self) -> None:
        """A snapshot lists its flags in file order and carries revision and epoch."""
        definitions = load_flags(DATA_DIR / "flags.yaml")
        snapshot = Snapshot.build(definitions, revision=12, epoch="e1")
        assert list(snapshot) == ["llm-model-version", "prompt-template-v2"]
        assert len(snapshot) == 2
        assert "llm-model-version" in snapshot
        assert "nope" not in snapshot
        assert (snapshot.revision, snapshot.epoch) == (12, "e1")
        assert snapshot.definitions == definitions
        assert set(snapshot.flags) == set(snapshot)
        assert repr(snapshot) == "<Snapshot revision=12 epoch='e1' flags=2>"

    def test_flags_compile_on_first_use(self) -> None:
        """Building compiles nothing; a flag compiles (with its prerequisites) when first used."""
        snapshot = Snapshot.build(
            load_flags(
                {
                    "flags": {
                        "base": {
                            "variants": {"on": True, "off": False},
                            "off": "off",
                            "default": "on",
                        },
                        "child": {
                            "variants": {"a": "a", "b": "b"},
                            "off": "a",
                            "requires": {"base": "on"},
                            "default": "b",
                        },
                        "other": {"variants": {"x": 1}, "off": "x", "default": "x"},
                    }
                }
            )
        )
        assert dict(snapshot.table) == {}
        assert FlagClient(snapshot).variation("child", {}, "z") == "b"
        assert set(snapshot.table) == {"base", "child"}
        assert snapshot.entry("missing") is None
        snapshot.compile_all()
        assert set(snapshot.table) == {"base", "child", "other"}

    def test_build_can_compile_everything_up_front(self) -> None:
        """`compile_all=True` compiles every flag at build time."""
        snapshot = Snapshot.build(load_flags(DATA_DIR / "flags.yaml"), compile_all=True)
        assert set(snapshot.table) == set(snapshot)

    def test_empty(self) -> None:
        """An empty snapshot has no flags, so every evaluation serves the caller's default."""
        snapshot = Snapshot.empty()
        assert len(snapshot) == 0
        assert FlagClient(snapshot).detail("f", {}, 1).value == 1


class TestImmutability:
    """A snapshot never changes after it is built."""

    def test_flags_and_table_are_read_only(self) -> None:
        """Writing to `flags` or `table` raises TypeError."""
        snapshot = _snapshot().compile_all()
        with pytest.raises(TypeError):
            snapshot.flags["x"] = snapshot.flags["model"]  # type: ignore[index]
        with pytest.raises(TypeError):
            snapshot.table["x"] = snapshot.table["model"]  # type: ignore[index]
        with pytest.raises(TypeError):
            del snapshot.flags["model"]  # type: ignore[attr-defined]

    def test_apply_leaves_the_old_snapshot_alone(self) -> None:
        """After `apply`, the original snapshot still has its flags, definitions, revision and
        evaluations."""
        old = _snapshot()
        before = _values(old, {"key": "user-1"})
        definitions = old.definitions
        new, _ = old.apply(
            flags={"model": _flag(flag({"current": "gpt-4o"}, off="current")), "fallback": None},
            segments={"beta-testers": None},
            revision=5,
        )
        assert _values(old, {"key": "user-1"}) == before
        assert old.definitions == definitions
        assert "fallback" in old
        assert old.revision == 0
        assert _values(new, {"key": "user-1"}) != before


class TestApply:
    """`apply` puts and deletes flags and segments, returning the affected keys."""

    def test_put_new_flag(self) -> None:
        """A new flag is added and reported; nothing else is."""
        new, changed = _snapshot().apply(flags={"extra": _flag(flag(default="b"))}, revision=1)
        assert changed == {"extra"}
        assert FlagClient(new).variation("extra", {}) == "y"
        assert list(new)[-1] == "extra"

    def test_replace_flag(self) -> None:
        """A replaced flag evaluates its new definition."""
        new, changed = _snapshot().apply(
            flags={"fallback": _flag(flag({"none": "none", "azure": "azure"}, default="none"))},
            revision=1,
        )
        assert changed == {"fallback"}
        assert FlagClient(new).variation("fallback", {}) == "none"

    def test_delete_flag(self) -> None:
        """A deleted flag is gone and reported; deleting an unknown flag is harmless."""
        new, changed = _snapshot().apply(flags={"fallback": None, "ghost": None}, revision=1)
        assert "fallback" not in new
        assert changed == {"fallback", "ghost"}
        assert FlagClient(new).detail("fallback", {}).reason is Reason.ERROR

    def test_changed_keys_include_transitive_dependents(self) -> None:
        """Changing a prerequisite reports every flag that requires it, directly or not."""
        replacement = _flag(flag({"current": "gpt-4o", "candidate": "gpt-4.1"}, default="current"))
        _, changed = _snapshot().apply(flags={"model": replacement}, revision=1)
        assert changed == {"model", "window", "tokens"}

    def test_dependents_see_the_prerequisite_change(self) -> None:
        """Dependents are recompiled, so a prerequisite now serving another variant fails them."""
        old = _snapshot()
        assert _values(old, {})["tokens"] == 99
        disabled = _flag(
            flag({"current": "gpt-4o", "candidate": "gpt-4.1"}, off="current", enabled=False)
        )
        new, _ = old.apply(flags={"model": disabled}, revision=1)
        client = FlagClient(new)
        assert client.detail("window", {}).reason is Reason.PREREQUISITE_FAILED
        assert client.detail("tokens", {}).reason is Reason.PREREQUISITE_FAILED
        assert client.variation("tokens", {}) == 10

    def test_deleting_a_prerequisite_fails_dependents(self) -> None:
        """Deleting a prerequisite reports its dependents and makes them fail it."""
        new, changed = _snapshot().apply(flags={"model": None}, revision=1)
        assert changed == {"model", "window", "tokens"}
        assert FlagClient(new).detail("window", {}).reason is Reason.PREREQUISITE_FAILED

    def test_adding_a_missing_prerequisite_is_seen(self) -> None:
        """A dependent whose prerequisite was missing evaluates it once it is put."""
        snapshot, _ = _snapshot().apply(flags={"model": None}, revision=1)
        restored, changed = snapshot.apply(
            flags={"model": _flag(flag({"candidate": "gpt-4.1"}))}, revision=2
        )
        assert changed == {"model", "window", "tokens"}
        assert FlagClient(restored).detail("tokens", {}).reason is Reason.STATIC

    def test_unrelated_flags_are_reused(self) -> None:
        """Flags not affected by a change keep their compiled form (nothing recompiled)."""
        old = _snapshot().compile_all()
        new, changed = old.apply(flags={"fallback": None}, revision=1)
        assert changed == {"fallback"}
        for key in ("model", "window", "tokens", "sampling"):
            assert new.flags[key] is old.flags[key]

    def test_put_segment(self) -> None:
        """Changing a segment reports the flags using it and changes their evaluation."""
        old = _snapshot()
        new, changed = old.apply(segments={"beta-testers": Segment(keys=["user-9"])}, revision=1)
        assert changed == {"sampling"}
        client = FlagClient(new)
        assert client.detail("sampling", {"key": "user-9"}).rule == "beta"
        assert client.detail("sampling", {"key": "user-1"}).reason is Reason.DEFAULT
        assert new.definitions.segments["beta-testers"].keys == ["user-9"]

    def test_delete_segment(self) -> None:
        """Deleting a segment reports the flags using it; their clauses no longer match."""
        new, changed = _snapshot().apply(segments={"beta-testers": None}, revision=1)
        assert changed == {"sampling"}
        assert "beta-testers" not in new.definitions.segments
        assert FlagClient(new).detail("sampling", {"key": "user-1"}).reason is Reason.DEFAULT

    def test_segment_change_reports_dependents_of_its_users(self) -> None:
        """A flag requiring a flag that uses the changed segment is reported too."""
        needs_sampling = _flag(
            flag(default="b", requires={"sampling": "creative"}), sampling=flag({"creative": 1})
        )
        snapshot, _ = _snapshot().apply(flags={"follower": needs_sampling}, revision=1)
        new, changed = snapshot.apply(segments={"beta-testers": Segment(keys=[])}, revision=2)
        assert changed == {"sampling", "follower"}
        assert FlagClient(snapshot).variation("follower", {"key": "user-1"}) == "y"
        assert FlagClient(new).variation("follower", {"key": "user-1"}) == "x"

    def test_revision_and_epoch(self) -> None:
        """`apply` sets the given revision and keeps the epoch unless a new one is given."""
        snapshot = Snapshot.build(load_flags({}), revision=1, epoch="e1")
        kept, _ = snapshot.apply(revision=2)
        assert (kept.revision, kept.epoch) == (2, "e1")
        moved, changed = snapshot.apply(revision=1, epoch="e2")
        assert (moved.revision, moved.epoch, changed) == (1, "e2", frozenset())

    def test_changed_keys_between_snapshots(self) -> None:
        """`changed_keys` lists flags whose definitions differ and flags using changed segments."""
        old = _snapshot()
        new, _ = old.apply(
            flags={"fallback": None, "extra": _flag(flag())},
            segments={"beta-testers": Segment(keys=[])},
            revision=1,
        )
        assert old.changed_keys(new) == {"fallback", "extra", "sampling"}
        assert old.changed_keys(old) == frozenset()


class TestCycles:
    """A change that would create a prerequisite cycle is refused whole."""

    def test_two_cycle_refused(self) -> None:
        """Making `model` require `window` (which requires `model`) raises and builds nothing."""
        old = _snapshot()
        before = _values(old, {})
        cyclic = _flag(
            flag({"current": "gpt-4o", "candidate": "gpt-4.1"}, requires={"window": "large"}),
            window=flag({"large": 2}),
        )
        with pytest.raises(InvalidFlagError) as caught:
            old.apply(flags={"model": cyclic}, revision=1)
        assert caught.value.issues == (
            ValidationIssue("flags.model.requires", "prerequisite cycle: model -> window -> model"),
        )
        assert _values(old, {}) == before
        assert old.definitions.flags["model"].requires == {}

    def test_three_cycle_refused(self) -> None:
        """Making `model` require `tokens` closes model -> tokens -> window -> model."""
        cyclic = _flag(
            flag({"current": "gpt-4o", "candidate": "gpt-4.1"}, requires={"tokens": "many"}),
            tokens=flag({"many": 99}),
        )
        with pytest.raises(
            InvalidFlagError, match="prerequisite cycle: model -> tokens -> window -> model"
        ):
            _snapshot().apply(flags={"model": cyclic}, revision=1)


class TestInstall:
    """`FlagClient._install` swaps the snapshot evaluations read, in one step."""

    def test_install_swaps_evaluations(self) -> None:
        """After `_install`, evaluations, `snapshot`, `revision` and `keys` follow the new one."""
        old = _snapshot()
        client = FlagClient(old)
        assert client.variation("fallback", {}) == "azure"
        new, _ = old.apply(
            flags={"fallback": _flag(flag({"none": "none", "azure": "azure"}, default="none"))},
            revision=3,
        )
        client._install(new)
        assert client.variation("fallback", {}) == "none"
        assert client.detail("fallback", {}).variant == "none"
        assert client.snapshot is new
        assert client.revision == 3
        assert list(client.keys()) == list(new)

    def test_install_then_back(self) -> None:
        """Installing the old snapshot again restores the old evaluations (a rollback)."""
        old = _snapshot()
        client = FlagClient(old)
        new, _ = old.apply(flags={"model": None}, revision=1)
        client._install(new)
        assert client.detail("model", {}).reason is Reason.ERROR
        client._install(old)
        assert client.variation("model", {}) == "gpt-4.1"


def _chained_flags(count: int) -> Document:
    """`count` flags in chains of ten: f-i requires f-(i-1) unless i is a multiple of 10."""
    flags: Document = {}
    for i in range(count):
        raw = flag({"on": f"v{i}", "off": "off"}, default="on")
        if i % 10:
            raw["requires"] = {f"f-{i - 1}": "on"}
        flags[f"f-{i}"] = raw
    return document(flags)


class TestLazyCompilation:
    """Compiling on first use is safe under threads and costs O(1) in the number of flags."""

    def test_threads_compiling_a_fresh_snapshot_never_raise(self) -> None:
        """8 threads evaluating not-yet-compiled flags of a fresh 20k-flag snapshot all get
        the right values and no exception (FAULTS.md S23)."""
        snapshot = Snapshot.build(load_flags(_chained_flags(20_000)))
        client = FlagClient(snapshot)
        keys = list(snapshot)
        errors: list[BaseException] = []
        wrong: list[str] = []
        start = threading.Barrier(8)

        def evaluate(offset: int) -> None:
            try:
                start.wait(timeout=30)
                # Each thread walks every key from its own offset, so threads collide.
                for index in range(len(keys)):
                    key = keys[(offset * 2_500 + index) % len(keys)]
                    expected = f"v{key[2:]}"
                    if index % 3 == 0:
                        found = client.variation(key, {}, "default")
                    elif index % 3 == 1:
                        found = client.detail(key, {}, "default").value
                    else:
                        found = snapshot.flags[key].outcome_for({}).value
                    if found != expected:
                        wrong.append(key)
            except BaseException as error:  # noqa: BLE001 - the test reports every failure
                errors.append(error)

        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as possible
        try:
            threads = [threading.Thread(target=evaluate, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
        finally:
            sys.setswitchinterval(interval)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        assert wrong == []
        assert len(snapshot.table) == 20_000

    def test_first_evaluation_does_not_walk_the_compiled_flags(self) -> None:
        """A first evaluation costs about the same beside 10,000 compiled flags as beside 100."""

        def first_use_s(compiled: int) -> float:
            snapshot = Snapshot.build(load_flags(_chained_flags(compiled + 1_000)))
            keys = list(snapshot)
            for key in keys[:compiled]:
                snapshot.entry(key)
            started = time.perf_counter()
            for key in keys[compiled:]:
                snapshot.entry(key)
            return (time.perf_counter() - started) / 1_000

        small = min(first_use_s(100) for _ in range(5))
        large = min(first_use_s(10_000) for _ in range(3))
        # Walking 10,000 compiled flags per first use made this ratio ~150; O(1) keeps it ~1
        # (the bound leaves room for a loaded machine).
        assert large < 10 * small, (large, small)
