"""Both sync drivers against real servers: loading, ordered application, gaps,
duplicates, malformed input, lost nudges, reconnects, wiped and frozen servers, the
last-known-good file and shutdown (DESIGN.md "Failure policy", FAULTS.md S2-S14, S18).

Every test runs once with `FlagClient.connect` (the daemon-thread driver) and once with
`FlagClient.connect_async` (the anyio task on asyncio). The test bodies are plain
functions: the async client runs its event loop in a thread of its own (`AsyncRunner`),
and the client's API is safe to call from any thread, so both drivers meet the very
same assertions. What only the async API has (cancellation, `wait_ready_async`, Trio)
is in `test_async_client.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import msgspec
import pytest
import redis

from flagsync import FlagClient, Reason
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess, free_port
from flagsync.status import SyncState
from flagsync.store import StoreKeys
from tests.integration.conftest import ClientFactory, PublisherFactory, RawFactory
from tests.integration.support import (
    ANYONE,
    BASE_VALUES,
    CALLER_DEFAULTS,
    FAST,
    MESSAGES_ONLY,
    MODEL_OFF,
    RevisionRecorder,
    base_document,
    change_message,
    channel_tap,
    connections_named,
    counter_flag,
    flag_change,
    model_flag,
    muted_publisher,
    served,
    stored_epoch,
    subscriber_threads,
    wait_until,
    write_by_hand,
)

DRIVERS: Final = ["thread", "asyncio"]


class AsyncRunner:
    """One `FlagClient.connect_async` block on an asyncio loop in its own thread.

    `start()` enters the block and returns the client (as `connect` would: not waiting
    for readiness); `stop()` leaves the block and joins the thread.
    """

    def __init__(self, url: str, namespace: str, options: dict[str, Any]) -> None:
        self.url = url
        self.namespace = namespace
        self.options = options
        self.client: FlagClient | None = None
        self.error: BaseException | None = None
        self._entered = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._leave: asyncio.Event | None = None
        self.thread = threading.Thread(
            target=anyio.run,
            args=(self._main,),
            kwargs={"backend": "asyncio"},
            name=f"flagsync-test-loop-{namespace}",
            daemon=True,
        )

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._leave = asyncio.Event()
        try:
            async with FlagClient.connect_async(self.url, self.namespace, **self.options) as client:
                self.client = client
                self._entered.set()
                await self._leave.wait()
        except BaseException as error:  # reported to the test by start()
            self.error = error
            raise
        finally:
            self._entered.set()

    def start(self) -> FlagClient:
        """Enter the block; the connected client."""
        self.thread.start()
        assert self._entered.wait(5), "connect_async did not enter its block in 5 s"
        if self.error is not None:
            raise self.error
        assert self.client is not None
        return self.client

    def stop(self) -> None:
        """Leave the block (stopping the task) and wait for the loop's thread to end."""
        loop, leave = self._loop, self._leave
        if loop is not None and leave is not None and self.thread.is_alive():
            loop.call_soon_threadsafe(leave.set)
        self.thread.join(5)


class Clients:
    """`make_client(url, **options)` for the test's driver; closes every client after it.

    Thread clients come from the integration `ClientFactory` (which also checks their
    threads are gone); async clients from an `AsyncRunner` each.
    """

    def __init__(self, driver: str, threads: ClientFactory) -> None:
        self.driver = driver
        self.threads = threads
        self.namespace = threads.namespace
        self.runners: list[AsyncRunner] = []

    def __call__(self, url: str, namespace: str | None = None, **options: Any) -> FlagClient:
        if self.driver == "thread":
            return self.threads(url, namespace, **options)
        runner = AsyncRunner(url, self.namespace if namespace is None else namespace, options)
        self.runners.append(runner)
        return runner.start()

    def close_all(self) -> None:
        for runner in self.runners:
            runner.stop()
        leaked = [runner.thread.name for runner in self.runners if runner.thread.is_alive()]
        assert not leaked, f"event loops still running after the block: {leaked}"


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    """The sync driver of this run of the test: `thread` or `asyncio`."""
    kind: str = request.param
    return kind


