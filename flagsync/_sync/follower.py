"""The subscriber's decisions, free of I/O: what to apply, when to resync, what to report.

Both drivers (the daemon thread and the anyio task) feed this class what they read —
subscribe confirmations, channel messages, whole-store loads, revision checks, pongs,
connection errors — and perform the actions it asks for. Keeping the rules here means
the sync and async clients cannot drift apart.

The rules (DESIGN.md "Failure policy"): pub/sub is only a nudge, the versioned data in
the store is the truth. Revision r is applied only on top of r-1 of the same epoch;
a gap, an unknown epoch, a malformed message or a (re)subscribe confirmation triggers a
resync; a stored revision *lower* than ours means history was lost, also a resync. A
store with no data never replaces a last-known-good snapshot.

The follower owns the snapshot it built and hands each new one to the client through
its single `install` callback; it never asks the client back. Clocks are parameters so
the unit tests can drive time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import Any, Literal

from flagsync._codec import MalformedMessageError, Message, decode_definition
from flagsync._sync.integrity import Integrity
from flagsync._sync.llm_section import LLM_CHANGE_KIND, LLMSection, decode_section
from flagsync._sync.loads import apply_load
from flagsync._sync.logs import SafeLogger
from flagsync._sync.options import SyncOptions
from flagsync._sync.quarantine import references_hold
from flagsync._validation import parse_flag, parse_segment
from flagsync.errors import InvalidFlagError
from flagsync.model import Flag, LLMSettings, Segment
from flagsync.snapshot import Snapshot
from flagsync.status import ClientStatus, SyncState
from flagsync.store import (
    LoadedStore,
    StoreKeys,
    StoreState,
    decode_heartbeat,
    decode_message,
)

__all__ = ["Follower", "Listener"]

_log = SafeLogger("flagsync.subscriber")  # never raises: see flagsync._sync.logs

Listener = Callable[[int, frozenset[str]], None]
"""Called after every snapshot swap with the new revision and the keys that may have changed."""

MessageVerdict = Literal["applied", "ignored", "check"]
"""`check`: the message is doubtful (malformed, a gap, a digest or epoch that does not
follow from ours): answer it with a cheap check of (epoch, revision, digest), and load
the whole store only if that check disagrees."""
RevisionVerdict = Literal["confirmed", "resync", "missing", "refused"]
HeartbeatVerdict = Literal["confirmed", "heard", "check", "rejected"]
"""`confirmed`: the beacon states our (epoch, revision, digest, entries); `heard`: it
states an older revision (read before a change we applied; a real loss of history is
found by the periodic check); `check`: it states anything else; `rejected`: not a
heartbeat, or (signed mode) not validly signed: ignored, it proves nothing."""

MESSAGE_GRACE_S = 0.25
"""How long a periodic check that finds the store exactly one revision ahead (or a
replica behind us) waits for the message before loading, while beacon heartbeats flow:
a busy event loop reads the nudge after the check saw its revision (measured: 16-30 full
loads per change at 2,000 workers without it). A message truly lost is still found
sooner: the next heartbeat (<= 0.4 s after the write) states the revision, and a check
it asks for loads at once."""
POLLING_GRACE_S = 0.1
"""The same grace without heartbeats, where the check that found the revision is the
only detector: short, so a lost nudge is still served within 0.5 s (FAULTS S8)."""

MIN_RELOAD_INTERVAL_S = 0.1
"""Full loads asked for by checks are at most this frequent (a flood of doubtful messages
costs cheap checks, never a reload each); the next periodic check retries."""


def _wall_us() -> int:
    return time.time_ns() // 1000


class Follower:
    """The state of one client's subscription to one namespace."""

    def __init__(
        self,
        keys: StoreKeys,
        options: SyncOptions,
        install: Callable[[Snapshot], None],
        *,
        initial: Snapshot | None = None,
        persist: Callable[[Snapshot], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_us: Callable[[], int] = _wall_us,
    ) -> None:
        """`install` makes a snapshot current in the client; `persist` (optional) saves each
        swapped-in snapshot (the last-known-good file); `initial` is served until the first
        load (it is installed now)."""
        self.keys = keys
        self.options = options
        self._install = install
        self._persist = persist
        self._clock = clock
        self._wall_us = wall_us
        self.snapshot = initial if initial is not None else Snapshot.empty()
        if initial is not None:
            install(initial)
        self.ready = threading.Event()
        self._lock = threading.RLock()
        """Serialises snapshot replacements: the driver's applies and a forking thread's
        `watch_use` (see `presence`). Re-entrant: a listener runs under it and may fork."""
        self.listeners: list[Listener] = []
        self._blobs: tuple[dict[str, bytes], dict[str, bytes]] | None = None
        self._last_load = float("-inf")
        self._confirmed_at: float | None = None
        self.published_us = 0
        """Server µs at which the current revision was written (0: it came by a resync)."""
        self.applied_us = 0
        """Wall-clock µs at which the current snapshot was swapped in."""
        self.connected = False
        self.closed = False
        self.snapshot_missing = False
        self.last_error: str | None = None
        self._lost_permanent: bool | None = None
        """While disconnected: whether the logged loss was permanent (None: not logged)."""
        self._watching_use = False
        self._used = False
        self.counts = {
            "resyncs": 0,
            "reconnects": 0,
            "applied_changes": 0,
            "ignored_messages": 0,
            "malformed_messages": 0,
            "rejected_snapshots": 0,
            "state_checks": 0,
            "state_diverged": 0,
            "signature_rejected": 0,
        }
        self.integrity = Integrity(keys, options.verify_keys, self.counts, clock)
        """Digest and (signed mode) signature checks of what is applied."""
        self._last_malformed_log = float("-inf")
        self._announced = False
        """Whether this process logged `snapshot_loaded` yet (a forked child logs its own)."""
        self._quarantine_logged: dict[tuple[str, str], str] = {}
        """What `_report_quarantine` last logged: (kind, key) -> reason."""
        self._graced: tuple[int, str | None, str | None] | None = None
        """The store state a check last gave a grace to (`grace_s`)."""
        self.heartbeats_rejected = 0
        """Heartbeats ignored: malformed, or (signed mode) not validly signed."""
        self.llm = LLMSection()
        """The namespace's `llm:` section (prices) as of the snapshot: see `llm_section`."""

    # -- what the drivers report -------------------------------------------------

    def on_connected(self, *, reconnect: bool) -> None:
        """A session (command + pub/sub connection) is up."""
        if reconnect:
            self.counts["reconnects"] += 1
        if not self.connected and self.last_error is not None:
            _log.info("connection_restored", namespace=self.keys.namespace)
        self.connected = True
        self._lost_permanent = None

    def on_disconnected(self, error: BaseException, *, permanent: bool, hint: str = "") -> None:
        """A session ended with `error` (`hint`: see `store.connection_hint`); logged once
        per transition."""
        message = f"{type(error).__name__}: {error}{hint}"
        # A transition is losing the connection, or the failure turning from transient to
        # permanent (or back): retries failing with differently worded errors are not.
        if self.connected or permanent is not self._lost_permanent:
            log = _log.error if permanent else _log.warning
            log(
                "connection_lost",
                namespace=self.keys.namespace,
                error=message,
                permanent=permanent,
                serving_revision=self.snapshot.revision,
            )
        self.connected = False
        self.last_error = message
        self._lost_permanent = permanent

    def on_message(self, data: Any) -> MessageVerdict:
        """Handle one channel message: `applied`, `ignored` or `resync`."""
        with self._lock:
            return self._on_message(data)

    def _on_message(self, data: Any) -> MessageVerdict:
        try:
            message = decode_message(data)
        except MalformedMessageError as error:
            self._malformed(str(error))
            return "check"
        snapshot = self.snapshot
        if self.snapshot_missing:
            return "check"  # the store lost data we hold: only a whole load shows what is left
        if snapshot.epoch != message.epoch or not snapshot.epoch:
            return "check"
        if message.revision < snapshot.revision or (
            message.revision == snapshot.revision and self.integrity.is_duplicate(message)
        ):
            self.counts["ignored_messages"] += 1
            return "ignored"
        if message.revision != snapshot.revision + 1 or message.changes is None:
            return "check"  # also our own revision with another digest: one of us diverged
        try:
            flags, segments, versions, section = _decode_changes(
                message, snapshot.definitions.segments.keys()
            )
            updated, changed = snapshot.apply(
                flags=flags, segments=segments, revision=message.revision, versions=versions
            )
        except (MalformedMessageError, InvalidFlagError) as error:
            self._malformed(str(error))
            return "check"
        awaited = snapshot.quarantine.awaited
        if (awaited and not awaited.isdisjoint(flags.keys() | segments.keys())) or (
            not references_hold(updated, changed)
        ):
            # Per-flag verdicts are made by a whole load (see quarantine): the check finds
            # the store past our revision and loads it.
            return "check"
        if not self.integrity.message_fits(message, snapshot.revision):
            return "check"  # badly signed, or not the store's next state from ours
        self.integrity.message_applied(message)
        if section is not None:  # before the swap: a listener hearing of it sees the prices
            self.llm.changed(*section)
        self.confirm()  # first: a reader never sees the new revision reported STALE
        self._swap(updated, changed, message.published_us)
        self.counts["applied_changes"] += 1
        self._blobs = None  # the next load compares against the store afresh
        return "applied"

    def on_heartbeat(self, data: Any) -> HeartbeatVerdict:
        """Compare a beacon heartbeat with our state (see `HeartbeatVerdict`). It never
        applies anything: at most it makes the driver check sooner."""
        with self._lock:
            try:
                heartbeat = decode_heartbeat(data)
            except MalformedMessageError:
                self.heartbeats_rejected += 1
                return "rejected"
            if not self.integrity.heartbeat_fits(heartbeat):
                self.heartbeats_rejected += 1
                return "rejected"
            snapshot = self.snapshot
            if self.snapshot_missing or heartbeat.epoch != snapshot.epoch:
                return "check"
            if heartbeat.revision < snapshot.revision:
                return "heard"
            stated = StoreState(
                heartbeat.revision, heartbeat.epoch, heartbeat.digest, heartbeat.entries
            )
            if heartbeat.revision == snapshot.revision and self.integrity.same_digest(stated):
                self.confirm()
                return "confirmed"
            return "check"

    def grace_s(self, state: StoreState, grace_s: float = MESSAGE_GRACE_S) -> float:
        """How long to wait for the message before loading `state`, which a periodic
        check found: `grace_s` the first time it finds the store exactly one revision
        ahead or (replica lag) behind us in our epoch, else 0 (load now)."""
        current = self.snapshot
        if self._graced == state.place or grace_s <= 0:
            return 0.0
        near = state.revision == current.revision + 1 or state.revision < current.revision
        if state.epoch != current.epoch or not current.epoch or self.snapshot_missing or not near:
            return 0.0
        self._graced = state.place
        return grace_s

    def on_loaded(self, loaded: LoadedStore) -> bool:
        """Apply a whole-store read; False when it was refused (LKG kept, status says why)."""
        with self._lock:
            return apply_load(self, loaded)

    def on_revision(self, state: StoreState) -> RevisionVerdict:
        """Compare the store's (epoch, revision, digest) with ours: `confirmed`, `resync`
        (any difference) or `missing`."""
        current = self.snapshot
        revision, epoch = state.revision, state.epoch
        if self.integrity.refused(state):
            return "refused"  # its load was refused: reloading the same state changes nothing
        if epoch is None:
            if not self.snapshot_missing:
                _log.warning("snapshot_missing", namespace=self.keys.namespace)
            self.snapshot_missing = True
            return "missing" if (len(current) or current.epoch) else "confirmed"
        if (
            epoch != current.epoch
            or revision != current.revision
            or not self.integrity.same_digest(state)
            or self.snapshot_missing
        ):
            # also when data is back after "missing": a load clears the flag
            self.integrity.note_difference(state, current.epoch, current.revision)
            return "resync"
        self.confirm()
        return "confirmed"

    def note_check(self) -> None:
        """The driver read the store's state (for the status counters)."""
        self.counts["state_checks"] += 1

    def reload_delay_s(self) -> float:
        """How long a check-triggered full load must wait: loads are at most one per
        `MIN_RELOAD_INTERVAL_S`, whatever a flood of doubtful messages asks for."""
        return max(0.0, self._last_load + MIN_RELOAD_INTERVAL_S - self._clock())

    def confirm(self) -> None:
        """The store just confirmed that our snapshot is current."""
        self._confirmed_at = self._clock()

    # -- whether this process evaluates (see `presence`: a forking parent) ---------

    def watch_use(self) -> None:
        """Start noting whether anything evaluates from now on.

        The current snapshot is replaced by an uncompiled copy of itself (same
        definitions, revision and epoch): the client compiles a flag on its first
        evaluation, so a compiled flag in a snapshot installed since this call means the
        process evaluated. Safe from any thread (it waits for an apply in progress).
        """
        with self._lock:
            current = self.snapshot
            cold = Snapshot.build(
                current.definitions,
                revision=current.revision,
                epoch=current.epoch,
                quarantine=current.quarantine,
                versions=current.versions,
            )
            self.snapshot = cold
            self._install(cold)
            self._watching_use = True
            self._used = False

    def stop_watching_use(self) -> None:
        """Forget `watch_use` (a forked child counts from its start)."""
        self._watching_use = False
        self._used = False

    def used_since_watch(self) -> bool:
        """True once a flag was evaluated since `watch_use` (always True when not watching)."""
        if not self._watching_use:
            return True
        self._used = self._used or bool(self.snapshot.compiled_flags())
        return self._used

    # -- what the drivers and the client ask ---------------------------------------

    def seconds_since_sync(self) -> float | None:
        """Seconds since the last confirmation, or None if the store never confirmed."""
        confirmed = self._confirmed_at
        return None if confirmed is None else self._clock() - confirmed

    def is_stale(self) -> bool:
        """True when evaluations come from a snapshot unconfirmed past the grace period."""
        confirmed = self._confirmed_at
        return confirmed is None or self._clock() - confirmed > self.options.stale_after_s

    def is_healthy(self, max_stale_s: float | None = None) -> bool:
        """Synced, open, and confirmed within `max_stale_s` (default: the grace period)."""
        if not self.ready.is_set() or self.closed:
            return False
        since = self.seconds_since_sync()
        limit = self.options.stale_after_s if max_stale_s is None else max_stale_s
        return since is not None and since <= limit

    def state(self) -> SyncState:
        """The current `SyncState`."""
        if self.closed:
            return SyncState.CLOSED
        if not self.ready.is_set():
            return SyncState.CONNECTING
        return SyncState.STALE if self.is_stale() else SyncState.READY

    def status(self, worker_id: str | None = None) -> ClientStatus:
        """A `ClientStatus` report (`worker_id`: this process's id in the fleet view)."""
        snapshot = self.snapshot
        _ = snapshot.definitions  # a first load's verdict, now if the sync thread is not done
        since = self.seconds_since_sync()
        return ClientStatus(
            state=self.state(),
            connected=self.connected,
            namespace=self.keys.namespace,
            epoch=snapshot.epoch or None,
            revision=snapshot.revision,
            flags=len(snapshot),
            seconds_since_sync=None if since is None else round(since, 4),
            snapshot_missing=self.snapshot_missing,
            last_error=self.integrity.last_rejection or self.last_error,
            worker_id=worker_id,
            quarantined=dict(snapshot.quarantine.flags),
            quarantined_segments=dict(snapshot.quarantine.segments),
            presence_error=None,  # the presence writer's to report (see SyncHandle.status)
            exposures={},  # the client's to report (see FlagClient.status)
            **self.counts,
        )

    def reset_after_fork(self) -> None:
        """In a forked child: not connected, nothing compared yet; the snapshot stays."""
        self._lock = threading.RLock()  # the fork may have copied it held by the parent's driver
        self._announced = False  # the child logs its own first load, even an unchanged one
        self.connected = False
        self._blobs = None
        self._last_load = float("-inf")
        self.integrity.reset()
        self.stop_watching_use()

    # -- internals -------------------------------------------------------------

    def _swap(self, snapshot: Snapshot, changed: frozenset[str], published_us: int) -> None:
        if self._watching_use and not self._used:
            self._used = bool(self.snapshot.compiled_flags())  # before its compiled flags go
        self.snapshot = snapshot
        self._install(snapshot)
        self.published_us = published_us
        self.applied_us = self._wall_us()
        for listener in list(self.listeners):
            try:
                listener(snapshot.revision, changed)
            except Exception:  # noqa: BLE001 - a listener must not stop the subscriber
                _log.exception("listener_failed", listener=repr(listener))
        if self._persist is not None and snapshot.settled:  # else: once settled
            self._persist(snapshot)

    def _malformed(self, reason: str) -> None:
        self.counts["malformed_messages"] += 1
        now = self._clock()
        if now - self._last_malformed_log >= 1.0:  # rate-limited: garbage must not flood logs
            self._last_malformed_log = now
            _log.warning(
                "message_rejected",
                namespace=self.keys.namespace,
                reason=reason[:500],
                total=self.counts["malformed_messages"],
            )


def _decode_changes(
    message: Message, known_segments: Collection[str]
) -> tuple[
    dict[str, Flag | None],
    dict[str, Segment | None],
    dict[str, int],
    tuple[bytes, LLMSettings] | None,
]:
    """The flags and segments a message puts (or deletes: None), each validated, the
    store versions of the put flags with a `kind` (see `Snapshot.versions`), and the
    `llm:` section it stores, if any (its bytes and parsed form)."""
    flags: dict[str, Flag | None] = {}
    segments: dict[str, Segment | None] = {}
    versions: dict[str, int] = {}
    section: tuple[bytes, LLMSettings] | None = None
    changes = message.changes.changes if message.changes is not None else []
    segment_names = set(known_segments)
    segment_names.update(change.key for change in changes if change.kind == "segment")
    for change in changes:
        if change.kind == LLM_CHANGE_KIND:
            if change.blob is None:
                raise MalformedMessageError("llm section change without content")
            section = (change.blob, decode_section(change.blob))
            continue
        if change.kind not in ("flag", "segment"):
            raise MalformedMessageError(f"unknown change kind {change.kind!r}")
        if change.blob is None:
            (flags if change.kind == "flag" else segments)[change.key] = None
            continue
        stored = decode_definition(change.blob, change.kind, change.key)
        if change.kind == "flag":
            flag = flags[change.key] = parse_flag(change.key, stored.definition, segment_names)
            if flag.kind is not None:
                versions[change.key] = stored.version
        else:
            segments[change.key] = parse_segment(change.key, stored.definition)
    return flags, segments, versions, section
