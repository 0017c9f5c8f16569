"""Hear the sentinels announce a new primary (`+switch-master`), so workers reconnect at
once instead of at their next backoff step.

redis-py has no `+switch-master` listener: a worker that lost its primary retries with
jittered exponential backoff (capped at `backoff_max_s`, 2 s), asking the sentinels each
time, and the new primary was reached 1.2-1.9 s after the switch. Per process and
Sentinel deployment, one small daemon thread per sentinel subscribes to `+switch-master`
there (every sentinel: the others learn of the switch from the leader's hello messages,
up to 2 s later), bumps a generation counter when the watched service moves and wakes
the drivers' listeners; a driver waiting out a backoff reconnects at once (and one whose
attempt failed while the switch was announced does not wait at all). The watch only
shortens a wait: if it hears nothing (a sentinel unreachable, a message lost), the
backoff works as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any, Final

import redis
import structlog

from flagsync._connection import redact_url
from flagsync._topology import SentinelTarget, is_sentinel_url, parse_sentinel_url

__all__ = ["SwitchWatch", "async_waker", "pause", "pause_async", "switch_watch"]

_log = structlog.get_logger("flagsync.subscriber")
_CHANNEL: Final = "+switch-master"
_READ_S: Final = 1.0
_RETRY_S: Final = (0.1, 2.0)
"""First and largest pause before the watcher tries the next sentinel."""


class SwitchWatch:
    """Counts the `+switch-master` announcements of one service (see the module doc).

    Shared by every driver of the process that follows the same deployment; the thread
    runs while at least one driver holds it (`acquire` / `release`).
    """

    def __init__(self, target: SentinelTarget) -> None:
        self.target = target
        self.generation = 0
        """Bumped once per announcement of a new primary for `target.service`."""
        self._users = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: set[Any] = set()
        self._listeners: set[Callable[[], None]] = set()
        self._announced: str | None = None

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` (from the watch's thread) on every announcement."""
        self._listeners.add(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        """Stop calling `listener`."""
        self._listeners.discard(listener)

    def acquire(self) -> SwitchWatch:
        """Count one more user; starts the thread for the first."""
        with self._lock:
            self._users += 1
            if not any(thread.is_alive() for thread in self._threads):
                self._stop = threading.Event()
                self._threads = [
                    threading.Thread(
                        target=self._run,
                        args=(self._stop, host, port),
                        name=f"flagsync-sentinel-watch-{host}:{port}",
                        daemon=True,
                    )
                    for host, port in self.target.sentinels
                ]
                for thread in self._threads:
                    thread.start()
        return self

    def release(self) -> None:
        """Count one user less; the last one stops the thread (it exits within ~1 s)."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                self._stop.set()
                for client in list(self._clients):
                    with contextlib.suppress(Exception):
                        client.close()

    def _run(self, stop: threading.Event, host: str, port: int) -> None:
        failures = 0
        while not stop.is_set():
            try:
                self._listen(host, port, stop)
            except Exception as error:  # noqa: BLE001 - closed under it, or a sentinel failed
                if stop.is_set():
                    break  # `release` closed the connection under the read
                if failures == 0:  # one warning per episode, not per attempt
                    _log.warning(
                        "sentinel_watch_lost",
                        sentinel=f"{host}:{port}",
                        service=self.target.service,
                        error=str(error),
                    )
                failures += 1
                first, largest = _RETRY_S
                stop.wait(min(largest, first * 2 ** min(failures, 8)))
                continue
            failures = 0

    def _listen(self, host: str, port: int, stop: threading.Event) -> None:
        client = redis.Redis(
            host=host,
            port=port,
            username=self.target.sentinel_username,
            password=self.target.sentinel_password,
            socket_timeout=_READ_S * 5,
            socket_connect_timeout=2.0,
            protocol=2,
            client_name="flagsync-sentinel-watch",
            driver_info=None,
            **self.target.tls_options(),
        )
        self._clients.add(client)
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            pubsub.subscribe(_CHANNEL)
            while not stop.is_set():
                message = pubsub.get_message(timeout=_READ_S)
                if message is None:
                    pubsub.ping()  # a dead sentinel link fails here, not silently
                    continue
                data = message.get("data")
                if message.get("type") != "message" or not isinstance(data, bytes):
                    continue
                fields = data.decode(errors="replace").split()
                if fields and fields[0] == self.target.service:
                    self.generation += 1
                    for listener in list(self._listeners):
                        listener()
                    primary = ":".join(fields[3:5])
                    if primary != self._announced:  # every sentinel says it: log it once
                        self._announced = primary
                        _log.info(
                            "sentinel_switch_heard", service=self.target.service, primary=primary
                        )
        finally:
            self._clients.discard(client)
            with contextlib.suppress(Exception):
                client.close()


_watches: dict[tuple[tuple[tuple[str, int], ...], str], SwitchWatch] = {}
_watches_lock = threading.Lock()


def switch_watch(url: str) -> SwitchWatch | None:
    """The process's watch for `url`'s deployment (acquired: `release()` it), or None
    for a URL that is not a Sentinel URL."""
    if not is_sentinel_url(url):
        return None
    target = parse_sentinel_url(url, redact_url(url))
    with _watches_lock:
        key = (target.sentinels, target.service)
        watch = _watches.get(key)
        if watch is None:
            watch = _watches[key] = SwitchWatch(target)
    return watch.acquire()


def _forget_in_child() -> None:
    """A forked child has none of its parent's threads: start its watches afresh."""
    global _watches_lock  # noqa: PLW0603 - the lock may have been held by a parent thread
    _watches_lock = threading.Lock()
    _watches.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def pause(
    delay_s: float,
    stop: threading.Event,
    wake: threading.Event,
    watch: SwitchWatch | None,
    seen: int,
) -> bool:
    """Wait `delay_s`, or until `stop` or `wake` is set; True when `watch` heard a switch
    since its generation was `seen` (then without waiting). `wake` is the driver's
    listener on `watch`; `close()` sets it too."""
    if watch is None:
        stop.wait(delay_s)
        return False
    wake.clear()
    if watch.generation == seen:
        wake.wait(delay_s)
    return watch.generation != seen and not stop.is_set()


def async_waker(watch: SwitchWatch | None) -> tuple[asyncio.Event | None, Callable[[], None]]:
    """An asyncio event set, on the running loop, by `watch`'s announcements, and the
    listener to remove when done (a no-op without a watch)."""
    if watch is None:
        return None, lambda: None
    loop = asyncio.get_running_loop()
    event = asyncio.Event()

    def listener() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed under a late announcement
            loop.call_soon_threadsafe(event.set)

    watch.add_listener(listener)
    return event, listener


async def pause_async(
    delay_s: float, wake: asyncio.Event | None, watch: SwitchWatch | None, seen: int
) -> bool:
    """The asyncio twin of `pause` (`wake` from `async_waker`)."""
    import anyio  # noqa: PLC0415 - the thread driver's processes need not load it

    if watch is None or wake is None:
        await anyio.sleep(delay_s)
        return False
    wake.clear()
    if watch.generation == seen:
        with anyio.move_on_after(delay_s):
            await wake.wait()
    return watch.generation != seen
