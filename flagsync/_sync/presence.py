"""Who this process is in the fleet view, and whether it counts there as a serving worker.

Each connected process writes a presence record (`WorkerInfo`) under its own key with a
TTL; `Publisher.workers()` and `wait_propagated()` count those records as the live fleet.

The fork rule. A process that forks while connected (gunicorn `--preload`: the master
connects while importing the app, then forks the workers) need not serve requests: the
gunicorn master never evaluates a flag, yet it would count as a worker (`reached 6/6`
for 4 workers) and `wait_propagated` would wait for it. So after a fork the *parent*
withdraws its record and writes it again only once it has evaluated a flag: a parent
that serves requests too (a multiprocessing pool beside a server) is back in the fleet
at its next heartbeat after an evaluation. Every forked child counts from its start,
as does any process that never forked. Evaluation itself pays nothing for this: the
follower swaps in an uncompiled copy of the snapshot at the fork, and a flag compiled
since (compilation happens on first evaluation) shows the process evaluated. Forks by
`subprocess` (fork + exec, see `thread_driver`) start programs, not workers: ignored.

Why not simpler rules: "counted only after evaluating" would hide every freshly
started worker until its first request (a deploy would show an empty fleet), and
"a forking parent never counts" would let `wait_propagated` report complete while a
serving parent still has the old flags — a false "done" is worse than a slow one. The
record is deleted at the parent's next heartbeat (<= `heartbeat_interval_s`).

A refused write (S32). A worker pointed at a read-only replica follows correctly there
(a nudge arrives behind its data on the same node), but the replica answers its SET
with READONLY. That is no lost connection: reconnecting cannot fix it (measured: 437
reconnects and 412 full reloads in 12.5 s). The drivers hand such a refusal to
`refused()`: one warning per episode, `status().presence_error` says so, and the fleet
view simply does not count this worker, so `--wait` reports it unconfirmed. Pass
`presence_url` to write the record on a writable node instead (`read_from=replica`).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

import redis

from flagsync._codec import WorkerInfo, encode_presence
from flagsync._sync.follower import Follower
from flagsync._sync.logs import SafeLogger
from flagsync.snapshot import Snapshot
from flagsync.store import StoreKeys, ack_command

__all__ = ["Presence", "is_refused_write"]

_log = SafeLogger("flagsync.subscriber")  # never raises: see flagsync._sync.logs

Command = tuple[str | bytes | int, ...]


class Presence:
    """This process's identity and presence record for one follower."""

    def __init__(self, follower: Follower, worker_id: str | None = None) -> None:
        self.follower = follower
        self.keys: StoreKeys = follower.keys
        self.worker_id = worker_id or new_worker_id()
        self.host = socket.gethostname()
        self.started_ms = _now_ms()
        self._withheld = False
        self._listed = False
        self._held_keys: tuple[Snapshot | None, tuple[str, ...]] = (None, ())
        self.error: str | None = None
        """Why the last presence write was refused (None: written, or not tried yet)."""
        self._wrote_missing = False
        """`follower.snapshot_missing` as the record last written said."""
        self._acked: tuple[str, int] | None = None
        """The (epoch, revision) last appended to the ack stream."""
        self.acks_refused = False
        """The store refused an ack (an ACL from before the ack stream): no more tries;
        `wait_propagated` still sees this worker through its presence record."""

    @property
    def key(self) -> str:
        """The key the record is stored under."""
        return self.keys.worker(self.worker_id)

    @property
    def client_name(self) -> str:
        """The CLIENT SETNAME of this process's connections (the worker id, as tools show)."""
        return f"flagsync-{self.worker_id}"[:64]

    def after_fork_in_parent(self) -> None:
        """Called in the parent after `fork()` (in the forking thread): withdraw the
        record until this process evaluates a flag (see the module docstring)."""
        self.follower.watch_use()
        self._withheld = True

    def after_fork_in_child(self) -> None:
        """Called in a forked child: a new identity, counted from its start."""
        self.worker_id = new_worker_id()
        self.started_ms = _now_ms()
        self._withheld = self._listed = False
        self._acked = None
        self.follower.reset_after_fork()

    def heartbeat_command(self) -> Command | None:
        """The command a driver runs at each heartbeat: write the record (SET with a TTL),
        withdraw it (DEL, once), or nothing. Call it on the driver's thread or task."""
        if self._withheld and self.follower.used_since_watch():
            self._withheld = False
        if self._withheld:
            if not self._listed:
                return None
            self._listed = False
            return ("DEL", self.key)
        self._listed = True
        self._wrote_missing = self.follower.snapshot_missing
        ttl_ms = int(self.follower.options.presence_ttl_s * 1000)
        return ("SET", self.key, self.record(), "PX", ttl_ms)

    def outdated(self) -> bool:
        """True when the record last written no longer says whether the store lost data
        this worker holds (`held`): re-seed checks need that within `ack_delay_s`, not
        at the next 5 s heartbeat."""
        return self._listed and self._wrote_missing != self.follower.snapshot_missing

    def ack_command(self) -> Command | None:
        """The XADD that acks a newly applied revision on the ack stream, sent with the
        heartbeat that writes the record (after it, so a waiter woken by the ack finds
        the record already saying so); None when nothing new was applied."""
        snapshot = self.follower.snapshot
        place = (snapshot.epoch, snapshot.revision)
        if self.acks_refused or not self._listed or not snapshot.epoch or place == self._acked:
            return None
        self._acked = place
        return ack_command(
            self.keys, self.worker_id, snapshot.epoch, snapshot.revision, self.follower.applied_us
        )

    def write_commands(self) -> list[Command] | None:
        """One heartbeat's pipeline: the record's write (or withdrawal) and, after it, the
        ack of a newly applied revision; None when nothing is due. Both drivers run it
        with errors returned, not raised, and hand the replies to `write_replied`."""
        command = self.heartbeat_command()
        if command is None:
            return None
        ack = self.ack_command()
        return [command] if ack is None else [command, ack]

    def write_replied(self, replies: list[Any]) -> None:
        """Note the replies to `write_commands`' pipeline. A refused record write is
        raised (the driver's `write_failed` judges it); a refused ack only stops acking."""
        if isinstance(replies[0], Exception):
            raise replies[0]
        self.written()
        if len(replies) > 1 and isinstance(replies[1], Exception):
            self.ack_refused(replies[1])

    def write_failed(self, error: redis.RedisError, *, separate_node: bool, where: str) -> None:
        """A heartbeat pipeline failed with `error`. On the followed node only a refusal
        (a read-only replica) is reported here; any other failure is re-raised, ending
        the session. On a separate presence node (`separate_node`) every failure is
        reported, never a reason to reconnect: the followed node is fine."""
        if not separate_node and not is_refused_write(error):
            raise error
        self.refused(error, where)

    def ack_refused(self, error: BaseException) -> None:
        """The store refused an ack: warn once, stop acking (the record still counts)."""
        if not self.acks_refused:
            _log.warning(
                "ack_refused",
                namespace=self.keys.namespace,
                error=str(error)[:300],
                hint="grant the worker user the rules of `flagsync acl` (the ack stream)",
            )
        self.acks_refused = True

    def written(self) -> None:
        """The last heartbeat command succeeded: a refusal episode, if any, is over."""
        if self.error is not None:
            _log.info("presence_written", namespace=self.keys.namespace, key=self.key)
            self.error = None

    def refused(self, error: BaseException, where: str) -> None:
        """The store refused the record (a read-only replica): keep following, warn once."""
        self._listed = False
        if self.error is None:
            _log.warning(
                "presence_refused",
                namespace=self.keys.namespace,
                key=self.key,
                where=where,
                error=str(error),
                hint="this worker is not counted by --wait; pass presence_url= a writable node",
            )
        fact = "a read-only replica refused it" if is_refused_write(error) else "failed"
        self.error = f"presence not written on {where}: {fact} ({error})"

    def withdraw_command(self) -> Command:
        """The command that removes the record (on close)."""
        self._listed = False
        return ("DEL", self.key)

    def record(self) -> bytes:
        """This worker's presence record, as stored under its heartbeat key."""
        follower = self.follower
        snapshot = follower.snapshot
        return encode_presence(
            WorkerInfo(
                id=self.worker_id,
                host=self.host,
                pid=os.getpid(),
                namespace=self.keys.namespace,
                epoch=snapshot.epoch,
                revision=snapshot.revision,
                applied_us=follower.applied_us,
                published_us=follower.published_us,
                started_ms=self.started_ms,
                heartbeat_ms=_now_ms(),
                state=str(follower.state()),
                held=self._held(snapshot if follower.snapshot_missing else None),
            )
        )

    def _held(self, snapshot: Snapshot | None) -> tuple[str, ...]:
        """The keys `snapshot` serves (none for None), sorted once per snapshot: each
        heartbeat repeats them while the store is missing data."""
        if self._held_keys[0] is not snapshot:
            self._held_keys = (snapshot, () if snapshot is None else tuple(sorted(snapshot)))
        return self._held_keys[1]


def is_refused_write(error: BaseException) -> bool:
    """True for a write refused by a read-only replica (a reply, not a lost connection)."""
    return isinstance(error, redis.exceptions.ReadOnlyError)


def new_worker_id() -> str:
    """A fleet-unique id: host, pid and a random suffix."""
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
