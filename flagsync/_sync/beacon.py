"""The namespace's beacon: one worker, elected by a lease, publishes a channel heartbeat.

Why a heartbeat. Without one, every worker polls the store's revision 4 times a second
and pings its pub/sub link twice a second, so a lost nudge is found within 0.25 s: ~7
commands per worker per second, ~70,000/s at 10,000 workers. A heartbeat carrying the
store's (epoch, revision, digest, entries) every `beacon_interval_s` tells every worker
at once whether it is behind, and proves each link alive, so while heartbeats flow a
worker checks once a second (never less) and sends no pings: ~1.2 commands per second.

Why a worker publishes it, elected by a lease. The publisher is a CLI that exits, and the
rollout controller is optional; workers are always there. Redis's own features are
enough: `SET {fs:<ns>}:beacon <id> NX PX <lease>` elects one holder, which renews the
lease (a GET and a PEXPIRE: extending someone else's lease by mistake is harmless, and
workers may hold no script rights) and publishes on `{fs:<ns>}:heartbeat` what it reads
from the store (never what it holds: a holder that missed a change must not make every
worker doubt). PUBLISH costs ~0.5 µs per subscriber (~5 ms at 10,000), 2.5 times a
second. The others contend only after heartbeats were missing for
`3 * beacon_interval_s` plus a random spread, backing off after each refused attempt, so
10,000 workers never stampede: the lease's owner dies, the lease expires, one of them
takes it.

Why it is safe. The heartbeat has a channel of its own, and the worker ACL lets workers
publish there only, never on the change channel. A heartbeat can only make a worker check
sooner (it disagrees) or confirm what the worker holds; the periodic check still runs at
least once a second whatever heartbeats say. In signed mode a heartbeat carries the
signature record the last write stored and is ignored unless it verifies (see
`Follower.on_heartbeat`). The beacon is written on the presence node (a writable one):
a worker on a read-only replica without `presence_url` does not contend.

Pure: the drivers run the commands this class asks for. Clock and randomness are
parameters, so the unit tests drive the election.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import redis
import structlog

from flagsync._sync.follower import MESSAGE_GRACE_S, POLLING_GRACE_S, Follower
from flagsync._sync.options import SyncOptions
from flagsync._sync.timers import SessionTimers
from flagsync.store import (
    Command,
    StoreKeys,
    StoreState,
    beacon_state_commands,
    encode_heartbeat,
    parse_beacon_state,
    publish_command,
)

__all__ = [
    "Beacon",
    "BeaconRefusedError",
    "BeaconStep",
    "beacon_refusal",
    "grace_s",
    "heard_beacon",
    "is_beacon_refusal",
    "read_own_beat",
]

_log = structlog.get_logger("flagsync.subscriber")

BeaconStep = Literal["contend", "beat"]

_MAX_BACKOFF_S = 30.0
_RENEW_EVERY_S = 1.0


class Beacon:
    """This process's side of one namespace's beacon election."""

    def __init__(
        self,
        keys: StoreKeys,
        options: SyncOptions,
        worker_id: Callable[[], str],
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        sharded: bool = False,
    ) -> None:
        self.keys = keys
        self.sharded = sharded
        """On a cluster the heartbeat goes out with SPUBLISH (workers SSUBSCRIBE)."""
        self.options = options
        self._worker_id = worker_id
        self._clock = clock
        self._rng = rng
        self.holding = False
        self.disabled: str | None = None if options.beacon else "disabled by options"
        """Why this process never contends (None: it may). It still follows heartbeats."""
        self.listening = True
        """Subscribe to the heartbeat channel (False once the server refused it)."""
        self._refusals = 0
        self._next_attempt = math.inf
        self._next_beat = math.inf
        self._next_renew = math.inf
        self._beat_started = -math.inf
        self._entries: tuple[tuple[Any, ...], int] | None = None
        """(revision, epoch, digest) as read, and the entries counted at it."""
        self.beats = 0
        """Heartbeats published by this process (for tests and status)."""
        self.session_started()

    @property
    def missing_s(self) -> float:
        """Silence after which heartbeats count as missing (three beats)."""
        return 3 * self.options.beacon_interval_s

    def session_started(self) -> None:
        """A new session: whoever holds the lease, we have heard nothing yet."""
        self.holding = False
        self._next_beat = self._next_renew = math.inf
        self._refusals = 0
        self._schedule_attempt()

    def heard(self) -> None:
        """A heartbeat arrived (ours included): nobody needs to contend for a while."""
        if not self.holding:
            self._refusals = 0
            self._schedule_attempt()

    def next_due(self) -> float:
        """Monotonic time of the next step (inf: none)."""
        if self.disabled is not None:
            return math.inf
        return self._next_beat if self.holding else self._next_attempt

    def step(self) -> BeaconStep | None:
        """The step due now, if any."""
        if self.disabled is not None or self._clock() < self.next_due():
            return None
        return "beat" if self.holding else "contend"

    # -- contending ----------------------------------------------------------------

    def contend_commands(self) -> list[Command]:
        """Take the lease if free; the GET tells whether it is ours (also after a
        reconnect, when our own lease is still there)."""
        ttl_ms = int(self.options.beacon_lease_s * 1000)
        return [
            ("SET", self.keys.beacon, self._worker_id(), "NX", "PX", ttl_ms),
            ("GET", self.keys.beacon),
        ]

    def contended(self, replies: Sequence[Any]) -> None:
        """What `contend_commands` answered."""
        if _text(replies[1]) == self._worker_id():
            self.holding = True
            self._entries = None
            now = self._clock()
            self._next_beat = now
            self._next_renew = now + _RENEW_EVERY_S
            _log.info("beacon_taken", namespace=self.keys.namespace, worker=self._worker_id())
            return
        self._refusals += 1
        self._schedule_attempt()

    # -- holding -------------------------------------------------------------------

    def beat_commands(self) -> list[Command]:
        """Read the store's state. Every second (or when the revision moved since) also
        count its entries, and renew the lease (GET + PEXPIRE): one MGET per beat else."""
        commands = beacon_state_commands(self.keys)
        self._beat_started = self._clock()
        renew = self._beat_started >= self._next_renew
        if not renew and self._entries is not None:
            commands = commands[:1]
        if renew:
            ttl_ms = int(self.options.beacon_lease_s * 1000)
            commands += [("GET", self.keys.beacon), ("PEXPIRE", self.keys.beacon, ttl_ms)]
        return commands

    def beaten(self, replies: Sequence[Any]) -> Command | None:
        """The PUBLISH of the heartbeat `beat_commands` read, or None (the store is
        empty, its revision moved since its entries were counted: counted at once, or
        the lease moved: then this process contends again like any other)."""
        now = self._clock()
        # From when the read was sent: the beat's own round trips (two of them, 0.2-0.6 s
        # under latency) must not stretch the interval past the 2-interval "flowing" window.
        interval = self.options.beacon_interval_s
        self._next_beat = min(now, max(self._beat_started, now - interval)) + interval
        counted = len(replies) in (3, 5)
        if len(replies) > 3:
            if _text(replies[-2]) != self._worker_id():
                self.lost("the lease moved")
                return None
            self._next_renew = now + _RENEW_EVERY_S
        header = replies[0]
        if counted:
            self._entries = (tuple(header[:3]), int(replies[1]) + int(replies[2]))
        elif self._entries is None or self._entries[0] != tuple(header[:3]):
            self._entries = None
            self._next_beat = now  # count them in a beat of its own, now
            return None
        heartbeat = parse_beacon_state(header, self._entries[1], self._worker_id())
        if heartbeat is None:
            return None
        self.beats += 1
        return publish_command(
            self.keys.heartbeat, encode_heartbeat(heartbeat), sharded=self.sharded
        )

    def lost(self, why: str) -> None:
        """Stop publishing (the lease moved or expired)."""
        if self.holding:
            _log.info("beacon_lost", namespace=self.keys.namespace, why=why)
        self.holding = False
        self._next_beat = self._next_renew = math.inf
        self._schedule_attempt()

    def refused(self, error: BaseException) -> None:
        """The store refused a beacon command (an ACL without the beacon's rights, a
        read-only node): this process stops taking part; the others still may."""
        if self.disabled is None:
            _log.warning(
                "beacon_refused",
                namespace=self.keys.namespace,
                error=str(error)[:300],
                hint="grant the worker user the rules of `flagsync acl` to enable heartbeats",
            )
        self.disabled = f"refused: {error}"
        self.holding = False

    def release_commands(self) -> list[Command]:
        """On close, while holding: read the lease (the driver deletes it if still ours)."""
        return [("GET", self.keys.beacon)] if self.holding else []

    # -- internals -----------------------------------------------------------------

    def _schedule_attempt(self) -> None:
        """Contend after `missing_s`, spread over up to one more `missing_s` (doubled
        after each refused attempt, at most 30 s), so a fleet never contends at once."""
        base = min(self.missing_s * 2 ** min(self._refusals, 8), _MAX_BACKOFF_S)
        self._next_attempt = self._clock() + base * (1 + self._rng())


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class BeaconRefusedError(ConnectionError):
    """The server refused this worker the heartbeat channel (an ACL from before the
    beacon): the session restarts once without it."""


def beacon_refusal(error: Exception, beacon: Beacon) -> Exception:
    """What ended a session: a `BeaconRefusedError` (not permanent: the next session
    starts at once, without the heartbeat channel) when the server refused a channel
    while this process still subscribed to the heartbeat, else `error` itself."""
    if isinstance(error, redis.ResponseError) and is_beacon_refusal(error, beacon):
        refusal = BeaconRefusedError(str(error))
        refusal.__cause__ = error
        return refusal
    return error


def is_beacon_refusal(error: BaseException, beacon: Beacon) -> bool:
    """True (and the beacon is off for this process) when `error` is the server refusing
    the heartbeat channel's subscription."""
    text = str(error).lower()
    # Servers do not name the channel ("No permissions to access a channel"): an ACL
    # that refuses the change channel too is refused again without the heartbeat, then
    # reported like any permission error.
    if not beacon.listening or "permission" not in text or "channel" not in text:
        return False
    beacon.listening = False
    beacon.refused(error)
    return True