@pytest.fixture
def make_client(driver: str, make_client: ClientFactory) -> Iterator[Clients]:
    """Overrides the integration `make_client`: the same call, for the test's driver."""
    clients = Clients(driver, make_client)
    try:
        yield clients
    finally:
        clients.close_all()


def following(client: FlagClient) -> bool:
    """True while the client's driver (thread or task) runs."""
    handle = client._sync
    assert handle is not None, "the client is not connected"
    return handle.alive


def ready_client(
    make_client: Clients, url: str, **options: Any
) -> tuple[FlagClient, RevisionRecorder]:
    """A connected client, synced, with a listener recording every later swap."""
    client = make_client(url, **options)
    assert client.wait_ready(5), client.status()
    recorder = RevisionRecorder()
    client.add_listener(recorder)
    return client, recorder


class TestStartup:
    """A new client loads the namespace and reports ready, or says why not."""

    def test_wait_ready_after_load(
        self, server: ServerProcess, publisher: Publisher, make_client: Clients
    ) -> None:
        """`wait_ready` returns True once the snapshot is loaded, and the flags are served."""
        revision = publisher.apply(base_document())
        client = make_client(server.url)
        assert client.wait_ready(5)
        status = client.status()
        assert status.state is SyncState.READY
        assert status.connected
        assert (status.revision, status.epoch) == (revision, publisher.revision()[0])
        assert status.flags == 4
        assert served(client) == BASE_VALUES
        assert client.is_healthy()

    def test_empty_namespace_is_ready_then_follows(
        self, server: ServerProcess, publisher: Publisher, make_client: Clients
    ) -> None:
        """A namespace nobody wrote yet is ready with no flags, and picks up the first write."""
        client = make_client(server.url)
        assert client.wait_ready(5)
        assert served(client) == CALLER_DEFAULTS
        revision = publisher.apply(base_document())
        assert wait_until(lambda: client.revision == revision, 2)
        assert served(client) == BASE_VALUES

    def test_wait_ready_times_out_without_server(self, make_client: Clients) -> None:
        """With no server listening, `wait_ready` returns False in time and defaults are served."""
        client = make_client(f"redis://127.0.0.1:{free_port()}", connect_timeout_s=0.2)
        started = time.monotonic()
        assert not client.wait_ready(0.3)
        assert time.monotonic() - started < 0.6
        status = client.status()
        assert (status.state, status.connected) == (SyncState.CONNECTING, False)
        assert served(client) == CALLER_DEFAULTS
        assert not client.is_healthy()


