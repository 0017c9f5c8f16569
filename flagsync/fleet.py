"""The fleet view: the change log, the live workers, and how far a revision has spread.

Read-only, so it can run with a worker's (read) credentials. `Publisher` keeps its
`history()`, `workers()` and `wait_propagated()` as delegations to one of these.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

import msgspec
import structlog

from flagsync._cluster import scan_keys
from flagsync._codec import MalformedMessageError, WorkerInfo, decode_definition, decode_presence
from flagsync._connection import connect, resolve_url, store_errors
from flagsync.diff import FieldChange, definition_changes
from flagsync.store import StoreKeys, parse_revision, revision_command

__all__ = [
    "Fleet",
    "HistoryEntry",
    "PropagationReport",
    "UnreadablePresence",
    "WorkerAck",
    "WorkerInfo",
]

_LOGGED_KEYS = 5
"""How many unconfirmed presence keys a wait names in its one warning (the report has all)."""

_log = structlog.get_logger("flagsync.fleet")
_LOG_BATCH: Final = 500
_PUBLISHED_SEARCH: Final = 2000
_FALLBACK_POLL_S: Final = 0.5
_ACK_BATCH: Final = 10_000
_SERVER_TICK_S: Final = 0.1
_TAIL_POLL_S: Final = 0.01


class HistoryEntry(msgspec.Struct, frozen=True):
    """One change-log entry: who changed what, when, and how."""

    revision: int
    epoch: str
    time_us: int
    """Server time of the write, µs since the Unix epoch."""
    actor: str
    reason: str
    kind: str
    key: str
    op: str
    version: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @property
    def time(self) -> datetime:
        """When the change was written (UTC)."""
        return datetime.fromtimestamp(self.time_us / 1e6, tz=UTC)

    @property
    def fields(self) -> list[FieldChange]:
        """The field-level difference between `before` and `after`."""
        return definition_changes(self.kind, self.before, self.after)


class WorkerAck(msgspec.Struct, frozen=True):
    """A worker that applied the awaited revision, and how long after publication."""

    worker: WorkerInfo
    latency_ms: float | None
    """applied - published (server clock vs. worker clock; None if unknown)."""


class UnreadablePresence(msgspec.Struct, frozen=True):
    """A presence record that cannot be trusted: it proves nothing about its worker."""

    key: str
    """The presence key (`{fs:<ns>}:worker:<id>`)."""
    problem: str
    """Why: not a presence record, a record naming another worker, not a string, or
    deleted while the wait ran."""


class PropagationReport(msgspec.Struct, frozen=True):
    """Which live workers applied a revision, and how fast (`wait_propagated`)."""

    revision: int
    epoch: str | None
    reached: list[WorkerAck]
    missing: list[WorkerInfo]
    waited_ms: float
    unconfirmed: list[UnreadablePresence] = msgspec.field(default_factory=list)
    """Presence records that could not be read or vanished during the wait: the workers
    behind them are not confirmed, so the report is not complete."""

    @property
    def complete(self) -> bool:
        """True when every live worker applied the revision and every presence record
        was readable throughout: an unreadable record is never counted as a success."""
        return not self.missing and not self.unconfirmed

    @property
    def max_latency_ms(self) -> float | None:
        """The slowest known publish-to-apply latency among the workers reached."""
        known = [ack.latency_ms for ack in self.reached if ack.latency_ms is not None]
        return max(known) if known else None


class Fleet:
    """Reads the change log and the presence records of one namespace.

    `Fleet(url, namespace)` opens its own connection (close it, or use `with`); a
    `Publisher` hands its own connection and the publish times of its writes instead.
    """

    def __init__(
        self,
        url: str | None = None,
        namespace: str = "default",
        *,
        timeout_s: float = 5.0,
        client: Any = None,
        published_us: Mapping[tuple[str, int], int] | None = None,
    ) -> None:
        self.url = resolve_url(url)
        self.keys = StoreKeys(namespace)
        self._owns_client = client is None
        # redis-py types replies as unions over `decode_responses`; ours are always bytes.
        self._redis: Any = (
            connect(self.url, timeout_s=timeout_s, connect_timeout_s=timeout_s)
            if client is None
            else client
        )
        self._published_us: Mapping[tuple[str, int], int] = published_us or {}

    def revision(self) -> tuple[str | None, int]:
        """The store's (epoch, revision); (None, 0) when nothing was ever written."""
        with store_errors(self.url):
            reply = self._redis.execute_command(*revision_command(self.keys))
        revision, epoch = parse_revision(reply)
        return epoch, revision

    def history(self, key: str | None = None, limit: int = 100) -> list[HistoryEntry]:
        """The newest `limit` change-log entries (for `key` only, if given), newest first."""
        entries: list[HistoryEntry] = []
        last_id = "+"
        with store_errors(self.url):
            while len(entries) < limit:
                batch = self._redis.xrevrange(self.keys.log, max=last_id, min="-", count=_LOG_BATCH)
                if last_id != "+":
                    batch = batch[1:]  # the boundary entry was in the previous batch
                if not batch:
                    break
                wanted = None if key is None else key.encode()
                for _entry_id, fields in batch:
                    if wanted is not None and fields.get(b"key") != wanted:
                        continue  # not decoded: one flag's history scans the whole log
                    entries.append(_history_entry(fields))
                    if len(entries) >= limit:
                        break
                last_id = batch[-1][0].decode()
        return entries

    def workers(self) -> list[WorkerInfo]:
        """Every live worker (heartbeat not expired) of the namespace, by id; unreadable
        records are logged and left out (`presence()` lists them)."""
        return self.presence()[0]

    def presence(self) -> tuple[list[WorkerInfo], list[UnreadablePresence]]:
        """The readable presence records, by id, and the ones that cannot be trusted."""
        records = self._read(self._presence_keys())
        workers = sorted(
            (record for record in records.values() if isinstance(record, WorkerInfo)),
            key=lambda worker: worker.id,
        )
        unreadable = [r for r in records.values() if isinstance(r, UnreadablePresence)]
        for record in unreadable:
            _log.warning("presence_unreadable", key=record.key, problem=record.problem)
        return workers, unreadable

    def wait_propagated(self, revision: int, timeout: float = 5.0) -> PropagationReport:
        """Wait until every live worker has applied `revision` (or `timeout` seconds pass).

        Live workers are those with a heartbeat when the wait starts. Each reached
        worker carries its publish-to-apply latency when it applied exactly this
        revision from a change message.

        Cost O(changed workers), not O(fleet) per poll: the presence records are read
        once; then the wait blocks on the ack stream (`{fs:<ns>}:acks`, XREAD from just
        before the write) and re-reads only the records of workers that acked. An ack
        only says where to look: a worker counts once its own record says so (an ack is
        no proof, any worker may append one). Records of workers still missing are read
        again every `_FALLBACK_POLL_S` (workers older than the ack stream, a refused
        ack, a record deleted or expired meanwhile).
        """
        started = time.monotonic()
        epoch, _ = self.revision()
        published_us = self._published_us.get((epoch or "", revision)) or self._find_published(
            revision
        )
        # Stream ids are the server's ms: acks of this write come after `published_us`.
        last_id = f"{max(published_us // 1000 - 1, 0)}-0"
        first = self._read(self._presence_keys())
        records = {key: record for key, record in first.items() if record is not None}
        deadline = started + timeout
        next_poll = started + _FALLBACK_POLL_S

        def has_it(record: WorkerInfo | UnreadablePresence | None) -> bool:
            return isinstance(record, WorkerInfo) and _applied(record, epoch, revision)

        while True:
            pending = [key for key, record in records.items() if not has_it(record)]
            now = time.monotonic()
            if not pending or now >= deadline:
                break
            acked, last_id = self._acks(last_id, min(deadline, next_poll) - now, epoch, revision)
            if time.monotonic() >= next_poll:
                recheck, next_poll = pending, time.monotonic() + _FALLBACK_POLL_S
            else:
                recheck = [key for key in pending if key in acked]
            for key, record in self._read(recheck).items():
                # a record deleted during the wait hides a worker: never a success
                records[key] = record or UnreadablePresence(key, "deleted during the wait")
        current = [record for record in records.values() if isinstance(record, WorkerInfo)]
        unconfirmed = [r for r in records.values() if isinstance(r, UnreadablePresence)]
        reached = [w for w in current if _applied(w, epoch, revision)]
        missing = [w for w in current if not _applied(w, epoch, revision)]
        if unconfirmed:  # one line per wait, not one per worker (a reconnect storm has hundreds)
            _log.warning(
                "presence_unconfirmed",
                count=len(unconfirmed),
                keys=[record.key for record in unconfirmed[:_LOGGED_KEYS]],
                problems=sorted({record.problem for record in unconfirmed}),
            )
        acks = [
            WorkerAck(
                worker,
                (worker.applied_us - published_us) / 1000
                if published_us and worker.revision == revision and worker.published_us
                else None,
            )
            for worker in reached
        ]
        return PropagationReport(
            revision=revision,
            epoch=epoch,
            reached=sorted(acks, key=lambda ack: ack.worker.id),
            missing=sorted(missing, key=lambda worker: worker.id),
            waited_ms=round((time.monotonic() - started) * 1000, 3),
            unconfirmed=sorted(unconfirmed, key=lambda record: record.key),
        )

    def _acks(
        self, last_id: str, wait_s: float, epoch: str | None, revision: int
    ) -> tuple[set[str], str]:
        """The presence keys of workers that acked `revision` (or later) since `last_id`,
        waiting up to `wait_s` for the first; and the id to read on from."""
        # A blocked XREAD times out by the server's clock tick (up to 100 ms late at
        # `hz 10`): block until a tick before the deadline, then poll without blocking.
        block_ms = int((wait_s - _SERVER_TICK_S) * 1000)
        with store_errors(self.url):
            if block_ms >= 1:
                reply = self._redis.xread(
                    {self.keys.acks: last_id}, count=_ACK_BATCH, block=block_ms
                )
            else:
                time.sleep(min(max(wait_s, 0.0), _TAIL_POLL_S))
                reply = self._redis.xread({self.keys.acks: last_id}, count=_ACK_BATCH)
        acked: set[str] = set()
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                last_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                try:
                    worker = fields[b"worker"].decode("utf-8", "replace")
                    ok = fields[b"epoch"].decode() == epoch and int(fields[b"rev"]) >= revision
                except (KeyError, ValueError, UnicodeDecodeError):
                    continue  # not an ack of ours: the records decide anyway
                if ok:
                    acked.add(self.keys.worker(worker))
        return acked, last_id

    def close(self) -> None:
        """Close the connection, if this view opened it."""
        if self._owns_client:
            self._redis.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _presence_keys(self) -> list[str]:
        with store_errors(self.url):
            found = scan_keys(self._redis, self.keys.worker_pattern, 1000)  # cluster: the owner
            return sorted({key.decode("utf-8", "replace") for key in found})

    def _read(self, keys: list[str]) -> dict[str, WorkerInfo | UnreadablePresence | None]:
        """Each key's record: a `WorkerInfo`, an `UnreadablePresence` (junk, another
        worker's id, not a string), or None when it expired (SCAN and MGET are not atomic)."""
        if not keys:
            return {}
        with store_errors(self.url):
            blobs = self._redis.mget(keys)
            missing = [key for key, blob in zip(keys, blobs, strict=True) if blob is None]
            there = self._redis.exists(*missing) if missing else 0
            types = [self._redis.type(key) for key in missing] if there else []
        wrong_type = {key for key, kind in zip(missing, types, strict=False) if kind != b"none"}
        records: dict[str, WorkerInfo | UnreadablePresence | None] = {}
        prefix = self.keys.worker("")
        for key, blob in zip(keys, blobs, strict=True):
            if blob is None:
                records[key] = (
                    UnreadablePresence(key, "not a presence record (wrong type)")
                    if key in wrong_type
                    else None
                )
                continue
            try:
                worker = decode_presence(blob)
            except MalformedMessageError as error:
                records[key] = UnreadablePresence(key, str(error)[:200])
                continue
            if key != prefix + worker.id:  # written under another worker's key
                records[key] = UnreadablePresence(key, f"record names worker {worker.id!r}")
            else:
                records[key] = worker
        return records

    def _find_published(self, revision: int) -> int:
        with store_errors(self.url):
            for _, fields in self._redis.xrevrange(self.keys.log, count=_PUBLISHED_SEARCH):
                if int(fields[b"rev"]) == revision:
                    return int(fields[b"time"])
        return 0


def _applied(worker: WorkerInfo, epoch: str | None, revision: int) -> bool:
    return worker.epoch == epoch and worker.revision >= revision


def _history_entry(fields: Mapping[bytes, bytes]) -> HistoryEntry:
    def text(name: str) -> str:
        return fields.get(name.encode(), b"").decode("utf-8", "replace")

    def definition(name: str) -> dict[str, Any] | None:
        blob = fields.get(name.encode(), b"")
        if not blob:
            return None
        try:
            return decode_definition(blob, text("kind"), text("key")).definition
        except MalformedMessageError:
            return None

    return HistoryEntry(
        revision=int(text("rev") or 0),
        epoch=text("epoch"),
        time_us=int(text("time") or 0),
        actor=text("actor"),
        reason=text("reason"),
        kind=text("kind"),
        key=text("key"),
        op=text("op"),
        version=int(text("version") or 0),
        before=definition("before"),
        after=definition("after"),
    )
