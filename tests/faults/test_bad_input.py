"""Bad input from the channel and the store (FAULTS.md S11, S14, S20; S12 is in test_quarantine).

Whatever arrives on the change channel or sits in the store, a worker keeps serving its
last-known-good (LKG) snapshot until a valid one replaces it: malformed messages are
counted, logged at a bounded rate and answered with a resync; a missing snapshot is
never read as "all flags off"; a worker that missed more changes than the change log
keeps resyncs in full, never skipping silently.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import msgspec
import pytest
import redis

from flagsync import FlagClient
from flagsync._codec import Change, encode_definition
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.status import SyncState
from flagsync.store import StoreKeys
from tests.faults.figures import record
from tests.faults.recovery import MESSAGES_ONLY
from tests.faults.status_worker import OPTIONS as FAST
from tests.integration.conftest import ClientFactory, PublisherFactory, RawFactory
from tests.integration.support import (
    ANYONE,
    BASE_VALUES,
    MODEL_OFF,
    base_document,
    change_message,
    counter_flag,
    flag_change,
    model_flag,
    served,
    stored_epoch,
    subscriber_threads,
    wait_until,
)
from tests.logs import captured_logs, events

TEMPERATURE_LOW: Final[dict[str, Any]] = {
    "variants": {"low": 0.2, "high": 0.9},
    "off": "low",
    "default": "low",
}
"""A valid change of `temperature` (serves 0.2 instead of 0.9)."""


def ready_client(make_client: ClientFactory, url: str, **options: Any) -> FlagClient:
    """A connected client that has loaded the namespace."""
    client = make_client(url, **options)
    assert client.wait_ready(5), client.status()
    return client


def nudge(raw: redis.Redis, namespace: str, epoch: str, revision: int) -> None:
    """Publish a well-formed "fetch the snapshot" message (an empty payload) for `revision`."""
    raw.publish(StoreKeys(namespace).channel, _header(epoch, revision))


def duplicate_key_blob() -> bytes:
    """A stored `model` blob whose definition map has `default` twice: first `candidate`
    (what BASE_VALUES serves), then `current`. msgspec alone would keep the last."""
    blob = encode_definition("flag", "model", 2, model_flag(default="candidate"))
    field = msgspec.msgpack.encode("default") + msgspec.msgpack.encode("candidate")
    assert blob.count(field) == 1
    definition_header = blob.index(b"\x86" + msgspec.msgpack.encode("description"))
    repeated = field + msgspec.msgpack.encode("default") + msgspec.msgpack.encode("current")
    # the definition map goes from 6 to 7 pairs: one more key, the same name
    return (
        blob[:definition_header] + b"\x87" + blob[definition_header + 1 :].replace(field, repeated)
    )


# -- S11: malformed messages ---------------------------------------------------------------


def _header(epoch: str, revision: int) -> bytes:
    return f"fs2|{epoch}|{revision}|0|{'0' * 40}||".encode()


def _payload(changes: list[Any], **extra: Any) -> bytes:
    return msgspec.msgpack.encode({"actor": "forger", "reason": "", "changes": changes} | extra)


def _next_change(epoch: str, revision: int, key: str, definition: dict[str, Any]) -> bytes:
    """A well-formed message putting `definition` at the next revision (as the script would)."""
    return change_message(epoch, revision + 1, [flag_change(key, 2, definition)])


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _temperature(low: Any = 0.2, high: Any = 0.5) -> dict[str, Any]:
    """`temperature` serving `high` (0.5 where BASE_VALUES has 0.9): applied, it would show."""
    return {"variants": {"low": low, "high": high}, "off": "low", "default": "high"}


@dataclass(frozen=True)
class Malformed:
    """A malformed message (built from the live epoch and revision) and why it is refused."""

    build: Callable[[str, int], bytes]
    reason: str
    """A fragment of the `message_rejected` log's reason."""


MODEL_CURRENT: Final = model_flag(default="current")
"""Applied, this would serve `current` (gpt-4o) to ANYONE: any leak of a bad message shows."""

