"""What a compromised worker credential can still do (FAULTS.md S30), on real servers.

Attacks are made with the worker credentials `flagsync acl` prints (the shared worker
user, or one user per worker with `--worker-id`), never with an admin connection, so a
test passing here proves what the documented ACL allows. The rollout controller and
`kill --wait` must treat what a worker wrote as data that can be wrong: reported, never
a crash, never a false success.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
import redis

from flagsync._codec import decode_presence, encode_presence
from flagsync.acl import acl_rules, acl_setuser_commands
from flagsync.controller import RolloutController
from flagsync.errors import FlagsyncError
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.store import StoreKeys, connect
from tests.faults.acl_users import AclUsers, create_acl_users, denied_commands
from tests.faults.children import ChildProcess
from tests.faults.figures import record
from tests.integration.conftest import ClientFactory, RawFactory
from tests.integration.support import wait_until
from tests.logs import captured_logs, events
from tests.rollout.support import (
    KEY,
    SCRIPT,
    Samples,
    healthy,
    make_plan,
    model_document,
    rates,
    reporter_of,
    weight_of,
)

FAST: Final[dict[str, Any]] = {
    "check_interval_s": 0.05,
    "heartbeat_interval_s": 0.1,
    "presence_ttl_s": 5.0,
}


def acl_connection(make_raw: RawFactory, url: str) -> redis.Redis:
    """A raw connection as flagsync makes them (no CLIENT SETINFO), closed after the test."""
    client = connect(url, timeout_s=5.0, connect_timeout_s=5.0)
    make_raw.clients.append(client)
    return client


def append_samples(client: redis.Redis, key: str, samples: Samples) -> None:
    """Append one well-formed metrics entry to stream `key`, as a reporter encodes it."""
    from flagsync.metrics import MetricStat, encode_series

    fields: dict[str, str] = {}
    for (variant, metric), values in samples.items():
        stat = MetricStat()
        for value in values:
            stat.add(value)
        fields |= encode_series(variant, metric, stat)
    client.xadd(key, fields)  # type: ignore[arg-type]


def breached() -> Samples:
    """The candidate rated down 4 times as often as the control."""
    return {
        ("candidate", "thumbs_down"): rates(400, 80),
        ("current", "thumbs_down"): rates(400, 20),
    }


@pytest.fixture
def acl(dedicated_server: ServerProcess, make_raw: RawFactory, namespace: str) -> AclUsers:
    """The shared worker user and the operator user on a dedicated server."""
    return create_acl_users(make_raw(dedicated_server.url), dedicated_server.port, namespace)


@pytest.fixture
def operator(acl: AclUsers, namespace: str) -> Iterator[Publisher]:
    """The operator's publisher (what the controller runs with), model flag applied."""
    with Publisher(acl.operator_url, namespace, "rollout-controllers") as publisher:
        publisher.apply(model_document())
        yield publisher


