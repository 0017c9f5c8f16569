"""One metrics path per process: every client's metrics are flushed by one shared thread
(per connection target), started with the first client, stopped with the last, and
started again in a forked child (issue 12: 500 async clients once meant 501 threads)."""

from __future__ import annotations

import os
import threading
import time

import redis

from flagsync import FlagClient
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.store import StoreKeys
from tests.integration.support import wait_until
from tests.integration.test_beacon import Workers

FLAG = "split"
SPLIT = {"variants": {"a": 1, "b": 2}, "off": "a", "default": {"rollout": {"a": 50, "b": 50}}}
"""A rollout: its evaluations are exposures, which the reporter flushes."""


def metrics_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "flagsync-metrics"]


def flushed_workers(raw: redis.Redis, namespace: str) -> set[str]:
    """Worker ids with a metrics stream of FLAG."""
    keys = StoreKeys(namespace)
    prefix = keys.worker_metrics(FLAG, "")
    return {
        key.decode().removeprefix(prefix)
        for key in raw.scan_iter(match=keys.worker_metrics_pattern(FLAG), count=1000)
    }


class TestSharedFlusher:
    def test_many_async_clients_one_thread(self, server: ServerProcess, namespace: str) -> None:
        """20 async clients in one loop: one metrics thread flushes every one of them
        (each to its own streams); it is gone once the last client closed."""
        raw = redis.Redis.from_url(server.url)
        with Publisher(server.url, namespace, "metrics") as publisher:
            publisher.put(FLAG, SPLIT)
        workers = Workers(
            "asyncio", server.url, namespace, 20, exposures=True, metrics_interval_s=0.2
        )
        try:
            with workers as clients:
                ids = {client.status().worker_id for client in clients}
                for client in clients:
                    assert client.variation(FLAG, {"key": "u"}, -1) in (1, 2)
                assert len(metrics_threads()) == 1, metrics_threads()
                assert wait_until(lambda: flushed_workers(raw, namespace) >= ids, 5)
            assert wait_until(lambda: not metrics_threads(), 3), metrics_threads()
        finally:
            raw.close()

    def test_forked_child_flushes_its_own(self, server: ServerProcess, namespace: str) -> None:
        """A child forked from a connected client flushes its evaluations from a thread
        of its own (the parent's does not exist there)."""
        raw = redis.Redis.from_url(server.url)
        with Publisher(server.url, namespace, "metrics") as publisher:
            publisher.put(FLAG, SPLIT)
        client = FlagClient.connect(server.url, namespace, exposures=True, metrics_interval_s=0.2)
        try:
            assert client.wait_ready(5)
            pid = os.fork()
            if pid == 0:  # the child: report by exit code only
                ok = False
                try:
                    deadline = time.monotonic() + 5
                    while client.status().worker_id is None and time.monotonic() < deadline:
                        time.sleep(0.01)
                    worker = client.status().worker_id
                    client.variation(FLAG, {"key": "u"}, -1)
                    child = redis.Redis.from_url(server.url)
                    while time.monotonic() < deadline and not ok:
                        ok = worker in flushed_workers(child, namespace) and bool(metrics_threads())
                        time.sleep(0.05)
                finally:
                    os._exit(0 if ok else 1)
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status)
            assert os.WEXITSTATUS(status) == 0, "the child's evaluations were never flushed"
        finally:
            client.close()
            raw.close()
