"""The dashboard's side of the store: reads cached per revision, writes with a version check.

Everything here is blocking (redis-py); the web layer calls it from a worker thread.
Every write names the version the operator's screen showed: when the flag moved since,
nothing is written and `StaleWriteError` carries the current definition and the field
diff, so a stale screen can never overwrite a colleague's change.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from flagsync._cluster import scan_keys
from flagsync.dashboard._config import SIGNING_KEY_ENV, DashboardConfig
from flagsync.diff import FieldChange, definition_changes
from flagsync.errors import (
    ConflictError,
    FlagNotFoundError,
    FlagsyncError,
    InvalidFlagError,
    StoreError,
)
from flagsync.fleet import HistoryEntry, PropagationReport
from flagsync.model import Flag
from flagsync.publisher import Publisher, StoredFlag

__all__ = [
    "Backend",
    "BadRequestError",
    "Propagation",
    "StaleWriteError",
    "StoreView",
    "WriteOutcome",
]

_LAST_CHANGE_SCAN: Final = 2000
"""Change-log entries read to find each flag's last change for the flags table."""
_SHARE_WINDOW_S: Final = 60.0
_METRIC_KEYS_TTL_S: Final = 2.0
_SHARES_TTL_S: Final = 1.0
_INCREMENTAL_MAX: Final = 200
"""Revisions a cached view is moved forward by from the change log (more: read again)."""


class BadRequestError(FlagsyncError):
    """A write's input is not what the route takes (400): the message starts with the
    field's public name (`percent: ...`), and nothing was written."""


class StaleWriteError(FlagsyncError):
    """The flag moved since the version the operator saw: nothing was written."""

    def __init__(
        self,
        key: str,
        expected: int,
        current: StoredFlag | None,
        changes: list[FieldChange],
        since: list[HistoryEntry],
    ) -> None:
        actual = 0 if current is None else current.version
        super().__init__(
            f"flag {key!r} is at version {actual}, not {expected} as your screen showed: "
            "nothing was written"
        )
        self.key = key
        self.expected = expected
        self.current = current
        self.changes = changes
        self.since = since

    def to_json(self) -> dict[str, Any]:
        """The 409 body: the current definition and what changed since the shown version."""
        return {
            "error": "conflict",
            "message": str(self),
            "key": self.key,
            "expected_version": self.expected,
            "version": None if self.current is None else self.current.version,
            "definition": None if self.current is None else msgspec.to_builtins(self.current.flag),
            "diff": [
                {"path": c.path, "before": c.before, "after": c.after, "text": str(c)}
                for c in self.changes
            ],
            "changes_since": [
                {
                    "version": e.version,
                    "revision": e.revision,
                    "actor": e.actor,
                    "op": e.op,
                    "reason": e.reason,
                    "time_us": e.time_us,
                }
                for e in self.since
            ],
        }


class Propagation(msgspec.Struct, frozen=True):
    """A write's propagation report, as the CLI's `--wait` prints it."""

    revision: int
    reached: int
    total: int
    complete: bool
    max_latency_ms: float | None
    waited_ms: float
    missing: list[str]
    text: str


class WriteOutcome(msgspec.Struct, frozen=True):
    """What a write did: the new revision and version, and how far it spread."""

    op: str
    key: str
    changed: bool
    revision: int
    version: int | None
    actor: str
    reason: str
    propagation: Propagation | None
    message: str


@dataclass
class StoreView:
    """Every flag, its version and last change, as of one revision."""

    epoch: str | None
    revision: int
    flags: dict[str, Flag]
    versions: dict[str, int]
    last_change: dict[str, HistoryEntry]
    read_ms: float = 0.0


@dataclass
class _Cache:
    view: StoreView | None = None
    metric_streams: dict[str, list[str]] = field(default_factory=dict)
    metric_keys_at: float = -_METRIC_KEYS_TTL_S
    shares: dict[str, dict[str, float]] = field(default_factory=dict)
    shares_at: float = -_SHARES_TTL_S


