"""A Sentinel failover that loses writes, on real processes (issue #12, "Failover
without lies").

1 primary + 2 replicas + 3 sentinels; each replica's replication link goes through a
`FaultProxy`. Mid-ramp both links are black-holed, so the next ramps reach the primary
and the 8 workers but no replica (the publisher reports them as not confirmed); then the
primary is SIGKILLed and a replica that never saw them is promoted: the new primary
re-issues their revision numbers for different content. Measured from the first
`+switch-master` a test subscriber hears on any sentinel:

- every worker serves the store's (epoch, revision, content) within 1 s;
- no worker serves content the store does not hold under that revision (a lost write,
  or a re-issued number) later than 1 s after the switch;
- a kill issued while no primary exists (from the library, and `flagsync kill --wait
  --min-replicas 1` on another flag) is applied everywhere or reported as failed;
- a write `WAIT`-confirmed before the kill is still in the store;
- the publisher that saw the lost revisions never issues their numbers again.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import pytest
import redis

from flagsync import FlagClient
from flagsync._validation import parse_flag
from flagsync.errors import (
    FlagsyncError,
    ReplicationUnconfirmedError,
    StoreUnavailableError,
)
from flagsync.model import Flag
from flagsync.publisher import Publisher
from tests.faults.figures import record
from tests.integration.conftest import ClientFactory
from tests.integration.support import wait_until
from tests.logs import captured_logs, events
from tests.rollout.support import KEY, SCRIPT, model_document
from tests.topology.nodes import SentinelDeployment

WORKERS: Final = 8
AFTER_SWITCH_S: Final = 1.0
"""The promise: within this long after the switch every worker serves the store's state."""
SWITCH_BUDGET_S: Final = 15.0
SAMPLE_S: Final = 0.005


@pytest.fixture
def deployment(server_kind: str) -> Iterator[SentinelDeployment]:
    """1 primary, 2 replicas (links through proxies), 3 sentinels; stopped by PID."""
    with SentinelDeployment(server_kind, proxied=True) as started:
        yield started


class SwitchListener:
    """Subscribes to `+switch-master` on every sentinel; `first` is when any announced."""

    def __init__(self, deployment: SentinelDeployment) -> None:
        self.first: float | None = None
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._listen, args=(sentinel.port,), daemon=True)
            for sentinel in deployment.sentinels
        ]

    def __enter__(self) -> SwitchListener:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)

    def _listen(self, port: int) -> None:
        with redis.Redis(port=port, socket_timeout=5, protocol=2) as client:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe("+switch-master")
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=0.05)
                if message is not None and message["type"] == "message" and self.first is None:
                    self.first = time.monotonic()
            pubsub.close()


Served = tuple[str, int, Flag | None]
"""What a worker serves: (epoch, revision, the test flag)."""


def served(client: FlagClient) -> Served:
    """One consistent read of a worker's snapshot (it is swapped whole)."""
    snapshot = client.snapshot
    return snapshot.epoch, snapshot.revision, snapshot.definitions.flags.get(KEY)