MALFORMED: Final[dict[str, Malformed]] = {
    "garbage-bytes": Malformed(
        lambda epoch, revision: b"\x00\xff\xfe\x80\x13 not a flagsync message",
        "message header is incomplete",
    ),
    "truncated-msgpack": Malformed(
        lambda epoch, revision: _next_change(epoch, revision, "model", MODEL_CURRENT)[:-9],
        "bad message payload",
    ),
    "wrong-type-revision": Malformed(
        lambda epoch, revision: (
            f"fs2|{epoch}|seven|0|{'0' * 40}||".encode()
            + _next_change(epoch, revision, "model", MODEL_CURRENT).split(b"|", 6)[6]
        ),
        "bad message header",
    ),
    "wrong-types-payload": Malformed(
        lambda epoch, revision: (
            _header(epoch, revision + 1)
            + msgspec.msgpack.encode({"actor": 7, "reason": [], "changes": "none"})
        ),
        "Expected `str`, got `int`",
    ),
    "wrong-type-blob": Malformed(
        lambda epoch, revision: (
            _header(epoch, revision + 1)
            + _payload([{"kind": "flag", "key": "model", "op": "put", "blob": 12}])
        ),
        "Expected `bytes | null`, got `int`",
    ),
    "unknown-field-payload": Malformed(
        lambda epoch, revision: _header(epoch, revision + 1) + _payload([], signature="forged"),
        "unknown field `signature`",
    ),
    "unknown-field-definition": Malformed(
        lambda epoch, revision: _next_change(
            epoch, revision, "model", MODEL_CURRENT | {"colour": "red"}
        ),
        "unknown field `colour`",
    ),
    "nan-value": Malformed(
        lambda epoch, revision: _next_change(
            epoch, revision, "temperature", _temperature(low=math.nan)
        ),
        "nan is not a JSON number",
    ),
    "inf-value": Malformed(
        lambda epoch, revision: _next_change(
            epoch, revision, "temperature", _temperature(low=-math.inf)
        ),
        "-inf is not a JSON number",
    ),
    "inf-weight": Malformed(
        lambda epoch, revision: _next_change(
            epoch,
            revision,
            "model",
            model_flag() | {"default": {"rollout": {"candidate": math.inf, "current": 0}}},
        ),
        "weight inf is not in 0..100",
    ),
    "10mb-payload": Malformed(
        lambda epoch, revision: (
            _header(epoch, revision + 1) + _payload([], actor="x" * (10 * 1024 * 1024))
        ),
        "exceeds 4194304",
    ),
    "deep-nesting-payload": Malformed(
        lambda epoch, revision: _header(epoch, revision + 1) + b"\x91" * 100_000 + b"\xc0",
        "bad message payload",
    ),
    "deep-nesting-value": Malformed(
        lambda epoch, revision: _next_change(
            epoch, revision, "temperature", _temperature(high=_nested(200))
        ),
        "nested deeper than 32 levels",
    ),
    "duplicate-key-definition": Malformed(
        lambda epoch, revision: change_message(
            epoch, revision + 1, [Change("flag", "model", "put", duplicate_key_blob())]
        ),
        "a map in the definition repeats a key",
    ),
    "unknown-schema-version": Malformed(
        lambda epoch, revision: b"fs9" + _next_change(epoch, revision, "model", MODEL_CURRENT)[3:],
        "unknown message schema b'fs9'",
    ),
}


class TestMalformedMessages:
    """S11: a malformed message is dropped and counted, the read loop and the LKG survive,
    and the next valid change applies from its message."""

    @pytest.mark.parametrize("name", list(MALFORMED))
    def test_malformed_message_is_rejected(
        self,
        name: str,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        raw: redis.Redis,
    ) -> None:
        """The message is counted, logged once with its reason and answered with a cheap
        check (no full load: the store did not change, S31), the snapshot stays untouched,
        and the next change still applies from its message."""
        start = publisher.apply(base_document())
        client = ready_client(make_client, server.url, **MESSAGES_ONLY)
        snapshot, before = client.snapshot, client.status()
        epoch = stored_epoch(raw, publisher.keys.namespace)
        case = MALFORMED[name]
        with captured_logs() as logs:
            raw.publish(publisher.keys.channel, case.build(epoch, start))
            expected = (before.malformed_messages + 1, before.state_checks + 1)
            assert wait_until(
                lambda: (
                    (client.status().malformed_messages, client.status().state_checks) == expected
                ),
                5,
            ), client.status()
        rejected = events(logs, "message_rejected")
        assert len(rejected) == 1, rejected
        assert case.reason in rejected[0]["reason"], rejected[0]
        assert rejected[0]["log_level"] == "warning"
        assert client.snapshot is snapshot  # the check found the same store: nothing loaded
        assert (client.revision, served(client)) == (start, BASE_VALUES)
        assert subscriber_threads(publisher.keys.namespace)  # the read loop lives on

        started = time.monotonic()
        revision = publisher.kill("model")
        assert wait_until(lambda: client.revision == revision, 2), client.status()
        recovery_s = time.monotonic() - started
        after = client.status()
        assert after.applied_changes == before.applied_changes + 1  # from its message
        assert after.resyncs == before.resyncs
        assert served(client) == BASE_VALUES | MODEL_OFF
        record("S11", server.kind, recovery_s=recovery_s, case=name, reason=case.reason)

    def test_flood_is_logged_at_a_bounded_rate(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        raw: redis.Redis,
    ) -> None:
        """50 garbage messages in a burst are all counted but logged at most twice, and the
        client still applies the next change from its message."""
        start = publisher.apply(base_document())
        client = ready_client(make_client, server.url, **MESSAGES_ONLY)
        before = client.status()
        started = time.monotonic()
        with captured_logs() as logs:
            for number in range(50):
                raw.publish(publisher.keys.channel, b"\x00garbage %d" % number)
            assert wait_until(
                lambda: client.status().malformed_messages == before.malformed_messages + 50, 5
            ), client.status()
        flood_s = time.monotonic() - started
        rejected = events(logs, "message_rejected")
        assert 1 <= len(rejected) <= 2, rejected
        assert (client.revision, served(client)) == (start, BASE_VALUES)
        revision = publisher.kill("model")
        assert wait_until(lambda: client.revision == revision, 2), client.status()
        assert client.status().applied_changes == before.applied_changes + 1
        record(
            "S11",
            server.kind,
            recovery_s=None,
            case="flood-50",
            rejected_logged=len(rejected),
            flood_handled_s=round(flood_s, 3),
        )


