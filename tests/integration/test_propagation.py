"""Worker presence and propagation reports: an operator can see which workers applied a
revision and how fast (DESIGN.md "Redis layout and protocol", FAULTS.md S1)."""

from __future__ import annotations

import os
import signal
import socket
import time
import traceback

import pytest
import redis

from flagsync import FlagClient, Reason
from flagsync._codec import WorkerInfo, encode_presence
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.store import StoreKeys
from tests.integration.conftest import ClientFactory
from tests.integration.support import ANYONE, base_document, wait_until

pytestmark = pytest.mark.filterwarnings(
    r"ignore:This process .* is multi-threaded, use of fork\(\) may lead to deadlocks"
    ":DeprecationWarning"
)


class TestPresence:
    """Each connected client keeps a heartbeat record of the revision it has applied."""

    def test_workers_lists_the_connected_client(
        self, server: ServerProcess, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """`workers()` shows the client's id, pid, host, epoch, revision and state."""
        revision = publisher.apply(base_document())
        client = make_client(server.url)
        assert client.wait_ready(5)
        # The first heartbeat may precede the load; the next one follows it within ms.
        assert wait_until(
            lambda: [(w.revision, w.state) for w in publisher.workers()] == [(revision, "ready")],
            2,
        ), publisher.workers()
        (worker,) = publisher.workers()
        epoch, _ = publisher.revision()
        assert worker.id == client.status().worker_id
        assert (worker.pid, worker.host, worker.namespace) == (
            os.getpid(),
            socket.gethostname(),
            publisher.keys.namespace,
        )
        assert (worker.epoch, worker.revision, worker.state) == (epoch, revision, "ready")

    def test_presence_follows_the_applied_revision(
        self, server: ServerProcess, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """After a change, the worker's record shows the new revision without waiting for
        the regular heartbeat."""
        publisher.apply(base_document())
        client = make_client(server.url, heartbeat_interval_s=30.0)
        assert client.wait_ready(5)
        revision = publisher.kill("model")
        assert wait_until(lambda: [w.revision for w in publisher.workers()] == [revision], 5)

    def test_closed_client_disappears(
        self, server: ServerProcess, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """A closed client removes its record at once; the other one stays."""
        publisher.apply(base_document())
        leaving, staying = make_client(server.url), make_client(server.url)
        assert leaving.wait_ready(5)
        assert staying.wait_ready(5)
        assert wait_until(lambda: len(publisher.workers()) == 2, 5)
        leaving.close()
        assert [worker.id for worker in publisher.workers()] == [staying.status().worker_id]

    def test_dead_process_expires(
        self, server: ServerProcess, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """A worker process killed without cleanup drops out once its heartbeat TTL passes."""
        publisher.apply(base_document())
        namespace = publisher.keys.namespace
        pid = os.fork()
        if pid == 0:  # the child: a worker that will be SIGKILLed
            try:
                client = FlagClient.connect(
                    server.url, namespace, presence_ttl_s=0.5, heartbeat_interval_s=0.1
                )
                client.wait_ready(5)
                time.sleep(30)
            except BaseException:  # noqa: BLE001 - the child must never return into pytest
                traceback.print_exc()
            finally:
                os._exit(1)
        try:
            assert wait_until(lambda: [w.pid for w in publisher.workers()] == [pid], 5)
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        assert wait_until(lambda: publisher.workers() == [], 2)


class TestWaitPropagated:
    """`wait_propagated` reports which live workers applied a revision, and how fast."""

    def test_every_worker_reached_with_latency(
        self, server: ServerProcess, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """A kill switch reaches six clients; each is reported with its publish-to-apply time."""
        publisher.apply(base_document())
        clients = [make_client(server.url) for _ in range(6)]
        assert all(client.wait_ready(5) for client in clients)
        assert wait_until(lambda: len(publisher.workers()) == 6, 5)
        revision = publisher.kill("model", reason="fan-out")
        report = publisher.wait_propagated(revision, timeout=5)  # returns once all are in
        assert report.complete, report.missing
        assert (report.revision, report.epoch) == (revision, publisher.revision()[0])
        assert {ack.worker.id for ack in report.reached} == {
            client.status().worker_id for client in clients
        }
        for ack in report.reached:
            assert ack.latency_ms is not None
            assert -5.0 < ack.latency_ms < 500.0, ack
        assert report.max_latency_ms is not None
        assert report.max_latency_ms < 500.0
        assert report.waited_ms < 2000
        assert all(
            client.detail("model", ANYONE, "x").reason is Reason.DISABLED for client in clients
        )

    def test_lagging_worker_is_reported_missing(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        raw: redis.Redis,
    ) -> None:
        """A live worker still on an older revision is listed as missing once the timeout
        passes, and the report is not complete."""
        publisher.apply(base_document())
        client = make_client(server.url)
        assert client.wait_ready(5)
        epoch, revision = publisher.revision()
        assert epoch is not None
        stuck = WorkerInfo(
            id="stuck-worker",
            host="elsewhere",
            pid=1,
            namespace=publisher.keys.namespace,
            epoch=epoch,
            revision=revision,
            applied_us=0,
            published_us=0,
            started_ms=0,
            heartbeat_ms=0,
            state="ready",
        )
        raw.set(StoreKeys(publisher.keys.namespace).worker("stuck-worker"), encode_presence(stuck))
        killed = publisher.kill("model")
        started = time.monotonic()
        report = publisher.wait_propagated(killed, timeout=0.3)
        elapsed_s = time.monotonic() - started
        assert 0.3 <= elapsed_s < 1.0
        assert not report.complete
        assert [worker.id for worker in report.missing] == ["stuck-worker"]
        assert [ack.worker.id for ack in report.reached] == [client.status().worker_id]
