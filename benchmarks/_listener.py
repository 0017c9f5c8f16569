"""A subscriber process for the propagation benchmark (run by `benchmarks.propagation`).

    python -m benchmarks._listener flagsync URL NAMESPACE
    python -m benchmarks._listener raw URL CHANNEL

Prints `READY` once subscribed (and, for flagsync, synced), records the wall-clock
time (ns) at which each change lands — for flagsync when the new snapshot is swapped
in, for raw pub/sub when the message is read — and, when its stdin closes, prints the
records as JSON and exits.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

import redis
import structlog

from flagsync import FlagClient


def _follow_flagsync(url: str, namespace: str, records: list[tuple[int, int]]) -> FlagClient:
    client = FlagClient.connect(url, namespace)
    client.add_listener(lambda revision, _keys: records.append((revision, time.time_ns())))
    if not client.wait_ready(30):
        raise SystemExit("flagsync client not ready after 30 s")
    return client


def _follow_raw(url: str, channel: str, records: list[tuple[int, int]]) -> threading.Event:
    """Plain redis-py: subscribe, read messages in a thread, note each one's arrival."""
    subscriber = redis.Redis.from_url(url, protocol=2)
    pubsub = subscriber.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] == "subscribe":
            break
    else:
        raise SystemExit("raw subscriber not subscribed after 30 s")
    stop = threading.Event()

    def read() -> None:
        # Holding `subscriber` here keeps it alive: collecting a redis.Redis closes its pool.
        assert subscriber is not None
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message is not None and message["type"] == "message":
                records.append((int(message["data"].split(b"|", 1)[0]), time.time_ns()))

    threading.Thread(target=read, daemon=True).start()
    return stop


def main() -> None:
    """Entry point: follow, report READY, wait for stdin to close, print the records."""
    mode, url, name = sys.argv[1:4]
    # stdout carries READY and the records; logs go to stderr, warnings and up only.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    records: list[tuple[int, int]] = []
    if mode == "flagsync":
        client = _follow_flagsync(url, name, records)
        print("READY", flush=True)
        sys.stdin.read()
        client.close()
    else:
        stop = _follow_raw(url, name, records)
        print("READY", flush=True)
        sys.stdin.read()
        stop.set()
    print(json.dumps(records), flush=True)


if __name__ == "__main__":
    main()
