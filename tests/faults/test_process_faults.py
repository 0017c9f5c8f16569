"""Faults of processes: many workers, a crashed or frozen server, a server that is not
there yet, a publisher killed mid-run, forks, cancellation and shutdown (FAULTS.md S1, S3,
S4, S5, S9, S17, S18). Every scenario runs on each server kind, on 127.0.0.1 only, and
records what it measured (`tests.faults.figures`)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import anyio
import pytest
import redis

import flagsync._sync.thread_driver
import flagsync._sync.timers
from flagsync import FlagClient, Reason
from flagsync._codec import decode_definition
from flagsync.evaluation import ErrorCode
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess, free_port
from flagsync.status import SyncState
from flagsync.store import StoreKeys
from tests.faults.children import ChildProcess
from tests.faults.figures import record
from tests.faults.recovery import (
    FAST,
    RECOVERED_WITHIN_S,
    EvaluationTimes,
    flagsync_threads,
    open_sockets,
    ready_client,
    reconnected,
    recovery_s,
    time_to,
    timing_window,
)
from tests.integration.conftest import ClientFactory, PublisherFactory, RawFactory
from tests.integration.forking import (
    CHILDREN,
    REVISIONS,
    forked_children,
    multiprocessing_children,
)
from tests.integration.support import (
    ANYONE,
    BASE_VALUES,
    CALLER_DEFAULTS,
    MODEL_OFF,
    RevisionRecorder,
    base_document,
    connections_named,
    counter_flag,
    model_flag,
    served,
    subscriber_threads,
    wait_until,
)

pytestmark = pytest.mark.filterwarnings(
    # Python >= 3.12 warns on fork() in a process with threads; forking one is the point of S17.
    r"ignore:This process .* is multi-threaded, use of fork\(\) may lead to deadlocks"
    ":DeprecationWarning"
)

WORKERS: Final = 8
FAN_OUT_BUDGET_MS: Final = 250.0
EVALUATION_BUDGET_US: Final = 20.0


@pytest.fixture
def anyio_backend() -> str:
    """redis.asyncio runs on asyncio (on other backends the thread driver is used)."""
    return "asyncio"


class TestKillSwitchFanOut:
    """S1: a kill switch reaches every worker process within budget, the slowest included."""

    def test_every_worker_process_applies_within_budget(
        self, server: ServerProcess, publisher: Publisher, tmp_path: Path
    ) -> None:
        """Eight worker processes all apply a kill switch within 250 ms of its publication
        (the maximum, not the mean) and still evaluate it in microseconds."""
        publisher.apply(base_document())
        namespace = publisher.keys.namespace
        workers = [
            ChildProcess(
                "worker",
                [server.url, namespace, "model", json.dumps({})],
                tmp_path / f"worker-{index}.stderr",
            )
            for index in range(WORKERS)
        ]
        try:
            pids = {worker.expect("ready", 30)["pid"] for worker in workers}
            assert pids == {worker.pid for worker in workers}
            _, start = publisher.revision()
            assert wait_until(
                lambda: (
                    sorted((w.pid, w.revision, w.state) for w in publisher.workers())
                    == sorted((pid, start, "ready") for pid in pids)
                ),
                5,
            ), publisher.workers()

            revision = publisher.kill("model", reason="fan-out")
            report = publisher.wait_propagated(revision, timeout=5)
            assert report.complete, report.missing
            assert {ack.worker.pid for ack in report.reached} == pids
            latencies_ms = [ack.latency_ms for ack in report.reached]
            assert all(latency is not None for latency in latencies_ms), report
            known_ms = [latency for latency in latencies_ms if latency is not None]
            assert max(known_ms) < FAN_OUT_BUDGET_MS, sorted(known_ms)

            for worker in workers:
                worker.send("measure")
            measured = [worker.expect("measured", 30) for worker in workers]
        finally:
            codes = [worker.close() for worker in workers]
        assert codes == [0] * WORKERS
        for report_line in measured:
            assert (report_line["value"], report_line["reason"]) == ("gpt-4o", "DISABLED")
            assert (report_line["revision"], report_line["state"]) == (revision, "ready")
        medians_us = [line["median_us"] for line in measured]
        assert max(medians_us) < EVALUATION_BUDGET_US, medians_us
        record(
            "S1",
            server.kind,
            recovery_s=max(known_ms) / 1000,
            workers=WORKERS,
            max_apply_latency_ms=round(max(known_ms), 3),
            median_apply_latency_ms=round(statistics.median(known_ms), 3),
            waited_ms=report.waited_ms,
            max_median_eval_us=round(max(medians_us), 3),
            max_p99_eval_us=round(max(line["p99_us"] for line in measured), 3),
        )


class TestServerKilledRestartedEmpty:
    """S3: a server SIGKILLed and restarted empty never empties a client."""

    def test_keeps_lkg_reports_stale_and_converges_on_new_epoch(
        self,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: ClientFactory,
    ) -> None:
        """The client keeps serving its last-known-good flags (never defaults) and reports
        stale with the snapshot missing; after a fresh publisher re-seeds the namespace (a
        new epoch, a lower revision) it converges on it."""
        publisher = make_publisher(dedicated_server.url)
        publisher.apply(base_document())
        publisher.kill("model")
        publisher.enable("model")
        old_epoch, old_revision = publisher.revision()
        namespace = publisher.keys.namespace
        client = ready_client(make_client, dedicated_server.url, **FAST)
        before = client.status()
        assert served(client) == BASE_VALUES

        dedicated_server.restart()  # SIGKILL, then start again on the same port, empty
        restarted_at = time.monotonic()
        missing_s = stale_s = None
        while (elapsed_s := time.monotonic() - restarted_at) < 3.0:
            assert served(client) == BASE_VALUES  # never the defaults, never "all off"
            status = client.status()
            if missing_s is None and status.snapshot_missing:
                missing_s = elapsed_s
            if stale_s is None and status.state is SyncState.STALE:
                stale_s = elapsed_s
            if missing_s is not None and stale_s is not None and elapsed_s > 1.0:
                break  # a few more revision checks of the empty store have passed
            time.sleep(0.005)
        assert missing_s is not None, client.status()
        assert stale_s is not None, client.status()
        # Reconnected: the server is back, its data is not. The revision checks that saw the
        # empty store may run before the subscriber's backed-off reconnect: wait, bounded.
        assert time_to(reconnected(client, before.reconnects), 5.0) is not None, client.status()
        status = client.status()
        assert (status.epoch, status.revision) == (old_epoch, old_revision)
        assert (status.state, status.snapshot_missing) == (SyncState.STALE, True)
        assert status.reconnects == before.reconnects + 1
        detail = client.detail("model", ANYONE, "x")
        assert (detail.value, detail.reason, detail.stale) == ("gpt-4.1", Reason.STALE, True)
        assert not client.is_healthy()
        assert subscriber_threads(namespace), "the subscriber thread died"

        reseeder = make_publisher(dedicated_server.url)  # a new process: no revision seen
        document = base_document()
        document["flags"]["model"] = model_flag(default="current")
        reseeded_at = time.monotonic()
        reseeder.apply(document)
        new_epoch, new_revision = reseeder.revision()
        assert new_epoch not in (None, old_epoch)
        assert new_revision < old_revision  # the new history starts over
        recovered_s = recovery_s(client, reseeder, 3.0, since=reseeded_at)
        assert served(client) == BASE_VALUES | MODEL_OFF
        status = client.status()
        assert not status.snapshot_missing
        assert client.is_healthy()
        revision = reseeder.kill("model")
        assert wait_until(lambda: client.revision == revision, 2)
        record(
            "S3",
            dedicated_server.kind,
            recovery_s=recovered_s,
            snapshot_missing_detected_s=round(missing_s, 4),
            stale_detected_s=round(stale_s, 4),
            old_revision=old_revision,
            new_revision=new_revision,
        )


class BackoffSpy:
    """Wraps the subscriber's backoff to record every delay it chose (time, attempt, s, cap)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, int, float, float]] = []
        self._real = flagsync._sync.timers.backoff_delay

    def __call__(self, attempt: int, initial_s: float, cap_s: float) -> float:
        delay_s = self._real(attempt, initial_s, cap_s)
        self.calls.append((time.monotonic(), attempt, delay_s, cap_s))
        return delay_s