class TestChanges:
    """Published changes reach the client through pub/sub, in revision order."""

    def test_change_applies_within_milliseconds(
        self, server: ServerProcess, publisher: Publisher, make_client: Clients
    ) -> None:
        """A kill switch is applied from its message well before any revision check."""
        publisher.apply(base_document())
        client, recorder = ready_client(make_client, server.url, **MESSAGES_ONLY)
        before = client.status()
        started = time.monotonic()
        revision = publisher.kill("model", reason="incident")
        assert recorder.wait_for(revision, 1.0)
        elapsed_s = time.monotonic() - started
        assert elapsed_s < 0.25, f"took {elapsed_s * 1000:.1f} ms"
        detail = client.detail("model", ANYONE, "x")
        assert (detail.value, detail.reason) == ("gpt-4o", Reason.DISABLED)
        after = client.status()
        assert after.applied_changes == before.applied_changes + 1
        assert after.resyncs == before.resyncs
        assert recorder.changed[-1] >= {"model", "context-window"}

    def test_burst_applies_every_revision_in_order(
        self, server: ServerProcess, publisher: Publisher, make_client: Clients
    ) -> None:
        """200 quick changes are each applied from their message, strictly in order, no resync."""
        start = publisher.put("counter", counter_flag(0))
        client, recorder = ready_client(make_client, server.url, **MESSAGES_ONLY)
        before = client.status()
        for value in range(1, 201):
            final = publisher.put("counter", counter_flag(value))
        assert recorder.wait_for(final, 5)
        assert recorder.revisions == list(range(start + 1, final + 1))
        assert client.variation("counter", {}, -1) == 200
        after = client.status()
        assert after.applied_changes - before.applied_changes == 200
        assert after.resyncs == before.resyncs

    def test_burst_with_revision_checks_stays_ordered(
        self, server: ServerProcess, publisher: Publisher, make_client: Clients
    ) -> None:
        """With the default revision checks running, a burst still ends on the final revision,
        only moving forward; revisions are skipped only by a resync, and a resync happens at
        most once per check interval."""
        start = publisher.put("counter", counter_flag(0))
        client, recorder = ready_client(make_client, server.url)
        before = client.status()
        started = time.monotonic()
        for value in range(1, 201):
            final = publisher.put("counter", counter_flag(value))
        assert recorder.wait_for(final, 5)
        elapsed_s = time.monotonic() - started
        assert recorder.revisions[-1] == final
        steps = list(itertools.pairwise([start, *recorder.revisions]))
        assert all(a < b for a, b in steps)
        after = client.status()
        resyncs = after.resyncs - before.resyncs
        jumps = sum(1 for a, b in steps if b != a + 1)
        assert jumps <= resyncs, (jumps, after)
        assert resyncs <= elapsed_s / 0.25 + 1, (resyncs, elapsed_s)
        assert after.applied_changes - before.applied_changes >= len(steps) - resyncs
        assert client.variation("counter", {}, -1) == 200


class TestGapsAndDuplicates:
    """Revision r is applied only on top of r-1 of the same epoch (FAULTS.md S10)."""

    def test_gap_triggers_resync(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: Clients,
        raw: redis.Redis,
    ) -> None:
        """A message two revisions ahead is not applied on top: the client resyncs and so also
        gets the revision it never heard of."""
        start = publisher.apply(base_document())
        client, _ = ready_client(make_client, server.url, **MESSAGES_ONLY)
        before = client.status()
        muted = muted_publisher(server.url, publisher.keys.namespace)
        try:
            muted.set_default("temperature", "low")  # r+1: nobody hears of it
            model = model_flag(default="current")
            jump = muted.put("model", model)  # r+2
        finally:
            muted.close()
        assert jump == start + 2
        epoch = stored_epoch(raw, publisher.keys.namespace)
        raw.publish(
            publisher.keys.channel, change_message(epoch, jump, [flag_change("model", 2, model)])
        )
        assert wait_until(lambda: client.revision == jump, 2), client.status()
        assert served(client) == BASE_VALUES | MODEL_OFF | {"temperature": 0.2}
        after = client.status()
        assert after.resyncs == before.resyncs + 1
        assert after.applied_changes == before.applied_changes

    def test_duplicate_and_old_messages_are_ignored(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: Clients,
        raw: redis.Redis,
    ) -> None:
        """Replaying the latest and an older message changes nothing and is counted."""
        publisher.apply(base_document())
        client, _ = ready_client(make_client, server.url, **MESSAGES_ONLY)
        with channel_tap(raw, publisher.keys.channel) as take:
            publisher.kill("model")
            latest = publisher.enable("model")
            old, newest = take(2)
        assert wait_until(lambda: client.revision == latest, 2)
        snapshot, before = client.snapshot, client.status()
        raw.publish(publisher.keys.channel, newest)
        raw.publish(publisher.keys.channel, old)
        ignored = before.ignored_messages + 2
        assert wait_until(lambda: client.status().ignored_messages == ignored, 2)
        assert client.snapshot is snapshot
        after = client.status()
        assert (after.revision, after.resyncs) == (latest, before.resyncs)
        assert served(client) == BASE_VALUES

    def test_message_from_another_epoch_is_not_applied(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: Clients,
        raw: redis.Redis,
    ) -> None:
        """A next-revision message of an unknown epoch is not trusted: a cheap check of the
        store's state shows nothing changed, so nothing is loaded."""
        start = publisher.apply(base_document())
        client, _ = ready_client(make_client, server.url, **MESSAGES_ONLY)
        before = client.status()
        forged = change_message(
            "another-epoch", start + 1, [flag_change("model", 2, model_flag(default="current"))]
        )
        raw.publish(publisher.keys.channel, forged)
        assert wait_until(lambda: client.status().state_checks == before.state_checks + 1, 2)
        assert client.status().resyncs == before.resyncs
        assert client.revision == start
        assert served(client) == BASE_VALUES


