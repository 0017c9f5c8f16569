"""A worker's first load, deferred: ready once the store is read, each flag decoded and
checked on its first use, and the whole store checked right after; a flag that fails
is served and reported exactly as a whole load would have quarantined it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from flagsync import ErrorCode, FlagClient, Reason
from flagsync._codec import encode_definition
from flagsync._sync.quarantine import DeferredLoad, defer_load, load_definitions
from flagsync.model import FlagSet
from flagsync.snapshot import Snapshot
from flagsync.store import LoadedStore
from tests.logs import captured_logs, events
from tests.unit.test_follower import Harness, blob, flag_doc
from tests.unit.test_quarantine import WEIGHTS_150, requiring, store

BAD_BLOBS: dict[str, bytes] = {
    "garbage": b"\x00not msgpack",
    "truncated": blob("b", "y")[:-4],
    "weights-150": encode_definition("flag", "b", 1, WEIGHTS_150),
    "other-key": blob("c", "y"),
    "newer-field": encode_definition("flag", "b", 1, flag_doc("y") | {"ttl_s": 30}),
}
"""Flag `b`'s blob, each broken a way a whole load quarantines it for."""

PREREQUISITES: dict[str, bytes] = {
    "a": blob("a", "x"),
    "x": requiring("x", "y"),  # y is not in the store
    "z": requiring("z", "x"),  # requires a quarantined flag
    "v": requiring("v", "a", variant="nope"),  # a has no such variant
    "p": requiring("p", "q"),  # p and q: a cycle
    "q": requiring("q", "p"),
    "ok": requiring("ok", "a", variant="only"),  # a good chain
}


def deferred(loaded: LoadedStore) -> tuple[Snapshot, DeferredLoad]:
    """A deferred snapshot of `loaded`, as a worker's first load builds it."""
    pending = defer_load(loaded)
    assert pending is not None
    snapshot = Snapshot.deferred(pending, pending.segments, revision=loaded.revision, epoch="e")
    return snapshot, pending


def served(client: FlagClient, key: str) -> tuple[Any, Reason, ErrorCode | None]:
    """What `client` serves for `key` with the default "dflt"."""
    result = client.detail(key, {"user": "u1"}, "dflt")
    return result.value, result.reason, result.error_code