class Backend:
    """One publisher for the dashboard's lifetime; the operator named by the config."""

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.publisher = Publisher(
            config.url,
            config.namespace,
            actor=config.operator,
            signing_key=config.signing_key,  # else $FLAGSYNC_SIGNING_KEY, as the CLI
        )
        self.signs = bool(config.signing_key or os.environ.get(SIGNING_KEY_ENV))
        """True when this dashboard's writes are signed (it was given the operator's key)."""
        self.keys = self.publisher.keys
        self._signed_store: tuple[tuple[str | None, int], bool] | None = None
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._cache = _Cache()

    @property
    def actor(self) -> str:
        """Who the change log names for the dashboard's writes."""
        return self.publisher.actor

    def close(self) -> None:
        """Close the store connection."""
        self.publisher.close()

    # -- reading ---------------------------------------------------------------

    def revision(self) -> tuple[str | None, int]:
        """The store's (epoch, revision); whether the store is signed is re-read whenever
        they move (one GET per change, none per poll)."""
        epoch, revision = self.publisher.revision()
        if self._signed_store is None or self._signed_store[0] != (epoch, revision):
            signed = bool(self.publisher.client.exists(self.keys.signature))
            self._signed_store = ((epoch, revision), signed)
        return epoch, revision

    def read_only(self) -> str | None:
        """Why this dashboard refuses writes, or None: `--read-only`, or a store in signed
        mode (its state carries a signature) while the dashboard has no signing key, so
        anything it wrote would be refused by every verifying worker."""
        if self.config.read_only:
            return self.config.read_only
        if self._signed_store is None:
            with contextlib.suppress(StoreError):  # unknown while the store is down; a
                self.revision()  # write fails on that anyway (503), pages still render
        if self._signed_store is not None and self._signed_store[1] and not self.signs:
            return (
                "the store is in signed mode and this dashboard has no signing key "
                "(start it with --signing-key PATH or FLAGSYNC_SIGNING_KEY to write)"
            )
        return None

    def view(self) -> StoreView:
        """Every flag as of the current revision: re-read only when the revision moved,
        and then from the change log alone when it holds every revision since."""
        epoch, revision = self.revision()
        with self._read_lock:
            cached = self._cache.view
            if cached is not None and (cached.epoch, cached.revision) == (epoch, revision):
                return cached
            started = time.perf_counter()
            view = None
            if cached is not None and cached.epoch == epoch and cached.revision < revision:
                view = self._advanced(cached, revision)
            if view is None:
                view = self._read_view(epoch, revision)
            view.read_ms = (time.perf_counter() - started) * 1000
            self._cache.view = view
            return view

    def _read_view(self, epoch: str | None, revision: int) -> StoreView:
        definitions = self.publisher.definitions()
        versions = self.publisher.versions()
        last: dict[str, HistoryEntry] = {}
        for entry in self.publisher.history(limit=_LAST_CHANGE_SCAN):
            if entry.kind == "flag" and entry.key not in last:
                last[entry.key] = entry
        return StoreView(epoch, revision, dict(definitions.flags), versions, last)

    def _advanced(self, cached: StoreView, revision: int) -> StoreView | None:
        """`cached` moved forward by the change log's entries, or None when the log does
        not hold every revision since (then everything is read again)."""
        gap = revision - cached.revision
        if gap > _INCREMENTAL_MAX:
            return None
        limit = gap * 4 + 10
        read = self.publisher.history(limit=limit)
        if len(read) == limit and read[-1].revision > cached.revision:
            return None  # one revision changed many flags: the batch may not hold them all
        entries = [entry for entry in read if cached.revision < entry.revision <= revision]
        if {entry.revision for entry in entries} != set(range(cached.revision + 1, revision + 1)):
            return None
        flags, versions = dict(cached.flags), dict(cached.versions)
        last = dict(cached.last_change)
        for entry in reversed(entries):  # oldest first
            if entry.kind != "flag":
                continue
            last[entry.key] = entry
            if entry.after is None:
                flags.pop(entry.key, None)
                versions.pop(entry.key, None)
                continue
            try:  # validated when written; only its shape is needed here
                flags[entry.key] = msgspec.convert(entry.after, Flag)
            except msgspec.ValidationError:
                return None
            versions[entry.key] = entry.version
        return StoreView(cached.epoch, revision, flags, versions, last)

    def changed_since(self, revision: int, limit: int = 100) -> set[str] | None:
        """The flags written after `revision`, or None when more than `limit` changes
        happened (then a page reloads everything)."""
        read = self.publisher.history(limit=limit + 1)
        newer = [entry for entry in read if entry.revision > revision]
        if len(newer) > limit:
            return None
        return {entry.key for entry in newer if entry.kind == "flag"}

    def flag(self, key: str) -> StoredFlag:
        """One flag and its version; `FlagNotFoundError` when absent."""
        stored = self.publisher.get(key)
        if stored is None:
            raise FlagNotFoundError("flag", key)
        return stored

    def history(self, key: str | None = None, limit: int = 100) -> list[HistoryEntry]:
        """The newest change-log entries (of `key` only, if given)."""
        return self.publisher.history(key, limit=limit)

    def workers(self) -> list[Any]:
        """The live workers' presence records."""
        return self.publisher.workers()

    def metric_flags(self) -> set[str]:
        """Flags that have a metrics stream, shared or per worker."""
        return set(self.metric_streams())

    def metric_streams(self) -> dict[str, list[str]]:
        """Every metrics stream (`metrics:<flag>` or `metrics:<flag>:<worker>`) by flag,
        from one SCAN re-run at most every 2 s."""
        now = time.monotonic()
        if now - self._cache.metric_keys_at < _METRIC_KEYS_TTL_S:
            return self._cache.metric_streams
        prefix = self.keys.metrics("")
        found: dict[str, list[str]] = {}
        for raw in scan_keys(self.publisher.client, self.keys.metrics_pattern, 1000):
            name = raw.decode()
            found.setdefault(name[len(prefix) :].partition(":")[0], []).append(name)
        self._cache.metric_streams, self._cache.metric_keys_at = found, now
        return found

    def metric_entries(self, key: str, since_ms: int) -> list[tuple[bytes, Any]]:
        """Every metrics entry of a flag since `since_ms`, from the shared stream and each
        worker's, oldest first; a key that is not a stream is skipped (workers write
        these keys, so nothing in them is trusted)."""
        client = self.publisher.client
        found = scan_keys(client, self.keys.worker_metrics_pattern(key), 1000)
        streams = [self.keys.metrics(key), *sorted({raw.decode() for raw in found})]
        pipe = client.pipeline(transaction=False)
        for stream in streams:
            pipe.xrange(stream, min=str(since_ms), max="+")
        entries: list[tuple[bytes, Any]] = []
        for reply in pipe.execute(raise_on_error=False):
            if isinstance(reply, list):
                entries.extend(reply)
        entries.sort(key=lambda entry: _entry_ms(entry[0]))
        return entries

    def request_shares(self) -> dict[str, dict[str, float]]:
        """Per flag with metrics: each variant's share of the last minute's evaluations,
        from one pipelined read of every metrics stream, re-read at most once a second
        (every open flags page asks for it after each change)."""
        from flagsync.metrics import EXPOSURES, merge_window  # noqa: PLC0415

        now = time.monotonic()
        if now - self._cache.shares_at < _SHARES_TTL_S:
            return self._cache.shares
        streams = self.metric_streams()
        since = int((time.time() - _SHARE_WINDOW_S) * 1000)
        pipe = self.publisher.client.pipeline(transaction=False)
        order = [(key, stream) for key in sorted(streams) for stream in sorted(streams[key])]
        for _, stream in order:
            pipe.xrange(stream, min=str(since), max="+")
        entries: dict[str, list[Any]] = {}
        for (key, _), reply in zip(order, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, list):  # workers write these keys: a non-stream is skipped
                entries.setdefault(key, []).extend(fields for _, fields in reply)
        shares: dict[str, dict[str, float]] = {}
        for key, fields in entries.items():
            window = merge_window(fields)
            counts = {v: s.count for (v, m), s in window.items() if m == EXPOSURES}
            total = sum(counts.values())
            if total:
                shares[key] = {v: n / total for v, n in sorted(counts.items())}
        self._cache.shares, self._cache.shares_at = shares, now
        return shares

    def metrics_series(self, key: str, minutes: float = 10.0, slots: int = 30) -> Any:
        """The flag's metrics over time, per variant (see `flagsync.dashboard._charts`)."""
        from flagsync.dashboard._charts import series_from_entries  # noqa: PLC0415

        now_ms = int(time.time() * 1000)
        since = now_ms - int(minutes * 60_000)
        entries = self.metric_entries(key, since)
        if entries:  # a young stream: spread what there is, slots of at least 250 ms
            since = max(since, _entry_ms(entries[0][0]) - 1)
            slots = max(2, min(slots, (now_ms - since) // 250))
        return series_from_entries(entries, since, now_ms, slots)

    def rollout(self, key: str) -> Any | None:
        """The flag's guarded rollout status, or None without a plan."""
        from flagsync.controller import RolloutController  # noqa: PLC0415

        if self.publisher.client.hget(self.keys.plans, key) is None:
            return None
        return RolloutController(self.publisher, key).status()

    # -- writing ---------------------------------------------------------------

    def write(
        self, op: str, key: str, expected_version: int, reason: str, **options: Any
    ) -> WriteOutcome:
        """Kill, enable, ramp or roll back `key` if it is still at `expected_version`."""
        actions: dict[str, Callable[[], int]] = {
            "kill": lambda: self.publisher.kill(
                key, reason=reason, expected_version=expected_version
            ),
            "enable": lambda: self.publisher.enable(
                key, reason=reason, expected_version=expected_version
            ),
            "ramp": lambda: self.publisher.ramp(
                key,
                options["variant"],
                options["percent"],
                options.get("rule"),
                reason=reason,
                expected_version=expected_version,
            ),
            "rollback": lambda: self._rollback(
                key, expected_version, options["to_version"], reason
            ),
        }
        with self._write_lock:
            try:
                revision = actions[op]()
            except ConflictError:
                raise self._stale(key, expected_version) from None
            except InvalidFlagError as error:
                raise self._field_error(op, key, error, options) from None
            last = self.publisher.last_write
            changed = last is None or last.changed
            stored = self.publisher.get(key)
        propagation = self.propagation(revision) if changed else None
        version = None if stored is None else stored.version
        message = (
            f"{op} {key}: revision {revision} (v{version})"
            if changed
            else f"{key}: no change (already as asked; store at revision {revision})"
        )
        return WriteOutcome(
            op, key, changed, revision, version, self.actor, reason, propagation, message
        )

    def _field_error(
        self, op: str, key: str, error: InvalidFlagError, options: dict[str, Any]
    ) -> FlagsyncError:
        """The publisher's refusal in the API's terms: the body field that named something
        the flag does not have (the publisher speaks of definition paths)."""
        problems = "; ".join(issue.message for issue in error.issues)
        if op == "rollback":
            return BadRequestError(f"to_version: {problems}")
        stored = self.publisher.get(key) if op == "ramp" else None
        if stored is None:
            return error
        variants = stored.flag.variants
        rules = [rule.name or f"rules[{i}]" for i, rule in enumerate(stored.flag.rules)]
        if options["variant"] not in variants:
            return BadRequestError(
                f"variant: unknown variant {options['variant']!r} (variants: {', '.join(variants)})"
            )
        if options.get("rule") is not None and options["rule"] not in rules:
            return BadRequestError(
                f"rule: no rule {options['rule']!r} "
                f"(rules: {', '.join(rules) or 'none'}; null means the default)"
            )
        return error  # the ramped definition itself is invalid: the publisher's paths say where

    def propagation(self, revision: int) -> Propagation:
        """Wait (up to the configured time) for the live workers to apply `revision`."""
        from flagsync.cli._render import propagation as describe  # noqa: PLC0415

        report: PropagationReport = self.publisher.wait_propagated(
            revision, timeout=self.config.wait_s
        )
        return Propagation(
            revision=revision,
            reached=len(report.reached),
            total=len(report.reached) + len(report.missing) + len(report.unconfirmed),
            complete=report.complete,
            max_latency_ms=report.max_latency_ms,
            waited_ms=report.waited_ms,
            missing=[worker.id for worker in report.missing],
            text=describe(report),
        )

    def rollout_action(self, action: str, key: str, reason: str) -> dict[str, Any]:
        """Pause, resume or abort a flag's guarded rollout through the controller's own
        commands (recorded in the change log with the operator and `reason`); an abort
        answers its ramp's propagation report."""
        from flagsync.controller import RolloutController  # noqa: PLC0415

        if action not in ("pause", "resume", "abort"):
            raise FlagNotFoundError("action", action)
        if self.publisher.client.hget(self.keys.plans, key) is None:
            raise FlagNotFoundError("rollout plan", key)
        controller = RolloutController(self.publisher, key, owner=f"dashboard-{self.actor}")
        with self._write_lock:
            if action == "pause":
                result: Any = controller.pause(reason)
            elif action == "resume":
                result = controller.resume(reason)
            else:
                result = controller.abort(reason)
        answer: dict[str, Any] = {
            "action": action,
            "key": key,
            "actor": self.actor,
            "reason": reason,
            "result": msgspec.to_builtins(result),
        }
        if action == "abort":
            answer["revision"], answer["changed"] = result.revision, result.changed
            answer["propagation"] = (
                msgspec.to_builtins(self.propagation(result.revision)) if result.changed else None
            )
        return answer

    def _rollback(self, key: str, expected_version: int, to_version: int, reason: str) -> int:
        """The publisher's rollback, refused by the write script itself when the flag
        is no longer at `expected_version` (no read-then-write window)."""
        return self.publisher.rollback(
            key,
            to_version=to_version,
            reason=reason or f"rollback to v{to_version}",
            expected_version=expected_version,
        )

    def _stale(self, key: str, expected: int) -> StaleWriteError:
        """The conflict as the operator needs it: what the flag is now and what changed."""
        current = self.publisher.get(key)
        entries = self.publisher.history(key, limit=200)
        shown = next((e.after for e in entries if e.kind == "flag" and e.version == expected), None)
        now = None if current is None else msgspec.to_builtins(current.flag)
        since = [e for e in entries if e.kind == "flag" and e.version > expected]
        return StaleWriteError(
            key, expected, current, definition_changes("flag", shown, now), since
        )


def _entry_ms(entry_id: bytes | str) -> int:
    """The server milliseconds of a stream entry id (`1700000000000-0`)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    try:
        return int(text.partition("-")[0])
    except ValueError:
        return 0