def _valid_next(epoch: str, revision: int) -> bytes:
    return change_message(epoch, revision + 1, [flag_change("model", 2, model_flag())])


MALFORMED: Final[dict[str, Callable[[str, int], bytes]]] = {
    "garbage": lambda epoch, revision: b"\x00\xff\xfe\x80 not a message at all",
    "truncated": lambda epoch, revision: _valid_next(epoch, revision)[:-7],
    "unknown-schema": lambda epoch, revision: b"fs9" + _valid_next(epoch, revision)[3:],
    "bad-header": lambda epoch, revision: f"fs1|{epoch}|not-a-number|0|".encode(),
    "5mb": lambda epoch, revision: f"fs1|{epoch}|{revision + 1}|0|".encode() + b"\x91" * 5_000_000,
    "wrong-types": lambda epoch, revision: (
        f"fs1|{epoch}|{revision + 1}|0|".encode()
        + msgspec.msgpack.encode({"actor": 7, "reason": [], "changes": "none"})
    ),
    "deep-nesting": lambda epoch, revision: (
        f"fs1|{epoch}|{revision + 1}|0|".encode() + b"\x91" * 100_000 + b"\xc0"
    ),
    "invalid-definition": lambda epoch, revision: change_message(
        epoch,
        revision + 1,
        [flag_change("model", 2, model_flag() | {"default": {"rollout": {"current": 150}}})],
    ),
    "blob-of-another-key": lambda epoch, revision: change_message(
        epoch,
        revision + 1,
        [msgspec.structs.replace(flag_change("temperature", 2, counter_flag(1)), key="model")],
    ),
}


class TestMalformedMessages:
    """Malformed messages are dropped and counted, the read loop survives, the snapshot is
    kept, and the next valid change applies (FAULTS.md S11)."""

    @pytest.mark.parametrize("name", list(MALFORMED))
    def test_malformed_message(
        self,
        name: str,
        server: ServerProcess,
        publisher: Publisher,
        make_client: Clients,
        raw: redis.Redis,
    ) -> None:
        """The message is counted as malformed, nothing of it is applied, and it costs one
        cheap check of the store's state, not a full load (FAULTS.md S31)."""
        start = publisher.apply(base_document())
        client, _ = ready_client(make_client, server.url, **MESSAGES_ONLY)
        before = client.status()
        epoch = stored_epoch(raw, publisher.keys.namespace)
        raw.publish(publisher.keys.channel, MALFORMED[name](epoch, start))
        expected = (before.malformed_messages + 1, before.state_checks + 1)  # dropped, checked
        assert wait_until(
            lambda: (client.status().malformed_messages, client.status().state_checks) == expected,
            3,
        ), client.status()
        assert client.status().resyncs == before.resyncs
        assert served(client) == BASE_VALUES
        assert client.revision == start
        assert following(client)
        revision = publisher.kill("model")
        assert wait_until(lambda: client.revision == revision, 2)
        assert client.variation("model", ANYONE, "x") == "gpt-4o"
        assert client.status().applied_changes == before.applied_changes + 1


