"""Keep a client's snapshot current from a daemon thread (and across `fork()`).

The driver owns the loop instead of redis-py's `run_in_thread`, because that hides the
subscribe confirmations a silent reconnect produces, and a thread that dies there
leaves flags frozen without a word. Each session opens two connections to the same
server (a reader may only trust data from the node that nudged it): one subscribed to
the change channel, one for reads and heartbeats. Anything that goes wrong ends the
session; the loop backs off with jitter and starts a new one, which resyncs.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import select
import selectors
import subprocess
import threading
import time
import uuid
import weakref
from typing import Any

import redis

from flagsync._cluster import SlotMovedError, is_cluster_url, subscribe_method
from flagsync._connection import (
    connect,
    connection_hint,
    follow_url,
    presence_node_url,
    redact_url,
    writable_url,
)
from flagsync._sync.beacon import (
    Beacon,
    beacon_refusal,
    grace_s,
    heard_beacon,
    read_own_beat,
)
from flagsync._sync.follower import Follower
from flagsync._sync.logs import SafeLogger
from flagsync._sync.presence import Presence
from flagsync._sync.sentinel_watch import pause, switch_watch
from flagsync._sync.timers import SessionTimers, backoff_delay, is_permanent, retry_cap_s
from flagsync.store import (
    StoreState,
    load_commands,
    parse_load,
    parse_state,
    quick_state_commands,
    state_commands,
)

__all__ = ["ThreadDriver"]

_log = SafeLogger("flagsync.subscriber")  # never raises: see flagsync._sync.logs


class ThreadDriver:
    """Runs a `Follower` in one daemon thread; restarts itself in forked children."""

    def __init__(
        self, follower: Follower, presence: Presence, url: str, presence_url: str | None = None
    ) -> None:
        self.follower = follower
        self.presence = presence
        self.url = url
        self.presence_url = writable_url(url, presence_url)
        """Where the presence record is written (None: the followed node itself)."""
        self._node = url
        """The node followed in this session (a replica for `read_from=replica`)."""
        self._stop = threading.Event()
        self._wake = threading.Event()
        """Set by the `+switch-master` watch (and by `close`): ends a backoff early."""
        self._thread: threading.Thread | None = None
        self._pubsub: Any = None
        self._commands: redis.Redis | None = None
        self._writer: redis.Redis | None = None
        self.beacon = Beacon(
            follower.keys,
            follower.options,
            lambda: presence.worker_id,
            sharded=is_cluster_url(url),
        )
        self._timers: SessionTimers | None = None
        _live_drivers.add(self)

    def start(self) -> None:
        """Start the daemon thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run,
            name=f"flagsync-subscriber-{self.follower.keys.namespace}",
            daemon=True,
        )
        self._thread.start()

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the thread and close its connections; returns within about `timeout_s`.

        The thread notices the stop within one poll (<= the shortest interval), removes
        its presence key and closes its connections; if it is stuck on a frozen server,
        its connections are closed under it 0.2 s before `timeout_s` has passed.
        """
        self._stop.set()
        self._wake.set()
        self.follower.closed = True
        # Wake the thread from its blocking read now instead of at its next poll.
        pubsub = self._pubsub
        connection = None if pubsub is None else pubsub.connection
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.disconnect()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # Keep 0.2 s of the budget for a thread blocked on a frozen server's command
            # connection: closing that connection under it wakes it at once.
            thread.join(max(0.0, timeout_s - 0.2))
            if thread.is_alive():
                self._close_connections(writer=True)
                thread.join(0.2)

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def after_fork_in_child(self) -> None:
        """In a forked child: drop the parent's connections unread, start a new thread."""
        self._pubsub = None  # never read a PubSub inherited through fork: it is the parent's
        self._commands = self._writer = None
        self._thread = None
        if self._stop.is_set():
            return
        self.presence.after_fork_in_child()
        self.start()

    def after_fork_in_parent(self) -> None:
        """In the parent after a fork: see `presence` (the preload-master rule)."""
        if not self._stop.is_set():
            self.presence.after_fork_in_parent()

    # -- the loop ----------------------------------------------------------------

    def _run(self) -> None:
        options = self.follower.options
        attempt = 0
        reconnect = False
        watch = switch_watch(self.url)  # Sentinel: reconnect as soon as a switch is heard
        if watch is not None:
            watch.add_listener(self._wake.set)
        try:
            while not self._stop.is_set():
                seen = 0 if watch is None else watch.generation
                try:
                    self._session(reconnect=reconnect)
                except Exception as failure:  # noqa: BLE001 - any failure ends the session
                    if self._stop.is_set():
                        break
                    error = beacon_refusal(failure, self.beacon)
                    if self.follower.connected:
                        attempt = 0  # the session had been up: start the backoff afresh
                    permanent = is_permanent(error)
                    self.follower.on_disconnected(
                        error, permanent=permanent, hint=connection_hint(self.url, error)
                    )
                    # On a cluster the slot's owner may have moved: the writer is asked again.
                    self._close_connections(writer=is_cluster_url(self.url))
                    cap_s = retry_cap_s(options, permanent=permanent)
                    delay = backoff_delay(attempt, options.backoff_initial_s, cap_s)
                    switched = pause(delay, self._stop, self._wake, watch, seen)
                    attempt = 0 if switched else attempt + 1
                reconnect = True
        finally:
            if watch is not None:
                watch.remove_listener(self._wake.set)
                watch.release()
        self._release_beacon()
        self._remove_presence()
        self._close_connections(writer=True)

    def _connect(self, url: str | None = None) -> redis.Redis:
        options = self.follower.options
        return connect(
            url or self.url,
            timeout_s=options.socket_timeout_s,
            connect_timeout_s=options.connect_timeout_s,
            client_name=self.presence.client_name,
        )

    def _session(self, *, reconnect: bool) -> None:
        follower = self.follower
        self._node = follow_url(self.url, follower.options.connect_timeout_s, follower.keys.channel)
        commands = self._commands = self._connect(self._node)
        if self.presence_url is not None and self._writer is None:
            self._writer = self._connect(
                presence_node_url(
                    self.presence_url, follower.options.connect_timeout_s, follower.keys.channel
                )
            )
        subscriber = self._connect(self._node)
        pubsub = self._pubsub = subscriber.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]
        subscribe = getattr(pubsub, subscribe_method(self.url))  # SSUBSCRIBE: cluster
        subscribe(follower.keys.channel)
        beacon = self.beacon
        if beacon.listening:
            subscribe(follower.keys.heartbeat)
        follower.on_connected(reconnect=reconnect)

        timers = self._timers = SessionTimers(follower.options)
        beacon.session_started()
        token = uuid.uuid4().hex
        while not self._stop.is_set():
            message = self._next_message(pubsub, timers.wait_s(beacon.next_due()))
            needs: set[str] = set()
            while message is not None and not self._stop.is_set():
                timers.heard()
                verdict = self._dispatch(message)
                if verdict != "ignored":
                    timers.changed()
                needs.add(verdict)
                message = self._next_message(pubsub, 0)
            if self._stop.is_set():
                return
            # Liveness is judged here, right after the channel was read: frames that came
            # in while this thread waited on its own round trips (checks, loads, the
            # beacon's beats: seconds under latency) are heard first, never counted silent.
            if timers.ping_due():
                pubsub.ping(token)
            # Coalesced: a burst of doubtful messages costs one cheap check, not a load each.
            if "resync" in needs:
                self._resync(commands)
            elif "check" in needs or timers.check_due():
                self._check(pubsub, commands, timers)
            if self.presence.outdated():
                timers.changed()
            if timers.heartbeat_due():
                self._heartbeat(commands)
                timers.heartbeat_sent()
            step = beacon.step()
            if step is not None:
                self._beacon_step(step, commands)

    def _beacon_step(self, step: str, commands: redis.Redis) -> None:
        """Contend for the beacon lease, or (holding it) publish a heartbeat; see `beacon`.
        A refusal ends this process's part in the beacon, never the session."""
        beacon = self.beacon
        writer = self._writer or commands
        try:
            if step == "contend":
                beacon.contended(_pipelined(writer, beacon.contend_commands()))
                return
            publish = beacon.beaten(_pipelined(writer, beacon.beat_commands()))
            if publish is not None:
                writer.execute_command(*publish)  # type: ignore[no-untyped-call]
                if self._writer is None and self._timers is not None:  # read the followed node
                    read_own_beat(self.follower, self._timers, publish)
        except redis.ResponseError as error:
            beacon.refused(error)
        except redis.RedisError as error:
            if self._writer is None:
                raise
            beacon.lost(str(error))

    def _release_beacon(self) -> None:
        """On close: delete the lease if this process still holds it (others take over
        at once instead of after its TTL)."""
        writer = self._writer or self._commands
        if writer is None or not self.beacon.holding:
            return
        with contextlib.suppress(Exception):  # best effort: the lease expires by itself
            holder = _pipelined(writer, self.beacon.release_commands())[0]
            if holder is not None and holder.decode() == self.presence.worker_id:
                writer.delete(self.follower.keys.beacon)

    def _heartbeat(self, commands: redis.Redis) -> None:
        """Write (or withdraw) the presence record. A refusal (a read-only replica), or any
        failure of a separate presence node, is reported, never a reason to reconnect: the
        followed node is fine. A failure of the followed node itself ends the session."""
        batch = self.presence.write_commands()
        if batch is None:
            return
        try:
            self.presence.write_replied(_pipelined(self._writer or commands, batch, False))
        except redis.RedisError as error:
            where = redact_url(self.presence_url or self._node)
            self.presence.write_failed(error, separate_node=self._writer is not None, where=where)

    def _next_message(self, pubsub: Any, wait_s: float) -> dict[str, Any] | None:
        """The next channel message, if a whole one arrives within `wait_s` (0: if buffered).

        Every deadline of the session (revision check, heartbeat, ping, liveness) is at
        most `wait_s` away, so no read may outlast it, whatever the socket does. redis-py
        cannot promise that: its reads wait up to a timeout *per chunk*, so a frame
        trickling in 1 byte every 0.5 s held the thread for as long as the frame lasted
        (30 s+: no revision check, no liveness verdict). Here the socket is only read
        without blocking; a partial frame stays in the parser's buffer (both of redis-py's
        parsers keep it when a read finds nothing more) and is completed by a later call,
        after the due work has run. Only whole frames count as heard: a link that never
        completes one fails the liveness deadline.
        """
        connection = pubsub.connection
        if connection is None:
            return None
        deadline = time.monotonic() + wait_s
        while True:
            try:
                response = connection.read_response(
                    timeout=0, disconnect_on_error=False, push_request=True
                )
            except redis.TimeoutError:  # no whole frame buffered and nothing more to read now
                left_s = deadline - time.monotonic()
                if left_s <= 0 or not _readable(connection, left_s):
                    return None
                continue
            message: dict[str, Any] | None = pubsub.handle_message(
                response, ignore_subscribe_messages=False
            )
            if message is not None:
                return message

    def _check(self, pubsub: Any, commands: redis.Redis, timers: SessionTimers) -> None:
        """Compare the store's (epoch, revision, digest) with ours; load only on a difference."""
        follower = self.follower
        urgent = timers.urgent
        stored = self._read_state(commands, quick=timers.beacon_flowing() and not urgent)
        if follower.on_revision(stored) == "resync":
            # The nudge may be in flight already: read what is buffered first, and load
            # only if that did not reach the state just read. (Reading it again cost a
            # round trip; on a slow link, a false STALE.)
            resubscribed = False
            message = self._next_message(pubsub, 0)
            while message is not None:
                timers.heard()  # a pong read here counts for liveness too
                resubscribed |= self._dispatch(message) == "resync"
                message = self._next_message(pubsub, 0)
            if resubscribed or follower.on_revision(stored) == "resync":
                # A periodic check that finds the store one revision ahead gives the
                # message a grace; one that a heartbeat asked for does not (the heartbeat
                # came after the message on this link: the message is lost).
                grace = 0.0 if resubscribed or urgent else grace_s(follower, stored, timers)
                if grace:
                    timers.checked()
                    timers.recheck_in(grace)
                    return
                delay = 0.0 if resubscribed else follower.reload_delay_s()
                if delay:
                    self._stop.wait(delay)  # rate-limited; messages read meanwhile are coalesced
                self._resync(commands)
            timers.changed()
        timers.checked()

    def _read_state(self, commands: redis.Redis, *, quick: bool = False) -> StoreState:
        self.follower.note_check()
        keys = self.follower.keys
        return parse_state(
            _pipelined(commands, quick_state_commands(keys) if quick else state_commands(keys))
        )

    def _dispatch(self, message: dict[str, Any]) -> str:
        """What a pub/sub message asks for: `resync` (a subscribe confirmation), `check`,
        `applied` or `ignored`; the caller acts on it once per burst."""
        kind = message.get("type")
        if _channel(message) == self.follower.keys.heartbeat:
            if kind in ("message", "smessage") and self._timers is not None:
                heard_beacon(self.follower, self.beacon, self._timers, message.get("data"))
            return "ignored"
        if kind in ("subscribe", "psubscribe", "ssubscribe"):
            # A confirmation, also after redis-py's silent reconnect: we may have missed
            # anything published meanwhile, so the store is read again.
            if self._timers is not None:
                self._timers.subscribed()
            return "resync"
        if kind in ("message", "smessage"):
            return self.follower.on_message(message.get("data"))
        if kind == "sunsubscribe":  # pushed by a cluster node the slot just left
            raise SlotMovedError("the namespace's slot moved off the followed node")
        return "ignored"  # pongs: liveness was noted by the caller

    def _resync(self, commands: redis.Redis) -> None:
        keys = self.follower.keys
        for _ in range(10):
            pipe = commands.pipeline(transaction=False)
            for command in load_commands(keys):
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            loaded = parse_load(pipe.execute())
            if loaded is not None:
                self.follower.on_loaded(loaded)
                self.follower.integrity.settle()  # the new state's digest, once ready
                if self._timers is not None:
                    self._timers.loaded()
                return
        _log.warning("resync_contended", namespace=keys.namespace)

    def _close_connections(self, *, writer: bool = False) -> None:
        pubsub, self._pubsub = self._pubsub, None
        commands, self._commands = self._commands, None
        closables: list[Any] = [pubsub, commands]
        if writer:
            closables.append(self._writer)
            self._writer = None
        for closable in closables:
            if closable is None:
                continue
            with contextlib.suppress(Exception):  # closing a broken connection may fail
                closable.close()

    def _remove_presence(self) -> None:
        commands = self._writer or self._commands
        if commands is None:
            return
        with contextlib.suppress(Exception):  # best effort: the key expires by itself
            commands.execute_command(*self.presence.withdraw_command())  # type: ignore[no-untyped-call]


