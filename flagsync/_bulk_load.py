"""Decode and validate a whole stored namespace fast, for cold starts and resyncs.

The general path (`_decode_store` in the follower) decodes each blob to plain data and
validates the document with `parse_flagset`, collecting every problem with its path.
That is what an operator needs when something is wrong, and ~20 µs a flag when nothing
is. Here each blob is decoded straight into the model's Structs by msgspec (the shape
checks run in C), proved canonical by re-encoding (so no map repeats a key), and put
through the same relational checks without building their messages.

The verdict is per flag (`decode_flag_fast`): when everything is valid (the usual case)
`decode_store_fast` returns the whole set; any problem returns None and the caller
(`flagsync._sync.quarantine`) goes flag by flag, setting aside only the flags that fail
and asking the general path why. Validation is never weaker here: this path only ever
*accepts* a flag the general path would accept identically.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import Final

import msgspec

from flagsync._gc import gc_paused
from flagsync._prerequisites import cycle_issues
from flagsync._validation import check_segment
from flagsync._values import is_key, json_kind, operand_problem, value_problem
from flagsync.llm.validate import check_llm_flag
from flagsync.model import (
    MAX_CLAUSE_VALUES,
    MAX_CLAUSES,
    MAX_FLAG_BYTES,
    MAX_FLAGS,
    MAX_RULES,
    MAX_SEGMENTS,
    MAX_TEXT_CHARS,
    MAX_VALUE_DEPTH,
    MAX_VARIANTS,
    OPERATORS,
    ROLLOUT_DECIMALS,
    Flag,
    FlagSet,
    Rollout,
    Segment,
    Serve,
)

__all__ = [
    "decode_flag_fast",
    "decode_segment_fast",
    "decode_store_fast",
    "flag_problem",
    "prerequisites_hold",
]


class _StoredFlag(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`_codec.StoredDefinition` with the definition left encoded, to decode it once."""

    kind: str
    key: str
    version: int
    definition: msgspec.Raw


