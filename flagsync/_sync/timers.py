"""When a session checks, heartbeats and pings, and how long it waits before retrying.

Shared by the thread and the async driver so both keep the same deadlines. Retry delays
are redis-py's full-jitter backoff (`redis.backoff.FullJitterBackoff`), with a longer cap
for errors a quick retry will not fix (bad credentials, ACL denials).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

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

    The beacon (`flagsync._sync.beacon`). While its heartbeats flow (one heard within
    two beacon intervals) the revision check runs every `beacon_check_interval_s` (at
    most 1 s) instead of `check_interval_s`, and no pings are sent: a heartbeat proves
    the link alive. A heartbeat never pushes a check later than that; one that disagrees
    with our state makes a check due (`check_soon`), at most once per `check_interval_s`
    so a flood of heartbeats costs no more than polling did.

    Start-up. Until the session's first subscribe confirmation has been read and its
    first load applied, the liveness deadline is `start_grace_s`: thousands of clients
    starting on a busy host read their confirmations late, and must not reconnect for it.
    """

    def __init__(self, options: SyncOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        now = clock()
        self.options = options
        self.last_check = now
        self.last_read = now
        """The last check, or the last beat of ours that confirmed our state (`beat_read`)."""
        self.next_check = now + options.check_interval_s
        self.next_heartbeat = now
        self.next_ping = now + options.ping_interval_s
        self.last_heard = now
        self.last_beacon = -math.inf
        self.started = False
        """The first subscribe confirmation was read and the first load applied."""
        self._confirmed = self._loaded = False
        self.urgent = False
        """A heartbeat disagreed: the next check reads everything and loads at once."""

    def changed(self) -> None:
        """A new revision was applied: report it soon, but not at once.

        Every worker receives a change at the same moment; an immediate heartbeat
        would compete for the CPU with sibling processes still applying it. The
        applied time is recorded at the swap, so the delay never shows in latencies.
        """
        self.next_heartbeat = min(self.next_heartbeat, self._clock() + self.options.ack_delay_s)

    def wait_s(self, also: float = math.inf) -> float:
        """How long the next read may wait before something is due (`also`: another
        monotonic deadline, e.g. the beacon's)."""
        due = min(self._check_at(), self.next_heartbeat, self._ping_at(), also)
        return max(0.0, due - self._clock())

    def heard(self) -> None:
        """Anything arrived on the channel (a message, a confirmation, a pong)."""
        self.last_heard = self._clock()

    def subscribed(self) -> None:
        """The subscribe confirmation was read."""
        self._confirmed = True
        self.started = self._loaded

    def loaded(self) -> None:
        """A whole load was applied: at the first, the start-up deadline ends from now."""
        if not self._loaded:
            self._loaded = True
            self.last_heard = max(self.last_heard, self._clock())
        self.started = self._confirmed

    def beacon_heard(self) -> None:
        """A heartbeat of the namespace's beacon arrived (verified, in signed mode)."""
        self.last_beacon = self._clock()

    def beacon_flowing(self) -> bool:
        """True while heartbeats arrive (one within two beacon intervals)."""
        return self._clock() - self.last_beacon <= 2 * self.options.beacon_interval_s

    def check_soon(self) -> None:
        """A heartbeat disagreed with our state: check now, or once `check_interval_s`
        has passed since the last check (a flood of heartbeats is not a flood of checks)."""
        self.urgent = True
        self.next_check = min(self.next_check, self.last_check + self.options.check_interval_s)

    def heartbeat_due(self) -> bool:
        """True when the presence record should be written (or withdrawn) again."""
        return self._clock() >= self.next_heartbeat

    def heartbeat_sent(self) -> None:
        """The presence step ran: the next one is a heartbeat interval away."""
        self.next_heartbeat = self._clock() + self.options.heartbeat_interval_s

    def check_due(self) -> bool:
        """True when the store's revision should be compared with ours."""
        return self._clock() >= self._check_at()

    def checked(self) -> None:
        """The revision check ran: the next one is a check interval away (the slow one
        is chosen when due, so heartbeats that stop bring the fast one back at once)."""
        now = self._clock()
        self.last_check = self.last_read = now
        self.urgent = False
        self.next_check = now + self.options.beacon_check_interval_s

    def beat_read(self) -> None:
        """This process holds the beacon and its beat just read, from the node it follows,
        a state that confirms ours: the periodic check moves on as after a check (the
        holder's beats then cost no checks of their own). Not for `check_soon`'s rate
        limit: a heartbeat that disagrees right after still makes a check due at once."""
        if self.urgent:
            return
        now = self._clock()
        self.last_read = now
        self.next_check = max(self.next_check, now + self.options.beacon_check_interval_s)

    def grace_fits(self, grace_s: float) -> bool:
        """True when waiting `grace_s` more keeps this check within two polling
        intervals of the one before (a lost nudge is then served within ~0.5 s)."""
        return self._clock() - self.last_read + grace_s <= 2 * self.options.check_interval_s

    def recheck_in(self, delay_s: float) -> None:
        """Check again after `delay_s` (a grace for a message in flight)."""
        self.next_check = min(self.next_check, self._clock() + delay_s)

    def ping_due(self) -> bool:
        """True when a ping should be sent; raises `LivenessError` when the link is dead."""
        now = self._clock()
        silent_s = now - self.last_heard
        limit = self.options.liveness_timeout_s
        if not self.started:
            limit = max(limit, self.options.start_grace_s)
        if silent_s > limit:
            raise LivenessError(f"no pong or message for {silent_s:.2f}s on the change channel")
        if now < self._ping_at():
            return False
        self.next_ping = now + self.options.ping_interval_s
        return True

    def _check_at(self) -> float:
        """When the next check is due: `next_check` (the slow interval, or sooner when
        asked), but the fast interval after the last check while heartbeats do not flow."""
        if self.beacon_flowing():
            return self.next_check
        last = max(self.last_check, self.last_read)
        return min(self.next_check, last + self.options.check_interval_s)

    def _ping_at(self) -> float:
        """No pings while heartbeats flow; else every `ping_interval_s`."""
        if self.beacon_flowing():
            return self.last_beacon + 2 * self.options.beacon_interval_s
        return self.next_ping
