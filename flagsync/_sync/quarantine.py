"""Per-flag verdicts on a whole-store load: one bad flag never costs a worker the others.

A store can hold a flag no worker can use: an operator's raw write (weights summing to
150, a map repeating a key, a truncated blob), a prerequisite deleted by a raced write,
a field from a newer publisher, a pattern this worker's regex engine refuses. Refusing
the whole snapshot for it would serve defaults for every flag on each worker started
afterwards while older workers serve the rest: a split fleet. So each flag (and
segment) is judged alone. One that fails is *quarantined*: the worker keeps the version
it already serves, if it has one, and otherwise serves the caller's default with
`PARSE_ERROR`; everything else loads; the reasons go to `status()` and the logs.

Cost: the usual store (everything valid) takes `decode_store_fast` whole, as before.
Only when that finds a problem do we go flag by flag — still the fast per-flag check,
the general validator running only for the flags that fail it, to say why.

A worker's first load (nothing served yet, so no last-known-good version to keep) is
deferred: `defer_load` checks the segments and the limits and leaves the flags encoded;
the snapshot decodes and checks each flag on its first use (`DeferredLoad.flag`, the
same per-flag checks), and the sync thread checks them all right after the client is
ready (`DeferredLoad.settle`, this module's whole-store verdict). So a worker is ready
after reading the store, whatever it holds; a bad flag is quarantined on its first use,
and reported (status, `flag_quarantined` log) at the latest once the whole check ran,
~20-70 ms after ready at 10,000 flags.

Every worker judges the same bytes the same way, so workers without a last-known-good
version agree with each other; a worker that has one keeps serving it (the same
value the rest of the fleet served before the bad write).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Collection, Mapping
from typing import Final

from flagsync._bulk_load import decode_flag_fast, decode_segment_fast, decode_store_fast
from flagsync._codec import MalformedMessageError, decode_definition
from flagsync._gc import gc_paused
from flagsync._validation import check_flag, find_cycles, parse_flag, parse_segment
from flagsync.errors import InvalidFlagError, ValidationIssue
from flagsync.model import MAX_FLAGS, MAX_SEGMENTS, Flag, FlagSet, Segment
from flagsync.snapshot import NO_QUARANTINE, Quarantine, Snapshot
from flagsync.store import LoadedStore

__all__ = [
    "DeferredLoad",
    "defer_load",
    "kind_versions",
    "load_definitions",
    "references_hold",
    "stored_versions",
]

_settling = threading.Lock()
"""Held while a `DeferredLoad` checks its store. A child forked meanwhile gets a new one
(the thread holding the parent's does not exist there) and checks the store itself."""


def _new_lock_in_child() -> None:
    global _settling  # noqa: PLW0603 - the parent's lock is not the child's to release
    _settling = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)

KEPT: str = "; serving the last-known-good version"
"""Suffix of a reason when the worker keeps the version it had."""


def load_definitions(loaded: LoadedStore, previous: FlagSet) -> tuple[FlagSet, Quarantine]:
    """What a worker can serve from a whole-store read, and what it set aside.

    `previous` is what the worker serves now (its last-known-good versions). Raises
    `InvalidFlagError` only for a problem of the store as a whole (more flags or
    segments than the limits allow), which no single quarantine could solve.
    """
    fast = decode_store_fast(loaded.flags, loaded.segments)
    if fast is not None:
        return fast, NO_QUARANTINE
    if len(loaded.flags) > MAX_FLAGS:
        raise InvalidFlagError.single("flags", f"{len(loaded.flags)} entries, over {MAX_FLAGS}")
    if len(loaded.segments) > MAX_SEGMENTS:
        raise InvalidFlagError.single(
            "segments", f"{len(loaded.segments)} entries, over {MAX_SEGMENTS}"
        )
    with gc_paused():
        return _sort_out(loaded.flags, loaded.segments, previous)


