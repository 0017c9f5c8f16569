"""Per-flag quarantine on a whole-store load, without a server: one flag a worker cannot
use is set aside (its last-known-good version kept, else the caller's default with
PARSE_ERROR), every other flag loads, and status and logs say which and why."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from flagsync import ErrorCode, FlagClient, Reason
from flagsync._codec import encode_definition
from flagsync._sync.quarantine import KEPT, load_definitions
from flagsync.model import FlagSet
from flagsync.store import LoadedStore
from tests.logs import captured_logs, events
from tests.unit.test_follower import EPOCH, Harness, blob, flag_doc, loaded, message


def store(
    revision: int, blobs: dict[str, bytes], segments: dict[str, bytes] | None = None
) -> LoadedStore:
    """A whole-store read holding exactly these flag blobs."""
    return LoadedStore(epoch=EPOCH, revision=revision, flags=blobs, segments=segments or {})


def requiring(key: str, other: str, variant: str = "only", value: str = "r") -> bytes:
    """A stored flag `key` that requires flag `other` to serve `variant`."""
    return encode_definition("flag", key, 1, flag_doc(value) | {"requires": {other: variant}})


WEIGHTS_150: dict[str, Any] = {
    "variants": {"on": True, "off": False},
    "off": "off",
    "default": {"rollout": {"on": 100, "off": 50}, "by": "user"},
}


def detail(snapshot_client: FlagClient, key: str) -> tuple[Any, Reason, ErrorCode | None]:
    """What the client serves for `key` with the default "dflt"."""
    result = snapshot_client.detail(key, {"user": "u1"}, "dflt")
    return result.value, result.reason, result.error_code


class TestVerdicts:
    """`load_definitions` judges each flag and segment alone."""

    @pytest.mark.parametrize(
        ("bad", "reason"),
        [
            (b"\x00not msgpack", "flag 'b': undecodable definition"),
            (blob("b", "y")[:-4], "flag 'b': undecodable definition"),
            (encode_definition("flag", "b", 1, WEIGHTS_150), "weights sum to 150, not 100"),
            (blob("c", "y"), "blob is for flag 'c'"),
            (
                encode_definition("flag", "b", 1, flag_doc("y") | {"ttl_s": 30}),
                "flags.b: object contains unknown field `ttl_s`",
            ),
            (
                encode_definition(
                    "flag",
                    "b",
                    1,
                    flag_doc("y")
                    | {
                        "rules": [
                            {
                                "when": [{"attr": "a", "op": "in_segment", "values": ["gone"]}],
                                "serve": "only",
                            }
                        ]
                    },
                ),
                "unknown segment 'gone'",
            ),
        ],
        ids=["garbage", "truncated", "weights-150", "other-key", "newer-field", "unknown-segment"],
    )
    def test_bad_flag_is_set_aside_alone(self, bad: bytes, reason: str) -> None:
        """Only the bad flag is missing from what loads; its reason names the fact."""
        definitions, quarantine = load_definitions(
            store(3, {"a": blob("a", "x"), "b": bad}), FlagSet()
        )
        assert set(definitions.flags) == {"a"}
        assert set(quarantine.flags) == {"b"}
        assert reason in quarantine.flags["b"], quarantine.flags["b"]
        assert "b" in quarantine.awaited

    def test_dangling_prerequisites_quarantine_the_chain(self) -> None:
        """x requires a deleted y, and z requires x: both are set aside, saying why."""
        blobs = {"a": blob("a", "x"), "x": requiring("x", "y"), "z": requiring("z", "x")}
        definitions, quarantine = load_definitions(store(3, blobs), FlagSet())
        assert set(definitions.flags) == {"a"}
        assert quarantine.flags == {
            "x": "flags.x.requires.y: flag 'y' is not in the store",
            "z": "flags.z.requires.x: flag 'x' is quarantined",
        }
        assert {"x", "y"} <= quarantine.awaited

    def test_missing_variant_and_cycles(self) -> None:
        """A prerequisite variant that does not exist, and a cycle, quarantine their flags."""
        blobs = {
            "a": blob("a", "x"),
            "v": requiring("v", "a", variant="nope"),
            "p": requiring("p", "q"),
            "q": requiring("q", "p"),
        }
        definitions, quarantine = load_definitions(store(3, blobs), FlagSet())
        assert set(definitions.flags) == {"a"}
        assert quarantine.flags["v"] == "flags.v.requires.a: flag 'a' has no variant 'nope'"
        assert "prerequisite cycle" in quarantine.flags["p"]
        assert "prerequisite cycle" in quarantine.flags["q"]

    def test_bad_segment_keeps_its_previous_version(self) -> None:
        """A truncated segment blob keeps the segment the worker had, so its flags load."""
        segment = encode_definition("segment", "beta", 1, {"keys": ["u1"]})
        rule = {"when": [{"attr": "user", "op": "in_segment", "values": ["beta"]}], "serve": "only"}
        user = encode_definition("flag", "u", 1, flag_doc("y") | {"rules": [rule]})
        first, _ = load_definitions(store(3, {"u": user}, {"beta": segment}), FlagSet())
        definitions, quarantine = load_definitions(
            store(4, {"u": user}, {"beta": segment[:-3]}), first
        )
        assert set(definitions.flags) == {"u"}
        assert definitions.segments == first.segments
        assert quarantine.segments["beta"].endswith(KEPT)
        assert quarantine.flags == {}

    def test_valid_store_sets_nothing_aside(self) -> None:
        """The usual store takes the fast path whole: no quarantine at all."""
        _, quarantine = load_definitions(store(3, {"a": blob("a", "x")}), FlagSet())
        assert not quarantine


class TestFollowerQuarantine:
    """The follower serves what it can, keeps what it had, and reports the rest."""

    def test_lkg_version_kept_and_listed(self) -> None:
        """A worker that served b keeps serving it after b's blob goes bad; a loads anew."""
        harness = Harness()
        assert harness.follower.on_loaded(loaded(5, {"a": "x", "b": "y"}))
        with captured_logs() as logs:
            assert harness.follower.on_loaded(store(6, {"a": blob("a", "x2"), "b": b"\x00"}))
        assert harness.values() == {"a": "x2", "b": "y"}
        status = harness.follower.status()
        assert set(status.quarantined) == {"b"}
        assert status.quarantined["b"].endswith(KEPT)
        assert (status.revision, status.rejected_snapshots, status.last_error) == (6, 0, None)
        (logged,) = events(logs, "flag_quarantined")
        assert (logged["key"], logged["revision"], logged["log_level"]) == ("b", 6, "warning")

    def test_fresh_worker_serves_the_default_with_parse_error(self) -> None:
        """Without a previous version the flag is absent: the caller's default, PARSE_ERROR;
        an unknown key stays FLAG_NOT_FOUND."""
        harness = Harness()
        assert harness.follower.on_loaded(store(6, {"a": blob("a", "x"), "b": b"\x00"}))
        client = FlagClient(harness.follower.snapshot)
        assert detail(client, "a") == ("x", Reason.STATIC, None)
        assert detail(client, "b") == ("dflt", Reason.ERROR, ErrorCode.PARSE_ERROR)
        assert detail(client, "nope") == ("dflt", Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)
        assert client.string_value("b", {}, "dflt") == "dflt"

    def test_logged_once_per_reason_and_when_lifted(self) -> None:
        """The same verdict on every resync is logged once; a new reason and the repair
        are logged as they happen."""
        harness = Harness()
        with captured_logs() as logs:
            for revision in (6, 7):
                harness.follower.on_loaded(store(revision, {"a": blob("a", "x"), "b": b"\x00"}))
            harness.follower.on_loaded(store(8, {"a": blob("a", "x"), "b": blob("b", "y")[:-2]}))
            harness.follower.on_loaded(store(9, {"a": blob("a", "x"), "b": blob("b", "y")}))
        assert [event["revision"] for event in events(logs, "flag_quarantined")] == [6, 8]
        (lifted,) = events(logs, "flag_quarantine_lifted")
        assert (lifted["key"], lifted["revision"]) == ("b", 9)
        assert harness.follower.status().quarantined == {}
        assert harness.values() == {"a": "x", "b": "y"}

    def test_message_touching_a_quarantined_name_is_checked(self) -> None:
        """A change to a quarantined flag or to a missing prerequisite is judged by a whole
        load; an unrelated change applies and the quarantine stays listed."""
        harness = Harness()
        blobs = {"a": blob("a", "x"), "x": requiring("x", "y")}
        assert harness.follower.on_loaded(store(5, blobs))
        # "check": the cheap check finds the store past our revision and loads it whole.
        assert harness.follower.on_message(message(6, {"y": "fixed"}, base=dict(blobs))) == "check"
        assert harness.follower.on_message(message(6, {"x": "fixed"}, base=dict(blobs))) == "check"
        assert harness.follower.on_message(message(6, {"a": "x2"}, base=dict(blobs))) == "applied"
        assert set(harness.follower.status().quarantined) == {"x"}
        assert harness.follower.on_loaded(store(7, blobs | {"y": blob("y", "z")}))
        assert harness.follower.status().quarantined == {}
        assert set(harness.follower.snapshot) == {"a", "x", "y"}

    def test_message_breaking_a_reference_is_checked(self) -> None:
        """Deleting a flag another requires is not applied from the message: the whole load
        quarantines the dependent, as every fresh worker would."""
        harness = Harness()
        blobs = {"y": blob("y", "z"), "x": requiring("x", "y")}
        assert harness.follower.on_loaded(store(5, blobs))
        assert harness.follower.on_message(message(6, {"y": None}, base=dict(blobs))) == "check"
        assert harness.follower.on_loaded(store(6, {"x": blobs["x"]}))
        assert set(harness.follower.status().quarantined) == {"x"}
        assert set(harness.follower.snapshot) == set()

    def test_status_is_plain_data(self) -> None:
        """The quarantine report encodes like the rest of the status (for /status pages)."""
        harness = Harness()
        harness.follower.on_loaded(store(6, {"b": b"\x00"}))
        encoded = msgspec.json.decode(msgspec.json.encode(harness.follower.status()))
        assert set(encoded["quarantined"]) == {"b"}