# -- S14: snapshot flushed while up --------------------------------------------------------


def _wipe_namespace(raw: redis.Redis, namespace: str) -> None:
    keys = StoreKeys(namespace)
    raw.delete(keys.flags, keys.segments, keys.versions, keys.revision, keys.epoch, keys.log)


class TestSnapshotMissing:
    """S14: data that vanished from the store never means "all flags off": the LKG is served,
    status reports the snapshot missing, and a re-seed is followed."""

    @pytest.mark.parametrize("wipe", ["flushall", "del-namespace-keys", "del-flags-hash"])
    def test_keeps_lkg_until_reseeded(
        self,
        wipe: str,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: ClientFactory,
        make_raw: RawFactory,
    ) -> None:
        """After the wipe and a nudge the client reports the snapshot missing while serving
        its flags, until a re-seed through the publisher is applied and clears the report."""
        url = dedicated_server.url
        publisher = make_publisher(url)
        raw = make_raw(url)
        namespace = publisher.keys.namespace
        start = publisher.apply(base_document())
        old_epoch = stored_epoch(raw, namespace)
        client = ready_client(make_client, url, stale_after_s=0.3, **MESSAGES_ONLY)
        snapshot = client.snapshot
        with captured_logs() as logs:
            if wipe == "flushall":
                raw.flushall()
            elif wipe == "del-namespace-keys":
                _wipe_namespace(raw, namespace)
            else:
                raw.delete(publisher.keys.flags)
            nudge(raw, namespace, old_epoch, start + 1)
            deadline = time.monotonic() + 0.6
            while time.monotonic() < deadline:  # never all defaults, not for a moment
                assert served(client) == BASE_VALUES
                time.sleep(0.005)
        status = client.status()
        assert status.snapshot_missing, status
        assert (status.epoch, status.revision, status.flags) == (old_epoch, start, 4)
        assert client.snapshot is snapshot
        assert status.state is SyncState.STALE  # unconfirmed for longer than stale_after_s
        assert not client.is_healthy()
        assert events(logs, "snapshot_missing"), logs

        document = base_document()
        document["flags"]["temperature"]["default"] = "low"
        started = time.monotonic()
        revision = publisher.apply(document)
        new_epoch = stored_epoch(raw, namespace)
        assert revision > start
        assert (new_epoch != old_epoch) is (wipe != "del-flags-hash")

        def recovered() -> bool:
            status = client.status()
            return (status.epoch, status.revision, status.snapshot_missing) == (
                new_epoch,
                revision,
                False,
            )

        assert wait_until(recovered, 3), client.status()
        recovery_s = time.monotonic() - started
        assert served(client) == BASE_VALUES | {"temperature": 0.2}
        assert wait_until(lambda: client.status().state is SyncState.READY, 5), client.status()
        assert client.snapshot.definitions == publisher.definitions()
        record("S14", dedicated_server.kind, recovery_s=recovery_s, case=wipe)


# -- S20: change-log gap ---------------------------------------------------------------------

LOG_MAXLEN: Final = 10
CHANGES: Final = 150
"""More than the log keeps even with approximate (`MAXLEN ~`) trimming of whole stream nodes."""


def make_changes(publisher: Publisher) -> int:
    """`temperature` once (soon trimmed from the log), then `counter` CHANGES times."""
    publisher.put("temperature", TEMPERATURE_LOW)
    for value in range(1, CHANGES + 1):
        revision = publisher.put("counter", counter_flag(value))
    return revision


def assert_log_trimmed(publisher: Publisher, worker_revision: int, latest: int) -> None:
    """The change log no longer holds the revisions right after the worker's."""
    history = publisher.history(limit=10_000)
    assert history[0].revision == latest
    assert len(history) < latest - worker_revision, len(history)
    assert min(entry.revision for entry in history) > worker_revision + 1