def stored_versions(
    blobs: Mapping[str, bytes],
    definitions: FlagSet,
    quarantine: Quarantine,
    previous: Snapshot,
) -> dict[str, int]:
    """The store version of each served flag with a `kind` (see `Snapshot.versions`): read
    from its blob, or — for a quarantined flag served at its last-known-good version —
    the version `previous` served. Only those flags' blobs are decoded again (few)."""
    versions: dict[str, int] = {}
    for key, flag in definitions.flags.items():
        if flag.kind is None:
            continue
        if key in quarantine.flags:
            kept = previous.versions.get(key)
            if kept is not None:
                versions[key] = kept
            continue
        try:
            versions[key] = decode_definition(blobs[key], "flag", key).version
        except (KeyError, MalformedMessageError):  # pragma: no cover - it decoded just now
            continue
    return versions


_KIND_KEY: Final = b"\xa4kind"
"""The msgpack string `kind`: once in every stored blob (its own field), twice when the
definition has a `kind` of its own."""


def kind_versions(blobs: Mapping[str, bytes]) -> dict[str, int]:
    """`stored_versions` for a deferred first load, before any flag is decoded: only the
    blobs that can hold a definition `kind` (a byte count, no decode) are decoded."""
    versions: dict[str, int] = {}
    for key, blob in blobs.items():
        if blob.count(_KIND_KEY) < 2:
            continue
        try:
            stored = decode_definition(blob, "flag", key)
        except MalformedMessageError:
            continue  # its first use quarantines it
        if isinstance(stored.definition, dict) and stored.definition.get("kind") is not None:
            versions[key] = stored.version
    return versions


class DeferredLoad:
    """A first load's flags, decoded and checked one by one as they are first used
    (see the module doc); implements `flagsync.snapshot.PendingDefinitions`."""

    __slots__ = ("_loaded", "_segments", "_verdict")

    def __init__(self, loaded: LoadedStore, segments: Mapping[str, Segment]) -> None:
        self._loaded = loaded
        self._segments = segments
        self._verdict: tuple[FlagSet, Quarantine] | None = None

    @property
    def keys(self) -> Collection[str]:
        """Every flag key of the store."""
        return self._loaded.flags

    @property
    def segments(self) -> Mapping[str, Segment]:
        """The store's segments (all checked by `defer_load`)."""
        return self._segments

    def flag(self, key: str) -> Flag | str:
        """Flag `key` decoded and checked on its own, or why it is quarantined (in the
        words of the general validator, as a whole load would say it)."""
        blob = self._loaded.flags[key]
        flag = decode_flag_fast(key, blob, self._segments, {})
        return _flag_verdict(key, blob, self._segments) if flag is None else flag

    def settle(self) -> tuple[FlagSet, Quarantine]:
        """Every flag checked, as `load_definitions` checks a store; computed once (a
        second thread asking meanwhile waits for it)."""
        verdict = self._verdict
        if verdict is None:
            with _settling:
                verdict = self._verdict
                if verdict is None:
                    verdict = self._verdict = load_definitions(self._loaded, FlagSet())
        return verdict


def defer_load(loaded: LoadedStore) -> DeferredLoad | None:
    """A `DeferredLoad` of `loaded`, or None when it must be loaded whole now: a store
    over the limits, or a segment that cannot be used (both rare and both decided
    store-wide)."""
    if len(loaded.flags) > MAX_FLAGS or len(loaded.segments) > MAX_SEGMENTS:
        return None
    segments: dict[str, Segment] = {}
    for key, blob in loaded.segments.items():
        segment = decode_segment_fast(key, blob)
        if segment is None:
            return None
        segments[key] = segment
    return DeferredLoad(loaded, segments)


def references_hold(snapshot: Snapshot, keys: Collection[str]) -> bool:
    """Whether the flags `keys` of `snapshot` find every flag, variant and segment they
    name: a change that breaks one is left to a whole load, where it is quarantined the
    same way on every worker."""
    flags, segments = snapshot.definitions.flags, snapshot.definitions.segments
    for key in keys:
        flag = flags.get(key)
        if flag is None:
            continue
        for other, variant in flag.requires.items():
            required = flags.get(other)
            if required is None or variant not in required.variants:
                return False
        for rule in flag.rules:
            for clause in rule.when:
                if clause.op == "in_segment" and any(
                    value not in segments for value in clause.values
                ):
                    return False
    return True