class TestPerWorkerAcl:
    """With `flagsync acl --worker-id`, a worker writes its own keys and nobody else's."""

    @pytest.fixture
    def users(
        self, dedicated_server: ServerProcess, make_raw: RawFactory, namespace: str
    ) -> dict[str, str]:
        """Worker users `w1` and `w2` (as `flagsync acl --worker-id` prints them): id -> URL."""
        admin = make_raw(dedicated_server.url)
        urls = {}
        for line in acl_setuser_commands(
            namespace,
            worker_password="pw-" + secrets.token_hex(8),
            worker_ids=["w1", "w2"],
        ):
            parts = shlex.split(line)
            admin.execute_command(*parts)  # type: ignore[no-untyped-call]
            user, password = parts[2], parts[4][1:]
            if user.startswith("flagsync-worker-"):
                worker_id = user.removeprefix("flagsync-worker-")
                urls[worker_id] = f"redis://{user}:{password}@127.0.0.1:{dedicated_server.port}"
        return urls

    def test_a_worker_writes_only_its_own_presence_and_metrics(
        self,
        dedicated_server: ServerProcess,
        users: dict[str, str],
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """w1 may heartbeat and flush its own keys; every write to w2's presence or metrics,
        and to the shared metrics stream, is refused by the server."""
        keys = StoreKeys(namespace)
        admin = make_raw(dedicated_server.url)
        admin.set(keys.worker("w2"), b"w2's record")
        w1 = acl_connection(make_raw, users["w1"])
        own_stream = keys.worker_metrics(KEY, "w1")

        w1.set(keys.worker("w1"), b"record", px=5000)
        w1.xadd(own_stream, {"candidate|exposures|c": "1"}, minid="0", approximate=True)
        w1.pexpire(own_stream, 60_000)
        attacks: dict[str, Any] = {
            "SET other presence": lambda: w1.set(keys.worker("w2"), b"ghost"),
            "DEL other presence": lambda: w1.delete(keys.worker("w2")),
            "XADD other stream": lambda: w1.xadd(
                keys.worker_metrics(KEY, "w2"), {"candidate|exposures|c": "100000"}
            ),
            "SET other stream": lambda: w1.set(keys.worker_metrics(KEY, "w2"), b"x"),
            "SET shared stream": lambda: w1.set(keys.metrics(KEY), b"x"),
            "SET a ghost presence": lambda: w1.set(keys.worker("ghost"), b"ghost"),
        }
        for attack in attacks.values():
            with pytest.raises(redis.exceptions.NoPermissionError):
                attack()

        assert admin.get(keys.worker("w2")) == b"w2's record"
        assert admin.xlen(own_stream) == 1
        assert admin.exists(keys.worker_metrics(KEY, "w2"), keys.metrics(KEY)) == 0
        record("S30", dedicated_server.kind, recovery_s=None, case="per-worker-acl", refused=6)

    def test_a_client_with_its_own_worker_user_syncs_heartbeats_and_flushes(
        self,
        dedicated_server: ServerProcess,
        users: dict[str, str],
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """A FlagClient connected as w1 with worker_id="w1" follows changes, is confirmed by
        wait_propagated and flushes its metrics without a single command refused."""
        admin = make_raw(dedicated_server.url)
        with Publisher(dedicated_server.url, namespace, "operator") as publisher:
            publisher.apply(model_document())
            client = make_client(users["w1"], worker_id="w1", **FAST)
            assert client.wait_ready(5), client.status()
            client.string_value(KEY, {"key": "user-1"}, "caller-default")
            client.track(KEY, {"key": "user-1"}, "latency_ms", 120.0)
            assert reporter_of(client).flush()
            revision = publisher.kill(KEY)
            report = publisher.wait_propagated(revision, timeout=3)

        assert report.complete, report
        assert [ack.worker.id for ack in report.reached] == ["w1"]
        assert admin.xlen(StoreKeys(namespace).worker_metrics(KEY, "w1")) == 1
        assert admin.pttl(StoreKeys(namespace).worker_metrics(KEY, "w1")) > 0
        assert denied_commands(admin, "flagsync-worker-w1") == []

    def test_a_client_with_the_shared_worker_user_flushes_to_its_own_streams(
        self,
        dedicated_server: ServerProcess,
        acl: AclUsers,
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """The shared worker user (no --worker-id) may also write and expire a worker's own
        metrics stream: the flush succeeds with no command refused."""
        admin = make_raw(dedicated_server.url)
        with Publisher(acl.operator_url, namespace, "operator") as publisher:
            publisher.apply(model_document())
        client = make_client(acl.worker_url, **FAST)
        assert client.wait_ready(5), client.status()
        client.track(KEY, {"key": "user-1"}, "latency_ms", 120.0)

        assert reporter_of(client).flush()

        worker_id = client.status().worker_id
        assert worker_id is not None
        stream = StoreKeys(namespace).worker_metrics(KEY, worker_id)
        assert admin.xlen(stream) == 1
        assert admin.pttl(stream) > 0
        assert denied_commands(admin, acl.worker) == []

    def test_a_user_without_pexpire_still_flushes_each_sample_once(
        self,
        dedicated_server: ServerProcess,
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """With a worker user made before streams expired (no +pexpire), entries are
        appended once each (never re-sent because the expiry was refused), and the
        refusal is logged once."""
        admin = make_raw(dedicated_server.url)
        old_rule = acl_rules(namespace)["worker"].replace(" +pexpire", "")
        admin.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", "old-worker", "on", ">old-pw", *shlex.split(old_rule)
        )
        with Publisher(dedicated_server.url, namespace, "operator") as publisher:
            publisher.apply(model_document())
        url = f"redis://old-worker:old-pw@127.0.0.1:{dedicated_server.port}"
        client = make_client(url, **FAST)
        assert client.wait_ready(5), client.status()
        reporter = reporter_of(client)

        with captured_logs() as logs:
            for value in (100.0, 200.0):
                client.track(KEY, {"key": "user-1"}, "latency_ms", value)
                assert reporter.flush()

        worker_id = client.status().worker_id
        assert worker_id is not None
        entries: Any = admin.xrange(StoreKeys(namespace).worker_metrics(KEY, worker_id))
        assert len(entries) == 2
        assert len(events(logs, "metrics_expiry_refused")) == 1
        assert reporter.pending.series == {}

    def test_a_worker_id_a_pattern_cannot_confine_is_refused(self) -> None:
        """Ids with `:` or glob characters would widen the ACL pattern: refused."""
        for bad in ("w1:x", "w*", "w?", "[w]", ""):
            with pytest.raises(FlagsyncError, match="invalid worker id"):
                acl_rules("default", bad)


class TestMetricsTampering:
    """S30: metrics written with a worker credential are data, checked, never trusted."""

    def test_a_metrics_key_replaced_by_a_string_holds_and_is_reported(
        self, acl: AclUsers, operator: Publisher, make_raw: RawFactory, namespace: str
    ) -> None:
        """Every tick used to fail with WRONGTYPE; now the controller reports the broken
        stream, holds the step on healthy data from the others, and never advances."""
        keys = StoreKeys(namespace)
        controller = RolloutController(operator, KEY, owner="controller", lease_ttl_s=30.0)
        controller.set_plan(make_plan())
        assert controller.tick().decision == "start"
        honest = acl_connection(make_raw, acl.worker_url)
        append_samples(honest, keys.worker_metrics(KEY, "honest"), healthy())
        acl_connection(make_raw, acl.worker_url).set(keys.metrics(KEY), b"not a stream")

        decisions = [controller.tick() for _ in range(3)]
        status = controller.status()

        assert {d.decision for d in decisions} == {"hold"}
        assert "metrics untrustworthy" in decisions[0].note
        assert "WRONGTYPE" in decisions[0].note
        assert weight_of(operator) == 20.0
        assert [p.split(":")[-1] for p in status.metrics_problems] != []
        assert keys.metrics(KEY) in status.metrics_problems[0]

    def test_a_broken_stream_does_not_stop_a_rollback(
        self, acl: AclUsers, operator: Publisher, make_raw: RawFactory, namespace: str
    ) -> None:
        """With one stream replaced by a string, a breach in the readable streams still
        rolls the flag back."""
        keys = StoreKeys(namespace)
        controller = RolloutController(operator, KEY, owner="controller", lease_ttl_s=30.0)
        controller.set_plan(make_plan())
        assert controller.tick().decision == "start"
        worker = acl_connection(make_raw, acl.worker_url)
        worker.set(keys.worker_metrics(KEY, "attacker"), b"not a stream")
        append_samples(worker, keys.worker_metrics(KEY, "honest"), breached())

        decision = controller.tick()

        assert decision.decision == "rollback", decision
        stored = operator.get(KEY)
        assert stored is not None
        assert not stored.flag.enabled

    def test_negative_counts_cannot_cancel_a_breach(
        self, acl: AclUsers, operator: Publisher, make_raw: RawFactory, namespace: str
    ) -> None:
        """An entry with negative counts (which would subtract the honest workers' bad
        ratings) is malformed: skipped and reported; the breach still rolls back."""
        keys = StoreKeys(namespace)
        controller = RolloutController(operator, KEY, owner="controller", lease_ttl_s=30.0)
        controller.set_plan(make_plan())
        assert controller.tick().decision == "start"
        worker = acl_connection(make_raw, acl.worker_url)
        append_samples(worker, keys.worker_metrics(KEY, "honest"), breached())
        worker.xadd(
            keys.worker_metrics(KEY, "attacker"),
            {"candidate|thumbs_down|c": "-300", "candidate|thumbs_down|s": "-60"},
        )

        decision = controller.tick()

        assert decision.decision == "rollback"
        assert "candidate" in decision.note

    def test_fake_samples_from_one_worker_do_not_advance_with_max_source_share(
        self, acl: AclUsers, operator: Publisher, make_raw: RawFactory, namespace: str
    ) -> None:
        """100k fabricated healthy samples in one worker's stream outnumber the fleet's; a
        plan with max_source_share 0.5 holds instead of advancing on them."""
        keys = StoreKeys(namespace)
        controller = RolloutController(operator, KEY, owner="controller", lease_ttl_s=30.0)
        controller.set_plan(make_plan(max_source_share=0.5))
        assert controller.tick().decision == "start"
        worker = acl_connection(make_raw, acl.worker_url)
        for honest in ("honest-1", "honest-2"):
            append_samples(worker, keys.worker_metrics(KEY, honest), healthy(30))
        append_samples(worker, keys.worker_metrics(KEY, "attacker"), healthy(100_000))

        decision = controller.tick()

        assert decision.decision == "hold"
        assert "attacker" in decision.note
        assert "max_source_share 50%" in decision.note
        assert weight_of(operator) == 20.0


def run_kill_wait(url: str, namespace: str, wait_s: float) -> subprocess.Popen[str]:
    """Start `flagsync kill model --wait WAIT_S` as an operator runs it."""
    env = {name: value for name, value in os.environ.items() if name != "FLAGSYNC_NAMESPACE"}
    env.update(REDIS_URL=url, FLAGSYNC_NAMESPACE=namespace)
    return subprocess.Popen(
        [str(SCRIPT), "kill", KEY, "--wait", str(wait_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


class TestPresenceTampering:
    """S30: `--wait` never reports success on presence records it cannot trust."""

    def test_junk_presence_records_are_unconfirmed_workers_not_a_crash(
        self,
        acl: AclUsers,
        operator: Publisher,
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """A junk record, a record of the wrong type and a record naming another worker
        make `kill --wait` exit 1 naming them, and `wait_propagated` report them."""
        keys = StoreKeys(namespace)
        client = make_client(acl.worker_url, **FAST)
        assert client.wait_ready(5), client.status()
        worker = acl_connection(make_raw, acl.worker_url)
        real_id = client.status().worker_id
        assert real_id is not None
        assert wait_until(lambda: worker.get(keys.worker(real_id)) is not None, 2)
        real = worker.get(keys.worker(real_id))
        assert real is not None
        worker.set(keys.worker("junk"), b"\x00junk")
        worker.xadd(keys.worker("stream"), {"not": "a record"})
        worker.set(keys.worker("ghost"), real)  # the real worker's record, copied

        report = operator.wait_propagated(operator.kill(KEY), timeout=0.5)
        killer = run_kill_wait(acl.operator_url, namespace, 0.5)
        out, err = killer.communicate(timeout=30)

        assert not report.complete
        assert [ack.worker.id for ack in report.reached] == [real_id]
        assert sorted(r.key.rsplit(":", 1)[1] for r in report.unconfirmed) == [
            "ghost",
            "junk",
            "stream",
        ]
        assert killer.returncode == 1, err
        assert "reached 1/4 workers" in out
        assert "unconfirmed" in out
        assert "record names worker" in out

    def test_deleting_a_stopped_workers_presence_during_the_wait_is_not_success(
        self,
        dedicated_server: ServerProcess,
        acl: AclUsers,
        operator: Publisher,
        make_raw: RawFactory,
        tmp_path: Path,
    ) -> None:
        """The real worker is SIGSTOPped; a worker credential deletes its record and adds a
        ghost claiming the new revision: `kill --wait` exits 1, never `reached 1/1`."""
        namespace = operator.keys.namespace
        keys = operator.keys
        child = ChildProcess(
            "worker",
            [acl.worker_url, namespace, KEY, msgspec.json.encode(FAST).decode()],
            tmp_path / "worker.stderr",
        )
        try:
            worker_id = child.expect("ready", 30)["worker_id"]
            worker = acl_connection(make_raw, acl.worker_url)
            assert wait_until(lambda: worker.get(keys.worker(worker_id)) is not None, 2)
            os.kill(child.pid, signal.SIGSTOP)
            _, revision = operator.revision()
            killer = run_kill_wait(acl.operator_url, namespace, 3.0)
            # The command reads the fleet right after its write: wait for the write, then
            # a little, so the deletion below happens during the wait, not before it.
            assert wait_until(lambda: operator.revision()[1] > revision, 15)
            time.sleep(0.3)
            blob: Any = worker.get(keys.worker(worker_id))
            stale = decode_presence(blob)
            worker.delete(keys.worker(worker_id))
            ghost = msgspec.structs.replace(stale, id="ghost", revision=revision + 1)
            worker.set(keys.worker("ghost"), encode_presence(ghost))
            out, err = killer.communicate(timeout=30)
        finally:
            os.kill(child.pid, signal.SIGCONT)
            child.close()

        assert killer.returncode == 1, err
        assert "reached 1/1" not in out
        assert "deleted during the wait" in out
        record("S30", dedicated_server.kind, recovery_s=None, case="deleted-presence-unconfirmed")


class TestReadOnlyReplica:
    """S32: a worker pointed at a read-only replica (its presence SET is refused)."""

    @pytest.fixture
    def replica(self, server_kind: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
        """A primary and a replica of it, both started by the test."""
        primary = ServerProcess(kind=server_kind, args=["--repl-diskless-sync-delay", "0"])
        primary.start()
        replica = ServerProcess(
            kind=server_kind, args=["--replicaof", "127.0.0.1", str(primary.port)]
        )
        try:
            yield primary, replica.start()
        finally:
            replica.close()
            primary.close()

    def test_kill_wait_never_counts_a_worker_whose_presence_cannot_be_written(
        self,
        replica: tuple[ServerProcess, ServerProcess],
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """The worker on the replica has no presence record: `kill --wait` on the primary
        exits 1 saying nobody confirmed, even though the worker does apply the kill."""
        primary, secondary = replica
        with Publisher(primary.url, namespace, "operator") as publisher:
            publisher.apply(model_document())
            copy = make_raw(secondary.url)
            assert wait_until(lambda: bool(copy.hgetall(publisher.keys.flags)), 5)
            client = make_client(secondary.url, **FAST)
            assert client.wait_ready(5), client.status()
            killer = run_kill_wait(primary.url, namespace, 0.5)
            out, err = killer.communicate(timeout=30)

        assert killer.returncode == 1, err
        assert "nobody confirmed the change" in out

    def test_a_worker_on_a_replica_does_not_reconnect_in_a_storm(
        self,
        replica: tuple[ServerProcess, ServerProcess],
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """Over 2 s on a replica a worker opens at most a few connections and reloads the
        store at most once more: a refused presence write is not a connection failure."""
        primary, secondary = replica
        with Publisher(primary.url, namespace, "operator") as publisher:
            publisher.apply(model_document())
        copy = make_raw(secondary.url)
        assert wait_until(lambda: bool(copy.hgetall(StoreKeys(namespace).flags)), 5)
        client = make_client(secondary.url, **FAST)
        assert client.wait_ready(5), client.status()
        before = int(copy.info("stats")["total_connections_received"])

        time.sleep(2.0)

        opened = int(copy.info("stats")["total_connections_received"]) - before
        status = client.status()
        assert opened <= 5, status
        assert status.reconnects <= 1, status
        assert status.resyncs <= 2, status
        assert status.state == "ready", status
        assert status.connected, status
        assert status.presence_error is not None
        assert "read-only replica" in status.presence_error
