"""The fast store decoder (cold start) accepts exactly what the general path accepts:
never a store the general path would refuse, and the same definitions when it accepts."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flagsync._bulk_load import decode_store_fast
from flagsync._codec import MalformedMessageError, decode_definition, encode_definition
from flagsync._validation import parse_flagset
from flagsync.errors import InvalidFlagError
from flagsync.model import Flag, FlagSet, Segment
from tests.unit.builders import DATA_DIR

Blobs = dict[str, bytes]


def canonical(kind: str, key: str, definition: Any) -> bytes:
    """The blob the publisher writes: the validated definition in canonical form when it
    converts, else the raw data as given (as a tampering operator could write it)."""
    model = Flag if kind == "flag" else Segment
    try:
        data = msgspec.to_builtins(msgspec.convert(definition, model))
    except msgspec.ValidationError:
        data = definition
    return encode_definition(kind, key, 1, data)


def general_path(flags: Blobs, segments: Blobs) -> FlagSet | None:
    """What the follower's general path makes of the blobs (None: refused)."""
    try:
        document = {
            "flags": {
                key: decode_definition(blob, "flag", key).definition for key, blob in flags.items()
            },
            "segments": {
                key: decode_definition(blob, "segment", key).definition
                for key, blob in segments.items()
            },
        }
        return parse_flagset(document)
    except (InvalidFlagError, MalformedMessageError):
        return None


def store_of(document: dict[str, Any]) -> tuple[Blobs, Blobs]:
    """Canonical blobs for a whole document."""
    flags = {key: canonical("flag", key, raw) for key, raw in document["flags"].items()}
    segments = {
        key: canonical("segment", key, raw) for key, raw in document.get("segments", {}).items()
    }
    return flags, segments


def valid_document() -> dict[str, Any]:
    """The design document's flags plus a prerequisite and a segment."""
    from flagsync.loader import read_file

    document: dict[str, Any] = read_file(DATA_DIR / "flags.yaml")  # type: ignore[assignment]
    return document


def _model(variants: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "variants": variants or {"current": "gpt-4o", "candidate": "gpt-4.1"},
        "off": "current",
        "default": "candidate",
        **fields,
    }


BAD_FLAGS: dict[str, dict[str, Any]] = {
    "weights-150": _model(default={"rollout": {"current": 100, "candidate": 50}}),
    "unknown-default": _model(default="gpt-5"),
    "unknown-off": _model(off="gpt-5"),
    "mixed-kinds": _model({"a": 1, "b": "x"}, off="a", default="a"),
    "nan-variant": _model({"a": float("nan")}, off="a", default="a"),
    "duplicate-rule-names": _model(
        rules=[{"name": "r", "serve": "current"}, {"name": "r", "serve": "current"}]
    ),
    "unknown-operator": _model(
        rules=[{"when": [{"attr": "a", "op": "bogus", "values": [1]}], "serve": "current"}]
    ),
    "bad-regex": _model(
        rules=[{"when": [{"attr": "a", "op": "matches", "values": ["("]}], "serve": "current"}]
    ),
    "unknown-segment": _model(
        rules=[{"when": [{"attr": "key", "op": "in_segment", "values": ["x"]}], "serve": "current"}]
    ),
    "unknown-prerequisite": _model(requires={"ghost": "on"}),
    "self-prerequisite": _model(requires={"model": "current"}),
    "long-description": _model(description="x" * 1_001),
    "too-large": _model({"a": "x" * 300_000}, off="a", default="a"),
    "unknown-field": _model(colour="blue"),
    "wrong-shape": {"variants": ["a"], "off": "a", "default": "a"},
}


class TestFastLoad:
    """`decode_store_fast` against the general path."""

    def test_a_valid_store_gives_the_same_definitions(self) -> None:
        """The design document decodes to exactly what the general path validates."""
        flags, segments = store_of(valid_document())
        fast = decode_store_fast(flags, segments)
        assert fast is not None
        assert fast == general_path(flags, segments)

    @pytest.mark.parametrize("name", list(BAD_FLAGS))
    def test_an_invalid_flag_takes_the_general_path(self, name: str) -> None:
        """A store with one invalid flag beside valid ones is left to the general path,
        which refuses it and says why."""
        document = valid_document()
        document["flags"]["model"] = BAD_FLAGS[name]
        flags, segments = store_of(document)
        assert decode_store_fast(flags, segments) is None
        assert general_path(flags, segments) is None

    def test_blobs_we_did_not_write_take_the_general_path(self) -> None:
        """Another key's blob, a segment's, a truncated one and non-canonical ones
        (a default spelled out, a repeated key) are never decoded here."""
        flags, segments = store_of(valid_document())
        first, second = list(flags)
        blob = flags[first]
        stored = msgspec.msgpack.decode(blob)
        stored["definition"] = {"enabled": True, **stored["definition"]}
        variants = {
            "another-key": flags[second],
            "segment-blob": segments["beta-testers"],
            "truncated": blob[:-4],
            "spelled-out": msgspec.msgpack.encode(stored),
            "repeated-key": _with_repeated_key(blob),
        }
        for name, bad in variants.items():
            assert decode_store_fast({**flags, first: bad}, segments) is None, name
        assert decode_store_fast(flags, {"beta-testers": flags[first]}) is None

    def test_an_unknown_prerequisite_variant_or_cycle_is_refused(self) -> None:
        """Relations between flags are checked too."""
        on_off = {"variants": {"on": True, "off": False}, "off": "off", "default": "on"}
        for requires in ({"a": "maybe"}, {"a": "on"}):
            document = {
                "flags": {
                    "a": {**on_off, "requires": {"b": "on"}},
                    "b": {**on_off, "requires": requires},
                }
            }
            flags, segments = store_of(document)
            assert decode_store_fast(flags, segments) is None
            assert general_path(flags, segments) is None


