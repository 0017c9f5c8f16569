"""What a client reports about its sync: the basis of readiness probes and dashboards."""

from __future__ import annotations

from enum import StrEnum

import msgspec

__all__ = ["ClientStatus", "SyncState"]


class SyncState(StrEnum):
    """Where a client stands with the store (compares equal to the plain string)."""

    OFFLINE = "offline"
    """Built from fixed flags; never syncs."""
    CONNECTING = "connecting"
    """No snapshot from the store yet (defaults or a last-known-good file are served)."""
    READY = "ready"
    """In sync: the store confirmed our revision within the grace period."""
    STALE = "stale"
    """Serving the last-known-good snapshot, unconfirmed for longer than the grace period."""
    CLOSED = "closed"
    """`close()` was called; the last snapshot is still served."""


class ClientStatus(msgspec.Struct, frozen=True):
    """A point-in-time report of a client's sync state; cheap to take, safe from any thread."""

    state: SyncState
    connected: bool
    namespace: str | None
    epoch: str | None
    revision: int
    flags: int
    seconds_since_sync: float | None
    """Seconds since the store last confirmed the applied revision (None: never)."""
    resyncs: int = 0
    reconnects: int = 0
    applied_changes: int = 0
    ignored_messages: int = 0
    """Duplicate or older revisions received and dropped."""
    malformed_messages: int = 0
    rejected_snapshots: int = 0
    state_checks: int = 0
    """Cheap reads of the store's (epoch, revision, digest), periodic or after doubtful messages."""
    state_diverged: int = 0
    """Times the store's state at our epoch was not ours (rewind, failover, forged message)."""
    signature_rejected: int = 0
    """Signed mode: changes or snapshots refused as unsigned, badly signed or replayed."""
    snapshot_missing: bool = False
    """The store has no data for the namespace (flushed or never written); LKG kept."""
    last_error: str | None = None
    worker_id: str | None = None
    quarantined: dict[str, str] = msgspec.field(default_factory=dict)
    """Flags of the store this client could not use, each with why: each serves its
    last-known-good version (the reason says so) or else the caller's default with
    `PARSE_ERROR`; every other flag is served (see "Quarantine" in the README)."""
    quarantined_segments: dict[str, str] = msgspec.field(default_factory=dict)
    """Segments set aside the same way (flags targeting a missing one are quarantined)."""
    exposures: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    """Evaluations per flag and variant since the client started (`connect(...,
    exposures=True)`; empty otherwise). Flags that serve one variant to everyone are not
    counted (see `MeteredFlagClient`); under threads the counts are approximate."""
    presence_error: str | None = None
    """Why this worker's presence record could not be written (a read-only replica, an
    unreachable `presence_url`): it follows the store but `--wait` cannot count it."""