@pytest.fixture
def backoff_spy(monkeypatch: pytest.MonkeyPatch) -> BackoffSpy:
    """Records the retry delays every thread subscriber of the test chooses."""
    spy = BackoffSpy()
    monkeypatch.setattr(flagsync._sync.thread_driver, "backoff_delay", spy)
    return spy


class TestUnreachableAtStart:
    """S4: a client started while the server is absent or hung answers at once and syncs
    soon after the server is there."""

    @pytest.mark.parametrize("cold_start", ["defaults", "lkg-file"])
    def test_no_server_on_the_port(
        self,
        cold_start: str,
        server: ServerProcess,
        make_client: ClientFactory,
        tmp_path: Path,
        backoff_spy: BackoffSpy,
    ) -> None:
        """`wait_ready(0.5)` returns False in 0.5 s; defaults (or the LKG file's values) are
        served with a clear reason; retries are capped and jittered; the client is ready
        promptly once a server appears on the port."""
        namespace = make_client.namespace
        options: dict[str, Any] = {"connect_timeout_s": 0.2, "backoff_max_s": 0.2}
        expected = CALLER_DEFAULTS
        if cold_start == "lkg-file":
            options["lkg_path"] = tmp_path / "flags.lkg"
            with Publisher(server.url, namespace) as seeder:
                seeder.apply(base_document())
            with FlagClient.connect(server.url, namespace, **options) as first:
                assert first.wait_ready(5)
                assert wait_until(options["lkg_path"].exists, 2)
            expected = BASE_VALUES
        backoff_spy.calls.clear()
        port = free_port()
        client = make_client(f"redis://127.0.0.1:{port}", **options)

        started = time.monotonic()
        assert not client.wait_ready(0.5)
        waited_s = time.monotonic() - started
        assert 0.45 <= waited_s < 1.0, waited_s  # it waited, and not much longer
        assert served(client) == expected
        detail = client.detail("model", ANYONE, "x")
        if cold_start == "lkg-file":
            assert (detail.value, detail.reason, detail.stale) == ("gpt-4.1", Reason.STALE, True)
        else:
            assert (detail.value, detail.reason, detail.error_code) == (
                "x",
                Reason.ERROR,
                ErrorCode.PROVIDER_NOT_READY,
            )
        status = client.status()
        assert (status.state, status.connected) == (SyncState.CONNECTING, False)
        assert status.last_error is not None
        assert "refused" in status.last_error.lower(), status.last_error
        assert not client.is_healthy()

        time.sleep(0.5)  # a second of retries in all
        calls = list(backoff_spy.calls)
        assert len(calls) >= 4, calls  # it keeps trying...
        assert all(cap_s == 0.2 and delay_s <= cap_s for _, _, delay_s, cap_s in calls)
        assert [attempt for _, attempt, _, _ in calls] == list(range(len(calls)))
        capped = [delay_s for _, attempt, delay_s, _ in calls if attempt >= 2]
        assert len({round(delay_s, 6) for delay_s in capped}) == len(capped)  # ...jittered
        intervals_s = [b[0] - a[0] for a, b in itertools.pairwise(calls)]
        assert max(intervals_s) < 0.2 + 0.2 + 0.1  # capped: delay + a refused connect

        with ServerProcess(kind=server.kind, port=port) as late:
            appeared_at = time.monotonic()
            with Publisher(late.url, namespace) as seeder:
                seeder.apply(base_document())
                ready_s = recovery_s(client, seeder, 5.0, since=appeared_at)
            assert ready_s < RECOVERED_WITHIN_S
            assert served(client) == BASE_VALUES
            assert client.detail("model", ANYONE, "x").reason is not Reason.STALE
            client.close()
        record(
            "S4",
            server.kind,
            recovery_s=ready_s,
            variant=f"no-server/{cold_start}",
            wait_ready_returned_s=round(waited_s, 4),
            retries_in_1s=len(calls),
            max_retry_interval_s=round(max(intervals_s), 4),
        )

    def test_server_hung_in_handshake(
        self,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: ClientFactory,
    ) -> None:
        """With the server SIGSTOPped (TCP connects, the handshake hangs) `wait_ready(0.5)`
        returns False in 0.5 s with defaults served; ready promptly after SIGCONT."""
        publisher = make_publisher(dedicated_server.url)
        publisher.apply(base_document())
        dedicated_server.pause()
        try:
            client = make_client(
                dedicated_server.url,
                connect_timeout_s=0.2,
                socket_timeout_s=0.3,
                backoff_max_s=0.2,
            )
            started = time.monotonic()
            assert not client.wait_ready(0.5)
            waited_s = time.monotonic() - started
            assert 0.45 <= waited_s < 1.0, waited_s  # it waited, and not much longer
            assert served(client) == CALLER_DEFAULTS
            detail = client.detail("model", ANYONE, "x")
            assert (detail.reason, detail.error_code) == (
                Reason.ERROR,
                ErrorCode.PROVIDER_NOT_READY,
            )
            assert wait_until(lambda: client.status().last_error is not None, 5.0)
            status = client.status()
            assert (status.state, status.connected) == (SyncState.CONNECTING, False)
            assert "timeout" in (status.last_error or "").lower(), status.last_error
        finally:
            dedicated_server.resume()
        resumed_at = time.monotonic()
        ready_s = recovery_s(client, publisher, 5.0, since=resumed_at)
        assert ready_s < RECOVERED_WITHIN_S
        assert served(client) == BASE_VALUES
        record(
            "S4",
            dedicated_server.kind,
            recovery_s=ready_s,
            variant="sigstopped-handshake",
            wait_ready_returned_s=round(waited_s, 4),
        )