class StatusWorker:
    """A `tests.faults.status_worker` process: ask() returns its status and served values."""

    def __init__(self, url: str, namespace: str) -> None:
        root = Path(__file__).resolve().parents[2]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.status_worker", url, namespace],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.stdin: IO[str] = self.process.stdin
        self.stdout: IO[str] = self.process.stdout
        assert self.stdout.readline().strip() == "ready"

    def ask(self) -> dict[str, Any]:
        self.stdin.write("status\n")
        self.stdin.flush()
        answer: dict[str, Any] = json.loads(self.stdout.readline())
        return answer

    def close(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)
        self.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.stdout.close()


class TestChangeLogGap:
    """S20: a worker that missed more changes than the change log keeps detects the gap and
    loads the whole snapshot; it never skips what it missed."""

    def test_stopped_worker_process_resyncs(
        self,
        server: ServerProcess,
        namespace: str,
        raw: redis.Redis,
    ) -> None:
        """A SIGSTOPped worker whose subscription was dropped meanwhile ends, after SIGCONT,
        on the latest revision with every change in place, by a full resync."""
        with Publisher(server.url, namespace, "gap-tests", log_maxlen=LOG_MAXLEN) as publisher:
            publisher.apply(base_document())
            start = publisher.put("counter", counter_flag(0))
            worker = StatusWorker(server.url, namespace)
            try:
                before = worker.ask()
                assert before["status"]["revision"] == start
                pid = worker.process.pid
                os.kill(pid, signal.SIGSTOP)
                name = f"flagsync-{before['status']['worker_id']}"[:64]
                killed = [
                    entry["id"]
                    for entry in raw.client_list(_type="pubsub")
                    if entry["name"] == name
                ]
                assert len(killed) == 1
                raw.client_kill_filter(_id=killed[0])  # the messages from here on are lost
                latest = make_changes(publisher)
                log_entries = len(publisher.history(limit=10_000))
                assert_log_trimmed(publisher, start, latest)
                os.kill(pid, signal.SIGCONT)
                resumed = time.monotonic()
                after = worker.ask()
                deadline = resumed + 5
                while after["status"]["revision"] != latest and time.monotonic() < deadline:
                    time.sleep(0.02)
                    after = worker.ask()
                recovery_s = time.monotonic() - resumed
            finally:
                worker.close()
            definitions = publisher.definitions()
        status = after["status"]
        assert status["revision"] == latest, status
        assert status["resyncs"] > before["status"]["resyncs"]
        # Nothing of the gap arrived as messages: it was loaded, all of it.
        assert status["applied_changes"] == before["status"]["applied_changes"]
        assert after["values"]["counter"] == CHANGES
        assert after["values"]["temperature"] == 0.2  # the change the log no longer has
        assert set(after["values"]) == set(definitions.flags)
        record(
            "S20",
            server.kind,
            recovery_s=recovery_s,
            case="sigstop-worker",
            missed=latest - start,
            log_entries=log_entries,
        )

    def test_restarted_worker_resyncs_from_lkg_file(
        self,
        server: ServerProcess,
        namespace: str,
        make_client: ClientFactory,
        tmp_path: Path,
    ) -> None:
        """A worker closed at revision r and restarted from its LKG file after more changes
        than the log keeps serves r at once, then exactly the store's latest state."""
        lkg = tmp_path / "flags.lkg"
        with Publisher(server.url, namespace, "gap-tests", log_maxlen=LOG_MAXLEN) as publisher:
            publisher.apply(base_document())
            start = publisher.put("counter", counter_flag(0))
            first = ready_client(make_client, server.url, lkg_path=lkg, **FAST)
            assert wait_until(lkg.exists, 2)
            first.close()
            latest = make_changes(publisher)
            log_entries = len(publisher.history(limit=10_000))
            assert_log_trimmed(publisher, start, latest)

            started = time.monotonic()
            client = make_client(server.url, lkg_path=lkg, **FAST)
            assert client.revision in (start, latest)  # the LKG file, unless synced already
            assert client.wait_ready(5), client.status()
            assert wait_until(lambda: client.revision == latest, 2), client.status()
            recovery_s = time.monotonic() - started
            assert client.snapshot.definitions == publisher.definitions()
        status = client.status()
        assert status.applied_changes == 0
        assert status.resyncs >= 1
        assert client.variation("counter", ANYONE, -1) == CHANGES
        assert served(client) == BASE_VALUES | {"temperature": 0.2}
        record(
            "S20",
            server.kind,
            recovery_s=recovery_s,
            case="restart-from-lkg",
            missed=latest - start,
            log_entries=log_entries,
        )