class _StoredSegment(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`_codec.StoredDefinition` with the definition typed, so msgspec validates its shape."""

    kind: str
    key: str
    version: int
    definition: Segment


_raw_flag_decoder: Final = msgspec.msgpack.Decoder(_StoredFlag)
_definition_decoder: Final = msgspec.msgpack.Decoder(Flag)
_segment_decoder: Final = msgspec.msgpack.Decoder(_StoredSegment)
_encoder: Final = msgspec.msgpack.Encoder()
_AFFIX_OPS: Final = frozenset({"starts_with", "ends_with", "contains"})
_TEXT_OPS: Final = _AFFIX_OPS | {"in", "not_in", "eq", "neq"}
"""Operators whose string operands `operand_problem` checks for length at most."""
_WEIGHT_SCALE: Final = 10**ROLLOUT_DECIMALS
_SIMPLE_KINDS: Final = {str: "string", bool: "boolean", int: "number"}


def decode_store_fast(
    flag_blobs: Mapping[str, bytes], segment_blobs: Mapping[str, bytes]
) -> FlagSet | None:
    """The validated definitions of a stored namespace, or None if anything needs the
    general path (a malformed blob, an invalid definition, or a blob we did not write)."""
    with gc_paused():  # thousands of small acyclic objects: see flagsync._gc
        return _decode_store(flag_blobs, segment_blobs)


def _decode_store(
    flag_blobs: Mapping[str, bytes], segment_blobs: Mapping[str, bytes]
) -> FlagSet | None:
    if len(flag_blobs) > MAX_FLAGS or len(segment_blobs) > MAX_SEGMENTS:
        return None
    segments: dict[str, Segment] = {}
    for key, blob in segment_blobs.items():
        segment = decode_segment_fast(key, blob)
        if segment is None:
            return None
        segments[key] = segment
    flags: dict[str, Flag] = {}
    # Fleets hold many flags with one definition (release toggles, one routing flag per
    # product surface): each distinct definition is decoded and checked once, and the
    # flags that share it share one immutable Flag.
    checked: dict[bytes, Flag] = {}
    for key, blob in flag_blobs.items():
        flag = decode_flag_fast(key, blob, segments, checked)
        if flag is None:
            return None
        flags[key] = flag
    if not prerequisites_hold(flags):
        return None
    return FlagSet(flags=flags, segments=segments)


def decode_flag_fast(
    key: str, blob: bytes, segments: Collection[str], checked: dict[bytes, Flag]
) -> Flag | None:
    """Flag `key` decoded from its stored `blob` and checked on its own (prerequisites
    are the caller's), or None if it needs the general path to say what is wrong.

    `checked` memoises definitions already decoded and checked against the same
    `segments`: fleets hold many flags with one definition (release toggles, one routing
    flag per product surface), and the flags that share it share one immutable Flag."""
    try:
        stored = _raw_flag_decoder.decode(blob)
        if stored.kind != "flag" or stored.key != key or _encoder.encode(stored) != blob:
            return None  # not canonical: see _decode_segment
        definition = bytes(stored.definition)
        flag = checked.get(definition)
        if flag is None:
            flag = _definition_decoder.decode(definition)
            if _encoder.encode(flag) != definition or flag_problem("", flag, segments, 0):
                return None
            checked[definition] = flag
    except (msgspec.DecodeError, RecursionError, UnicodeEncodeError):
        return None
    # What flag_problem checks that depends on the key or the blob, not the definition:
    if not is_key(key) or key in flag.requires or len(blob) > MAX_FLAG_BYTES:
        return None
    return flag


def decode_segment_fast(key: str, blob: bytes) -> Segment | None:
    """Segment `key` decoded from its stored `blob` and checked, or None (general path)."""
    stored = _decode_segment(blob, key)
    if stored is None or not is_key(key):
        return None
    segment = stored.definition
    if next(check_segment(key, segment), None) is not None:
        return None
    return segment


def _decode_segment(blob: bytes, key: str) -> _StoredSegment | None:
    try:
        stored = _segment_decoder.decode(blob)
        # Re-encoding to the very same bytes proves the blob canonical: no repeated map
        # key, no default spelled out, nothing another decoder could read differently.
        if stored.kind != "segment" or stored.key != key or _encoder.encode(stored) != blob:
            return None
    except (msgspec.DecodeError, RecursionError, UnicodeEncodeError):
        return None
    return stored


def flag_problem(key: str, flag: Flag, segment_names: Collection[str], stored_bytes: int) -> bool:
    """Whether `flag` (decoded from a canonical blob of `stored_bytes`) fails any check of
    `_validation.check_flag`; True may also mean "not sure": ask `check_flag` for why.
    (An empty `key` or `stored_bytes` of 0 leaves out the checks that depend on them.)

    Only for flags decoded from msgpack: that format cannot hold an integer outside the
    storable range (`_values.int_problem`) or a lone surrogate, so neither is
    looked for here."""
    if len(flag.description) > MAX_TEXT_CHARS:
        return True
    variants = flag.variants
    if not variants or len(variants) > MAX_VARIANTS:
        return True
    kind = None
    for name, value in variants.items():
        if not is_key(name):
            return True
        value_kind = _SIMPLE_KINDS.get(value.__class__)
        if value_kind is None:
            if not _plain_json(value, 1) and value_problem(value) is not None:
                return True
            value_kind = json_kind(value)
        elif value.__class__ is float and not math.isfinite(value):
            return True
        if kind is None:
            kind = value_kind
        elif kind != value_kind:
            return True
    if flag.off not in variants or _serve_problem(flag.default, variants):
        return True
    if flag.kind is not None and check_llm_flag("", flag):
        return True
    if len(flag.rules) > MAX_RULES:
        return True
    names: set[str] = set()
    for rule in flag.rules:
        if rule.name is not None:
            if not is_key(rule.name) or rule.name in names:
                return True
            names.add(rule.name)
        if len(rule.when) > MAX_CLAUSES or _serve_problem(rule.serve, variants):
            return True
        for clause in rule.when:
            op, values = clause.op, clause.values
            if not clause.attr or op not in OPERATORS:
                return True
            if not values or len(values) > MAX_CLAUSE_VALUES:
                return True
            for value in values:
                if value.__class__ is str and op in _TEXT_OPS:
                    if op in _AFFIX_OPS and len(value) > MAX_TEXT_CHARS:
                        return True
                elif operand_problem(op, value, segment_names) is not None:
                    return True
    for other, variant in flag.requires.items():
        if not is_key(other) or other == key or not isinstance(variant, str) or not variant:
            return True
    # The flag's own encoding is part of its stored blob, so never longer. (No lone
    # surrogate either: msgpack text is valid UTF-8, and the blob re-encoded.)
    return stored_bytes > MAX_FLAG_BYTES


def _plain_json(value: object, depth: int) -> bool:
    """A quick yes for a JSON object or array of plain values nested no deeper than the
    limit; False means "ask `_values.value_problem`"."""
    if depth > MAX_VALUE_DEPTH:
        return False
    if value.__class__ is dict:
        items: Iterable[object] = value.values()
        if not all(name.__class__ is str for name in value):
            return False
    elif value.__class__ is list:
        items = value
    else:
        return False
    for item in items:
        kind = item.__class__
        if kind is float:
            if not math.isfinite(item):  # type: ignore[arg-type]
                return False
        elif not (kind in _SIMPLE_KINDS or item is None or _plain_json(item, depth + 1)):
            return False
    return True


def _serve_problem(serve: Serve, variants: Collection[str]) -> bool:
    """`_validation._check_serve` would report something (a rollout's checks, inlined)."""
    if serve.__class__ is str:
        return serve not in variants
    if not isinstance(serve, Rollout) or not serve.rollout or not serve.by or serve.salt == "":
        return True
    total = 0
    for name, weight in serve.rollout.items():
        if name not in variants or not math.isfinite(weight) or not 0 <= weight <= 100:
            return True
        scaled = weight * _WEIGHT_SCALE
        if abs(scaled - round(scaled)) > 1e-6:
            return True
        total += round(scaled)
    return total != 100 * _WEIGHT_SCALE


def prerequisites_hold(flags: Mapping[str, Flag]) -> bool:
    """`_prerequisites.prerequisite_issues` finds nothing (cycles need flags that require)."""
    requiring = {key: flag for key, flag in flags.items() if flag.requires}
    for flag in requiring.values():
        for other, variant in flag.requires.items():
            required = flags.get(other)
            if required is None or variant not in required.variants:
                return False
    return not cycle_issues(requiring)