def heard_beacon(follower: Follower, beacon: Beacon, timers: SessionTimers, data: Any) -> None:
    """What a driver does with a heartbeat: a valid one slows polling (`timers`) and
    postpones contention (`beacon`); one that disagrees with our state makes a check due."""
    verdict = follower.on_heartbeat(data)
    if verdict == "rejected":
        return
    timers.beacon_heard()
    beacon.heard()
    if verdict == "check":
        timers.check_soon()


def read_own_beat(follower: Follower, timers: SessionTimers, publish: Command) -> None:
    """What the holder does with the heartbeat it is publishing, read from the node it
    follows: that read is a revision check of its own (the keys of `state_commands`),
    so one that confirms our state postpones the periodic check like a check would.
    One that disagrees does nothing here: the heartbeat, heard back on the channel,
    asks for the check as it does on every worker (a nudge may still be in flight).

    Why: every beat is two round trips on the holder's one thread. Under 100 ms of
    latency each way its periodic checks queued behind its beats; its heartbeats came
    more than two intervals apart, so the fast cadence (checks every 0.25 s, pings)
    came back and saturated it further (S19). Not `timers.beacon_heard`: only a
    heartbeat heard on the channel proves that link alive."""
    if follower.on_heartbeat(publish[2]) == "confirmed":
        timers.beat_read()


def grace_s(follower: Follower, state: StoreState, timers: SessionTimers) -> float:
    """How long a periodic check that found `state` waits for its message before a full
    load (`Follower.grace_s`): `MESSAGE_GRACE_S` while heartbeats flow (one of them finds
    a lost message sooner), else `POLLING_GRACE_S` if that still fits the bound."""
    if timers.beacon_flowing():
        return follower.grace_s(state, MESSAGE_GRACE_S)
    return follower.grace_s(state, POLLING_GRACE_S if timers.grace_fits(POLLING_GRACE_S) else 0)
