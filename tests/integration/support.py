"""Helpers for the integration tests: flag documents, bounded waits, and raw store access.

The raw helpers write the wire format by hand (`flagsync._codec`): that format is the
contract between publishers and subscribers (DESIGN.md "Redis layout and protocol"),
so the tests build messages and blobs exactly as a foreign writer would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

import redis

from flagsync import FlagClient
from flagsync._codec import Change, ChangeSet, encode_changeset, encode_definition
from flagsync.publisher import Publisher
from flagsync.store import StoreKeys, encode_message

Document = dict[str, Any]

STAFF: Final = {"attr": "email", "op": "ends_with", "values": ["@acme.com"]}
PAID: Final = {"attr": "plan", "op": "in", "values": ["paid"]}
ANYONE: Final[dict[str, Any]] = {"key": "user-42"}

FAST: Final[dict[str, Any]] = {
    "check_interval_s": 0.05,
    "stale_after_s": 0.5,
    "liveness_timeout_s": 0.6,
    "ping_interval_s": 0.2,
    "socket_timeout_s": 0.5,
    "connect_timeout_s": 0.5,
    "heartbeat_interval_s": 0.2,
    "backoff_max_s": 0.3,
}
"""Short deadlines for scenarios about timing (staleness, liveness, reconnects)."""

MESSAGES_ONLY: Final[dict[str, Any]] = {"check_interval_s": 60.0}
"""No periodic revision check within a test: whatever is applied came through pub/sub."""


def model_flag(*, default: str = "candidate", enabled: bool = True) -> Document:
    """The LLM model flag: a staff rule, a paid ramp, and a fixed default."""
    return {
        "description": "Which model serves chat completions",
        "variants": {"current": "gpt-4o", "candidate": "gpt-4.1"},
        "enabled": enabled,
        "off": "current",
        "rules": [
            {"name": "staff-first", "when": [STAFF], "serve": "candidate"},
            {
                "name": "paid-ramp",
                "when": [PAID],
                "serve": {"rollout": {"candidate": 20, "current": 80}},
            },
        ],
        "default": default,
    }


def counter_flag(value: int) -> Document:
    """A one-variant flag whose value is `value`: each write is distinguishable."""
    return {"variants": {"value": value}, "off": "value", "default": "value"}


def base_document() -> Document:
    """A small namespace: a model flag, a number flag, a prerequisite and a segment."""
    return {
        "flags": {
            "model": model_flag(),
            "temperature": {
                "variants": {"low": 0.2, "high": 0.9},
                "off": "low",
                "default": "high",
            },
            "context-window": {
                "variants": {"small": 8192, "large": 32768},
                "off": "small",
                "requires": {"model": "candidate"},
                "default": "large",
            },
            "beta-ui": {
                "variants": {"on": True, "off": False},
                "off": "off",
                "rules": [
                    {
                        "name": "beta",
                        "when": [{"attr": "key", "op": "in_segment", "values": ["beta"]}],
                        "serve": "on",
                    }
                ],
                "default": "off",
            },
        },
        "segments": {"beta": {"keys": ["user-1"]}},
    }


BASE_VALUES: Final[dict[str, Any]] = {
    "model": "gpt-4.1",
    "temperature": 0.9,
    "context-window": 32768,
    "beta-ui": False,
}
"""What `base_document()` serves for `ANYONE`; the caller defaults below differ from each."""

MODEL_OFF: Final[dict[str, Any]] = {"model": "gpt-4o", "context-window": 8192}
"""What changes from `BASE_VALUES` when the model flag serves `current` (killed or by default):
`context-window` requires `model: candidate`, so it falls back to its `off` variant."""

CALLER_DEFAULTS: Final[dict[str, Any]] = {
    "model": "caller-default",
    "temperature": -1.0,
    "context-window": -1,
    "beta-ui": True,
}


def served(client: FlagClient, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """What `client` serves for each base flag (with the caller defaults of `CALLER_DEFAULTS`)."""
    ctx = ANYONE if context is None else context
    return {key: client.variation(key, ctx, default) for key, default in CALLER_DEFAULTS.items()}


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.005) -> bool:
    """Poll `predicate` until it is true (True) or `timeout_s` passes (False, after a last try)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


@contextmanager
def channel_tap(raw: redis.Redis, channel: str) -> Iterator[Callable[[int], list[bytes]]]:
    """Subscribe to `channel`; yields `take(n)`: the next n messages (waits at most 5 s)."""
    pubsub = raw.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel)

    def take(count: int) -> list[bytes]:
        messages: list[bytes] = []
        deadline = time.monotonic() + 5
        while len(messages) < count and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message is not None and message["type"] == "message":
                messages.append(message["data"])
        assert len(messages) == count, f"got {len(messages)} of {count} messages"
        return messages

    try:
        take(0)  # the subscription is confirmed before anything is published
        yield take
    finally:
        pubsub.close()


