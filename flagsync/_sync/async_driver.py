"""Keep a client's snapshot current from an anyio task on asyncio (redis.asyncio).

The same session as the thread driver (`thread_driver`): two connections to one
server, the decisions taken by the shared `Follower`, the deadlines by the shared
`SessionTimers`, the heartbeat by the shared `Presence`. On cancellation the
connections are closed and never reused: a cancelled read can leave a redis
connection mid-reply.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import anyio
import redis
import redis.asyncio as aredis

from flagsync._cluster import SlotMovedError, is_cluster_url, subscribe_method
from flagsync._connection import (
    connect_async,
    connection_hint,
    follow_url_async,
    presence_node_url_async,
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
from flagsync._sync.presence import Presence
from flagsync._sync.sentinel_watch import async_waker, pause_async, switch_watch
from flagsync._sync.timers import SessionTimers, backoff_delay, is_permanent, retry_cap_s
from flagsync.store import (
    StoreState,
    load_commands,
    parse_load,
    parse_state,
    quick_state_commands,
    state_commands,
)

__all__ = ["AsyncDriver"]


class AsyncDriver:
    """Runs a `Follower` as a task: `await run()` until `request_stop()` or cancellation."""

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
        self._writer: aredis.Redis | None = None
        self._stopping = False
        self._running = False
        self.beacon = Beacon(
            follower.keys,
            follower.options,
            lambda: presence.worker_id,
            sharded=is_cluster_url(url),
        )
        self._timers: SessionTimers | None = None

    @property
    def alive(self) -> bool:
        """True while `run()` runs."""
        return self._running

    def request_stop(self) -> None:
        """Ask the task to stop at its next poll (also safe from `close()`)."""
        self._stopping = True
        self.follower.closed = True

    async def run(self) -> None:
        """Follow until stopped; every failure ends a session, never the task."""
        options = self.follower.options
        attempt = 0
        reconnect = False
        self._running = True
        watch = switch_watch(self.url)  # Sentinel: reconnect as soon as a switch is heard
        wake, listener = async_waker(watch)
        try:
            while not self._stopping:
                seen = 0 if watch is None else watch.generation
                try:
                    await self._session(reconnect=reconnect)
                except Exception as failure:  # noqa: BLE001 - any failure ends the session
                    if self._stopping:
                        break
                    error = beacon_refusal(failure, self.beacon)  # see the thread driver
                    if self.follower.connected:
                        attempt = 0
                    permanent = is_permanent(error)
                    self.follower.on_disconnected(
                        error, permanent=permanent, hint=connection_hint(self.url, error)
                    )
                    cap_s = retry_cap_s(options, permanent=permanent)
                    delay = backoff_delay(attempt, options.backoff_initial_s, cap_s)
                    switched = await pause_async(delay, wake, watch, seen)
                    attempt = 0 if switched else attempt + 1
                reconnect = True
        finally:
            if watch is not None:
                watch.remove_listener(listener)
                watch.release()
            self.follower.closed = True
            self._running = False
            writer, self._writer = self._writer, None
            if writer is not None:
                with anyio.move_on_after(0.5, shield=True), contextlib.suppress(Exception):
                    await writer.aclose()

    def _connect(self, url: str | None = None) -> aredis.Redis:
        options = self.follower.options
        return connect_async(
            url or self.url,
            timeout_s=options.socket_timeout_s,
            connect_timeout_s=options.connect_timeout_s,
            client_name=self.presence.client_name,
        )

    async def _session(self, *, reconnect: bool) -> None:
        follower = self.follower
        options = follower.options
        self._node = await follow_url_async(
            self.url, options.connect_timeout_s, follower.keys.channel
        )
        commands = self._connect(self._node)
        if self.presence_url is not None and self._writer is None:
            self._writer = self._connect(
                await presence_node_url_async(
                    self.presence_url, options.connect_timeout_s, follower.keys.channel
                )
            )
        subscriber = self._connect(self._node)
        pubsub = subscriber.pubsub(ignore_subscribe_messages=False)
        try:
            subscribe = getattr(pubsub, subscribe_method(self.url))  # SSUBSCRIBE: cluster
            await subscribe(follower.keys.channel)
            beacon = self.beacon
            if beacon.listening:
                await subscribe(follower.keys.heartbeat)
            follower.on_connected(reconnect=reconnect)
            timers = self._timers = SessionTimers(follower.options)
            beacon.session_started()
            token = uuid.uuid4().hex
            while not self._stopping:
                message = await self._next_message(pubsub, timers)
                needs: set[str] = set()
                while message is not None and not self._stopping:
                    timers.heard()
                    verdict = self._dispatch(message)
                    if verdict != "ignored":
                        timers.changed()
                    needs.add(verdict)
                    message = await pubsub.get_message(timeout=0)
                if self._stopping:
                    break
                # Liveness is judged right after the channel was read (see the thread
                # driver): frames that came in during our own round trips count as heard.
                if timers.ping_due():
                    await pubsub.ping(token)
                await self._due_work(needs, pubsub, commands, timers)
        finally:
            if self._stopping:
                with anyio.move_on_after(0.3, shield=True), contextlib.suppress(Exception):
                    await self._release_beacon(self._writer or commands)
                # Also when cancelled (leaving `connect_async` cancels the task): a presence
                # key left to expire would count as a live worker in `wait_propagated`.
                writer = self._writer or commands
                with anyio.move_on_after(0.3, shield=True), contextlib.suppress(Exception):
                    await writer.execute_command(*self.presence.withdraw_command())  # type: ignore[no-untyped-call]
            with anyio.move_on_after(0.5, shield=True):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await subscriber.aclose()
                await commands.aclose()
                if self.presence_url is not None and is_cluster_url(self.presence_url):
                    # The slot's owner may move: the next session asks the seeds again.
                    session_writer, self._writer = self._writer, None
                    if session_writer is not None:
                        await session_writer.aclose()

    async def _due_work(
        self, needs: set[str], pubsub: Any, commands: aredis.Redis, timers: SessionTimers
    ) -> None:
        """What the messages just read asked for, and whatever is due."""
        if "resync" in needs:  # coalesced: see the thread driver
            await self._resync(commands)
        elif "check" in needs or timers.check_due():
            await self._check(pubsub, commands, timers)
        if self.presence.outdated():
            timers.changed()
        if timers.heartbeat_due():
            await self._heartbeat(commands)
            timers.heartbeat_sent()
        step = self.beacon.step()
        if step is not None:
            await self._beacon_step(step, commands)

    async def _next_message(self, pubsub: Any, timers: SessionTimers) -> dict[str, Any] | None:
        """The next channel message within the next deadline (the beacon's included)."""
        message: dict[str, Any] | None = await pubsub.get_message(
            timeout=timers.wait_s(self.beacon.next_due())
        )
        return message

    async def _check(self, pubsub: Any, commands: aredis.Redis, timers: SessionTimers) -> None:
        """See `ThreadDriver._check`."""
        follower = self.follower
        urgent = timers.urgent
        stored = await self._read_state(commands, quick=timers.beacon_flowing() and not urgent)
        if follower.on_revision(stored) == "resync":
            resubscribed = False
            message = await pubsub.get_message(timeout=0)
            while message is not None:
                timers.heard()  # a pong read here counts for liveness too
                resubscribed |= self._dispatch(message) == "resync"
                message = await pubsub.get_message(timeout=0)
            if resubscribed or follower.on_revision(stored) == "resync":
                grace = 0.0 if resubscribed or urgent else grace_s(follower, stored, timers)
                if grace:  # see the thread driver
                    timers.checked()
                    timers.recheck_in(grace)
                    return
                delay = 0.0 if resubscribed else follower.reload_delay_s()
                if delay:
                    await anyio.sleep(delay)  # rate-limited; messages read meanwhile are coalesced
                await self._resync(commands)
            timers.changed()
        timers.checked()

    async def _heartbeat(self, commands: aredis.Redis) -> None:
        """Write (or withdraw) the presence record; see `ThreadDriver._heartbeat`."""
        batch = self.presence.write_commands()
        if batch is None:
            return
        try:
            self.presence.write_replied(await _pipelined(self._writer or commands, batch))
        except redis.RedisError as error:
            where = redact_url(self.presence_url or self._node)
            self.presence.write_failed(error, separate_node=self._writer is not None, where=where)

    async def _beacon_step(self, step: str, commands: aredis.Redis) -> None:
        """See `ThreadDriver._beacon_step`."""
        beacon = self.beacon
        writer = self._writer or commands
        try:
            if step == "contend":
                beacon.contended(await _pipelined(writer, beacon.contend_commands(), True))
                return
            publish = beacon.beaten(await _pipelined(writer, beacon.beat_commands(), True))
            if publish is not None:
                await writer.execute_command(*publish)  # type: ignore[no-untyped-call]
                if self._writer is None and self._timers is not None:  # read the followed node
                    read_own_beat(self.follower, self._timers, publish)
        except redis.ResponseError as error:
            beacon.refused(error)
        except redis.RedisError as error:
            if self._writer is None:
                raise
            beacon.lost(str(error))

    async def _release_beacon(self, writer: aredis.Redis) -> None:
        """See `ThreadDriver._release_beacon`."""
        if not self.beacon.holding:
            return
        holder = (await _pipelined(writer, self.beacon.release_commands(), True))[0]
        if holder is not None and holder.decode() == self.presence.worker_id:
            await writer.delete(self.follower.keys.beacon)

    async def _read_state(self, commands: aredis.Redis, *, quick: bool = False) -> StoreState:
        self.follower.note_check()
        keys = self.follower.keys
        chosen = quick_state_commands(keys) if quick else state_commands(keys)
        return parse_state(await _pipelined(commands, chosen, True))

    def _dispatch(self, message: dict[str, Any]) -> str:
        """See `ThreadDriver._dispatch`."""
        kind = message.get("type")
        channel = message.get("channel")
        if isinstance(channel, bytes) and channel.decode() == self.follower.keys.heartbeat:
            if kind in ("message", "smessage") and self._timers is not None:
                heard_beacon(self.follower, self.beacon, self._timers, message.get("data"))
            return "ignored"
        if kind in ("subscribe", "psubscribe", "ssubscribe"):
            if self._timers is not None:
                self._timers.subscribed()
            return "resync"
        if kind in ("message", "smessage"):
            return self.follower.on_message(message.get("data"))
        if kind == "sunsubscribe":  # pushed by a cluster node the slot just left
            raise SlotMovedError("the namespace's slot moved off the followed node")
        return "ignored"

    async def _resync(self, commands: aredis.Redis) -> None:
        for _ in range(10):
            pipe = commands.pipeline(transaction=False)
            for command in load_commands(self.follower.keys):
                pipe.execute_command(*command)
            loaded = parse_load(await pipe.execute())
            if loaded is not None:
                self.follower.on_loaded(loaded)
                self.follower.integrity.settle()  # the new state's digest, once ready
                if self._timers is not None:
                    self._timers.loaded()
                return


async def _pipelined(
    client: aredis.Redis, commands: list[tuple[Any, ...]], raise_on_error: bool = False
) -> list[Any]:
    """Run `commands` in one round trip (no MULTI: a worker may not have it)."""
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return await pipe.execute(raise_on_error=raise_on_error)