def _pipelined(
    client: redis.Redis, commands: list[tuple[Any, ...]], raise_on_error: bool = True
) -> list[Any]:
    """Run `commands` in one round trip (no MULTI: a worker may not have it)."""
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)  # type: ignore[no-untyped-call]
    return pipe.execute(raise_on_error=raise_on_error)


def _channel(message: dict[str, Any]) -> str:
    channel = message.get("channel")
    return channel.decode("utf-8", "replace") if isinstance(channel, bytes) else str(channel)


def _readable(connection: Any, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for bytes (or EOF) on `connection`'s socket.

    poll(), as redis-py does: select() fails on descriptors past 1024, and an epoll
    selector costs a descriptor per call.
    """
    sock = getattr(connection, "_sock", None)  # redis-py keeps no public handle on it
    if sock is None:
        raise redis.ConnectionError("the change channel's connection is closed")
    pending = getattr(sock, "pending", None)  # an SSLSocket may hold decrypted bytes
    if pending is not None and pending():
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout_s * 1000))
    with selectors.DefaultSelector() as selector:  # Windows
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(timeout_s))


_live_drivers: weakref.WeakSet[ThreadDriver] = weakref.WeakSet()


def _restart_in_child() -> None:
    if _forked_by_subprocess():
        # The child is about to exec another program: a sync started here could write a
        # presence record under its pid before the exec (a phantom worker until the TTL).
        return
    for driver in list(_live_drivers):
        driver.after_fork_in_child()


def _note_fork_in_parent() -> None:
    if _forked_by_subprocess():
        return  # fork + exec: the child runs another program, never a second worker
    for driver in list(_live_drivers):
        driver.after_fork_in_parent()


def _forked_by_subprocess() -> bool:
    """True when this fork is `subprocess.Popen` starting a program.

    CPython runs the at-fork hooks around Popen's fork only when it is given a
    `preexec_fn`; that child execs at once, so it is no worker and the parent keeps
    counting. The hook cannot see the child, so it looks at who forked: the frames of
    `Popen._execute_child` are on this thread's stack.
    """
    frame = inspect.currentframe()
    while frame is not None:
        code = frame.f_code
        if code.co_name == "_execute_child" and code.co_filename == subprocess.__file__:
            return True
        frame = frame.f_back
    return False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_in_child, after_in_parent=_note_fork_in_parent)