def _with_repeated_key(blob: bytes) -> bytes:
    """`blob` with its outer map's `kind` field written twice (msgspec keeps the last)."""
    assert blob[0] == 0x84  # a fixmap of the four StoredDefinition fields
    kind = msgspec.msgpack.encode("kind") + msgspec.msgpack.encode("flag")
    return bytes([0x85]) + kind + blob[1:]


VALID_CLAUSES = [
    {"attr": "plan", "op": "in", "values": ["paid", 3, True]},
    {"attr": "age", "op": "lt", "values": [18, 2.5]},
    {"attr": "email", "op": "matches", "values": ["@acme\\.com$"]},
    {"attr": "version", "op": "semver_gt", "values": ["1.2.3"]},
    {"attr": "key", "op": "in_segment", "values": ["beta"], "negate": True},
    {"attr": "email", "op": "ends_with", "values": ["@acme.com"]},
]
MUTATIONS: dict[str, Any] = {
    "weights": lambda f: f["rules"][0]["serve"]["rollout"].update(a=60),
    "weight-decimals": lambda f: f["rules"][0]["serve"]["rollout"].update(a=49.99991, b=50.00009),
    "weight-range": lambda f: f["rules"][0]["serve"]["rollout"].update(a=-50, b=150),
    "weight-unknown": lambda f: f["rules"][0]["serve"]["rollout"].update(c=0),
    "rollout-empty": lambda f: f["rules"][0]["serve"].update(rollout={}),
    "rollout-by": lambda f: f["rules"][0]["serve"].update(by=""),
    "rollout-salt": lambda f: f["rules"][0]["serve"].update(salt=""),
    "default": lambda f: f.update(default="c"),
    "off": lambda f: f.update(off="c"),
    "serve": lambda f: f["rules"][0].update(serve="c"),
    "rule-name": lambda f: f["rules"][0].update(name="Bad Name"),
    "rule-names-repeat": lambda f: f["rules"].append({"name": "r0", "serve": "a"}),
    "variant-name": lambda f: f["variants"].update({"Bad Name": f["variants"]["a"]}),
    "variant-kinds": lambda f: f["variants"].update(b=[1]),
    "variant-null": lambda f: f["variants"].update(b=None),
    "variant-bytes": lambda f: f["variants"].update(b=b"raw"),
    "variant-inf": lambda f: f["variants"].update(b=float("inf")),
    "variant-deep": lambda f: f["variants"].update(b=_nested(40)),
    "no-variants": lambda f: f.update(variants={}),
    "attr": lambda f: f["rules"][0]["when"].append({"attr": "", "op": "in", "values": ["x"]}),
    "op": lambda f: f["rules"][0]["when"].append({"attr": "a", "op": "near", "values": ["x"]}),
    "no-values": lambda f: f["rules"][0]["when"].append({"attr": "a", "op": "in", "values": []}),
    "regex": lambda f: f["rules"][0]["when"].append(
        {"attr": "a", "op": "matches", "values": ["("]}
    ),
    "semver": lambda f: f["rules"][0]["when"].append(
        {"attr": "a", "op": "semver_lt", "values": ["one"]}
    ),
    "number-operand": lambda f: f["rules"][0]["when"].append(
        {"attr": "a", "op": "gt", "values": [True]}
    ),
    "long-affix": lambda f: f["rules"][0]["when"].append(
        {"attr": "a", "op": "ends_with", "values": ["x" * 1_001]}
    ),
    "long-equality-operand-is-fine": lambda f: f["rules"][0]["when"].append(
        {"attr": "a", "op": "in", "values": ["x" * 1_001]}
    ),
    "nested-null-is-fine": lambda f: f["variants"].update(a={"t": [None, {"u": 1.5}]}, b={"t": []}),
    "nested-nan": lambda f: f["variants"].update(a={"t": [float("nan")]}, b={"t": []}),
    "equality-operand": lambda f: f["rules"][0]["when"].append(
        {"attr": "a", "op": "in", "values": [None]}
    ),
    "segment": lambda f: f["rules"][0]["when"].append(
        {"attr": "key", "op": "in_segment", "values": ["gamma"]}
    ),
    "requires-self": lambda f: f.update(requires={"f1": "on"}),
    "requires-unknown": lambda f: f.update(requires={"ghost": "on"}),
    "requires-variant": lambda f: f.update(requires={"f0": "maybe"}),
    "requires-empty": lambda f: f.update(requires={"f0": ""}),
    "description": lambda f: f.update(description="d" * 1_001),
    "unknown-field": lambda f: f.update(colour="blue"),
}


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def one_flaw(draw: st.DrawFn) -> dict[str, Any]:
    """A valid two-flag store (f1 requires f0), or the same with one flaw in f1."""
    values = draw(
        st.sampled_from([("x", "y"), (1, 2.5), (True, False), ({"t": 1}, {"t": 2}), ([1], [])])
    )
    clauses = draw(st.lists(st.sampled_from(VALID_CLAUSES), max_size=3))
    f1: dict[str, Any] = {
        "description": draw(st.sampled_from(["", "routing"])),
        "variants": {"a": values[0], "b": values[1]},
        "off": "a",
        "requires": {"f0": draw(st.sampled_from(["on", "off"]))},
        "rules": [
            {"name": "r0", "when": clauses, "serve": {"rollout": {"a": 50, "b": 50}}},
            {"when": clauses[:1], "serve": "b"},
        ],
        "default": draw(st.sampled_from(["a", {"rollout": {"b": 100}, "by": "org"}])),
    }
    flaw = draw(st.sampled_from([None, *MUTATIONS]))
    if flaw is not None:
        MUTATIONS[flaw](f1)
    on_off = {"variants": {"on": True, "off": False}, "off": "off", "default": "on"}
    return {"flags": {"f0": on_off, "f1": f1}, "segments": {"beta": {"keys": ["u1"]}}}


