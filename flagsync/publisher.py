"""`Publisher`: the one way flags change in a store — validated, atomic, audited, announced.

Every write is one run of the store's Lua script (see `flagsync.store`): it refuses a
stale expected version (`ConflictError`, nothing written), bumps the flag's version and
the global revision, appends to the change log with the actor and reason, and publishes
the change. A bulk `apply` of a whole file is one revision. Definitions are validated
here before anything is sent, including their references to other flags and segments.
Reading the change log and watching workers is the fleet view's job (`flagsync.fleet`);
`history()`, `workers()` and `wait_propagated()` here delegate to it.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

import msgspec
import structlog

from flagsync._cluster import write_script_for
from flagsync._codec import WorkerInfo
from flagsync._confirmed_write import ConfirmedWriter, Replication
from flagsync._connection import connect, resolve_url, store_errors
from flagsync._failover import FailoverRetry
from flagsync._intent_writes import IntentWrites, decode_stored, lease_guard
from flagsync._references import delete_guards, reference_writes
from flagsync._reseed import dropped_by_reseed
from flagsync._signed_write import run_write_script
from flagsync._signing import signer_from
from flagsync._validation import check_references, parse_flag, parse_flagset
from flagsync._write_script import GUARD_OP, TOUCH_OP
from flagsync.diff import DefinitionChange, plan_changes
from flagsync.errors import (
    ConflictError,
    FlagNotFoundError,
    InvalidFlagError,
    PartialReseedError,
    ReplicationUnconfirmedError,
    StoreUnavailableError,
    ValidationIssue,
)
from flagsync.fleet import Fleet, HistoryEntry, PropagationReport, WorkerAck
from flagsync.loader import FlagSource, load_flags
from flagsync.model import Flag, FlagSet, LLMSettings
from flagsync.store import (
    DEFAULT_LOG_MAXLEN,
    NO_DATA_OPS,
    ScriptWrite,
    StoreKeys,
    WriteConflict,
    parse_revision,
    revision_command,
)

__all__ = [
    "DefinitionChange",
    "HistoryEntry",
    "PropagationReport",
    "Publisher",
    "Replication",
    "StoredFlag",
    "WorkerAck",
    "WriteResult",
    "lease_guard",
]

_log = structlog.get_logger("flagsync.publisher")
_LOGGED_KEYS: Final = 10
"""How many written keys `flags_written` names (a bulk apply may write thousands)."""
_T = TypeVar("_T")


class WriteResult(msgspec.Struct, frozen=True):
    """What the last write call did (`Publisher.last_write`).

    `changed` is False for a write that had nothing to change (enable of an enabled
    flag, a ramp to the same weights, applying the same file): no revision was issued,
    and `revision` is the store's current one, as the call returned.
    """

    op: str
    key: str | None
    """The flag written, or None for `apply`."""
    revision: int
    changed: bool
    replication: Replication | None = None
    """How many replicas acknowledged the write (`WAIT`); None when nothing was written."""


class StoredFlag(msgspec.Struct, frozen=True):
    """A flag as stored: its definition and version."""

    key: str
    version: int
    flag: Flag


class Publisher(IntentWrites):
    """Writes flags to one namespace of a store.

    `actor` is recorded in the change log with every write (default: the OS user).
    `signing_key` (else $FLAGSYNC_SIGNING_KEY): signed mode, README "Signed mode".
    Use as a context manager or call `close()`.

    Replication and failover (README "Running at scale"): every write waits up to
    `replication_timeout_s` for the primary's replicas to acknowledge it (`WAIT`) and
    reports how many did (`last_write.replication`); fewer than `min_replicas` raises
    `ReplicationUnconfirmedError`. A write whose reply was lost raises `WriteOutcomeUnknownError`.
    While no primary answers, an operation is retried with backoff for up to
    `failover_timeout_s`.
    """

    def __init__(
        self,
        url: str | None = None,
        namespace: str = "default",
        actor: str | None = None,
        *,
        log_maxlen: int = DEFAULT_LOG_MAXLEN,
        timeout_s: float = 5.0,
        signing_key: str | Path | None = None,
        adopt_unsigned: bool = False,
        min_replicas: int = 0,
        replication_timeout_s: float = 1.0,
        failover_timeout_s: float = 5.0,
    ) -> None:
        self.url = resolve_url(url)
        self.keys = StoreKeys(namespace)
        self._failover = FailoverRetry(self.url, namespace, failover_timeout_s)
        self.actor = actor or _os_user()
        self.log_maxlen = log_maxlen
        self._signer = signer_from(signing_key, adopt_unsigned=adopt_unsigned)
        # redis-py types replies as unions over `decode_responses`; ours are always bytes.
        self._redis: Any = connect(self.url, timeout_s=timeout_s, connect_timeout_s=timeout_s)
        self._script = self._redis.register_script(write_script_for(self.url))
        self._confirmed = ConfirmedWriter(
            self._redis,
            self._script,
            namespace,
            min_replicas=min_replicas,
            timeout_s=replication_timeout_s,
        )
        self._seen: tuple[str | None, int] = (None, 0)
        """The newest (epoch, revision) this publisher saw; its writes never reuse a
        revision number at or below it (the script issues max(stored, seen) + 1)."""
        self._loss_noted: tuple[str | None, int] | None = None
        self._published_us: dict[tuple[str, int], int] = {}
        self.fleet = Fleet(self.url, namespace, client=self._redis, published_us=self._published_us)
        """The read side on the same connection: history, live workers, propagation."""
        self.last_write: WriteResult | None = None
        """What the last write call did; tells a no-op from a change (see `WriteResult`)."""

    @property
    def client(self) -> Any:
        """The underlying redis-py client (for the rollout controller and advanced use)."""
        return self._redis

    # -- reading -------------------------------------------------------------

    @property
    def min_replicas(self) -> int:
        """Replicas that must acknowledge a write for it to count as confirmed."""
        return self._confirmed.min_replicas

    def revision(self) -> tuple[str | None, int]:
        """The store's (epoch, revision); (None, 0) when nothing was ever written."""
        return self._retrying(self._revision, idempotent=True)

    def _revision(self) -> tuple[str | None, int]:
        with store_errors(self.url):
            reply = self._redis.execute_command(*revision_command(self.keys))
        revision, epoch = parse_revision(reply)
        self._saw(epoch, revision)
        return epoch, revision

    def _saw(self, epoch: str | None, revision: int) -> None:
        """Remember the newest revision seen; warn when the store went back (history lost
        in a failover or a restored backup: the digest makes workers reload)."""
        seen_epoch, seen = self._seen
        lost = epoch is not None and epoch == seen_epoch and revision < seen
        if lost and self._loss_noted != self._seen:  # once per loss, not per read
            self._loss_noted = self._seen
            _log.warning(
                "store_history_lost",
                namespace=self.keys.namespace,
                epoch=epoch,
                stored=revision,
                seen=seen,
                note="the next write is numbered above the revision seen",
            )
        if revision >= seen or epoch != seen_epoch:
            self._seen = (epoch, max(revision, seen))

    def _retrying(self, operation: Callable[[], _T], *, idempotent: bool) -> _T:
        """`operation()`, retried while the store fails over (see `flagsync._failover`)."""
        return self._failover.call(operation, idempotent=idempotent)

    def get(self, key: str) -> StoredFlag | None:
        """A flag's stored definition and version, or None."""
        return self._retrying(lambda: self._get(key), idempotent=True)

    def _get(self, key: str) -> StoredFlag | None:
        with store_errors(self.url):
            blob = self._redis.hget(self.keys.flags, key)
        if blob is None:
            return None
        stored = decode_stored("flag", key, blob)
        # Segment names are needed to parse a flag whose rules target segments.
        return StoredFlag(key, stored[1], parse_flag(key, stored[0], self._segment_names()))

    def versions(self) -> dict[str, int]:
        """The current version of every flag (deleted ones excluded)."""
        state, versions = self._retrying(self._read_all, idempotent=True)
        return {key: versions.get(f"flag:{key}", 0) for key in state["flags"]}

    def definitions(self) -> FlagSet:
        """Everything in the namespace as one `FlagSet` (what `export` writes)."""
        definitions, _ = self._retrying(self._read_all, idempotent=True)
        return parse_flagset(definitions)

    def history(self, key: str | None = None, limit: int = 100) -> list[HistoryEntry]:
        """The newest `limit` change-log entries (for `key` only, if given), newest first.

        Same as `self.fleet.history` (see `flagsync.fleet.Fleet`)."""
        return self.fleet.history(key, limit)

    def workers(self) -> list[WorkerInfo]:
        """Every live worker of the namespace, by id (`self.fleet.workers`)."""
        return self.fleet.workers()

    def wait_propagated(self, revision: int, timeout: float = 5.0) -> PropagationReport:
        """Wait until every live worker has applied `revision` (or `timeout` seconds pass).

        Same as `self.fleet.wait_propagated` (see `flagsync.fleet.Fleet`)."""
        return self.fleet.wait_propagated(revision, timeout)

    # -- writing -------------------------------------------------------------

    def diff(self, source: FlagSource, *, prune: bool = False) -> list[DefinitionChange]:
        """What `apply(source)` would change, without writing anything (the dry run)."""
        return self._plan(load_flags(source), prune)[0]

    def apply(
        self,
        source: FlagSource,
        *,
        prune: bool = False,
        reason: str = "",
        complete: bool = False,
    ) -> int:
        """Make the store match a flag file (or mapping) as one atomic revision.

        Flags and segments in `source` are added or replaced; with `prune`, the ones
        not in it are deleted. Returns the new revision, or the current one (and
        `last_write.changed` is False) when nothing differs: applying the same file
        twice writes nothing.

        Into a wiped namespace (FLUSHALL, a deleted flags hash) whose live workers
        still serve flags the result would lack, nothing is written and
        `PartialReseedError` lists them, unless `complete` says the content is all.
        """
        document = load_flags(source)
        return self._retrying(
            lambda: self._apply(document, prune, reason, complete), idempotent=False
        )

    def _apply(self, document: FlagSet, prune: bool, reason: str, complete: bool) -> int:
        changes, writes, result, store_empty = self._plan(document, prune)
        if store_empty and not complete:
            self._refuse_partial_reseed(result)
        llm_writes, llm_section = self._llm_writes(result, document.llm)
        if not changes and llm_section is None:
            return self._unchanged("apply", None)
        return self._write(writes + llm_writes, reason, op_name="apply", llm_section=llm_section)

    def _llm_writes(
        self, flags: Mapping[str, Flag], section: LLMSettings | None
    ) -> tuple[list[ScriptWrite], bytes | None]:
        """Tie a write to the namespace's `llm:` section (see `flagsync.llm.policy`).

        `flags`' llm flags are checked against `section` (a file's) or else the stored
        one, and the write carries a guard on the stored section's version — or, when
        `section` differs from it, a bump of that version and the section's bytes to
        store (returned), so the script writes both or neither."""
        if section is None and not any(flag.kind for flag in flags.values()):
            return [], None
        from flagsync.llm import policy  # noqa: PLC0415 - only llm users pay for it

        with store_errors(self.url):
            stored, blob, version = policy.read_versioned(
                self._redis, self.keys.llm, self.keys.versions
            )
        kind, key = policy.SETTINGS_FIELD
        policy.check_against_stored(flags, stored if section is None else section)
        encoded = None if section is None else policy.encode_settings(section)
        if encoded is None or encoded == blob:
            return [ScriptWrite(kind, key, version, GUARD_OP)], None
        return [ScriptWrite(kind, key, version, TOUCH_OP)], encoded

    def dropped_by_reseed(self, keys: Collection[str]) -> dict[str, list[str]]:
        """Flags live workers serve from before a wipe that a namespace of only `keys`
        would lack, with the workers serving each (see `flagsync._reseed`)."""
        epoch, revision = self.revision()
        return dropped_by_reseed(self.fleet.workers(), epoch, revision, keys)

    def _refuse_partial_reseed(self, keys: Collection[str]) -> None:
        """Raise `PartialReseedError` if writing a store of only `keys` into this (empty)
        namespace would drop flags live workers still serve."""
        dropped = self.dropped_by_reseed(keys)
        if dropped:
            raise PartialReseedError(self.keys.namespace, dropped)

    def put(
        self,
        key: str | Mapping[str, Any],
        flag: Flag | Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
        reason: str = "",
        complete: bool = False,
    ) -> int:
        """Create or replace one flag; returns the new revision (see `last_write`).

        `put("key", definition)`, or `put({"key": definition})` in the file's `flags:`
        shape. With `expected_version`, a flag changed since that version is refused
        with `ConflictError`; without it, the version just read is expected. Into a
        wiped namespace, refused like `apply` unless `complete`.
        """
        if isinstance(key, Mapping):
            if flag is not None or len(key) != 1:
                raise TypeError("put() takes put(key, definition) or put({key: definition})")
            ((key, flag),) = key.items()
        if flag is None:
            raise TypeError("put() needs a definition")
        name, definition = key, flag
        return self._retrying(
            lambda: self._put(name, definition, expected_version, reason, "put", complete=complete),
            idempotent=False,
        )

    def _put(
        self,
        key: str,
        definition: object,
        expected_version: int | None,
        reason: str,
        op: str,
        *,
        complete: bool = False,
    ) -> int:
        """Validate and write one flag; `op` names the change in the log (put, rollback)."""
        state, versions = self._read_all()
        if not state["flags"] and not complete:  # wiped? (see `apply`)
            self._refuse_partial_reseed({key})
        segments = state["segments"].keys()
        parsed = parse_flag(key, definition, segments)  # any shape: refused with its path
        llm_writes, _ = self._llm_writes({key: parsed}, None)
        stored = msgspec.to_builtins(parsed)
        flags = dict(state["flags"])
        flags[key] = stored
        check_references(key, parsed, flags, segments)
        current = versions.get(f"flag:{key}", 0)
        if expected_version is not None and expected_version != current:
            raise ConflictError("flag", key, expected_version, current)
        if key in state["flags"] and state["flags"][key] == stored:
            return self._unchanged(op, key)
        guards = reference_writes([stored], versions, skip=[("flag", key)])
        write = ScriptWrite("flag", key, current, op, stored)
        return self._write([write, *guards, *llm_writes], reason, op_name=op)

    def delete(self, key: str, *, reason: str = "", expected_version: int | None = None) -> int:
        """Delete a flag (refused while another flag requires it). Returns the revision."""
        return self._retrying(lambda: self._delete(key, reason, expected_version), idempotent=False)

    def _delete(self, key: str, reason: str, expected_version: int | None) -> int:
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
        write = ScriptWrite("flag", key, current, "delete", None)
        guards = delete_guards([("flag", key)], versions)  # see flagsync._references
        return self._write([write, *guards], reason, op_name="delete")

    def rollback(
        self,
        key: str,
        *,
        to_version: int | None = None,
        steps: int | None = None,
        reason: str = "",
        expected_version: int | None = None,
    ) -> int:
        """Restore the definition a flag had at `to_version` (or `steps` changes ago) as a
        new revision; the change log keeps both. Returns the revision.

        With `expected_version`, a flag at another version is refused with
        `ConflictError` (nothing written); the check is the write script's, so a change
        that lands between this call's read and its write is refused too."""
        if (to_version is None) == (steps is None):
            raise TypeError("rollback() takes exactly one of to_version= or steps=")
        return self._retrying(
            lambda: self._rollback(key, to_version, steps, reason, expected_version),
            idempotent=False,
        )

    def _rollback(
        self,
        key: str,
        to_version: int | None,
        steps: int | None,
        reason: str,
        expected_version: int | None,
    ) -> int:
        with store_errors(self.url):
            raw_version = self._redis.hget(self.keys.versions, f"flag:{key}")
        current = int(raw_version or 0)
        if current == 0:
            raise FlagNotFoundError("flag", key)
        if expected_version is not None and expected_version != current:
            raise ConflictError("flag", key, expected_version, current)
        target = to_version if to_version is not None else current - (steps or 0)
        if not 1 <= target <= current:
            raise InvalidFlagError.single(f"flags.{key}", _no_version(target, current, steps))
        if target == current:
            return self._unchanged("rollback", key)
        for entry in self.history(key, limit=self.log_maxlen):
            # A segment may share the flag's key: only the flag's own entries count.
            if entry.kind == "flag" and entry.version == target:
                restored = reason or f"rollback to v{target}"
                if entry.after is None:
                    return self._delete(key, restored, current)
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

    def _segment_names(self) -> set[str]:
        with store_errors(self.url):
            return {name.decode() for name in self._redis.hkeys(self.keys.segments)}

    def _read_all(self) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
        """The namespace's definitions (file form) and versions, read consistently."""
        for _ in range(20):
            with store_errors(self.url):
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
                    state[section][key] = decode_stored(kind, key, blob)[0]
            return state, {field.decode(): int(value) for field, value in versions.items()}
        raise StoreUnavailableError("could not read a consistent state")  # pragma: no cover

    def _plan(
        self, document: FlagSet, prune: bool
    ) -> tuple[list[DefinitionChange], list[ScriptWrite], Mapping[str, Flag], bool]:
        """The changes and writes that make the store hold `document` (merged with what
        it holds, unless `prune`), the flags it will then hold, and whether it holds
        no flag now (wiped, or never written: see `dropped_by_reseed`)."""
        state, versions = self._read_all()
        wanted = document.to_builtins()
        merged: dict[str, dict[str, Any]] = {
            section: ({} if prune else dict(state[section])) | wanted.get(section, {})
            for section in ("flags", "segments")
        }
        resulting = parse_flagset(merged)  # the resulting state must be valid as a whole
        plan = plan_changes(state, merged, versions)
        writes = [
            ScriptWrite(change.kind, change.key, change.version, "apply", after)
            if after is not None
            else ScriptWrite(change.kind, change.key, change.version, "delete")
            for change, after in plan
        ]
        written = {(write.kind, write.key) for write in writes}
        writes += reference_writes(
            (write.definition for write in writes if write.definition is not None),
            versions,
            skip=written,
        )
        writes += delete_guards(((w.kind, w.key) for w in writes if w.op == "delete"), versions)
        changes = [change for change, _ in plan]
        return changes, writes, resulting.flags, not state["flags"]

    def _unchanged(self, op: str, key: str | None) -> int:
        """The current revision, for a write that had nothing to change."""
        revision = self._revision()[1]
        self.last_write = WriteResult(op, key, revision, changed=False)
        return revision

    def _write(
        self,
        writes: list[ScriptWrite],
        reason: str,
        *,
        op_name: str,
        llm_section: bytes | None = None,
    ) -> int:
        def execute(keys: Sequence[str], args: Sequence[object]) -> Any:
            return self._confirmed.run(keys, args, op_name)

        self._confirmed.last = None
        with store_errors(self.url):
            result = run_write_script(
                execute,
                self._redis,
                self.keys,
                writes,
                signer=self._signer,
                seen_revision=self._seen[1],
                log_maxlen=self.log_maxlen,
                actor=self.actor,
                reason=reason,
                llm_section=llm_section,
            )
        if isinstance(result, WriteConflict):
            raise ConflictError(result.kind, result.key, result.expected, result.actual)
        revision, epoch = result.revision, result.epoch
        self._published_us[(epoch, revision)] = result.server_us
        self._saw(epoch, revision)
        replication = self._confirmed.last
        written = [write.key for write in writes if write.op not in NO_DATA_OPS]
        _log.info(
            "flags_written",
            namespace=self.keys.namespace,
            op=op_name,
            revision=revision,
            count=len(written),
            keys=written[:_LOGGED_KEYS],  # the change log has them all
            actor=self.actor,
            replication=None if replication is None else str(replication),
        )
        self.last_write = WriteResult(
            op_name,
            None if op_name == "apply" else written[0],
            revision,
            changed=True,
            replication=replication,
        )
        if replication is not None and not replication.confirmed:
            raise ReplicationUnconfirmedError(
                self.keys.namespace,
                revision,
                replication.acked,
                replication.acked if replication.replicas is None else replication.replicas,
                replication.required,
            )
        return revision


def _no_version(target: int, current: int, steps: int | None) -> str:
    """Why a rollback target does not exist, in the terms the caller used."""
    if steps is not None:
        earlier = current - 1
        plural = "version exists" if earlier == 1 else "versions exist"
        return (
            f"cannot go back {steps} step{'s' if steps != 1 else ''}: only {earlier} earlier "
            f"{plural} (current is v{current})"
        )
    return f"no version {target} (current is v{current})"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
