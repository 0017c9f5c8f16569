"""A logging failure never stops a worker from syncing (a broken handler, a closed stderr,
a processor that raises): the subscriber thread logs from inside its loop, so each of
its log calls must be safe, on a real server, through loads, quarantines, malformed
messages, changes and a dropped connection."""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import redis
import structlog

from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.status import SyncState
from flagsync.store import StoreKeys
from tests.integration.conftest import ClientFactory
from tests.integration.support import (
    connections_named,
    counter_flag,
    subscriber_threads,
    wait_until,
    write_by_hand,
)

WEIGHTS_150: dict[str, Any] = {
    "variants": {"on": True, "off": False},
    "off": "off",
    "default": {"rollout": {"on": 100, "off": 50}, "by": "user"},
}


@contextmanager
def logging_that_raises() -> Iterator[list[str]]:
    """structlog configured so that every event a subscriber thread logs raises (as a
    handler writing to a closed stderr does; the test's own publisher logs normally);
    yields the names of the events it refused."""
    refused: list[str] = []

    def closed_stderr(_logger: object, _method: str, event: MutableMapping[str, Any]) -> str:
        if not threading.current_thread().name.startswith("flagsync-subscriber-"):
            return ""
        refused.append(str(event.get("event")))
        raise OSError(errno.EBADF, "Bad file descriptor: stderr is closed")

    saved = structlog.get_config()
    structlog.configure(
        processors=[closed_stderr],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    try:
        yield refused
    finally:
        structlog.configure(**saved)


class TestLoggingFailures:
    """The sync thread survives every log call raising, and keeps syncing."""

    def test_sync_goes_on_when_every_log_call_raises(
        self,
        *,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        raw: redis.Redis,
    ) -> None:
        """Load, quarantine, malformed message, changes and a killed connection are each
        logged (and each log call raises); the client still applies every change."""
        namespace = publisher.keys.namespace
        publisher.put("counter", counter_flag(0))
        with logging_that_raises() as refused:
            client = make_client(server.url, check_interval_s=0.05, backoff_initial_s=0.05)
            assert client.wait_ready(5)
            assert client.variation("counter", {}, -1) == 0

            write_by_hand(raw, namespace, "broken", WEIGHTS_150)  # quarantined on load
            raw.publish(StoreKeys(namespace).channel, b"not a change message")
            assert wait_until(lambda: "broken" in client.status().quarantined, 5)
            publisher.put("counter", counter_flag(1))
            assert wait_until(lambda: client.variation("counter", {}, -1) == 1, 5)

            for connection in connections_named(raw, client):  # the session ends
                raw.client_kill_filter(_id=connection)
            assert wait_until(lambda: client.status().reconnects >= 1, 5), client.status()
            publisher.put("counter", counter_flag(2))
            assert wait_until(lambda: client.variation("counter", {}, -1) == 2, 5)

            assert subscriber_threads(namespace), "the subscriber thread died"
            assert client.status().state is SyncState.READY
        for event in ("snapshot_loaded", "flag_quarantined", "message_rejected", "connection_lost"):
            assert event in refused, (event, refused)
