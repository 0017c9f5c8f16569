"""Immutable snapshots of compiled flags, replaced whole so readers never lock.

A `Snapshot` never changes what it serves after it is built: applying a change builds
a new one and the client swaps its reference in one assignment. A reader holding the
old snapshot keeps a consistent view for as long as it needs.

Flags are compiled on first use (and memoised in the snapshot), so loading 10,000
flags costs validation only and a worker pays compilation just for the flags it
evaluates. `compile_all()` compiles everything up front for those who prefer to pay at
load time. Applying a change carries compiled flags over, except the changed ones and
the flags that depend on them.

Lazy compilation is safe under threads and costs readers nothing: a reader looks its
flag up in `entries` without a lock; only compiling takes the snapshot's lock, adds the
new flags one by one (each after its prerequisites) and never walks the flags already
compiled, so a first evaluation costs the same among 50 flags as among 50,000.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Protocol

from flagsync._gc import gc_paused
from flagsync._validation import cycle_issues
from flagsync.compile import CompiledFlag, TableEntry, compile_flag
from flagsync.errors import InvalidFlagError
from flagsync.model import Flag, FlagSet, Segment

__all__ = ["NO_QUARANTINE", "PendingDefinitions", "Quarantine", "Snapshot"]


@dataclass(frozen=True, slots=True)
class Quarantine:
    """What a worker set aside when it loaded the store (see `flagsync._sync.quarantine`):
    flags and segments it could not use, each with why, served at their last-known-good
    version or not at all (the caller's default, `PARSE_ERROR`)."""

    flags: Mapping[str, str]
    """Quarantined flag keys, each with the reason."""
    segments: Mapping[str, str]
    """Quarantined segment names, each with the reason."""
    awaited: frozenset[str]
    """Flag and segment names whose change may lift a quarantine (a change message that
    touches one is answered with a whole load, where the verdicts are made)."""

    def __bool__(self) -> bool:
        return bool(self.flags or self.segments)


NO_QUARANTINE: Final = Quarantine(MappingProxyType({}), MappingProxyType({}), frozenset())
"""A load that set nothing aside (the usual case)."""

_NO_VERSIONS: Final[Mapping[str, int]] = MappingProxyType({})


def _versions_after(
    before: Mapping[str, int], changed: Iterable[str], given: Mapping[str, int]
) -> Mapping[str, int]:
    """`before` with each changed flag's version replaced by the one given (or dropped)."""
    if not before and not given:
        return _NO_VERSIONS
    after = dict(before)
    for key in changed:
        after.pop(key, None)
    after.update(given)
    return after


class PendingDefinitions(Protocol):
    """A store's flags not decoded yet, for a deferred snapshot (implemented by
    `flagsync._sync.quarantine.DeferredLoad`)."""

    @property
    def keys(self) -> Collection[str]:
        """Every flag key of the store."""

    def flag(self, key: str) -> Flag | str:
        """Flag `key` decoded and checked on its own (not its prerequisites), or why not."""

    def settle(self) -> tuple[FlagSet, Quarantine]:
        """Every definition checked (as a load checks them) and what was set aside."""


class Snapshot:
    """A revision of flag definitions and their (lazily) compiled evaluators."""

    __slots__ = (
        "_compiled",
        "_definitions",
        "_flag_keys",
        "_lock",
        "_pending",
        "_rejected",
        "_segment_sets",
        "entries",
        "epoch",
        "quarantine",
        "revision",
        "versions",
    )

    revision: int
    """The store revision this snapshot reflects (0 for offline use)."""
    epoch: str
    """The store's epoch (its identity across restarts); empty offline."""
    quarantine: Quarantine
    """Flags and segments of the store this snapshot set aside (see `Quarantine`)."""
    versions: Mapping[str, int]
    """The store's own version of each flag with a `kind` (an llm flag's configs carry it,
    see `flagsync.llm`); empty offline and for other flags."""
    entries: dict[str, TableEntry]
    """Lookup table of the flags compiled so far, for the client's hot path. Only the
    snapshot adds to it (on first use of a flag, under its lock); never mutate it."""

    def __init__(
        self,
        definitions: FlagSet,
        compiled: dict[str, CompiledFlag],
        segment_sets: dict[str, frozenset[str]],
        revision: int,
        epoch: str,
        *,
        quarantine: Quarantine = NO_QUARANTINE,
        versions: Mapping[str, int] = _NO_VERSIONS,
    ) -> None:
        self.revision = revision
        self.epoch = epoch
        self.quarantine = quarantine
        self.versions = versions
        self._definitions: FlagSet | None = definitions
        self._flag_keys: Collection[str] = definitions.flags
        self._pending: PendingDefinitions | None = None
        self._rejected: dict[str, str] = {}
        """Flags of a deferred snapshot that failed their first-use check, with why."""
        self._compiled = compiled
        self.entries = {key: flag.entry for key, flag in compiled.items()}
        self._segment_sets = segment_sets
        self._lock = threading.Lock()

    @classmethod
    def build(
        cls,
        definitions: FlagSet,
        *,
        revision: int = 0,
        epoch: str = "",
        compile_all: bool = False,
        quarantine: Quarantine = NO_QUARANTINE,
        versions: Mapping[str, int] = _NO_VERSIONS,
    ) -> Snapshot:
        """A snapshot of a validated `FlagSet` (see `load_flags`); flags compile on first use
        unless `compile_all`. `quarantine`: what the load set aside; `versions`: see
        `Snapshot.versions`."""
        segment_sets = {name: frozenset(seg.keys) for name, seg in definitions.segments.items()}
        snapshot = cls(
            definitions, {}, segment_sets, revision, epoch, quarantine=quarantine, versions=versions
        )
        if compile_all:
            snapshot.compile_all()
        return snapshot

    @classmethod
    def deferred(
        cls,
        pending: PendingDefinitions,
        segments: Mapping[str, Segment],
        *,
        revision: int,
        epoch: str,
        versions: Mapping[str, int] = _NO_VERSIONS,
    ) -> Snapshot:
        """A snapshot of flags still encoded in `pending` (see the module doc), with the
        already checked `segments`; `versions`: see `Snapshot.versions`."""
        segment_sets = {name: frozenset(seg.keys) for name, seg in segments.items()}
        snapshot = cls(
            FlagSet(segments=dict(segments)), {}, segment_sets, revision, epoch, versions=versions
        )
        snapshot._definitions = None
        snapshot._flag_keys = pending.keys
        snapshot._pending = pending
        return snapshot

    @property
    def definitions(self) -> FlagSet:
        """The validated definitions the snapshot serves (a deferred snapshot decodes and
        checks them all now, once)."""
        definitions = self._definitions
        if definitions is None:
            pending = self._pending
            assert pending is not None  # set together with _definitions = None, by `deferred`
            definitions, quarantine = pending.settle()
            if quarantine:
                self.quarantine = quarantine
            self._flag_keys = definitions.flags  # a quarantined flag is no longer listed
            self._definitions = definitions
        return definitions

    @property
    def settled(self) -> bool:
        """False for a deferred snapshot whose definitions were not all checked yet."""
        return self._definitions is not None

    @classmethod
    def empty(cls) -> Snapshot:
        """A snapshot with no flags: every evaluation serves the caller's default."""
        return cls.build(FlagSet())

    @property
    def flags(self) -> Mapping[str, CompiledFlag]:
        """Compiled flags by key (read-only; looking one up compiles it if needed)."""
        return _CompiledFlags(self)

    @property
    def table(self) -> Mapping[str, TableEntry]:
        """Read-only view of `entries` (the flags compiled so far)."""
        return MappingProxyType(self.entries)

    def entry(self, key: str) -> TableEntry | None:
        """The lookup entry of flag `key`, compiling it (and its prerequisites) if needed."""
        entry = self.entries.get(key)
        if entry is not None or key not in self._flag_keys or key in self._rejected:
            return entry
        self._compile([key])
        return self.entries.get(key)

    def flag(self, key: str) -> CompiledFlag | None:
        """Compiled flag `key` (compiled now if needed), or None for an unknown key."""
        return None if self.entry(key) is None else self._compiled.get(key)

    def compiled_flags(self) -> list[CompiledFlag]:
        """The flags compiled so far (what a metrics reporter drains exposures from)."""
        with self._lock:
            return list(self._compiled.values())

    def compile_all(self) -> Snapshot:
        """Compile every flag now (e.g. at worker start, to keep first requests fast)."""
        definitions = self.definitions  # a deferred snapshot checks all at once: cheaper
        missing = [key for key in definitions.flags if key not in self._compiled]
        if missing:
            self._compile(missing)
        return self

    def apply(
        self,
        *,
        flags: Mapping[str, Flag | None] | None = None,
        segments: Mapping[str, Segment | None] | None = None,
        revision: int,
        epoch: str | None = None,
        versions: Mapping[str, int] | None = None,
    ) -> tuple[Snapshot, frozenset[str]]:
        """A new snapshot with flags/segments put (a value) or deleted (None); `versions`:
        the store versions of the put flags that have one (see `Snapshot.versions`).

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
        with self._lock:
            kept = {
                key: flag
                for key, flag in self._compiled.items()
                if key not in affected and key in new_flags
            }
        definitions = FlagSet(flags=new_flags, segments=new_segments)
        snapshot = Snapshot(
            definitions,
            kept,
            segment_sets,
            revision,
            self.epoch if epoch is None else epoch,
            quarantine=self.quarantine,  # a change touching a quarantined name goes by a whole load
            versions=_versions_after(self.versions, flag_changes.keys(), versions or {}),
        )
        return snapshot, frozenset(affected)

    def _compile(self, keys: list[str]) -> None:
        """Compile `keys` (and their prerequisites) that no other thread has compiled yet.

        Each flag is published in `entries` after its prerequisites, so a reader that
        finds a flag there finds a complete one; readers never wait for this lock.
        """
        with self._lock, gc_paused():
            pending = self._pending
            if pending is None or self._definitions is not None:
                _compile_into(
                    self._compiled, self.entries, self.definitions.flags, keys, self._segment_sets
                )
                return
            rejected = len(self._rejected)
            _compile_pending(
                self._compiled,
                self.entries,
                pending,
                keys,
                self._segment_sets,
                rejected=self._rejected,
            )
            if len(self._rejected) != rejected:
                quarantine = self.quarantine
                flags = {**quarantine.flags, **self._rejected}
                self.quarantine = Quarantine(
                    flags, quarantine.segments, quarantine.awaited | flags.keys()
                )

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
        return key in self._flag_keys

    def __len__(self) -> int:
        return len(self._flag_keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._flag_keys)

    def __repr__(self) -> str:
        return f"<Snapshot revision={self.revision} epoch={self.epoch!r} flags={len(self)}>"


class _CompiledFlags(Mapping[str, CompiledFlag]):
    """`Snapshot.flags`: a read-only mapping that compiles flags as they are looked up."""

    __slots__ = ("_snapshot",)

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def __getitem__(self, key: str) -> CompiledFlag:
        flag = self._snapshot.flag(key)
        if flag is None:
            raise KeyError(key)
        return flag

    def __iter__(self) -> Iterator[str]:
        return iter(self._snapshot)

    def __len__(self) -> int:
        return len(self._snapshot)


def _compile_into(
    compiled: dict[str, CompiledFlag],
    entries: dict[str, TableEntry],
    definitions: Mapping[str, Flag],
    keys: Any,
    segment_sets: Mapping[str, frozenset[str]],
) -> None:
    """Compile `keys` (and any prerequisite not compiled yet) into `compiled` and their
    lookup entries into `entries`, each after the flags it requires.

    An iterative depth-first walk: prerequisite chains can be long. Cycles were refused
    before we get here; the `visited` set would stop one anyway.
    """
    visited: set[str] = set()
    for start in keys:
        if start in visited or start in compiled or start not in definitions:
            continue
        visited.add(start)
        stack = [(start, iter(definitions[start].requires))]
        while stack:
            key, required = stack[-1]
            other = next(required, None)
            if other is None:
                stack.pop()
                flag = compile_flag(key, definitions[key], segment_sets, compiled)
                compiled[key] = flag
                entries[key] = flag.entry
            elif other in definitions and other not in compiled and other not in visited:
                visited.add(other)
                stack.append((other, iter(definitions[other].requires)))


def _compile_pending(
    compiled: dict[str, CompiledFlag],
    entries: dict[str, TableEntry],
    pending: PendingDefinitions,
    keys: Any,
    segment_sets: Mapping[str, frozenset[str]],
    *,
    rejected: dict[str, str],
) -> None:
    """`_compile_into` for a deferred snapshot: each flag is decoded and checked first,
    and its prerequisites with it. One that fails goes into `rejected` with why, and so
    does every flag that requires it, each flag in a prerequisite cycle, and a flag
    requiring a missing flag or variant: the verdicts of a load, flag by flag."""
    decoded: dict[str, Flag] = {}
    for start in keys:
        if start in compiled or start in rejected or start not in pending.keys:
            continue
        first = pending.flag(start)
        if isinstance(first, str):
            rejected[start] = first
            continue
        decoded[start] = first
        on_stack = {start}
        cyclic: dict[str, str] = {}
        stack = [(start, iter(first.requires))]
        while stack:
            key, required = stack[-1]
            other = next(required, None)
            if other is None:
                stack.pop()
                on_stack.discard(key)
                reason = cyclic.get(key) or _prerequisite_problem(key, decoded, compiled, rejected)
                if reason is not None:
                    rejected[key] = reason
                elif key not in compiled:
                    flag = compile_flag(key, decoded[key], segment_sets, compiled)
                    compiled[key] = flag
                    entries[key] = flag.entry
            elif other in on_stack:
                path = [name for name, _ in stack]
                cycle = path[path.index(other) :]
                text = " -> ".join([*cycle, other])
                for name in cycle:
                    cyclic.setdefault(name, f"flags.{name}.requires: prerequisite cycle: {text}")
            elif other in compiled or other in rejected or other in decoded:
                continue
            elif other in pending.keys:
                verdict = pending.flag(other)
                if isinstance(verdict, str):
                    rejected[other] = verdict
                    continue
                decoded[other] = verdict
                on_stack.add(other)
                stack.append((other, iter(verdict.requires)))


def _prerequisite_problem(
    key: str,
    decoded: Mapping[str, Flag],
    compiled: Mapping[str, CompiledFlag],
    rejected: Mapping[str, str],
) -> str | None:
    """Why flag `key` cannot be served for its prerequisites (all decided by now)."""
    for other, variant in decoded[key].requires.items():
        if other in rejected:
            return f"flags.{key}.requires.{other}: flag {other!r} is quarantined"
        required = decoded.get(other)
        if required is None and other in compiled:
            required = compiled[other].definition
        if required is None:
            return f"flags.{key}.requires.{other}: flag {other!r} is not in the store"
        if variant not in required.variants:
            return f"flags.{key}.requires.{other}: flag {other!r} has no variant {variant!r}"
    return None


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
