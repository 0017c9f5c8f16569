"""The beacon and the per-worker budget against real servers (issue 12, "10,000 workers").

Measured from the server: commands per worker per second with heartbeats flowing
(`INFO commandstats` deltas over a few seconds), a lost nudge found within 1 s, forged
heartbeats that cannot slow a signed worker's checks, the lease moving when its holder
is SIGKILLed, and `wait_propagated` blocking on the ack stream instead of polling every
presence record. Every test runs with the thread and the asyncio driver.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import anyio
import pytest
import redis

from flagsync import FlagClient
from flagsync._signing import generate_key_pair
from flagsync.fleet import Fleet
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.store import Heartbeat, StoreKeys, encode_heartbeat
from tests.faults.children import ChildProcess
from tests.integration.support import (
    RevisionRecorder,
    counter_flag,
    muted_publisher,
    wait_until,
)
from tests.logs import captured_logs, events

DRIVERS: Final = ["thread", "asyncio"]
BUDGET_PER_WORKER: Final = 1.4
"""Commands per worker per second in steady state (issue 12: 10,000 workers at <= 20 %
of a core)."""


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


class Workers:
    """`count` clients of one driver in this process: thread clients, or async clients
    sharing one event loop in a thread of its own. Closes them all on exit."""

    def __init__(self, driver: str, url: str, namespace: str, count: int, **options: Any):
        self.driver, self.url, self.namespace = driver, url, namespace
        self.count, self.options = count, options
        self.clients: list[FlagClient] = []
        self._entered = threading.Event()
        self._leave = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> list[FlagClient]:
        if self.driver == "thread":
            for _ in range(self.count):
                self.clients.append(FlagClient.connect(self.url, self.namespace, **self.options))
        else:
            self._thread = threading.Thread(
                target=anyio.run, args=(self._main,), kwargs={"backend": "asyncio"}, daemon=True
            )
            self._thread.start()
            assert self._entered.wait(20), "async clients did not enter their blocks"
            if self._error is not None:
                raise self._error
        for client in self.clients:
            assert client.wait_ready(20), client.status()
        return self.clients

    async def _main(self) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(self.count):
                    self.clients.append(
                        await stack.enter_async_context(
                            FlagClient.connect_async(self.url, self.namespace, **self.options)
                        )
                    )
                self._entered.set()
                while not self._leave.is_set():
                    await anyio.sleep(0.05)
        except BaseException as error:
            self._error = error
            raise
        finally:
            self._entered.set()

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            for client in self.clients:
                client.close()
            return
        self._leave.set()
        self._thread.join(20)
        assert not self._thread.is_alive(), "the async clients' loop did not end"


@contextlib.contextmanager
def heartbeat_tap(url: str, namespace: str) -> Iterator[redis.client.PubSub]:
    """A subscription to the namespace's heartbeat channel."""
    raw = redis.Redis.from_url(url)
    pubsub = raw.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(StoreKeys(namespace).heartbeat)
    try:
        yield pubsub
    finally:
        pubsub.close()
        raw.close()


