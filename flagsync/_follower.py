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
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import structlog

from flagsync._bulk_load import decode_store_fast
from flagsync._codec import (
    MalformedMessageError,
    Message,
    WorkerInfo,
    decode_definition,
    decode_message,
    encode_presence,
)
from flagsync._validation import parse_flag, parse_flagset, parse_segment
from flagsync.errors import InvalidFlagError
from flagsync.model import Flag, FlagSet, Segment
from flagsync.snapshot import Snapshot
from flagsync.status import ClientStatus, SyncState
from flagsync.store import LoadedStore, StoreKeys

_log = structlog.get_logger("flagsync.subscriber")

Listener = Callable[[int, frozenset[str]], None]
"""Called after every snapshot swap with the new revision and the keys that may have changed."""


@dataclass(frozen=True)
class SyncOptions:
    """Timing of a subscriber; every interval is explicit (seconds)."""

    check_interval_s: float = 0.25
    """How often the store's revision is compared with ours (bounds a lost message's delay)."""
    stale_after_s: float = 1.0
    """Grace period: past it without a confirmed sync, the client reports STALE."""
    ping_interval_s: float = 0.5
    """How often the pub/sub link is pinged."""
    liveness_timeout_s: float = 1.5
    """No pong or message for this long: the pub/sub link is dead (frozen server, half-open)."""
    socket_timeout_s: float = 1.0
    connect_timeout_s: float = 1.0
    heartbeat_interval_s: float = 1.0
    ack_delay_s: float = 0.01
    """Delay between applying a revision and heartbeating it (see `SessionTimers.changed`)."""
    presence_ttl_s: float = 5.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0
    backoff_max_permanent_s: float = 30.0
    """Backoff cap for errors a retry will not fix soon (bad credentials, ACL denials)."""
    lkg_path: Path | None = None
    """Optional last-known-good file: written after each sync, read at start."""


class _LastKnownGood(msgspec.Struct):
    epoch: str | None
    revision: int
    definitions: dict[str, Any]


_lkg_encoder = msgspec.msgpack.Encoder()
_lkg_decoder = msgspec.msgpack.Decoder(_LastKnownGood)