class TestServerFrozen:
    """S5: a SIGSTOPped server is noticed by the client's own deadline."""

    def test_sigstop_reports_stale_without_blocking_and_recovers(
        self,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: ClientFactory,
    ) -> None:
        """Frozen for 3 s: STALE within the liveness deadline, every evaluation under 1 ms
        serving the last-known-good value, and READY promptly after SIGCONT."""
        publisher = make_publisher(dedicated_server.url)
        publisher.apply(base_document())
        client = ready_client(make_client, dedicated_server.url, **FAST)
        assert wait_until(client.is_healthy, 5)
        assert client.variation("model", ANYONE, "x") == "gpt-4.1"  # serving: compiled
        times = EvaluationTimes()
        stale_s = disconnected_s = None
        dedicated_server.pause()
        paused_at = time.monotonic()
        try:
            with timing_window():
                while (elapsed_s := time.monotonic() - paused_at) < 3.0:
                    detail = times.time(
                        "detail", elapsed_s, lambda: client.detail("model", ANYONE, "x")
                    )
                    value = times.time(
                        "variation", elapsed_s, lambda: client.variation("model", ANYONE, "x")
                    )
                    assert value == detail.value == "gpt-4.1"  # the last-known-good value
                    if stale_s is None and detail.reason is Reason.STALE:
                        stale_s = elapsed_s
                        assert detail.stale
                        assert client.status().state is SyncState.STALE
                        assert not client.is_healthy()
                    if disconnected_s is None and not client.status().connected:
                        disconnected_s = elapsed_s
                    time.sleep(0.001)
        finally:
            dedicated_server.resume()
        resumed_at = time.monotonic()
        recovered_s = recovery_s(client, publisher, 5.0, since=resumed_at)
        assert recovered_s < RECOVERED_WITHIN_S
        assert stale_s is not None
        assert stale_s < FAST["liveness_timeout_s"], f"STALE after {stale_s:.3f}s"
        assert disconnected_s is not None
        assert disconnected_s < FAST["liveness_timeout_s"] + FAST["socket_timeout_s"]
        assert times.max_s < 0.001, times.slowest()
        assert client.detail("model", ANYONE, "x").reason is not Reason.STALE
        revision = publisher.kill("model")
        assert wait_until(lambda: client.revision == revision, 2)
        record(
            "S5",
            dedicated_server.kind,
            recovery_s=recovered_s,
            stale_detected_s=round(stale_s, 4),
            disconnect_detected_s=round(disconnected_s, 4),
            evaluations=len(times.samples),
            max_eval_us=round(times.max_s * 1e6, 2),
        )