def next_heartbeat(tap: redis.client.PubSub, timeout_s: float) -> bytes | None:
    """The next heartbeat within `timeout_s` (None: none came)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = tap.get_message(timeout=0.1)
        if message is not None and message["type"] == "message":
            data: bytes = message["data"]
            return data
    return None


def command_calls(raw: redis.Redis) -> dict[str, int]:
    """`INFO commandstats` as {command: calls}."""
    stats: dict[str, dict[str, int]] = raw.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}


class TestCommandBudget:
    """Per-worker cost in steady state, counted by the server."""

    WORKERS: Final = 100
    """Enough that the beacon's own ~8 commands a second (one holder) weigh little
    (at 10,000 workers they are nothing): 0.08 per worker here."""
    WINDOW_S: Final = 5.0
    """One presence interval: every worker's record is rewritten once in it."""

    def test_at_most_1_4_commands_per_worker_per_second(
        self, driver: str, dedicated_server: ServerProcess, namespace: str
    ) -> None:
        url = dedicated_server.url
        with Publisher(url, namespace, "budget") as publisher:
            publisher.put("counter", counter_flag(0))
        raw = redis.Redis.from_url(url)
        with Workers(driver, url, namespace, self.WORKERS), heartbeat_tap(url, namespace) as tap:
            assert next_heartbeat(tap, 10) is not None, "no beacon heartbeat within 10 s"
            time.sleep(2.0)  # start-up loads and first acks done; the 1 s cadence settled
            before, started = command_calls(raw), time.monotonic()
            time.sleep(self.WINDOW_S)
            after, elapsed_s = command_calls(raw), time.monotonic() - started
        raw.close()
        delta = {
            name: calls - before.get(name, 0)
            for name, calls in after.items()
            if name != "info" and calls != before.get(name, 0)
        }
        per_worker = sum(delta.values()) / elapsed_s / self.WORKERS
        print(f"{driver}: {per_worker:.2f} commands/worker/s over {elapsed_s:.1f}s: {delta}")
        assert delta.get("publish", 0) >= 2 * elapsed_s, delta  # heartbeats flowed
        assert delta.get("ping", 0) == 0, delta  # no pub/sub pings while they flow
        assert per_worker <= BUDGET_PER_WORKER, delta


class TestLostNudge:
    """With heartbeats flowing, every worker still finds a lost nudge within 1 s."""

    def test_every_worker_applies_an_unannounced_write_within_1s(
        self, driver: str, server: ServerProcess, namespace: str
    ) -> None:
        url = server.url
        publisher = Publisher(url, namespace, "nudge")
        muted = muted_publisher(url, namespace)
        try:
            publisher.put("counter", counter_flag(0))
            with (
                Workers(driver, url, namespace, 4) as clients,
                heartbeat_tap(url, namespace) as tap,
            ):
                assert next_heartbeat(tap, 10) is not None
                time.sleep(1.0)  # every worker on the 1 s cadence
                recorders = [RevisionRecorder() for _ in clients]
                for client, recorder in zip(clients, recorders, strict=True):
                    client.add_listener(recorder)
                started = time.monotonic()
                revision = muted.put("counter", counter_flag(1))
                assert all(recorder.wait_for(revision, 2.0) for recorder in recorders)
                elapsed_s = time.monotonic() - started
                assert elapsed_s < 1.0, f"took {elapsed_s * 1000:.0f} ms"
                assert all(client.variation("counter", {}, -1) == 1 for client in clients)
        finally:
            muted.close()
            publisher.close()


class TestForgedHeartbeats:
    """A PUBLISH-only attacker cannot slow a signed worker's checks."""

    def test_unsigned_heartbeats_do_not_slow_signed_checks(
        self, driver: str, server: ServerProcess, namespace: str, tmp_path: Path
    ) -> None:
        """Forged heartbeats claiming the worker's own state, 20 a second: a signed worker
        ignores them (counted), keeps polling 4 times a second, and applies a write
        whose nudge was lost within 1 s."""
        url = server.url
        pem, public = generate_key_pair()
        key = tmp_path / "signing.pem"
        key.write_bytes(pem)
        publisher = Publisher(url, namespace, "signed", signing_key=key, adopt_unsigned=True)
        muted = Publisher(url, namespace, "muted", signing_key=key)
        muted.keys.channel = f"{muted.keys.prefix}:nobody-listens"
        raw = redis.Redis.from_url(url)
        text = redis.Redis.from_url(url, decode_responses=True)
        keys = StoreKeys(namespace)
        stop = threading.Event()

        def forge() -> None:
            while not stop.is_set():
                revision, epoch, digest = (
                    str(value) for value in text.mget(keys.revision, keys.epoch, keys.digest)
                )
                forged = Heartbeat(epoch, int(revision), digest, 1, "mallory")
                raw.publish(keys.heartbeat, encode_heartbeat(forged))
                stop.wait(0.05)

        forger = threading.Thread(target=forge, daemon=True)
        try:
            publisher.put("counter", counter_flag(0))
            # no real beacon: only the forger publishes heartbeats
            with Workers(driver, url, namespace, 2, verify_keys=(public,), beacon=False) as clients:
                forger.start()
                time.sleep(0.5)
                before = [client.status().state_checks for client in clients]
                time.sleep(2.0)
                checks = [
                    client.status().state_checks - was
                    for client, was in zip(clients, before, strict=True)
                ]
                assert all(count >= 6 for count in checks), checks  # ~8: not slowed to ~2
                assert all(client._sync._follower.heartbeats_rejected > 0 for client in clients)  # type: ignore[union-attr]
                recorders = [RevisionRecorder() for _ in clients]
                for client, recorder in zip(clients, recorders, strict=True):
                    client.add_listener(recorder)
                started = time.monotonic()
                revision = muted.put("counter", counter_flag(1))
                assert all(recorder.wait_for(revision, 2.0) for recorder in recorders)
                elapsed_s = time.monotonic() - started
                assert elapsed_s < 1.0, f"took {elapsed_s * 1000:.0f} ms"
        finally:
            stop.set()
            if forger.is_alive():
                forger.join(2)
            raw.close()
            text.close()
            muted.close()
            publisher.close()


