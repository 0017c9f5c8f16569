"""A client initialised before `fork()` keeps syncing in every process: each child starts
its own subscriber on its own connections and never reads the parent's (FAULTS.md S17:
every process on the final revision is `TestForkAfterInit` in the fault suite,
tests/faults/test_process_faults.py). A parent that forked counts as a worker only once
it evaluates again: a gunicorn `--preload` master, which never serves, is not counted
(see `flagsync._sync.presence`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from tests.integration.conftest import ClientFactory
from tests.integration.forking import (
    CHILDREN,
    REVISIONS,
    forked_children,
)
from tests.integration.support import counter_flag, subscriber_threads, wait_until

pytestmark = pytest.mark.filterwarnings(
    # Python >= 3.12 warns on fork() in a process with threads; forking one is the point here.
    r"ignore:This process .* is multi-threaded, use of fork\(\) may lead to deadlocks"
    ":DeprecationWarning"
)


class TestPreloadMaster:
    """A parent that connects, forks workers and never evaluates (gunicorn `--preload`'s
    master) is not counted in the fleet view; the forked workers are."""

    def test_forking_parent_is_not_a_worker_until_it_evaluates(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
    ) -> None:
        """With 4 forked children evaluating, `workers()` and `wait_propagated` count 4, not 5,
        across several heartbeats; once the parent evaluates, it is counted again."""
        start = publisher.put("counter", counter_flag(0))
        target = start + REVISIONS
        parent = make_client(server.url, heartbeat_interval_s=0.2)
        assert parent.wait_ready(5)
        assert wait_until(lambda: len(publisher.workers()) == 1, 5)  # counted before the fork
        parent_worker = parent.status().worker_id
        assert parent_worker is not None
        with forked_children(parent, target, parent_worker) as (pids, release):
            assert wait_until(lambda: len(publisher.workers()) == CHILDREN, 10), publisher.workers()
            for value in range(1, REVISIONS + 1):
                final = publisher.put("counter", counter_flag(value))
            report = publisher.wait_propagated(final, timeout=10)
            assert report.complete, report.missing
            assert {ack.worker.pid for ack in report.reached} == set(pids)
            time.sleep(1.0)  # five of the parent's heartbeats: it stays out
            workers = publisher.workers()
            assert sorted(worker.pid for worker in workers) == sorted(pids), workers
            assert parent.revision == final  # it still follows, it is only not counted

            assert parent.variation("counter", {}, -1) == REVISIONS  # now it serves
            assert wait_until(lambda: len(publisher.workers()) == CHILDREN + 1, 2)
            assert parent_worker in {worker.id for worker in publisher.workers()}
            codes = release()
        assert codes == [0] * CHILDREN

    def test_starting_a_program_is_not_a_fork_of_the_worker(
        self, server: ServerProcess, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """`subprocess` with a `preexec_fn` (which runs the at-fork hooks) starts a program,
        not a worker: the parent stays counted without evaluating."""
        publisher.put("counter", counter_flag(0))
        parent = make_client(server.url, heartbeat_interval_s=0.2)
        assert parent.wait_ready(5)
        parent_worker = parent.status().worker_id
        assert wait_until(lambda: [w.id for w in publisher.workers()] == [parent_worker], 5)
        # preexec_fn makes subprocess run the at-fork hooks: the path under test.
        subprocess.run([sys.executable, "-c", "pass"], preexec_fn=os.getpid, check=True, timeout=30)
        time.sleep(1.0)  # five heartbeats
        assert [w.id for w in publisher.workers()] == [parent_worker]

    def test_a_program_started_by_subprocess_starts_no_sync(
        self, server: ServerProcess, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """In the child of `subprocess` with a `preexec_fn` (the at-fork hooks run there,
        before the exec) no sync thread starts: it could register the child as a worker."""
        publisher.put("counter", counter_flag(0))
        parent = make_client(server.url)
        assert parent.wait_ready(5)
        namespace = publisher.keys.namespace

        def no_sync_thread() -> None:  # runs in the child, between fork and exec
            if subscriber_threads(namespace):
                raise RuntimeError("a sync thread started in the child")

        subprocess.run(
            [sys.executable, "-c", "pass"], preexec_fn=no_sync_thread, check=True, timeout=30
        )