def values_of(client: FlagClient, keys: list[str]) -> frozenset[int]:
    """The set of values `keys` serve in `client`'s current snapshot (read once: one view)."""
    view = FlagClient(client.snapshot)
    return frozenset(view.variation(key, {}, -1) for key in keys)


class ViewRecorder:
    """A listener noting, for each swapped-in revision, the values of `keys` in it."""

    def __init__(self, client: FlagClient, keys: list[str]) -> None:
        self.client = client
        self.keys = keys
        self.seen: list[tuple[int, frozenset[int]]] = []

    def __call__(self, revision: int, changed: frozenset[str]) -> None:
        self.seen.append((revision, values_of(self.client, self.keys)))


class TestPublisherDies:
    """S9: a publisher SIGKILLed mid-run leaves workers serving whole revisions only."""

    FLAGS: Final = 8

    def test_sigkill_mid_run_never_half_applied(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        raw: redis.Redis,
        tmp_path: Path,
    ) -> None:
        """Every snapshot the workers ever serve has all 8 flags of one bulk write (never a
        mix), before and after the publisher process is SIGKILLed mid-loop; they keep
        serving and end on the store's last revision."""
        keys = [f"f{index}" for index in range(self.FLAGS)]
        publisher.apply({"flags": {key: counter_flag(0) for key in keys}})
        namespace = publisher.keys.namespace
        clients = [
            ready_client(make_client, server.url),
            ready_client(make_client, server.url, check_interval_s=0.02),  # loads often
        ]
        views = [ViewRecorder(client, keys) for client in clients]
        for client, view in zip(clients, views, strict=True):
            client.add_listener(view)
        child = ChildProcess(
            "publisher", [server.url, namespace, str(self.FLAGS)], tmp_path / "publisher.stderr"
        )
        sampled: list[frozenset[int]] = []
        try:
            child.expect("written", 30)
            deadline = time.monotonic() + 10
            written = 0
            while written < 60 and time.monotonic() < deadline:
                line = child.read_line(0.01)
                if line is not None and line.get("event") == "written":
                    written += 1
                sampled.extend(values_of(client, keys) for client in clients)
            assert written >= 60, "the publisher stalled"
        finally:
            child.kill()  # SIGKILL, mid-loop
            child.close()
        killed_at = time.monotonic()
        assert child.process.returncode == -signal.SIGKILL

        stored: dict[bytes, bytes] = raw.hgetall(StoreKeys(namespace).flags)  # type: ignore[assignment]
        stored_values = {
            decode_definition(blob, "flag", key.decode()).definition["variants"]["value"]
            for key, blob in stored.items()
        }
        assert len(stored) == self.FLAGS
        assert len(stored_values) == 1, stored_values  # the store itself is whole
        (final_value,) = stored_values
        recovered_s = max(recovery_s(c, publisher, 2.0, since=killed_at) for c in clients)
        for client in clients:
            assert values_of(client, keys) == {final_value}
            status = client.status()
            assert (status.malformed_messages, status.rejected_snapshots) == (0, 0)
        for view in views:
            revisions = [revision for revision, _ in view.seen]
            assert revisions == sorted(set(revisions))  # strictly monotonic
            mixed = [(revision, values) for revision, values in view.seen if len(values) != 1]
            assert not mixed, mixed[:5]
            assert len(view.seen) >= 10  # it really followed many revisions
        assert all(len(values) == 1 for values in sampled)
        record(
            "S9",
            server.kind,
            recovery_s=recovered_s,
            revisions_written=final_value,
            swaps_checked=sum(len(view.seen) for view in views),
            snapshots_sampled=len(sampled),
        )