class Follower:
    """The state of one client's subscription to one namespace."""

    def __init__(
        self,
        install: Callable[[Snapshot], None],
        current: Callable[[], Snapshot],
        keys: StoreKeys,
        options: SyncOptions,
        worker_id: str | None = None,
    ) -> None:
        self._install = install
        self._current = current
        self.keys = keys
        self.options = options
        self.worker_id = worker_id or _new_worker_id()
        self.host = socket.gethostname()
        self.started_ms = _now_ms()
        self.ready = threading.Event()
        self.listeners: list[Listener] = []
        self._blobs: tuple[dict[str, bytes], dict[str, bytes]] | None = None
        self._confirmed_at: float | None = None
        self._published_us = 0
        self._applied_us = 0
        self.connected = False
        self.closed = False
        self.snapshot_missing = False
        self.last_error: str | None = None
        self._lost_permanent: bool | None = None
        """While disconnected: whether the logged loss was permanent (None: not logged)."""
        self.counts = {
            "resyncs": 0,
            "reconnects": 0,
            "applied_changes": 0,
            "ignored_messages": 0,
            "malformed_messages": 0,
            "rejected_snapshots": 0,
        }
        self._last_malformed_log = 0.0
        if options.lkg_path is not None:
            self._load_lkg(options.lkg_path)

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
                serving_revision=self._current().revision,
            )
        self.connected = False
        self.last_error = message
        self._lost_permanent = permanent

    def on_message(self, data: Any) -> str:
        """Handle one channel message: `applied`, `ignored` or `resync`."""
        try:
            message = decode_message(data)
        except MalformedMessageError as error:
            self._malformed(str(error))
            return "resync"
        snapshot = self._current()
        if self.snapshot_missing:
            return "resync"  # the store lost data we hold: only a whole load shows what is left
        if snapshot.epoch != message.epoch or not snapshot.epoch:
            return "resync"
        if message.revision <= snapshot.revision:
            self.counts["ignored_messages"] += 1
            return "ignored"
        if message.revision != snapshot.revision + 1 or message.changes is None:
            return "resync"
        try:
            flags, segments = _decode_changes(message, snapshot.definitions.segments.keys())
            updated, changed = snapshot.apply(
                flags=flags, segments=segments, revision=message.revision
            )
        except (MalformedMessageError, InvalidFlagError) as error:
            self._malformed(str(error))
            return "resync"
        self._swap(updated, changed, message.published_us)
        self.counts["applied_changes"] += 1
        self._blobs = None  # the next load compares against the store afresh
        self.confirm()
        return "applied"

    def on_loaded(self, loaded: LoadedStore) -> bool:
        """Apply a whole-store read; False when it was refused (LKG kept, status says why)."""
        self.counts["resyncs"] += 1
        current = self._current()
        # Every write bumps the revision with its data, so flags that are gone while the
        # revision is not past ours were deleted behind the protocol's back (`DEL` of the
        # flags hash): as missing as after a FLUSHALL, never "all flags off".
        vanished = (
            not loaded.flags
            and len(current) > 0
            and loaded.epoch == current.epoch
            and loaded.revision <= current.revision
        )
        if loaded.epoch is None or vanished:
            was_missing, self.snapshot_missing = self.snapshot_missing, True
            if len(current) or current.epoch:
                if not was_missing:
                    _log.warning(
                        "snapshot_missing", namespace=self.keys.namespace, kept=current.revision
                    )
                return False
            self._mark_ready()  # a namespace nobody has written to yet: nothing to serve
            self.confirm()
            return True
        self.snapshot_missing = False
        blobs = (loaded.flags, loaded.segments)
        if (
            self._blobs == blobs
            and current.epoch == loaded.epoch
            and current.revision == loaded.revision
        ):
            self.confirm()
            self._mark_ready()
            return True
        try:
            definitions = _decode_store(loaded)
        except (MalformedMessageError, InvalidFlagError) as error:
            self.counts["rejected_snapshots"] += 1
            self.last_error = f"snapshot rejected: {error}"
            _log.error(
                "snapshot_rejected",
                namespace=self.keys.namespace,
                revision=loaded.revision,
                error=str(error),
                kept_revision=current.revision,
            )
            return False
        snapshot = Snapshot.build(definitions, revision=loaded.revision, epoch=loaded.epoch)
        self._blobs = blobs
        self._swap(snapshot, current.changed_keys(snapshot), 0)
        if self.last_error and self.last_error.startswith("snapshot rejected"):
            self.last_error = None
        _log.info(
            "snapshot_loaded",
            namespace=self.keys.namespace,
            epoch=loaded.epoch,
            revision=loaded.revision,
            flags=len(snapshot),
        )
        self.confirm()
        self._mark_ready()
        return True

    def on_revision(self, revision: int, epoch: str | None) -> str:
        """Compare the store's (epoch, revision) with ours: `confirmed`, `resync` or `missing`."""
        current = self._current()
        if epoch is None:
            if not self.snapshot_missing:
                _log.warning("snapshot_missing", namespace=self.keys.namespace)
            self.snapshot_missing = True
            return "missing" if (len(current) or current.epoch) else "confirmed"
        if epoch != current.epoch or revision != current.revision or self.snapshot_missing:
            return "resync"  # also when data is back after "missing": a load clears the flag
        self.confirm()
        return "confirmed"

    def confirm(self) -> None:
        """The store just confirmed that our snapshot is current."""
        self._confirmed_at = time.monotonic()

    # -- what the drivers and the client ask ---------------------------------------

    def seconds_since_sync(self) -> float | None:
        """Seconds since the last confirmation, or None if the store never confirmed."""
        confirmed = self._confirmed_at
        return None if confirmed is None else time.monotonic() - confirmed

    def is_stale(self) -> bool:
        """True when evaluations come from a snapshot unconfirmed past the grace period."""
        confirmed = self._confirmed_at
        return confirmed is None or time.monotonic() - confirmed > self.options.stale_after_s

    def presence(self) -> bytes:
        """This worker's presence record, as stored under its heartbeat key."""
        snapshot = self._current()
        return encode_presence(
            WorkerInfo(
                id=self.worker_id,
                host=self.host,
                pid=os.getpid(),
                namespace=self.keys.namespace,
                epoch=snapshot.epoch,
                revision=snapshot.revision,
                applied_us=self._applied_us,
                published_us=self._published_us,
                started_ms=self.started_ms,
                heartbeat_ms=_now_ms(),
                state=str(self.state()),
            )
        )

    def state(self) -> SyncState:
        """The current `SyncState`."""
        if self.closed:
            return SyncState.CLOSED
        if not self.ready.is_set():
            return SyncState.CONNECTING
        return SyncState.STALE if self.is_stale() else SyncState.READY

    def status(self) -> ClientStatus:
        """A `ClientStatus` report."""
        snapshot = self._current()
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
            last_error=self.last_error,
            worker_id=self.worker_id,
            **self.counts,
        )

    def reset_after_fork(self) -> None:
        """In a forked child: a new identity; the snapshot stays (it is immutable)."""
        self.worker_id = _new_worker_id()
        self.started_ms = _now_ms()
        self.connected = False
        self._blobs = None

    # -- internals -------------------------------------------------------------

    def _swap(self, snapshot: Snapshot, changed: frozenset[str], published_us: int) -> None:
        self._install(snapshot)
        self._published_us = published_us
        self._applied_us = time.time_ns() // 1000
        for listener in list(self.listeners):
            try:
                listener(snapshot.revision, changed)
            except Exception:  # noqa: BLE001 - a listener must not stop the subscriber
                _log.exception("listener_failed", listener=repr(listener))
        if self.options.lkg_path is not None:
            self._save_lkg(self.options.lkg_path, snapshot)

    def _mark_ready(self) -> None:
        if not self.ready.is_set():
            self.ready.set()

    def _malformed(self, reason: str) -> None:
        self.counts["malformed_messages"] += 1
        now = time.monotonic()
        if now - self._last_malformed_log >= 1.0:  # rate-limited: garbage must not flood logs
            self._last_malformed_log = now
            _log.warning(
                "message_rejected",
                namespace=self.keys.namespace,
                reason=reason[:500],
                total=self.counts["malformed_messages"],
            )

    def _save_lkg(self, path: Path, snapshot: Snapshot) -> None:
        record = _LastKnownGood(
            snapshot.epoch or None, snapshot.revision, snapshot.definitions.to_builtins()
        )
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_bytes(_lkg_encoder.encode(record))
            temporary.replace(path)
        except OSError as error:
            _log.warning("lkg_write_failed", path=str(path), error=str(error))

    def _load_lkg(self, path: Path) -> None:
        try:
            record = _lkg_decoder.decode(path.read_bytes())
            definitions = parse_flagset(record.definitions)
        except FileNotFoundError:
            return
        except (OSError, msgspec.DecodeError, InvalidFlagError) as error:
            _log.warning("lkg_unreadable", path=str(path), error=str(error)[:500])
            return
        self._install(
            Snapshot.build(definitions, revision=record.revision, epoch=record.epoch or "")
        )
        _log.info(
            "lkg_loaded", path=str(path), revision=record.revision, flags=len(definitions.flags)
        )


