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

from flagsync._connection import (
    connect_async,
    connection_hint,
    follow_url_async,
    redact_url,
    writable_url,
)
from flagsync._sync.follower import Follower
from flagsync._sync.presence import Presence, is_refused_write
from flagsync._sync.sentinel_watch import async_waker, pause_async, switch_watch
from flagsync._sync.timers import SessionTimers, backoff_delay, is_permanent, retry_cap_s
from flagsync.store import (
    StoreState,
    load_commands,
    parse_load,
    parse_state,
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
                except Exception as error:  # noqa: BLE001 - any failure ends the session
                    if self._stopping:
                        break
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
        self._node = await follow_url_async(self.url, options.connect_timeout_s)
        commands = self._connect(self._node)
        if self.presence_url is not None and self._writer is None:
            self._writer = self._connect(self.presence_url)
        subscriber = self._connect(self._node)
        pubsub = subscriber.pubsub(ignore_subscribe_messages=False)
        try:
            await pubsub.subscribe(follower.keys.channel)
            follower.on_connected(reconnect=reconnect)
            timers = SessionTimers(follower.options)
            token = uuid.uuid4().hex
            while not self._stopping:
                message = await pubsub.get_message(timeout=timers.wait_s())
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
                if "resync" in needs:  # coalesced: see the thread driver
                    await self._resync(commands)
                elif "check" in needs or timers.check_due():
                    await self._check(pubsub, commands, timers)
                if timers.heartbeat_due():
                    await self._heartbeat(commands)
                    timers.heartbeat_sent()
                if timers.ping_due():
                    await pubsub.ping(token)
        finally:
            if self._stopping:
                # Also when cancelled (leaving `connect_async` cancels the task): a presence
                # key left to expire would count as a live worker in `wait_propagated`.
                writer = self._writer or commands
                with anyio.move_on_after(0.3, shield=True), contextlib.suppress(Exception):
                    await writer.execute_command(*self.presence.withdraw_command())  # type: ignore[no-untyped-call]
            with anyio.move_on_after(0.5, shield=True):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await subscriber.aclose()
                await commands.aclose()

    async def _check(self, pubsub: Any, commands: aredis.Redis, timers: SessionTimers) -> None:
        """See `ThreadDriver._check`."""
        follower = self.follower
        stored = await self._read_state(commands)
        if follower.on_revision(stored) == "resync":
            resubscribed = False
            message = await pubsub.get_message(timeout=0)
            while message is not None:
                timers.heard()  # a pong read here counts for liveness too
                resubscribed |= self._dispatch(message) == "resync"
                message = await pubsub.get_message(timeout=0)
            if resubscribed or follower.on_revision(stored) == "resync":
                delay = 0.0 if resubscribed else follower.reload_delay_s()
                if delay:
                    await anyio.sleep(delay)  # rate-limited; messages read meanwhile are coalesced
                await self._resync(commands)
            timers.changed()
        timers.checked()

    async def _heartbeat(self, commands: aredis.Redis) -> None:
        """Write (or withdraw) the presence record; see `ThreadDriver._heartbeat`."""
        command = self.presence.heartbeat_command()
        if command is None:
            return
        writer = self._writer or commands
        try:
            await writer.execute_command(*command)  # type: ignore[no-untyped-call]
        except redis.RedisError as error:
            if self._writer is None and not is_refused_write(error):
                raise
            self.presence.refused(error, redact_url(self.presence_url or self._node))
        else:
            self.presence.written()

    async def _read_state(self, commands: aredis.Redis) -> StoreState:
        self.follower.note_check()
        pipe = commands.pipeline(transaction=False)
        for command in state_commands(self.follower.keys):
            pipe.execute_command(*command)
        return parse_state(await pipe.execute())

    def _dispatch(self, message: dict[str, Any]) -> str:
        """See `ThreadDriver._dispatch`."""
        kind = message.get("type")
        if kind in ("subscribe", "psubscribe"):
            return "resync"
        if kind == "message":
            return self.follower.on_message(message.get("data"))
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
                return