NAMES = st.sampled_from(["a", "b", "Bad Name", "on"])
VALUES = st.one_of(
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.5, float("inf"), "x", "", None, b"raw"]),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.sampled_from(["k", "l"]), st.integers(0, 2), max_size=2),
)
WEIGHTS = st.sampled_from([0, 50, 100, 12.5, 33.3333, -1, 150, float("nan")])
SERVES = st.one_of(
    NAMES,
    st.fixed_dictionaries(
        {"rollout": st.dictionaries(NAMES, WEIGHTS, max_size=3)},
        optional={"by": st.sampled_from(["key", ""]), "salt": st.sampled_from(["s", ""])},
    ),
)
CLAUSES = st.fixed_dictionaries(
    {
        "attr": st.sampled_from(["plan", ""]),
        "op": st.sampled_from(["in", "lt", "matches", "semver_gt", "in_segment", "bogus"]),
        "values": st.lists(
            st.sampled_from(["paid", 3, 2.5, None, "(", "1.2.3", "beta", "nope", True]),
            max_size=2,
        ),
    },
    optional={"negate": st.booleans()},
)
FLAGS = st.fixed_dictionaries(
    {
        "variants": st.dictionaries(NAMES, VALUES, max_size=3),
        "off": NAMES,
        "default": SERVES,
    },
    optional={
        "rules": st.lists(
            st.fixed_dictionaries(
                {"serve": SERVES},
                optional={
                    "name": st.sampled_from(["r", "Bad Name"]),
                    "when": st.lists(CLAUSES, max_size=2),
                },
            ),
            max_size=2,
        ),
        "requires": st.dictionaries(st.sampled_from(["f0", "f1", "ghost"]), NAMES, max_size=1),
        "enabled": st.booleans(),
    },
)


class TestSameVerdict:
    """Properties over random stores: valid ones, ones with one flaw, and junk."""

    @settings(max_examples=300, deadline=None)
    @given(document=one_flaw())
    def test_one_flaw_is_caught_like_the_general_path(self, document: dict[str, Any]) -> None:
        """A valid store decodes to the general path's definitions; any single flaw sends
        it to the general path, which refuses it."""
        blobs, segments = store_of(document)
        assert decode_store_fast(blobs, segments) == general_path(blobs, segments)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(flags=st.lists(FLAGS, min_size=1, max_size=3))
    def test_fast_path_accepts_only_what_the_general_path_accepts(
        self, flags: list[dict[str, Any]]
    ) -> None:
        """For canonical blobs the fast path gives the general path's verdict and, when
        both accept, the same definitions."""
        document = {
            "flags": {f"f{index}": raw for index, raw in enumerate(flags)},
            "segments": {"beta": {"keys": ["u1"]}},
        }
        blobs, segments = store_of(document)
        fast = decode_store_fast(blobs, segments)
        general = general_path(blobs, segments)
        assert fast == general
