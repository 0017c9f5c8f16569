"""`Publisher`: the one way flags change in a store — validated, atomic, audited, announced.

Every write is one run of the store's Lua script (see `flagsync.store`): it refuses a
stale expected version (`ConflictError`, nothing written), bumps the flag's version and
the global revision, appends to the change log with the actor and reason, and publishes
the change. A bulk `apply` of a whole file is one revision. Definitions are validated
here before anything is sent, including their references to other flags and segments.
"""

from __future__ import annotations

import getpass
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

import msgspec
import redis
import structlog

from flagsync._codec import (
    Change,
    ChangeSet,
    MalformedMessageError,
    WorkerInfo,
    decode_definition,
    decode_presence,
    encode_changeset,
    encode_definition,
)
from flagsync._validation import cycle_issues, parse_flag, parse_flagset
from flagsync.diff import FieldChange, definition_changes
from flagsync.errors import (
    ConflictError,
    FlagNotFoundError,
    InvalidFlagError,
    PermissionDeniedError,
    StoreUnavailableError,
    ValidationIssue,
)
from flagsync.loader import FlagSource, load_flags
from flagsync.model import Flag, FlagSet, Rollout, Serve
from flagsync.store import (
    DEFAULT_LOG_MAXLEN,
    WRITE_SCRIPT,
    StoreKeys,
    connect,
    connection_hint,
    parse_write_reply,
    redact_url,
)
from flagsync.weights import ramp_weights

__all__ = [
    "DefinitionChange",
    "HistoryEntry",
    "PropagationReport",
    "Publisher",
    "StoredFlag",
    "WorkerAck",
]

_log = structlog.get_logger("flagsync.publisher")
_INTENT_RETRIES: Final = 5


class StoredFlag(msgspec.Struct, frozen=True):
    """A flag as stored: its definition and version."""

    key: str
    version: int
    flag: Flag


class DefinitionChange(msgspec.Struct, frozen=True):
    """One flag or segment an `apply` would add, change or delete (a dry-run line)."""

    kind: str
    key: str
    op: str
    """`add`, `change` or `delete`."""
    version: int
    """The version the change is based on (0 for a new key)."""
    fields: list[FieldChange]


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


class PropagationReport(msgspec.Struct, frozen=True):
    """Which live workers applied a revision, and how fast (`wait_propagated`)."""

    revision: int
    epoch: str | None
    reached: list[WorkerAck]
    missing: list[WorkerInfo]
    waited_ms: float

    @property
    def complete(self) -> bool:
        """True when every live worker applied the revision."""
        return not self.missing

    @property
    def max_latency_ms(self) -> float | None:
        """The slowest known publish-to-apply latency among the workers reached."""
        known = [ack.latency_ms for ack in self.reached if ack.latency_ms is not None]
        return max(known) if known else None


class _Write(msgspec.Struct, frozen=True):
    kind: str
    key: str
    expected: int
    op: str
    definition: dict[str, Any] | None