class TestLostNudge:
    """A write whose message never arrives is applied by the periodic revision check (S8)."""

    @pytest.mark.parametrize("writer", ["script", "by-hand"])
    def test_write_without_publish_is_applied_within_500ms(
        self,
        writer: str,
        server: ServerProcess,
        publisher: Publisher,
        make_client: Clients,
        raw: redis.Redis,
    ) -> None:
        """With default options, an unannounced write reaches the client within 500 ms."""
        publisher.apply(base_document())
        client, recorder = ready_client(make_client, server.url)
        namespace = publisher.keys.namespace
        started = time.monotonic()
        if writer == "script":
            muted = muted_publisher(server.url, namespace)
            try:
                revision = muted.kill("model")
            finally:
                muted.close()
        else:
            revision = write_by_hand(raw, namespace, "model", model_flag(enabled=False))
        assert recorder.wait_for(revision, 1.0)
        elapsed_s = time.monotonic() - started
        assert elapsed_s < 0.5, f"took {elapsed_s * 1000:.0f} ms"
        assert client.detail("model", ANYONE, "x").reason is Reason.DISABLED


class TestReconnect:
    """A dropped connection is re-established and resynced; nothing published meanwhile is
    lost (FAULTS.md S2)."""

    @pytest.mark.parametrize("kind", ["pubsub", "normal"])
    def test_client_kill(
        self,
        kind: str,
        server: ServerProcess,
        publisher: Publisher,
        make_client: Clients,
        raw: redis.Redis,
    ) -> None:
        """After CLIENT KILL of its connection, the client ends on the latest revision."""
        publisher.apply(base_document())
        client, _ = ready_client(make_client, server.url, **MESSAGES_ONLY)
        before = client.status()
        ids = connections_named(raw, client, kind)
        assert len(ids) == 1
        for connection_id in ids:
            raw.client_kill_filter(_id=connection_id)
        publisher.kill("model")
        publisher.set_default("temperature", "low")
        final = publisher.set_rollout("model", {"candidate": 0, "current": 100}, rule="paid-ramp")
        assert wait_until(lambda: client.revision == final, 3), client.status()
        assert wait_until(lambda: client.status().connected, 3)
        assert served(client) == BASE_VALUES | MODEL_OFF | {"temperature": 0.2}
        stored = publisher.get("model")
        assert stored is not None
        assert client.snapshot.definitions.flags["model"] == stored.flag
        if kind == "pubsub":
            # The session ends and a new one starts (and resyncs). A killed command
            # connection, by contrast, is replaced by redis-py's pool on its next use
            # without an error: nothing is lost on it, so no reconnect is counted.
            assert client.status().reconnects == before.reconnects + 1
        assert wait_until(lambda: bool(connections_named(raw, client, kind)), 3)


class TestWipedServer:
    """A server that lost its data never empties the client: it keeps its last-known-good
    flags, says so, and converges once the namespace is written again (FAULTS.md S3, S14)."""

    @pytest.mark.parametrize("wipe", ["sigkill-restart-empty", "flushall"])
    def test_keeps_serving_and_converges_on_new_epoch(
        self,
        wipe: str,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: Clients,
        make_raw: RawFactory,
    ) -> None:
        """The client serves its last values while the store is empty, then the new epoch."""
        publisher = make_publisher(dedicated_server.url)
        publisher.apply(base_document())
        old_epoch, old_revision = publisher.revision()
        client, _ = ready_client(make_client, dedicated_server.url, **FAST)
        if wipe == "flushall":
            make_raw(dedicated_server.url).flushall()
        else:
            dedicated_server.restart()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not client.status().snapshot_missing:
            assert served(client) == BASE_VALUES  # never all defaults
            time.sleep(0.01)
        status = client.status()
        assert status.snapshot_missing, status
        assert wait_until(lambda: client.status().state is SyncState.STALE, 2), client.status()
        assert (client.revision, client.snapshot.epoch) == (old_revision, old_epoch)
        assert served(client) == BASE_VALUES
        detail = client.detail("model", ANYONE, "x")
        assert (detail.value, detail.reason, detail.stale) == ("gpt-4.1", Reason.STALE, True)
        assert not client.is_healthy()

        document = base_document()
        document["flags"]["model"] = model_flag(default="current")
        revision = publisher.apply(document)
        new_epoch, _ = publisher.revision()
        assert new_epoch != old_epoch
        assert revision > old_revision
        assert wait_until(lambda: client.snapshot.epoch == new_epoch, 3), client.status()
        assert client.revision == revision
        assert served(client) == BASE_VALUES | MODEL_OFF
        assert wait_until(lambda: client.status().state is SyncState.READY, 2)
        assert not client.status().snapshot_missing
        assert client.is_healthy()


