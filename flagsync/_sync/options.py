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
    start_grace_s: float = 5.0
    """Liveness deadline until the first subscribe confirmation and load of a session: a
    busy start (thousands of clients connecting at once) is not a dead link."""
    socket_timeout_s: float = 1.0
    connect_timeout_s: float = 1.0
    heartbeat_interval_s: float = 5.0
    """How often the presence record is rewritten when nothing changed (an applied
    revision is acked after `ack_delay_s`, whatever this says)."""
    ack_delay_s: float = 0.01
    """Delay between applying a revision and heartbeating it (see `SessionTimers.changed`)."""
    presence_ttl_s: float = 15.0
    """TTL of the presence record: three heartbeat intervals, so one slow write never
    drops a live worker from the fleet view."""
    beacon: bool = True
    """Contend for the namespace's beacon (`flagsync._sync.beacon`) and publish its
    heartbeats when elected. False: never publish (heartbeats of others are still
    followed; without any, the polling cadence applies)."""
    beacon_interval_s: float = 0.4
    """How often the elected worker publishes the channel heartbeat."""
    beacon_check_interval_s: float = 1.0
    """Revision-check interval while heartbeats flow (the bound on a lost nudge's delay)."""
    beacon_lease_s: float = 2.0
    """TTL of the beacon lease; its holder renews it every second."""
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0
    backoff_max_permanent_s: float = 30.0
    """Backoff cap for errors a retry will not fix soon (bad credentials, ACL denials)."""
    lkg_path: Path | None = None
    """Optional last-known-good file: written after each sync, read at start."""
    verify_keys: tuple[str, ...] = ()
    """Signed mode: public keys (one-line form or files); empty: `FLAGSYNC_VERIFY_KEYS`."""

    def __post_init__(self) -> None:
        for name in _BEACON_TIMES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name}: must be a positive number of seconds, got {value!r}")
        if self.beacon_check_interval_s > 1.0:
            raise ValueError(
                "beacon_check_interval_s: at most 1.0 (it bounds a lost nudge's delay), "
                f"got {self.beacon_check_interval_s!r}"
            )


_BEACON_TIMES = (
    "heartbeat_interval_s",
    "presence_ttl_s",
    "beacon_interval_s",
    "beacon_check_interval_s",
    "beacon_lease_s",
    "start_grace_s",
)
