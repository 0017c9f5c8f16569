"""Whole-store loads: a full load of what the store holds, and the deferred first load
(ready once read, each flag checked on its first use; see `flagsync._sync.quarantine`).

Split from `flagsync._sync.follower` (the follower's other decisions: messages, checks,
status) so each module has one job; these functions run under the follower's lock and
change only its state. No I/O: the drivers read, the follower decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flagsync._sync.logs import SafeLogger
from flagsync._sync.quarantine import (
    DeferredLoad,
    defer_load,
    kind_versions,
    load_definitions,
    stored_versions,
)
from flagsync.errors import InvalidFlagError
from flagsync.snapshot import Quarantine, Snapshot
from flagsync.store import LoadedStore

if TYPE_CHECKING:
    from flagsync._sync.follower import Follower

__all__ = ["apply_load"]

_log = SafeLogger("flagsync.subscriber")  # the follower's logger name: one stream for the sync


def apply_load(follower: Follower, loaded: LoadedStore) -> bool:
    """Apply a whole-store read (see `Follower.on_loaded`); False when it was refused."""
    follower.counts["resyncs"] += 1
    follower._last_load = follower._clock()
    current = follower.snapshot
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
        was_missing, follower.snapshot_missing = follower.snapshot_missing, True
        if len(current) or current.epoch:
            if not was_missing:
                _log.warning(
                    "snapshot_missing", namespace=follower.keys.namespace, kept=current.revision
                )
            return False
        follower.ready.set()  # a namespace nobody has written to yet: nothing to serve
        follower.confirm()
        return True
    follower.snapshot_missing = False
    blobs = (loaded.flags, loaded.segments)
    if (
        follower._blobs == blobs
        and current.epoch == loaded.epoch
        and current.revision == loaded.revision
    ):
        follower.integrity.same_load(loaded)
        follower.llm.loaded(loaded.llm, follower.keys.namespace)
        follower.confirm()
        follower.ready.set()
        return True
    if not follower.integrity.load_fits(loaded, current.revision):
        return False  # signed mode refused it: LKG kept, status and logs say why
    deferred = defer_load(loaded) if loaded.flags and _serves_nothing(current) else None
    if deferred is not None:
        return _apply_deferred(follower, loaded, deferred)
    try:
        definitions, quarantine = load_definitions(loaded, current.definitions)
    except InvalidFlagError as error:  # the store as a whole, beyond any quarantine
        follower.counts["rejected_snapshots"] += 1
        follower.last_error = f"snapshot rejected: {error}"
        _log.error(
            "snapshot_rejected",
            namespace=follower.keys.namespace,
            revision=loaded.revision,
            error=str(error),
            kept_revision=current.revision,
        )
        return False
    follower._blobs = blobs
    follower.llm.loaded(loaded.llm, follower.keys.namespace)  # before the swap, as the flags
    _report_quarantine(follower, quarantine, loaded.revision)
    follower.integrity.load_applied(loaded)
    if follower.last_error and follower.last_error.startswith("snapshot rejected"):
        follower.last_error = None
    if (
        current.epoch == loaded.epoch
        and current.revision == loaded.revision
        and current.quarantine == quarantine
        and current.definitions == definitions
    ):
        # The revision we hold, read again (a resync after a change we applied from
        # its message): nothing to swap, and listeners heard of this revision once.
        if not follower._announced:  # this process's first load (a forked child's): say so
            _log_loaded(follower, loaded, len(current), quarantine, unchanged=True)
        follower.confirm()
        follower.ready.set()
        return True
    snapshot = Snapshot.build(
        definitions,
        revision=loaded.revision,
        epoch=loaded.epoch,
        quarantine=quarantine,
        versions=stored_versions(loaded.flags, definitions, quarantine, current),
    )
    follower.confirm()  # first: a reader never sees the new revision reported STALE
    follower._swap(snapshot, current.changed_keys(snapshot), 0)
    _log_loaded(follower, loaded, len(snapshot), quarantine, unchanged=False)
    follower.ready.set()
    return True


def _apply_deferred(follower: Follower, loaded: LoadedStore, deferred: DeferredLoad) -> bool:
    """A first load: ready once the store is read, each flag checked on its first use;
    then every flag checked here, and the snapshot corrected if any is quarantined
    (see `flagsync._sync.quarantine`)."""
    follower._blobs = (loaded.flags, loaded.segments)
    follower.llm.loaded(loaded.llm, follower.keys.namespace)  # with the snapshot it belongs to
    follower.integrity.load_applied(loaded)
    if follower.last_error and follower.last_error.startswith("snapshot rejected"):
        follower.last_error = None
    epoch = loaded.epoch or ""
    snapshot = Snapshot.deferred(
        deferred,
        deferred.segments,
        revision=loaded.revision,
        epoch=epoch,
        versions=kind_versions(loaded.flags),
    )
    follower.confirm()
    follower._swap(snapshot, frozenset(loaded.flags), 0)
    # Logged before ready: a process that forks once ready (a pre-fork server) must
    # not fork while this thread holds the log stream's lock.
    _log_loaded(follower, loaded, len(snapshot), snapshot.quarantine, unchanged=False)
    follower.ready.set()
    definitions, quarantine = deferred.settle()  # after ready: the whole check
    if quarantine or follower._quarantine_logged:
        _report_quarantine(follower, quarantine, loaded.revision)
    if quarantine:  # rare: the snapshot without the quarantined flags
        snapshot = Snapshot.build(
            definitions,
            revision=loaded.revision,
            epoch=epoch,
            quarantine=quarantine,
            versions=stored_versions(loaded.flags, definitions, quarantine, snapshot),
        )
        follower._swap(snapshot, frozenset(quarantine.flags), 0)
    else:
        _ = snapshot.definitions  # adopts the verdict: the snapshot is settled
        if follower._persist is not None:
            follower._persist(snapshot)
    return True


def _log_loaded(
    follower: Follower, loaded: LoadedStore, flags: int, quarantine: Quarantine, *, unchanged: bool
) -> None:
    follower._announced = True
    _log.info(
        "snapshot_loaded",
        namespace=follower.keys.namespace,
        epoch=loaded.epoch,
        revision=loaded.revision,
        flags=flags,
        quarantined=len(quarantine.flags),
        **({"unchanged": True} if unchanged else {}),
    )


def _report_quarantine(follower: Follower, quarantine: Quarantine, revision: int) -> None:
    """Log each quarantined flag or segment once per reason, and each one lifted."""
    reported: dict[tuple[str, str], str] = {}
    for kind, reasons in (("flag", quarantine.flags), ("segment", quarantine.segments)):
        for key, reason in reasons.items():
            reported[kind, key] = reason
            if follower._quarantine_logged.get((kind, key)) != reason:
                _log.warning(
                    f"{kind}_quarantined",
                    namespace=follower.keys.namespace,
                    key=key,
                    reason=reason[:500],
                    revision=revision,
                )
    for kind, key in follower._quarantine_logged.keys() - reported.keys():
        _log.info(
            f"{kind}_quarantine_lifted",
            namespace=follower.keys.namespace,
            key=key,
            revision=revision,
        )
    follower._quarantine_logged = reported


def _serves_nothing(snapshot: Snapshot) -> bool:
    """No flag, segment or quarantine: no last-known-good version a load would keep."""
    return not (len(snapshot) or snapshot.definitions.segments or snapshot.quarantine)