class TestFirstUse:
    """A deferred snapshot decodes and checks a flag on its first use only."""

    def test_a_flag_is_served_without_checking_the_others(self) -> None:
        """Evaluating one flag compiles that flag alone; the store stays unchecked."""
        snapshot, _ = deferred(store(3, {key: blob(key, key) for key in ("a", "b", "c")}))
        client = FlagClient(snapshot)
        assert (len(snapshot), "b" in snapshot, "d" in snapshot) == (3, True, False)
        assert served(client, "b") == ("b", Reason.STATIC, None)
        assert [flag.key for flag in snapshot.compiled_flags()] == ["b"]
        assert not snapshot.settled
        assert served(client, "d") == ("dflt", Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)

    @pytest.mark.parametrize("bad", BAD_BLOBS.values(), ids=BAD_BLOBS.keys())
    def test_a_bad_flag_is_quarantined_on_first_use_as_a_load_would(self, bad: bytes) -> None:
        """The bad flag serves the caller's default with PARSE_ERROR and the same reason a
        whole load gives; the good flag serves."""
        loaded = store(3, {"a": blob("a", "x"), "b": bad})
        snapshot, _ = deferred(loaded)
        client = FlagClient(snapshot)
        assert served(client, "b") == ("dflt", Reason.ERROR, ErrorCode.PARSE_ERROR)
        assert served(client, "a") == ("x", Reason.STATIC, None)
        _, whole = load_definitions(loaded, FlagSet())
        assert snapshot.quarantine.flags == whole.flags
        assert "b" in snapshot.quarantine.awaited
        assert not snapshot.settled

    @pytest.mark.parametrize("order", [sorted(PREREQUISITES), sorted(PREREQUISITES)[::-1]])
    def test_prerequisite_verdicts_match_a_whole_load(self, order: list[str]) -> None:
        """Dangling, quarantined, variant-less and cyclic prerequisites quarantine their
        flags on first use, in any order of use, as a whole load does."""
        loaded = store(3, PREREQUISITES)
        snapshot, _ = deferred(loaded)
        client = FlagClient(snapshot)
        values = {key: served(client, key)[0] for key in order}
        definitions, whole = load_definitions(loaded, FlagSet())
        assert values == {key: "r" if key == "ok" else "dflt" for key in PREREQUISITES} | {"a": "x"}
        assert snapshot.quarantine.flags.keys() == whole.flags.keys() == {"x", "z", "v", "p", "q"}
        for key in ("x", "z", "v"):
            assert snapshot.quarantine.flags[key] == whole.flags[key]
        for key in ("p", "q"):
            assert "prerequisite cycle" in snapshot.quarantine.flags[key]
        assert set(definitions.flags) == {"a", "ok"}

    def test_definitions_settle_to_the_whole_verdict(self) -> None:
        """Reading `definitions` checks everything once and adopts the whole verdict."""
        loaded = store(3, PREREQUISITES)
        snapshot, pending = deferred(loaded)
        definitions, quarantine = load_definitions(loaded, FlagSet())
        assert snapshot.definitions == definitions
        assert snapshot.settled
        assert snapshot.quarantine == quarantine
        assert pending.settle() is pending.settle()  # computed once
        assert snapshot.compile_all() is snapshot
        assert {flag.key for flag in snapshot.compiled_flags()} == {"a", "ok"}

    def test_threads_using_flags_at_once_agree(self) -> None:
        """Eight threads evaluating every flag at once on one deferred snapshot all see
        the same values and leave one consistent quarantine."""
        snapshot, _ = deferred(store(3, PREREQUISITES))
        client = FlagClient(snapshot)
        start = threading.Barrier(8)
        results: list[dict[str, Any]] = []

        def use() -> None:
            start.wait(5)
            results.append({key: served(client, key) for key in PREREQUISITES})

        threads = [threading.Thread(target=use) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert len(results) == 8
        assert all(result == results[0] for result in results)
        assert snapshot.quarantine.flags.keys() == {"x", "z", "v", "p", "q"}

    def test_stores_loaded_whole_are_not_deferred(self) -> None:
        """A segment that cannot be used is decided store-wide: no deferred load."""
        segment = encode_definition("segment", "beta", 1, {"keys": ["u1"]})
        assert defer_load(store(3, {"a": blob("a", "x")}, {"beta": segment})) is not None
        assert defer_load(store(3, {"a": blob("a", "x")}, {"beta": segment[:-3]})) is None


class TestFollowerFirstLoad:
    """The follower defers only a first load and settles it before `on_loaded` returns."""

    def test_a_bad_flag_is_settled_reported_and_persisted_without_it(self) -> None:
        """After the first load returns, the bad flag is out of the snapshot, in status,
        logged once, and the last-known-good file is written only once settled."""
        harness = Harness()
        loaded = store(3, {"a": blob("a", "x"), "b": BAD_BLOBS["weights-150"]})
        with captured_logs() as logs:
            assert harness.follower.on_loaded(loaded)
        snapshot = harness.follower.snapshot
        assert snapshot.settled
        assert list(snapshot) == ["a"]
        assert "weights sum to 150" in harness.follower.status().quarantined["b"]
        assert [entry["key"] for entry in events(logs, "flag_quarantined")] == ["b"]
        assert len(events(logs, "snapshot_loaded")) == 1
        assert harness.persisted == [3]  # the settled snapshot only
        assert [len(installed) for installed in harness.installed] == [2, 1]
        assert harness.swaps[-1] == (3, frozenset({"b"}))

    def test_a_good_first_load_swaps_once_and_is_settled(self) -> None:
        """The usual first load: one swap, settled in place, persisted once."""
        harness = Harness()
        assert harness.follower.on_loaded(store(3, {"a": blob("a", "x")}))
        assert len(harness.installed) == 1
        assert harness.installed[0].settled
        assert harness.persisted == [3]

    def test_a_worker_that_serves_flags_loads_whole(self) -> None:
        """With a version to keep (last-known-good), the load is judged whole, as before."""
        harness = Harness()
        assert harness.follower.on_loaded(store(3, {"a": blob("a", "x"), "b": blob("b", "y")}))
        assert harness.follower.on_loaded(store(4, {"a": blob("a", "x"), "b": b"\x00bad"}))
        snapshot = harness.installed[-1]
        assert snapshot.settled
        assert sorted(snapshot) == ["a", "b"]  # b: the version it served
        assert harness.follower.status().quarantined["b"].endswith("last-known-good version")