def _dump(raw: redis.Redis, namespace: str) -> dict[str, Any]:
    keys = StoreKeys(namespace)
    return {
        keys.flags: raw.hgetall(keys.flags),
        keys.segments: raw.hgetall(keys.segments),
        keys.versions: raw.hgetall(keys.versions),
        keys.revision: raw.get(keys.revision),
        keys.epoch: raw.get(keys.epoch),
    }


def _restore(raw: redis.Redis, dump: dict[str, Any]) -> None:
    pipe = raw.pipeline(transaction=True)
    for key, value in dump.items():
        if isinstance(value, dict):
            if value:
                pipe.hset(key, mapping=value)
        elif value is not None:
            pipe.set(key, value)
    pipe.execute()


class TestRestartWithData:
    """A server restarted with its data (same epoch) is followed again; one that came back
    with an older revision of the same epoch (a failover that lost writes) is believed."""

    @pytest.mark.parametrize("restored", ["at-once", "after-client-saw-it-empty"])
    def test_same_epoch_and_revision_converges(
        self,
        restored: str,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: Clients,
        make_raw: RawFactory,
    ) -> None:
        """After a restart re-seeded with the same data (before or after the client found the
        store empty), the client is READY, no longer reports a missing snapshot, and follows on."""
        publisher = make_publisher(dedicated_server.url)
        revision = publisher.apply(base_document())
        client, _ = ready_client(make_client, dedicated_server.url, **FAST)
        dump = _dump(make_raw(dedicated_server.url), publisher.keys.namespace)
        before = client.status()
        dedicated_server.restart()
        if restored != "at-once":
            assert wait_until(lambda: client.status().snapshot_missing, 3), client.status()
        _restore(make_raw(dedicated_server.url), dump)
        assert wait_until(lambda: client.status().reconnects > before.reconnects, 3)

        def converged() -> bool:
            status = client.status()
            return (status.state, status.snapshot_missing, status.connected) == (
                SyncState.READY,
                False,
                True,
            )

        assert wait_until(converged, 3), client.status()
        status = client.status()
        assert (status.epoch, status.revision) == (before.epoch, revision)
        assert served(client) == BASE_VALUES
        killed = publisher.kill("model")
        assert killed == revision + 1
        assert wait_until(lambda: client.revision == killed, 2)
        assert client.variation("model", ANYONE, "x") == "gpt-4o"

    def test_older_revision_of_same_epoch_is_adopted(
        self,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: Clients,
        make_raw: RawFactory,
    ) -> None:
        """A store behind the client (history lost) triggers a full resync to the store's state."""
        publisher = make_publisher(dedicated_server.url)
        first = publisher.apply(base_document())
        dump = _dump(make_raw(dedicated_server.url), publisher.keys.namespace)
        client, recorder = ready_client(make_client, dedicated_server.url, **FAST)
        lost = publisher.kill("model")
        assert recorder.wait_for(lost, 2)
        dedicated_server.restart()
        _restore(make_raw(dedicated_server.url), dump)
        assert wait_until(lambda: client.revision == first, 3), client.status()
        assert served(client) == BASE_VALUES  # the lost kill is gone with the store's history
        fresh = make_publisher(dedicated_server.url)
        revision = fresh.set_default("temperature", "low")
        assert revision == first + 1
        assert wait_until(lambda: client.revision == revision, 2)
        assert served(client) == BASE_VALUES | {"temperature": 0.2}


