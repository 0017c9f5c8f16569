"""Immutable snapshots of compiled flags, replaced whole so readers never lock.

A `Snapshot` is never changed after it is built: applying a change builds a new one
(recompiling only the changed flags and the flags that depend on them) and the client
swaps its reference in one assignment. A reader holding the old snapshot keeps a
consistent view for as long as it needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from flagsync._gc import gc_paused
from flagsync._validation import cycle_issues
from flagsync.compile import CompiledFlag, TableEntry, compile_flag
from flagsync.errors import InvalidFlagError
from flagsync.model import Flag, FlagSet, Segment

__all__ = ["Snapshot"]


class Snapshot:
    """A revision of compiled flags: the unit a client evaluates against."""

    __slots__ = ("_segment_sets", "definitions", "entries", "epoch", "flags", "revision", "table")

    revision: int
    """The store revision this snapshot reflects (0 for offline use)."""
    epoch: str
    """The store's epoch (its identity across restarts); empty offline."""
    definitions: FlagSet
    """The validated definitions the snapshot was compiled from."""
    flags: Mapping[str, CompiledFlag]
    """Compiled flags by key (read-only)."""
    table: Mapping[str, TableEntry]
    """The evaluation fast path's lookup table (read-only view of `entries`)."""
    entries: dict[str, TableEntry]
    """The same table as a plain dict, for the client's hot path; never mutate it."""

    def __init__(
        self,
        definitions: FlagSet,
        compiled: dict[str, CompiledFlag],
        segment_sets: dict[str, frozenset[str]],
        revision: int,
        epoch: str,
    ) -> None:
        self.revision = revision
        self.epoch = epoch
        self.definitions = definitions
        self.flags = MappingProxyType(compiled)
        self.entries = {key: flag.entry for key, flag in compiled.items()}
        self.table = MappingProxyType(self.entries)
        self._segment_sets = segment_sets

    @classmethod
    def build(cls, definitions: FlagSet, *, revision: int = 0, epoch: str = "") -> Snapshot:
        """Compile a validated `FlagSet` (see `load_flags`) into a snapshot."""
        segment_sets = {name: frozenset(seg.keys) for name, seg in definitions.segments.items()}
        compiled: dict[str, CompiledFlag] = {}
        with gc_paused():
            _compile_into(compiled, definitions.flags, definitions.flags.keys(), segment_sets)
        in_file_order = {key: compiled[key] for key in definitions.flags}
        return cls(definitions, in_file_order, segment_sets, revision, epoch)

    @classmethod
    def empty(cls) -> Snapshot:
        """A snapshot with no flags: every evaluation serves the caller's default."""
        return cls.build(FlagSet())

    def apply(
        self,
        *,
        flags: Mapping[str, Flag | None] | None = None,
        segments: Mapping[str, Segment | None] | None = None,
        revision: int,
        epoch: str | None = None,
    ) -> tuple[Snapshot, frozenset[str]]:
        """A new snapshot with flags/segments put (a value) or deleted (None).

        Returns it with the keys whose evaluation may have changed: the changed flags,
        flags using a changed segment, and every flag that requires one of those.
        Raises `InvalidFlagError` (and builds nothing) if the change creates a
        prerequisite cycle.
        """
        flag_changes = flags or {}
        segment_changes = segments or {}
        new_flags = dict(self.definitions.flags)
        for key, flag in flag_changes.items():
            if flag is None:
                new_flags.pop(key, None)
            else:
                new_flags[key] = flag
        new_segments = dict(self.definitions.segments)
        segment_sets = dict(self._segment_sets)
        for name, segment in segment_changes.items():
            if segment is None:
                new_segments.pop(name, None)
                segment_sets.pop(name, None)
            else:
                new_segments[name] = segment
                segment_sets[name] = frozenset(segment.keys)
        if any(flag is not None and flag.requires for flag in flag_changes.values()):
            _refuse_cycles(new_flags)

        touched = set(flag_changes)
        if segment_changes:
            touched.update(
                key for key, flag in new_flags.items() if _uses_segments(flag, segment_changes)
            )
        affected = _with_dependents(touched, new_flags)
        compiled = {key: flag for key, flag in self.flags.items() if key not in affected}
        with gc_paused():
            _compile_into(compiled, new_flags, affected, segment_sets)
        definitions = FlagSet(flags=new_flags, segments=new_segments)
        snapshot = Snapshot(
            definitions, compiled, segment_sets, revision, self.epoch if epoch is None else epoch
        )
        return snapshot, frozenset(affected)

    def changed_keys(self, other: Snapshot) -> frozenset[str]:
        """Keys whose definitions differ between this snapshot and `other`."""
        mine, theirs = self.definitions.flags, other.definitions.flags
        changed = {key for key in mine.keys() | theirs.keys() if mine.get(key) != theirs.get(key)}
        my_segments, their_segments = self.definitions.segments, other.definitions.segments
        changed_segments = {
            name
            for name in my_segments.keys() | their_segments.keys()
            if my_segments.get(name) != their_segments.get(name)
        }
        if changed_segments:
            changed.update(
                key for key, flag in theirs.items() if _uses_segments(flag, changed_segments)
            )
        return frozenset(changed)

    def __contains__(self, key: object) -> bool:
        return key in self.flags

    def __len__(self) -> int:
        return len(self.flags)

    def __iter__(self) -> Iterator[str]:
        return iter(self.flags)

    def __repr__(self) -> str:
        return f"<Snapshot revision={self.revision} epoch={self.epoch!r} flags={len(self.flags)}>"


def _compile_into(
    compiled: dict[str, CompiledFlag],
    definitions: Mapping[str, Flag],
    keys: Any,
    segment_sets: Mapping[str, frozenset[str]],
) -> None:
    """Compile `keys` into `compiled`, each after the prerequisites it requires.

    An iterative depth-first walk: prerequisite chains can be long, and cycles were
    refused before we get here (a cycle would only compile one member early).
    """
    pending = {key for key in keys if key in definitions}
    for start in list(pending):
        if start not in pending:
            continue
        pending.discard(start)
        stack = [(start, iter(definitions[start].requires))]
        while stack:
            key, required = stack[-1]
            other = next(required, None)
            if other is None:
                stack.pop()
                compiled[key] = compile_flag(key, definitions[key], segment_sets, compiled)
            elif other in pending:
                pending.discard(other)
                stack.append((other, iter(definitions[other].requires)))


def _with_dependents(keys: set[str], definitions: Mapping[str, Flag]) -> set[str]:
    """`keys` plus every flag that requires one of them, transitively."""
    if not keys:
        return set()
    required_by: dict[str, list[str]] = {}
    for key, flag in definitions.items():
        for other in flag.requires:
            required_by.setdefault(other, []).append(key)
    result = set(keys)
    queue = list(keys)
    while queue:
        for dependent in required_by.get(queue.pop(), ()):
            if dependent not in result:
                result.add(dependent)
                queue.append(dependent)
    return result


def _uses_segments(flag: Flag, names: Any) -> bool:
    return any(
        clause.op == "in_segment" and any(value in names for value in clause.values)
        for rule in flag.rules
        for clause in rule.when
    )


def _refuse_cycles(flags: Mapping[str, Flag]) -> None:
    issues = cycle_issues(flags)
    if issues:
        raise InvalidFlagError(issues)
