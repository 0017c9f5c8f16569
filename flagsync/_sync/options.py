"""`SyncOptions`: every interval a follower and its drivers use, explicit and in seconds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["SyncOptions"]


@dataclass(frozen=True)
class SyncOptions:
    """Timing of a subscriber; every interval is explicit (seconds).

    The field names are `FlagClient.connect()` keyword options (the README lists them).
    """

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
    verify_keys: tuple[str, ...] = ()
    """Signed mode: public keys (one-line form or files); empty: `FLAGSYNC_VERIFY_KEYS`."""