class TestFrozenServer:
    """A SIGSTOPped server is noticed by our own deadline: STALE, evaluations unaffected,
    READY again after SIGCONT (FAULTS.md S5)."""

    def test_pause_reports_stale_and_recovers(
        self,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: Clients,
    ) -> None:
        """STALE within the deadline, sub-millisecond evaluations throughout, READY after."""
        publisher = make_publisher(dedicated_server.url)
        publisher.apply(base_document())
        client, _ = ready_client(make_client, dedicated_server.url, **FAST)
        assert wait_until(client.is_healthy, 5)
        durations_s: list[float] = []
        stale_after_s = disconnected_after_s = None
        dedicated_server.pause()
        paused_at = time.monotonic()
        try:
            while (elapsed_s := time.monotonic() - paused_at) < 3.0:
                started = time.perf_counter()
                detail = client.detail("model", ANYONE, "x")
                value = client.variation("model", ANYONE, "x")
                durations_s.append(time.perf_counter() - started)
                assert value == detail.value == "gpt-4.1"  # the last-known-good value
                if stale_after_s is None and detail.reason is Reason.STALE:
                    stale_after_s = elapsed_s
                    assert detail.stale
                    assert client.status().state is SyncState.STALE
                    assert not client.is_healthy()
                if disconnected_after_s is None and not client.status().connected:
                    disconnected_after_s = elapsed_s
                time.sleep(0.001)
        finally:
            dedicated_server.resume()
        assert stale_after_s is not None
        assert stale_after_s < 1.0, f"STALE after {stale_after_s:.2f}s"
        assert disconnected_after_s is not None
        assert disconnected_after_s < 2.0, f"disconnected after {disconnected_after_s:.2f}s"
        assert client.detail("model", ANYONE, "x").reason is Reason.STALE
        durations_s.sort()
        slow = [d for d in durations_s if d >= 0.001]
        # Two evaluations per sample, typically ~10 us together. A scheduler hiccup on a busy
        # 2-core machine may delay a few past 1 ms, but none may wait for the network: that
        # would take a socket timeout (500 ms here) or forever.
        assert len(slow) <= len(durations_s) // 100, slow
        assert durations_s[-1] < 0.1, durations_s[-5:]
        assert wait_until(lambda: client.status().state is SyncState.READY, 3), client.status()
        assert client.is_healthy()
        assert client.detail("model", ANYONE, "x").reason is not Reason.STALE
        revision = publisher.kill("model")
        assert wait_until(lambda: client.revision == revision, 2)