@dataclass
class Sampler:
    """Records what every worker serves, every `SAMPLE_S`, from a thread."""

    clients: list[FlagClient]
    samples: list[tuple[float, int, Served]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for index, client in enumerate(self.clients):
                self.samples.append((now, index, served(client)))
            self._stop.wait(SAMPLE_S)


def store_state(reader: Publisher) -> Served | None:
    """The store's (epoch, revision, flag), or None if it moved while being read."""
    epoch, revision = reader.revision()
    stored = reader.get(KEY)
    if reader.revision() != (epoch, revision) or epoch is None:
        return None
    return epoch, revision, None if stored is None else stored.flag


def held(reader: Publisher) -> dict[int, Flag | None]:
    """The test flag's content under every revision the store's change log holds (a
    revision that wrote another flag holds the test flag's content before it)."""
    content: dict[int, Flag | None] = {}
    flag: Flag | None = None
    for entry in sorted(reader.history(limit=1000), key=lambda entry: entry.revision):
        if (entry.kind, entry.key) == ("flag", KEY):
            flag = None if entry.after is None else parse_flag(KEY, entry.after)
        content[entry.revision] = flag
    return content


OTHER: Final = "other-switch"
"""A second flag, killed from the CLI during the failover."""


def cli_kill_during_failover(url: str, namespace: str) -> subprocess.Popen[str]:
    """`flagsync kill OTHER --wait 5 --min-replicas 1`, as an operator runs it."""
    env = {name: value for name, value in os.environ.items() if name != "FLAGSYNC_NAMESPACE"}
    env.update(REDIS_URL=url, FLAGSYNC_NAMESPACE=namespace)
    return subprocess.Popen(
        [str(SCRIPT), "kill", OTHER, "--wait", "5", "--min-replicas", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@dataclass
class KillDuringFailover:
    """`kill` from another publisher, issued while no primary exists."""

    url: str
    namespace: str
    revision: int | None = None
    error: FlagsyncError | None = None
    took_s: float = 0.0
    thread: threading.Thread | None = None

    def start(self) -> KillDuringFailover:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        try:
            with Publisher(
                self.url,
                self.namespace,
                "during-failover",
                min_replicas=1,
                replication_timeout_s=3.0,
                failover_timeout_s=15.0,
            ) as publisher:
                self.revision = publisher.kill(KEY)
        except FlagsyncError as error:
            self.error = error
        self.took_s = time.monotonic() - started


class TestFailoverThatLosesWrites:
    """The primary dies holding writes no replica has (see the module doc)."""

    def test_workers_converge_lost_writes_are_corrected_and_confirmed_writes_survive(
        self, deployment: SentinelDeployment, make_client: ClientFactory, namespace: str
    ) -> None:
        url = deployment.url
        with (
            Publisher(url, namespace, "operator", min_replicas=1, replication_timeout_s=1) as ops,
            Publisher(url, namespace, "reader") as reader,
        ):
            ops.apply(model_document())
            ops.put(OTHER, {"variants": {"on": True, "off": False}, "off": "off", "default": "on"})
            confirmed = ops.ramp(KEY, "candidate", 10)
            clients = [make_client(url) for _ in range(WORKERS)]
            assert all(client.wait_ready(5) for client in clients)
            every_record_replicated(reader, deployment)
            unconfirmed = ramp_past_the_replicas(ops, deployment, clients)
            resyncs = [client.status().resyncs for client in clients]

            with (
                captured_logs() as logs,
                SwitchListener(deployment) as listener,
                Sampler(clients) as sampler,
            ):
                killed_at = time.monotonic()
                deployment.nodes.primary.kill()
                kill = KillDuringFailover(url, namespace).start()
                cli = cli_kill_during_failover(url, namespace)
                assert wait_until(lambda: listener.first is not None, SWITCH_BUDGET_S, 0.005)
                switched = listener.first
                assert switched is not None
                converged = _converged(reader, clients, switched + AFTER_SWITCH_S + 2.0)
                assert kill.thread is not None
                kill.thread.join(20)
                cli_out, cli_err = cli.communicate(timeout=30)
                assert wait_until(lambda: _same(reader, clients), 3, 0.01)
                went_back = ops.revision()[1] < max(unconfirmed)  # the two kills re-issue
                ops.revision()  # numbers: the store is back at or below what `ops` saw
                after = ops.ramp(KEY, "candidate", 50)  # the publisher that saw the lost ones
                assert wait_until(lambda: _same(reader, clients), 3, 0.01)
            final = held(reader)

        assert converged is not None, "workers never served the store's state"
        converge_s = converged - switched
        assert converge_s <= AFTER_SWITCH_S, converge_s

        # Nothing that the store does not hold under its revision is served past the
        # switch + 1 s: neither a lost write nor a re-issued number's old content.
        late = [
            (round(at - switched, 3), index, revision)
            for at, index, (_, revision, flag) in sampler.samples
            if at > switched + AFTER_SWITCH_S and final.get(revision, _ABSENT) != flag
        ]
        assert not late, late[:10]
        # History loss (a stored revision below the applied one) meant a full load each.
        now = [client.status().resyncs for client in clients]
        assert all(count > before for count, before in zip(now, resyncs, strict=True))
        lost = set(unconfirmed) - {rev for rev in unconfirmed if rev in final}
        reissued = [rev for rev in unconfirmed if rev in final]

        # A confirmed write survived; the one that saw the lost revisions skipped them.
        assert confirmed in final
        assert after > max(unconfirmed)

        check_kill(kill, final, clients)
        check_cli_kill(cli.returncode, cli_out, cli_err, clients)

        # One warning per episode: one connection_lost per worker, one retry episode.
        assert len(events(logs, "connection_lost")) <= WORKERS
        assert len(events(logs, "store_failover_retrying")) <= 1
        assert len(events(logs, "sentinel_switch_heard")) == 1  # one watch per process, one line
        # noticed when the store is below what it saw, once, not per read
        assert len(events(logs, "store_history_lost")) == int(went_back)
        record(
            "sentinel-lost-writes",
            deployment.nodes.kind,
            recovery_s=round(converge_s, 3),
            case="every worker serves the store's state, seconds after +switch-master",
            switch_s=round(switched - killed_at, 3),
            lost_revisions=len(lost),
            reissued_revisions=len(reissued),
            kill_during_failover=("applied" if kill.error is None else type(kill.error).__name__),
            kill_took_s=round(kill.took_s, 3),
            cli_kill_exit=cli.returncode,
            workers=WORKERS,
        )


_ABSENT: Final[Any] = object()


def every_record_replicated(reader: Publisher, deployment: SentinelDeployment) -> None:
    """Wait until all workers' presence records are on the primary and both replicas.

    Presence records are not `WAIT`-confirmed: one written just before the links go dark
    (the proxies relay in this busy test process) is lost with the failover, and a
    `--wait` started before that worker reconnects counts only the others. That is the
    documented window; this test is about the flag writes, so it starts outside it."""
    assert wait_until(lambda: len(reader.workers()) == WORKERS, 5, 0.01), reader.workers()
    with redis.Redis("127.0.0.1", deployment.nodes.primary.port, protocol=2) as primary:
        assert primary.wait(2, 5000) == 2


def ramp_past_the_replicas(
    ops: Publisher, deployment: SentinelDeployment, clients: list[FlagClient]
) -> list[int]:
    """Check the last write was confirmed, black-hole both replication links and ramp
    twice more: each is reported unconfirmed (0/2), applied by every worker. Returns the
    two revisions."""
    assert ops.last_write is not None
    assert ops.last_write.replication is not None
    assert ops.last_write.replication.confirmed
    for proxy in deployment.nodes.proxies:
        proxy.blackhole()
    unconfirmed = []
    for percent in (20, 30):
        with pytest.raises(ReplicationUnconfirmedError) as raised:
            ops.ramp(KEY, "candidate", percent)
        assert (raised.value.acked, raised.value.replicas) == (0, 2)
        unconfirmed.append(raised.value.revision)
    assert wait_until(
        lambda: all(client.revision == unconfirmed[-1] for client in clients), 3, 0.002
    ), [client.status() for client in clients]
    return unconfirmed


def check_cli_kill(code: int, out: str, err: str, clients: list[Any]) -> None:
    """The CLI's kill during the failover: exit 0 only when replicated and applied by
    all 8, else exit 1 with the store's reason."""
    if code == 0:
        assert "replicated to 1/1 replicas" in out, out
        assert f"reached {WORKERS}/{WORKERS} workers" in out, out
        assert all(not client.snapshot.definitions.flags[OTHER].enabled for client in clients)
    else:
        assert code == 1, (out, err)
        assert "store: " in err, err


def check_kill(kill: KillDuringFailover, final: dict[int, Flag | None], clients: list[Any]) -> None:
    """The kill issued with no primary: applied everywhere, or reported as failed."""
    if kill.error is None:
        assert kill.revision is not None
        assert kill.revision in final
        assert all(not client.snapshot.definitions.flags[KEY].enabled for client in clients)
    elif isinstance(kill.error, StoreUnavailableError):
        assert all(flag is None or flag.enabled for flag in final.values()), kill.error
    else:
        assert isinstance(kill.error, ReplicationUnconfirmedError), kill.error


def _same(reader: Publisher, clients: list[FlagClient]) -> bool:
    state = store_state(reader)
    return state is not None and all(served(client) == state for client in clients)


def _converged(reader: Publisher, clients: list[FlagClient], deadline: float) -> float | None:
    """When every worker first served the store's state (read again each time), or None
    by `deadline` (monotonic)."""
    while time.monotonic() < deadline:
        now = time.monotonic()
        try:
            if _same(reader, clients):
                return now
        except StoreUnavailableError:
            pass
        time.sleep(0.002)
    return None