class TestForkAfterInit:
    """S17: a client initialised before fork() follows in every process."""

    @pytest.mark.parametrize("spawn", ["os.fork", "multiprocessing-fork"])
    def test_every_process_ends_on_the_final_revision(
        self,
        spawn: str,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        raw: redis.Redis,
    ) -> None:
        """Parent and 4 forked children each apply all 20 revisions on their own
        connections under their own worker ids; the parent misses none."""
        start = publisher.put("counter", counter_flag(0))
        target = start + REVISIONS
        parent = ready_client(make_client, server.url, check_interval_s=60.0)  # messages only
        recorder = RevisionRecorder()
        parent.add_listener(recorder)
        parent_worker = parent.status().worker_id
        assert parent_worker is not None
        children = forked_children if spawn == "os.fork" else multiprocessing_children
        with children(parent, target, parent_worker) as (pids, release):
            # A parent that forked counts once it evaluates (it serves too; see test_fork).
            assert wait_until(
                lambda: (
                    parent.variation("counter", {}, -1) == 0
                    and len(publisher.workers()) == CHILDREN + 1
                ),
                10,
            ), publisher.workers()
            for value in range(1, REVISIONS + 1):
                final = publisher.put("counter", counter_flag(value))
            published_at = time.monotonic()
            report = publisher.wait_propagated(final, timeout=10)
            propagated_s = time.monotonic() - published_at
            assert report.complete, report.missing
            workers = [ack.worker for ack in report.reached]
            assert {worker.pid for worker in workers} == {os.getpid(), *pids}
            assert len({worker.id for worker in workers}) == CHILDREN + 1
            assert parent_worker in {worker.id for worker in workers}
            for worker in workers:  # each process on its own two connections
                names = [entry["name"] for entry in raw.client_list()]
                assert names.count(f"flagsync-{worker.id}"[:64]) == 2, worker.id
            codes = release()
        assert codes == [0] * CHILDREN
        assert (parent.revision, parent.variation("counter", {}, -1)) == (final, REVISIONS)
        # No child ever read the parent's pub/sub socket: the parent got every message.
        assert recorder.revisions == list(range(start + 1, final + 1))
        assert wait_until(lambda: [w.id for w in publisher.workers()] == [parent_worker], 2)
        record(
            "S17",
            server.kind,
            recovery_s=propagated_s,
            variant=spawn,
            processes=CHILDREN + 1,
            max_apply_latency_ms=report.max_latency_ms,
        )