def _sort_out(
    flag_blobs: Mapping[str, bytes], segment_blobs: Mapping[str, bytes], previous: FlagSet
) -> tuple[FlagSet, Quarantine]:
    segments: dict[str, Segment] = {}
    segment_reasons: dict[str, str] = {}
    for key, blob in segment_blobs.items():
        segment = decode_segment_fast(key, blob)
        if segment is None:
            segment_verdict = _segment_verdict(key, blob)
            if isinstance(segment_verdict, str):
                segment = previous.segments.get(key)
                segment_reasons[key] = segment_verdict + (KEPT if segment is not None else "")
                if segment is None:
                    continue
            else:
                segment = segment_verdict
        segments[key] = segment

    flags: dict[str, Flag] = {}
    reasons: dict[str, str] = {}
    checked: dict[bytes, Flag] = {}
    for key, blob in flag_blobs.items():
        flag = decode_flag_fast(key, blob, segments, checked)
        if flag is None:
            verdict = _flag_verdict(key, blob, segments)
            if isinstance(verdict, str):
                reasons[key] = verdict
                continue
            flag = verdict
        flags[key] = flag
    for key in reasons:  # the version this worker serves, if it still holds up
        kept_flag = previous.flags.get(key)
        if kept_flag is not None and not check_flag(key, kept_flag, segments):
            flags[key] = kept_flag
    awaited = _drop_broken_references(flags, reasons)
    for key in reasons:
        if key in flags:
            reasons[key] += KEPT
    awaited.update(reasons)
    awaited.update(segment_reasons)
    quarantine = Quarantine(reasons, segment_reasons, frozenset(awaited))
    return FlagSet(flags=flags, segments=segments), quarantine


def _drop_broken_references(flags: dict[str, Flag], reasons: dict[str, str]) -> set[str]:
    """Quarantine (remove from `flags`, reason in `reasons`) every flag whose prerequisite
    is missing, lacks the variant named, or forms a cycle, until none is left: dropping
    one can break the flags that require it. Returns the flag keys they wait for."""
    awaited: set[str] = set()
    while True:
        broken: dict[str, str] = {}
        for key, flag in flags.items():
            for other, variant in flag.requires.items():
                required = flags.get(other)
                if required is None:
                    why = "quarantined" if other in reasons else "not in the store"
                    broken[key] = f"flags.{key}.requires.{other}: flag {other!r} is {why}"
                    awaited.add(other)
                    break
                if variant not in required.variants:
                    broken[key] = (
                        f"flags.{key}.requires.{other}: flag {other!r} has no variant {variant!r}"
                    )
                    awaited.add(other)
                    break
        if not broken:
            requiring = {key: flag.requires.keys() for key, flag in flags.items() if flag.requires}
            for cycle in find_cycles(requiring):
                text = " -> ".join([*cycle, cycle[0]])
                for key in cycle:
                    broken.setdefault(key, f"flags.{key}.requires: prerequisite cycle: {text}")
        if not broken:
            return awaited
        for key, reason in broken.items():
            flags.pop(key, None)
            previous = reasons.get(key)
            reasons[key] = reason if previous is None else f"{previous}; {reason}"


def _flag_verdict(key: str, blob: bytes, segments: Collection[str]) -> Flag | str:
    """The flag as the general validator reads it, or why it cannot be used."""
    try:
        stored = decode_definition(blob, "flag", key)
        return parse_flag(key, stored.definition, segments)
    except MalformedMessageError as error:
        return str(error)
    except InvalidFlagError as error:
        return _issues(error.issues)


def _segment_verdict(key: str, blob: bytes) -> Segment | str:
    try:
        stored = decode_definition(blob, "segment", key)
        return parse_segment(key, stored.definition)
    except MalformedMessageError as error:
        return str(error)
    except InvalidFlagError as error:
        return _issues(error.issues)


def _issues(issues: Collection[ValidationIssue]) -> str:
    return "; ".join(str(issue) for issue in issues)
