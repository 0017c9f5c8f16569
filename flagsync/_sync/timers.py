"""When a session checks, heartbeats and pings, and how long it waits before retrying.

Shared by the thread and the async driver so both keep the same deadlines. Retry delays
are redis-py's full-jitter backoff (`redis.backoff.FullJitterBackoff`), with a longer cap
for errors a quick retry will not fix (bad credentials, ACL denials).
"""

from __future__ import annotations

import time

import redis
from redis.backoff import FullJitterBackoff

from flagsync._sync.options import SyncOptions

__all__ = ["LivenessError", "SessionTimers", "backoff_delay", "is_permanent"]

_MAX_DOUBLINGS = 30
"""redis-py computes `base * 2**failures` as a float: past ~1,070 failures (a long outage)
that raises OverflowError. Every cap we use is reached long before 2**30 doublings."""

_PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    redis.AuthenticationError,
    redis.exceptions.AuthorizationError,
    redis.exceptions.NoPermissionError,
)


def is_permanent(error: BaseException) -> bool:
    """Errors a quick retry will not fix (credentials, ACLs): back off for longer."""
    if isinstance(error, _PERMANENT_ERRORS):
        return True
    text = str(error)
    return isinstance(error, redis.ResponseError) and text.startswith(("NOPERM", "WRONGPASS"))


def backoff_delay(attempt: int, initial_s: float, cap_s: float) -> float:
    """Full jitter: uniform in [0, min(cap_s, initial_s * 2**attempt)] (redis-py's backoff)."""
    return FullJitterBackoff(cap=cap_s, base=initial_s).compute(min(attempt, _MAX_DOUBLINGS))


def retry_cap_s(options: SyncOptions, *, permanent: bool) -> float:
    """The backoff cap for a failure: long for permanent errors, short otherwise."""
    return options.backoff_max_permanent_s if permanent else options.backoff_max_s


class LivenessError(ConnectionError):
    """The pub/sub link stopped answering pings within the liveness deadline."""


class SessionTimers:
    """The deadlines of one session: revision check, heartbeat, ping, liveness.

    Timing is by the monotonic clock, never by how long a read happened to wait
    (redis-py's `get_message` can return early, e.g. on a pong).
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
        """True when the presence record should be written (or withdrawn) again."""
        return time.monotonic() >= self.next_heartbeat

    def heartbeat_sent(self) -> None:
        """The presence step ran: the next one is a heartbeat interval away."""
        self.next_heartbeat = time.monotonic() + self.options.heartbeat_interval_s

    def check_due(self) -> bool:
        """True when the store's revision should be compared with ours."""
        return time.monotonic() >= self.next_check

    def checked(self) -> None:
        """The revision check ran: the next one is a check interval away."""
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