class TestLastKnownGoodFile:
    """`lkg_path` lets a client start with the last flags while the server is down (S4)."""

    def test_cold_start_without_server(
        self,
        server_kind: str,
        server: ServerProcess,
        publisher: Publisher,
        make_client: Clients,
        tmp_path: Path,
    ) -> None:
        """A new client serves the saved flags as STALE at once, and syncs once a server appears."""
        lkg = tmp_path / "flags.lkg"
        publisher.apply(base_document())
        first = make_client(server.url, lkg_path=lkg)
        assert first.wait_ready(5)
        assert wait_until(lkg.exists, 2)
        first.close()

        port = free_port()
        url = f"redis://127.0.0.1:{port}"
        client = make_client(url, lkg_path=lkg, connect_timeout_s=0.2, backoff_max_s=0.2)
        assert served(client) == BASE_VALUES  # before any connection attempt could succeed
        detail = client.detail("model", ANYONE, "x")
        assert (detail.value, detail.reason, detail.stale) == ("gpt-4.1", Reason.STALE, True)
        started = time.monotonic()
        assert not client.wait_ready(0.5)
        assert time.monotonic() - started < 0.8
        assert client.status().state is SyncState.CONNECTING
        assert not client.is_healthy()

        with ServerProcess(kind=server_kind, port=port) as late:
            late_publisher = Publisher(late.url, publisher.keys.namespace)
            try:
                document = base_document()
                document["flags"]["temperature"]["default"] = "low"
                late_publisher.apply(document)
            finally:
                late_publisher.close()
            assert client.wait_ready(3), client.status()
            assert served(client) == BASE_VALUES | {"temperature": 0.2}
            assert client.detail("model", ANYONE, "x").reason is not Reason.STALE
            client.close()

    def test_unreadable_file_is_ignored(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: Clients,
        tmp_path: Path,
    ) -> None:
        """A corrupt LKG file is skipped (defaults served) and overwritten after the first sync."""
        lkg = tmp_path / "flags.lkg"
        lkg.write_bytes(b"\x00garbage")
        client = make_client(f"redis://127.0.0.1:{free_port()}", lkg_path=lkg)
        assert served(client) == CALLER_DEFAULTS
        client.close()
        publisher.apply(base_document())
        client = make_client(server.url, lkg_path=lkg)
        assert client.wait_ready(5)
        assert wait_until(lambda: lkg.read_bytes() != b"\x00garbage", 2)
        client.close()
        offline = make_client(f"redis://127.0.0.1:{free_port()}", lkg_path=lkg)
        assert served(offline) == BASE_VALUES


class TestClose:
    """`close()` stops syncing promptly and leaves nothing running (FAULTS.md S18)."""

    def test_close_is_prompt_and_leaves_nothing_open(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: Clients,
        raw: redis.Redis,
    ) -> None:
        """close() returns and the driver stops within 1 s; its connections and presence are
        gone, and the last snapshot is still served."""
        publisher.apply(base_document())
        client, _ = ready_client(make_client, server.url)
        assert following(client)
        assert len(connections_named(raw, client)) == 2
        started = time.monotonic()
        client.close()
        assert wait_until(lambda: not following(client), 1.0)
        assert time.monotonic() - started < 1.0
        if make_client.driver == "thread":
            assert not subscriber_threads(publisher.keys.namespace)
        # the server drops closed connections from CLIENT LIST on its own schedule
        assert wait_until(lambda: not connections_named(raw, client), 5)
        assert publisher.workers() == []
        assert client.status().state is SyncState.CLOSED
        assert not client.is_healthy()
        assert served(client) == BASE_VALUES
        publisher.kill("model")
        time.sleep(0.1)
        assert client.variation("model", ANYONE, "x") == "gpt-4.1"  # no longer following

    def test_close_while_server_frozen(
        self,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: Clients,
    ) -> None:
        """close() returns, and the driver stops, within 1 s even while blocked on a frozen
        server."""
        make_publisher(dedicated_server.url).apply(base_document())
        client, _ = ready_client(make_client, dedicated_server.url)
        dedicated_server.pause()
        try:
            time.sleep(0.3)  # the driver is now waiting on the frozen server
            started = time.monotonic()
            client.close()
            returned_s = time.monotonic() - started
            stopped = wait_until(lambda: not following(client), 1.0)
            stopped_s = time.monotonic() - started
        finally:
            dedicated_server.resume()
        assert returned_s < 1.0, f"close() took {returned_s:.2f}s"
        assert stopped, f"the driver still ran {stopped_s:.2f}s after close()"

    def test_new_client_after_close(
        self, server: ServerProcess, publisher: Publisher, make_client: Clients
    ) -> None:
        """A client connected after another one closed syncs normally."""
        publisher.apply(base_document())
        make_client(server.url).close()
        client, _ = ready_client(make_client, server.url)
        revision = publisher.kill("model")
        assert wait_until(lambda: client.revision == revision, 2)