class TestSignedHeartbeats:
    """The beacon's own heartbeats carry the stored signature record: signed workers
    take them (and so check once a second)."""

    def test_signed_workers_follow_the_beacon(
        self, driver: str, server: ServerProcess, namespace: str, tmp_path: Path
    ) -> None:
        url = server.url
        pem, public = generate_key_pair()
        key = tmp_path / "signing.pem"
        key.write_bytes(pem)
        with Publisher(url, namespace, "signed", signing_key=key, adopt_unsigned=True) as signer:
            signer.put("counter", counter_flag(0))
            with (
                Workers(driver, url, namespace, 2, verify_keys=(public,)) as clients,
                heartbeat_tap(url, namespace) as tap,
            ):
                assert next_heartbeat(tap, 10) is not None
                time.sleep(1.0)
                before = [client.status().state_checks for client in clients]
                time.sleep(3.0)
                checks = [
                    client.status().state_checks - was
                    for client, was in zip(clients, before, strict=True)
                ]
                assert all(count <= 5 for count in checks), checks  # ~3, not ~12
                rejected = [client._sync._follower.heartbeats_rejected for client in clients]  # type: ignore[union-attr]
                assert rejected == [0] * len(clients)
                revision = signer.put("counter", counter_flag(1))
                assert wait_until(lambda: all(c.revision == revision for c in clients), 2)


class TestLeaseFailover:
    """The beacon moves to another worker when its holder dies without a word."""

    def test_lease_moves_when_the_holder_is_killed(
        self, driver: str, server: ServerProcess, namespace: str, tmp_path: Path
    ) -> None:
        url = server.url
        keys = StoreKeys(namespace)
        raw = redis.Redis.from_url(url, decode_responses=True)
        with Publisher(url, namespace, "failover") as publisher:
            publisher.put("counter", counter_flag(0))
        child = ChildProcess("worker", [url, namespace, "counter", "{}"], tmp_path / "w.err")
        try:
            child.expect("ready", 15)
            assert wait_until(lambda: raw.get(keys.beacon) is not None, 10)
            holder = raw.get(keys.beacon)
            assert holder is not None
            assert f"-{child.pid}-" in holder, holder  # the child holds it
            with Workers(driver, url, namespace, 2), heartbeat_tap(url, namespace) as tap:
                assert next_heartbeat(tap, 5) is not None
                child.kill()  # SIGKILL: no release, the lease must expire
                killed_at = time.monotonic()

                def taken_over() -> bool:
                    owner = raw.get(keys.beacon)
                    return owner is not None and f"-{child.pid}-" not in owner

                assert wait_until(taken_over, 20, 0.05), raw.get(keys.beacon)
                new_holder = raw.get(keys.beacon)
                assert new_holder is not None
                while (data := next_heartbeat(tap, 3)) is not None:
                    if data.split(b"|")[5].decode() == new_holder:
                        break
                else:
                    raise AssertionError("no heartbeat from the new holder")
                print(f"lease moved {time.monotonic() - killed_at:.1f}s after the kill")
        finally:
            child.close()
            raw.close()