def _decode_changes(
    message: Message, known_segments: Collection[str]
) -> tuple[dict[str, Flag | None], dict[str, Segment | None]]:
    """The flags and segments a message puts (or deletes: None), each validated."""
    flags: dict[str, Flag | None] = {}
    segments: dict[str, Segment | None] = {}
    changes = message.changes.changes if message.changes is not None else []
    segment_names = set(known_segments)
    segment_names.update(change.key for change in changes if change.kind == "segment")
    for change in changes:
        if change.kind not in ("flag", "segment"):
            raise MalformedMessageError(f"unknown change kind {change.kind!r}")
        if change.blob is None:
            (flags if change.kind == "flag" else segments)[change.key] = None
            continue
        stored = decode_definition(change.blob, change.kind, change.key)
        if change.kind == "flag":
            flags[change.key] = parse_flag(change.key, stored.definition, segment_names)
        else:
            segments[change.key] = parse_segment(change.key, stored.definition)
    return flags, segments


def _decode_store(loaded: LoadedStore) -> FlagSet:
    """Decode and validate a whole store as one document (all or nothing)."""
    fast = decode_store_fast(loaded.flags, loaded.segments)  # None: something to report
    if fast is not None:
        return fast
    document: dict[str, dict[str, Any]] = {"flags": {}, "segments": {}}
    for kind, blobs, section in (
        ("flag", loaded.flags, "flags"),
        ("segment", loaded.segments, "segments"),
    ):
        for key, blob in blobs.items():
            document[section][key] = decode_definition(blob, kind, key).definition
    return parse_flagset(document)


def _new_worker_id() -> str:
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class LivenessError(ConnectionError):
    """The pub/sub link stopped answering pings within the liveness deadline."""


class SessionTimers:
    """When a driver's session should check the revision, heartbeat and ping.

    Shared by the thread and the async driver so both keep the same deadlines. Timing
    is by the monotonic clock, never by how long a read happened to wait (redis-py's
    `get_message` can return early, e.g. on a pong).
    """

    def __init__(self, options: SyncOptions) -> None:
        now = time.monotonic()
        self.options = options
        self.next_check = now + options.check_interval_s
        self.next_heartbeat = now
        self.next_ping = now + options.ping_interval_s
        self.last_heard = now

    def changed(self) -> None:
        """A new revision was applied: report it soon, but not at once.

        Every worker receives a change at the same moment; an immediate heartbeat
        would compete for the CPU with sibling processes still applying it. The
        applied time is recorded at the swap, so the delay never shows in latencies.
        """
        self.next_heartbeat = min(self.next_heartbeat, time.monotonic() + self.options.ack_delay_s)

    def wait_s(self) -> float:
        """How long the next read may wait before something is due."""
        return max(
            0.0, min(self.next_check, self.next_heartbeat, self.next_ping) - time.monotonic()
        )

    def heard(self) -> None:
        """Anything arrived on the channel (a message, a confirmation, a pong)."""
        self.last_heard = time.monotonic()

    def heartbeat_due(self) -> bool:
        return time.monotonic() >= self.next_heartbeat

    def heartbeat_sent(self) -> None:
        self.next_heartbeat = time.monotonic() + self.options.heartbeat_interval_s

    def check_due(self) -> bool:
        return time.monotonic() >= self.next_check

    def checked(self) -> None:
        self.next_check = time.monotonic() + self.options.check_interval_s

    def ping_due(self) -> bool:
        """True when a ping should be sent; raises `LivenessError` when the link is dead."""
        now = time.monotonic()
        if now < self.next_ping:
            return False
        silent_s = now - self.last_heard
        if silent_s > self.options.liveness_timeout_s:
            raise LivenessError(f"no pong or message for {silent_s:.2f}s on the change channel")
        self.next_ping = now + self.options.ping_interval_s
        return True