class Publisher:
    """Writes flags to one namespace of a store.

    `actor` is recorded in the change log with every write (default: the OS user).
    Use as a context manager or call `close()`.
    """

    def __init__(
        self,
        url: str | None = None,
        namespace: str = "default",
        actor: str | None = None,
        *,
        log_maxlen: int = DEFAULT_LOG_MAXLEN,
        timeout_s: float = 5.0,
    ) -> None:
        from flagsync._connect import resolve_url  # noqa: PLC0415 - shares one URL rule

        self.url = resolve_url(url)
        self.keys = StoreKeys(namespace)
        self.actor = actor or _os_user()
        self.log_maxlen = log_maxlen
        # redis-py types replies as unions over `decode_responses`; ours are always bytes.
        self._redis: Any = connect(self.url, timeout_s=timeout_s, connect_timeout_s=timeout_s)
        self._script = self._redis.register_script(WRITE_SCRIPT)
        self._seen_revision = 0
        self._published_us: dict[tuple[str, int], int] = {}

    @property
    def client(self) -> Any:
        """The underlying redis-py client (for the rollout controller and advanced use)."""
        return self._redis

    # -- reading -------------------------------------------------------------

    def revision(self) -> tuple[str | None, int]:
        """The store's (epoch, revision); (None, 0) when nothing was ever written."""
        with self._errors():
            revision, epoch = self._redis.mget(self.keys.revision, self.keys.epoch)
        return (None if epoch is None else epoch.decode()), int(revision or 0)

    def get(self, key: str) -> StoredFlag | None:
        """A flag's stored definition and version, or None."""
        with self._errors():
            blob = self._redis.hget(self.keys.flags, key)
        if blob is None:
            return None
        stored = _decode_stored("flag", key, blob)
        # Segment names are needed to parse a flag whose rules target segments.
        return StoredFlag(key, stored[1], parse_flag(key, stored[0], self._segment_names()))

    def versions(self) -> dict[str, int]:
        """The current version of every flag (deleted ones excluded)."""
        state, versions = self._read_all()
        return {key: versions.get(f"flag:{key}", 0) for key in state["flags"]}

    def definitions(self) -> FlagSet:
        """Everything in the namespace as one `FlagSet` (what `export` writes)."""
        definitions, _ = self._read_all()
        return parse_flagset(definitions)

    def history(self, key: str | None = None, limit: int = 100) -> list[HistoryEntry]:
        """The newest `limit` change-log entries (for `key` only, if given), newest first."""
        entries: list[HistoryEntry] = []
        last_id = "+"
        with self._errors():
            while len(entries) < limit:
                batch = self._redis.xrevrange(self.keys.log, max=last_id, min="-", count=500)
                if last_id != "+":
                    batch = batch[1:]  # the boundary entry was in the previous batch
                if not batch:
                    break
                for _entry_id, fields in batch:
                    entry = _history_entry(fields)
                    if key is None or entry.key == key:
                        entries.append(entry)
                        if len(entries) >= limit:
                            break
                last_id = batch[-1][0].decode()
        return entries

    def workers(self) -> list[WorkerInfo]:
        """Every live worker (heartbeat not expired) of the namespace, by id."""
        with self._errors():
            keys = list(self._redis.scan_iter(match=self.keys.worker_pattern, count=1000))
            blobs = self._redis.mget(keys) if keys else []
        workers = []
        for blob in blobs:
            if blob is None:
                continue  # expired between SCAN and MGET
            try:
                workers.append(decode_presence(blob))
            except MalformedMessageError as error:
                _log.warning("presence_unreadable", error=str(error))
        return sorted(workers, key=lambda worker: worker.id)

    def wait_propagated(self, revision: int, timeout: float = 5.0) -> PropagationReport:
        """Wait until every live worker has applied `revision` (or `timeout` seconds pass).

        Live workers are those with a heartbeat when the wait starts. Each reached
        worker carries its publish-to-apply latency when it applied exactly this
        revision from a change message.
        """
        started = time.monotonic()
        epoch, _ = self.revision()
        published_us = self._published_us.get((epoch or "", revision)) or self._find_published(
            revision
        )
        with self._errors():
            keys = list(self._redis.scan_iter(match=self.keys.worker_pattern, count=1000))
        deadline = started + timeout
        while True:
            with self._errors():
                blobs = self._redis.mget(keys) if keys else []
            current = [decode_presence(blob) for blob in blobs if blob is not None]
            reached = [w for w in current if w.epoch == epoch and w.revision >= revision]
            missing = [w for w in current if not (w.epoch == epoch and w.revision >= revision)]
            if not missing or time.monotonic() >= deadline:
                break
            time.sleep(0.002)
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
        )

    # -- writing -------------------------------------------------------------

    def diff(self, source: FlagSource, *, prune: bool = False) -> list[DefinitionChange]:
        """What `apply(source)` would change, without writing anything (the dry run)."""
        return self._plan(load_flags(source), prune)[0]

    def apply(self, source: FlagSource, *, prune: bool = False, reason: str = "") -> int:
        """Make the store match a flag file (or mapping) as one atomic revision.

        Flags and segments in `source` are added or replaced; with `prune`, the ones
        not in it are deleted. Returns the new revision, or the current one when
        nothing differs (applying the same file twice writes nothing).
        """
        changes, writes = self._plan(load_flags(source), prune)
        if not changes:
            return self.revision()[1]
        return self._write(writes, reason, op_name="apply")

    def put(
        self,
        key: str | Mapping[str, Any],
        flag: Flag | Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
        reason: str = "",
    ) -> int:
        """Create or replace one flag; returns the new revision.

        `put("key", definition)`, or `put({"key": definition})` in the file's `flags:`
        shape. With `expected_version`, a flag changed since that version is refused
        with `ConflictError`; without it, the version just read is expected.
        """
        if isinstance(key, Mapping):
            if flag is not None or len(key) != 1:
                raise TypeError("put() takes put(key, definition) or put({key: definition})")
            ((key, flag),) = key.items()
        if flag is None:
            raise TypeError("put() needs a definition")
        definition = msgspec.to_builtins(flag) if isinstance(flag, Flag) else dict(flag)
        return self._put(key, definition, expected_version, reason, "put")

    def _put(
        self,
        key: str,
        definition: dict[str, Any],
        expected_version: int | None,
        reason: str,
        op: str,
    ) -> int:
        """Validate and write one flag; `op` names the change in the log (put, rollback)."""
        state, versions = self._read_all()
        segments = state["segments"].keys()
        parsed = parse_flag(key, definition, segments)
        flags = dict(state["flags"])
        flags[key] = definition
        _check_references(key, parsed, flags, segments)
        current = versions.get(f"flag:{key}", 0)
        if expected_version is not None and expected_version != current:
            raise ConflictError("flag", key, expected_version, current)
        if key in state["flags"] and state["flags"][key] == msgspec.to_builtins(parsed):
            return self.revision()[1]
        guards = [
            _Write("flag", other, versions.get(f"flag:{other}", 0), "guard", None)
            for other in parsed.requires
        ]
        write = _Write("flag", key, current, op, msgspec.to_builtins(parsed))
        return self._write([write, *guards], reason, op_name=op)

    def kill(self, key: str, *, reason: str = "", expected_version: int | None = None) -> int:
        """The kill switch: serve every context the `off` variant. Returns the revision."""
        return self._modify(
            key, "kill", reason, expected_version, lambda f: _replace(f, enabled=False)
        )

    def enable(self, key: str, *, reason: str = "", expected_version: int | None = None) -> int:
        """Undo `kill`: evaluate rules and default again. Returns the revision."""
        return self._modify(
            key, "enable", reason, expected_version, lambda f: _replace(f, enabled=True)
        )

    def set_rollout(
        self,
        key: str,
        weights: Mapping[str, float],
        rule: str | None = None,
        *,
        reason: str = "",
        expected_version: int | None = None,
    ) -> int:
        """Set the percentage split of the default (or of the rule named `rule`).

        A fixed serve becomes a rollout; an existing rollout keeps its `by` and `salt`,
        so users keep their buckets. Returns the revision.
        """
        split = dict(weights)
        return self._modify(
            key,
            "set_rollout",
            reason,
            expected_version,
            lambda flag: _with_serve(key, flag, rule, lambda serve: _with_weights(serve, split)),
        )

    def ramp(
        self,
        key: str,
        variant: str,
        percent: float,
        rule: str | None = None,
        *,
        reason: str = "",
        expected_version: int | None = None,
    ) -> int:
        """Give `variant` `percent` % of the default's (or rule's) traffic, the other
        variants keeping their proportions (see `flagsync.weights.ramp_weights`)."""

        def ramped(serve: Serve) -> Rollout:
            current = serve.rollout if isinstance(serve, Rollout) else {serve: 100}
            where = f"flags.{key}.{'default' if rule is None else rule}"
            return _with_weights(serve, ramp_weights(current, variant, percent, path=where))

        return self._modify(
            key,
            "ramp",
            reason,
            expected_version,
            lambda flag: _with_serve(key, flag, rule, ramped),
        )

    def set_default(
        self, key: str, variant: str, *, reason: str = "", expected_version: int | None = None
    ) -> int:
        """Serve one fixed variant as the fallthrough. Returns the revision."""
        return self._modify(
            key, "set_default", reason, expected_version, lambda f: _replace(f, default=variant)
        )

    def delete(self, key: str, *, reason: str = "", expected_version: int | None = None) -> int:
        """Delete a flag (refused while another flag requires it). Returns the revision."""
        state, versions = self._read_all()
        if key not in state["flags"]:
            raise FlagNotFoundError("flag", key)
        dependents = sorted(
            other
            for other, definition in state["flags"].items()
            if key in (definition.get("requires") or {})
        )
        if dependents:
            raise InvalidFlagError(
                [ValidationIssue(f"flags.{key}", f"required by {', '.join(dependents)}")]
            )
        current = versions.get(f"flag:{key}", 0)
        if expected_version is not None and expected_version != current:
            raise ConflictError("flag", key, expected_version, current)
        return self._write([_Write("flag", key, current, "delete", None)], reason, op_name="delete")

    def rollback(
        self,
        key: str,
        *,
        to_version: int | None = None,
        steps: int | None = None,
        reason: str = "",
    ) -> int:
        """Restore the definition a flag had at `to_version` (or `steps` changes ago) as a
        new revision; the change log keeps both. Returns the revision."""
        if (to_version is None) == (steps is None):
            raise TypeError("rollback() takes exactly one of to_version= or steps=")
        with self._errors():
            raw_version = self._redis.hget(self.keys.versions, f"flag:{key}")
        current = int(raw_version or 0)
        if current == 0:
            raise FlagNotFoundError("flag", key)
        target = to_version if to_version is not None else current - (steps or 0)
        if not 1 <= target <= current:
            raise InvalidFlagError(
                [ValidationIssue(f"flags.{key}", f"no version {target} (current is v{current})")]
            )
        if target == current:
            return self.revision()[1]
        for entry in self.history(key, limit=self.log_maxlen):
            # A segment may share the flag's key: only the flag's own entries count.
            if entry.kind == "flag" and entry.version == target:
                restored = reason or f"rollback to v{target}"
                if entry.after is None:
                    return self.delete(key, reason=restored, expected_version=current)
                return self._put(key, entry.after, current, restored, "rollback")
        raise InvalidFlagError(
            [
                ValidationIssue(
                    f"flags.{key}",
                    f"version {target} is no longer in the change log "
                    f"(it keeps the last {self.log_maxlen} changes)",
                )
            ]
        )

    def close(self) -> None:
        """Close the connection."""
        self._redis.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------

    def _modify(
        self,
        key: str,
        op: str,
        reason: str,
        expected_version: int | None,
        change: Any,
    ) -> int:
        """Read-modify-write one flag; an intent (kill, ramp) is re-applied on a conflict."""
        for attempt in range(_INTENT_RETRIES):
            with self._errors():
                blob = self._redis.hget(self.keys.flags, key)
            if blob is None:
                raise FlagNotFoundError("flag", key)
            # The blob carries the version it was written with: the script stores both.
            definition, current = _decode_stored("flag", key, blob)
            if expected_version is not None and expected_version != current:
                raise ConflictError("flag", key, expected_version, current)
            segments = self._segment_names()  # a flag may target segments (in_segment)
            before = parse_flag(key, definition, segments)
            after = change(before)
            after_data = msgspec.to_builtins(after)
            parse_flag(key, after_data, segments)
            if after == before:
                return self.revision()[1]
            try:
                return self._write(
                    [_Write("flag", key, current, op, after_data)], reason, op_name=op
                )
            except ConflictError:
                if expected_version is not None or attempt == _INTENT_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _segment_names(self) -> set[str]:
        with self._errors():
            return {name.decode() for name in self._redis.hkeys(self.keys.segments)}

    def _read_all(self) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
        """The namespace's definitions (file form) and versions, read consistently."""
        for _ in range(20):
            with self._errors():
                pipe = self._redis.pipeline(transaction=True)
                pipe.hgetall(self.keys.flags)
                pipe.hgetall(self.keys.segments)
                pipe.hgetall(self.keys.versions)
                flags, segments, versions = pipe.execute()
            state: dict[str, dict[str, Any]] = {"flags": {}, "segments": {}}
            for kind, section, blobs in (
                ("flag", "flags", flags),
                ("segment", "segments", segments),
            ):
                for raw_key, blob in blobs.items():
                    key = raw_key.decode()
                    state[section][key] = _decode_stored(kind, key, blob)[0]
            return state, {field.decode(): int(value) for field, value in versions.items()}
        raise StoreUnavailableError("could not read a consistent state")  # pragma: no cover

    def _plan(self, document: FlagSet, prune: bool) -> tuple[list[DefinitionChange], list[_Write]]:
        state, versions = self._read_all()
        wanted = document.to_builtins()
        merged: dict[str, dict[str, Any]] = {
            section: ({} if prune else dict(state[section])) | wanted.get(section, {})
            for section in ("flags", "segments")
        }
        parse_flagset(merged)  # the resulting state must be valid as a whole
        changes: list[DefinitionChange] = []
        writes: list[_Write] = []
        for kind, section in (("segment", "segments"), ("flag", "flags")):
            old, new = state[section], merged[section]
            for key in [*new, *(k for k in old if k not in new)]:
                before, after = old.get(key), new.get(key)
                if before == after:
                    continue
                op = "add" if before is None else "delete" if after is None else "change"
                version = versions.get(f"{kind}:{key}", 0)
                changes.append(
                    DefinitionChange(
                        kind, key, op, version, definition_changes(kind, before, after)
                    )
                )
                writes.append(
                    _Write(kind, key, version, "delete" if after is None else "apply", after)
                )
        return changes, writes

    def _write(self, writes: list[_Write], reason: str, *, op_name: str) -> int:
        blobs = [
            b""
            if write.definition is None
            else encode_definition(write.kind, write.key, write.expected + 1, write.definition)
            for write in writes
        ]
        payload = encode_changeset(
            ChangeSet(
                actor=self.actor,
                reason=reason,
                changes=[
                    Change(write.kind, write.key, write.op, blob or None)
                    for write, blob in zip(writes, blobs, strict=True)
                    if write.op != "guard"
                ],
            )
        )
        args: list[Any] = [
            self.keys.channel,
            self._seen_revision,
            uuid.uuid4().hex,
            self.log_maxlen,
            self.actor,
            reason,
            payload,
            len(writes),
        ]
        for write, blob in zip(writes, blobs, strict=True):
            args.extend([write.kind, write.key, write.expected, write.op, blob])
        with self._errors():
            reply = self._script(keys=self.keys.script_keys(), args=args)
        status, details = parse_write_reply(reply)
        if status == "conflict":
            kind, key, actual, expected = details
            raise ConflictError(kind, key, expected, actual)
        revision: int = details[0]
        epoch: str = details[1]
        server_us: int = details[2]
        self._seen_revision = max(self._seen_revision, revision)
        self._published_us[(epoch, revision)] = server_us
        _log.info(
            "flags_written",
            namespace=self.keys.namespace,
            op=op_name,
            revision=revision,
            keys=[write.key for write in writes if write.op != "guard"],
            actor=self.actor,
        )
        return revision

    def _find_published(self, revision: int) -> int:
        with self._errors():
            for _, fields in self._redis.xrevrange(self.keys.log, count=2000):
                if int(fields[b"rev"]) == revision:
                    return int(fields[b"time"])
        return 0

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn redis-py's errors into flagsync's, without leaking passwords."""
        try:
            yield
        except (redis.exceptions.NoPermissionError, redis.AuthenticationError) as error:
            # Before ConnectionError: redis-py's AuthenticationError subclasses it, but bad
            # credentials are not an unreachable store.
            raise PermissionDeniedError(f"{redact_url(self.url)}: {error}") from None
        except (redis.ConnectionError, redis.TimeoutError) as error:
            hint = connection_hint(self.url, error)
            raise StoreUnavailableError(
                f"cannot reach {redact_url(self.url)}: {error}{hint}"
            ) from None
        except redis.ResponseError as error:
            if str(error).startswith("NOPERM"):
                raise PermissionDeniedError(f"{redact_url(self.url)}: {error}") from None
            raise


def _decode_stored(kind: str, key: str, blob: bytes) -> tuple[dict[str, Any], int]:
    stored = decode_definition(blob, kind, key)
    return stored.definition, stored.version


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


def _check_references(
    key: str, flag: Flag, flags: Mapping[str, Mapping[str, Any]], segments: Any
) -> None:
    """A put flag's prerequisites must exist with the variant named, without cycles."""
    issues: list[ValidationIssue] = []
    for other, variant in flag.requires.items():
        if other not in flags:
            issues.append(
                ValidationIssue(f"flags.{key}.requires.{other}", f"unknown flag {other!r}")
            )
        elif variant not in (flags[other].get("variants") or {}):
            issues.append(
                ValidationIssue(
                    f"flags.{key}.requires.{other}", f"flag {other!r} has no variant {variant!r}"
                )
            )
    if not issues and flag.requires:
        graph = {
            name: parse_flag(name, definition, segments)
            for name, definition in flags.items()
            if definition.get("requires")
        }
        issues.extend(cycle_issues(graph))
    if issues:
        raise InvalidFlagError(issues)


def _with_serve(key: str, flag: Flag, rule: str | None, change: Callable[[Serve], Serve]) -> Flag:
    """`flag` with the default's serve (or the serve of the rule named `rule`) changed."""
    if rule is None:
        return _replace(flag, default=change(flag.default))
    for position, candidate in enumerate(flag.rules):
        if (candidate.name or f"rules[{position}]") == rule:
            rules = list(flag.rules)
            rules[position] = msgspec.structs.replace(candidate, serve=change(candidate.serve))
            return _replace(flag, rules=rules)
    names = [candidate.name or f"rules[{i}]" for i, candidate in enumerate(flag.rules)]
    raise InvalidFlagError(
        [ValidationIssue(f"flags.{key}.rules", f"no rule {rule!r} (rules: {', '.join(names)})")]
    )


def _replace(flag: Flag, **changes: Any) -> Flag:
    return msgspec.structs.replace(flag, **changes)


def _with_weights(serve: Any, weights: dict[str, float]) -> Rollout:
    if isinstance(serve, Rollout):
        return msgspec.structs.replace(serve, rollout=weights)
    return Rollout(rollout=weights)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