def subscriber_threads(namespace: str) -> list[threading.Thread]:
    """The live subscriber threads following `namespace` in this process."""
    return [
        thread
        for thread in threading.enumerate()
        if thread.name == f"flagsync-subscriber-{namespace}" and thread.is_alive()
    ]


class RevisionRecorder:
    """A listener that records every revision a client swapped in, and signals waiters."""

    def __init__(self) -> None:
        self.revisions: list[int] = []
        self.changed: list[frozenset[str]] = []
        self._condition = threading.Condition()

    def __call__(self, revision: int, changed: frozenset[str]) -> None:
        with self._condition:
            self.revisions.append(revision)
            self.changed.append(changed)
            self._condition.notify_all()

    def wait_for(self, revision: int, timeout_s: float) -> bool:
        """Wait until a revision >= `revision` was swapped in; False on timeout."""
        with self._condition:
            return self._condition.wait_for(
                lambda: bool(self.revisions) and self.revisions[-1] >= revision, timeout_s
            )


def connections_named(raw: redis.Redis, client: FlagClient, kind: str | None = None) -> list[str]:
    """Ids of the server connections `client` opened (each carries its worker id as name),
    of one CLIENT LIST type (`pubsub`, `normal`) or of any."""
    name = f"flagsync-{client.status().worker_id}"[:64]
    entries = raw.client_list() if kind is None else raw.client_list(_type=kind)
    return [entry["id"] for entry in entries if entry["name"] == name]


def raw_client(url: str) -> redis.Redis:
    """A plain redis-py client with explicit timeouts, for arranging faults by hand."""
    client: redis.Redis = redis.Redis.from_url(
        url, socket_timeout=5.0, socket_connect_timeout=5.0, protocol=2
    )
    return client


def store_state(raw: redis.Redis, namespace: str) -> dict[str, Any]:
    """Everything a write could touch in a namespace (flags, versions, revision, log length)."""
    keys = StoreKeys(namespace)
    return {
        "flags": raw.hgetall(keys.flags),
        "segments": raw.hgetall(keys.segments),
        "versions": raw.hgetall(keys.versions),
        "revision": raw.get(keys.revision),
        "epoch": raw.get(keys.epoch),
        "log": raw.xlen(keys.log),
    }


def muted_publisher(url: str, namespace: str, actor: str = "muted") -> Publisher:
    """A publisher whose write script announces on a channel nobody listens to.

    It writes exactly like a real one (same script, same revision bump) but the nudge
    is lost, as when a publisher crashes between the write and the PUBLISH (FAULTS S8).
    The caller closes it.
    """
    publisher = Publisher(url, namespace, actor=actor)
    publisher.keys.channel = f"{publisher.keys.prefix}:nobody-listens"
    return publisher


def write_by_hand(raw: redis.Redis, namespace: str, key: str, definition: Document) -> int:
    """Write one flag with HSET + INCR (no script, no PUBLISH); returns the new revision."""
    keys = StoreKeys(namespace)
    version = int(raw.hget(keys.versions, f"flag:{key}") or 0) + 1
    pipe = raw.pipeline(transaction=True)
    pipe.hset(keys.flags, key, encode_definition("flag", key, version, definition))
    pipe.hset(keys.versions, f"flag:{key}", version)
    pipe.incr(keys.revision)
    revision: int = pipe.execute()[-1]
    return revision


def change_message(
    epoch: str,
    revision: int,
    changes: list[Change],
    *,
    published_us: int = 0,
    digest: str = "0" * 40,
    signature: str = "",
) -> bytes:
    """A channel message as the write script publishes it:
    `fs2|epoch|rev|µs|digest|signature|payload` (by default with a digest no state has)."""
    payload = encode_changeset(ChangeSet(actor="tests", reason="by hand", changes=changes))
    return encode_message(
        epoch, revision, published_us, payload, digest=digest, signature=signature
    )


def flag_change(key: str, version: int, definition: Document) -> Change:
    """A `put` of one flag inside a change message."""
    return Change("flag", key, "put", encode_definition("flag", key, version, definition))


def stored_epoch(raw: redis.Redis, namespace: str) -> str:
    """The namespace's epoch; fails the test when the store has none."""
    epoch = raw.get(StoreKeys(namespace).epoch)
    assert isinstance(epoch, bytes), "the namespace has no epoch"
    return epoch.decode()