async def _eventually(predicate: Callable[[], bool], timeout_s: float) -> bool:
    with anyio.move_on_after(timeout_s):
        while not predicate():
            await anyio.sleep(0.005)
    return predicate()


def _new_threads(before: set[threading.Thread]) -> list[str]:
    """Threads started since `before` and still alive, except anyio's idle worker pool
    (anyio keeps those for reuse and retires them itself)."""
    return [
        thread.name
        for thread in threading.enumerate()
        if thread not in before and thread.name != "AnyIO worker thread"
    ]


class TestCancellationAndShutdown:
    """S18: cancelling or closing a client stops it within 1 s and leaves nothing behind."""

    @pytest.mark.anyio
    @pytest.mark.parametrize("moment", ["mid-read", "mid-backoff"])
    async def test_cancel_async_subscriber(
        self,
        moment: str,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_raw: RawFactory,
    ) -> None:
        """Cancelling the async subscriber while it reads, or while it backs off from a dead
        server, ends it within 1 s with no thread or socket left; a new client works."""
        publisher = make_publisher(dedicated_server.url)
        publisher.apply(base_document())
        namespace = publisher.keys.namespace
        raw = make_raw(dedicated_server.url)
        raw.ping()
        sockets_before = open_sockets()
        threads_before = set(threading.enumerate())
        with anyio.CancelScope() as scope:
            async with FlagClient.connect_async(
                dedicated_server.url, namespace, backoff_initial_s=2.0, backoff_max_s=5.0
            ) as client:
                assert await client.wait_ready_async(5), client.status()
                worker = client.status().worker_id
                if moment == "mid-backoff":
                    dedicated_server.kill()
                    assert await _eventually(lambda: not client.status().connected, 2)
                await anyio.sleep(0.3)  # blocked on its read, or sleeping before a retry
                cancelled_at = time.monotonic()
                scope.cancel()
                await anyio.sleep(10)
        exited_s = time.monotonic() - cancelled_at
        assert scope.cancelled_caught
        assert exited_s < 1.0, f"took {exited_s:.2f}s"
        assert client.status().state is SyncState.CLOSED
        assert await _eventually(lambda: not flagsync_threads(namespace), 1)
        assert _new_threads(threads_before) == []
        assert await _eventually(lambda: open_sockets() == sockets_before, 1), (
            open_sockets(),
            sockets_before,
        )
        if moment == "mid-backoff":
            dedicated_server.start()
            publisher.apply(base_document())
        else:
            name = f"flagsync-{worker}"[:64]
            assert await _eventually(
                lambda: name not in {entry["name"] for entry in raw.client_list()}, 1
            )
        restarted_at = time.monotonic()
        async with FlagClient.connect_async(dedicated_server.url, namespace) as fresh:
            assert await fresh.wait_ready_async(5)
            ready_s = time.monotonic() - restarted_at
            assert served(fresh) == BASE_VALUES
            revision = publisher.kill("model")
            assert await _eventually(lambda: fresh.revision == revision, 2)
        record(
            "S18",
            dedicated_server.kind,
            recovery_s=ready_s,
            variant=f"async-cancel-{moment}",
            exit_s=round(exited_s, 4),
        )

    @pytest.mark.parametrize("moment", ["mid-read", "mid-backoff"])
    def test_close_sync_client(
        self,
        moment: str,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: ClientFactory,
        make_raw: RawFactory,
    ) -> None:
        """`close()` of the thread client while it reads, or while it backs off from a dead
        server, returns within 1 s with no thread or socket left; a new client works."""
        publisher = make_publisher(dedicated_server.url)
        publisher.apply(base_document())
        namespace = publisher.keys.namespace
        raw = make_raw(dedicated_server.url)
        raw.ping()
        sockets_before = open_sockets()
        threads_before = set(threading.enumerate())
        client = ready_client(
            make_client, dedicated_server.url, backoff_initial_s=2.0, backoff_max_s=5.0
        )
        if moment == "mid-backoff":
            dedicated_server.kill()
            assert wait_until(lambda: not client.status().connected, 2)
        else:
            assert len(connections_named(raw, client)) == 2
        time.sleep(0.3)  # blocked on its read, or sleeping before a retry
        closing_at = time.monotonic()
        client.close()
        closed_s = time.monotonic() - closing_at
        assert closed_s < 1.0, f"took {closed_s:.2f}s"
        assert client.status().state is SyncState.CLOSED
        assert not flagsync_threads(namespace)
        assert _new_threads(threads_before) == []
        assert wait_until(lambda: open_sockets() == sockets_before, 1), (
            open_sockets(),
            sockets_before,
        )
        if moment == "mid-backoff":
            dedicated_server.start()
            publisher.apply(base_document())
        else:
            assert wait_until(lambda: not connections_named(raw, client), 5)
        restarted_at = time.monotonic()
        fresh = ready_client(make_client, dedicated_server.url)
        ready_s = time.monotonic() - restarted_at
        assert served(fresh) == BASE_VALUES
        revision = publisher.kill("model")
        assert wait_until(lambda: fresh.revision == revision, 2)
        record(
            "S18",
            dedicated_server.kind,
            recovery_s=ready_s,
            variant=f"sync-close-{moment}",
            exit_s=round(closed_s, 4),
        )