class CountingRedis(redis.Redis):
    """A client that records the name of every command it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]).upper())
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


class TestWaitPropagated:
    """`--wait` costs O(changed workers): one read of every record, then the ack stream."""

    def test_waits_on_the_ack_stream(
        self, driver: str, server: ServerProcess, namespace: str
    ) -> None:
        url = server.url
        with (
            Publisher(url, namespace, "waiter") as publisher,
            Workers(driver, url, namespace, 6) as clients,
        ):
            first = publisher.put("counter", counter_flag(0))
            assert wait_until(lambda: all(c.revision == first for c in clients), 10)
            assert wait_until(lambda: len(publisher.workers()) == len(clients), 10)
            counting = CountingRedis(host="127.0.0.1", port=server.port)
            fleet = Fleet(url, namespace, client=counting)
            try:
                revision = publisher.put("counter", counter_flag(1))
                report = fleet.wait_propagated(revision, timeout=5)
            finally:
                counting.close()
            assert report.complete, report
            assert len(report.reached) == len(clients)
            assert "XREAD" in counting.sent, counting.sent
            # the store's revision, one MGET of every record, then only of workers that
            # acked (one per batch of acks read)
            assert counting.sent.count("MGET") <= 2 + len(clients), counting.sent
            assert all(ack.latency_ms is not None for ack in report.reached), [
                (ack.worker.revision, ack.worker.published_us, ack.latency_ms)
                for ack in report.reached
            ]


class TestOlderWorkerAcl:
    """A worker user made before the beacon (no heartbeat channel, no beacon or ack
    keys) still follows, is counted by `--wait`, and reconnects at most once for it."""

    def test_follows_and_is_counted_without_the_beacon(
        self, driver: str, dedicated_server: ServerProcess, namespace: str
    ) -> None:
        keys = StoreKeys(namespace)
        old_rule = (
            "resetkeys resetchannels -@all +ping +hello +auth +client|setname +client|id "
            "+subscribe +unsubscribe +get +mget +hget +hgetall +hlen +xrange +set +del "
            f"+xadd +pexpire %R~{keys.pattern} %W~{keys.worker_pattern} "
            f"%W~{keys.metrics_pattern} &{keys.channel}"
        )
        admin = redis.Redis.from_url(dedicated_server.url)
        admin.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", "old-worker", "on", ">old-pw", *old_rule.split()
        )
        url = f"redis://old-worker:old-pw@127.0.0.1:{dedicated_server.port}"
        try:
            with Publisher(dedicated_server.url, namespace, "operator") as publisher:
                publisher.put("counter", counter_flag(0))
                with captured_logs() as logs, Workers(driver, url, namespace, 2) as clients:
                    assert wait_until(lambda: len(publisher.workers()) == len(clients), 10)
                    time.sleep(3.0)  # past the time a beacon would have been elected
                    revision = publisher.put("counter", counter_flag(1))
                    report = publisher.wait_propagated(revision, timeout=5)
                    assert report.complete, report
                    assert len(report.reached) == len(clients)
                    assert all(client.variation("counter", {}, -1) == 1 for client in clients)
                    assert all(c.status().reconnects <= 1 for c in clients), [
                        c.status() for c in clients
                    ]
                    assert admin.get(keys.beacon) is None  # nobody could take the lease
                refusals = events(logs, "beacon_refused")
                assert 1 <= len(refusals) <= 2 * len(clients), refusals
        finally:
            admin.execute_command("ACL", "DELUSER", "old-worker")  # type: ignore[no-untyped-call]
            admin.close()
