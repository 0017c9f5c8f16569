"""What a write reports about its own durability, on real processes (issue #12):
replication confirmed by `WAIT` (or not), and an outcome that is unknown because the
reply never came.

A primary with two replicas whose replication links go through `FaultProxy`s: a
black-holed link acknowledges nothing, so `WAIT` counts what really replicated. A
SIGSTOPped primary takes a write into its socket buffer and answers nothing: the
publisher cannot know whether it will be applied, and after SIGCONT it is.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from typing import Any, Final

import pytest
import redis

from flagsync.acl import acl_rules
from flagsync.errors import ReplicationUnconfirmedError, WriteOutcomeUnknownError
from flagsync.publisher import Publisher, Replication
from tests.integration.support import wait_until
from tests.logs import captured_logs, events
from tests.rollout.support import KEY, SCRIPT, model_document
from tests.topology.nodes import ReplicaSet

CONFIRM_S: Final = 2.0
"""`replication_timeout_s` where replicas must acknowledge: ample on a loaded 2-core VM
(0.3 s once saw one of two replicas miss it); black-holed links wait it out once each."""
STOPPED_S: Final = 1.5
"""How long the primary stays SIGSTOPped: well past the publisher's 0.4 s socket timeout."""


@pytest.fixture
def replica_set(server_kind: str) -> Iterator[ReplicaSet]:
    """1 primary + 2 replicas, each replication link through its own proxy."""
    with ReplicaSet(server_kind, 2, proxied=True) as started:
        yield started


def flagsync_cli(url: str, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `flagsync` command against `url` and `namespace`."""
    env = {name: value for name, value in os.environ.items() if name != "FLAGSYNC_NAMESPACE"}
    env.update(REDIS_URL=url, FLAGSYNC_NAMESPACE=namespace)
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=30, check=False
    )


def stored_ops(url: str, namespace: str) -> list[tuple[int, str]]:
    """(revision, op) of every change-log entry of `KEY`, oldest first."""
    with Publisher(url, namespace, "reader") as reader:
        return [(entry.revision, entry.op) for entry in reversed(reader.history(KEY))]


class TestReplicationConfirmed:
    """`WAIT` after the script: the write says how many replicas have it."""

    def test_a_write_reports_its_replicas_and_fewer_than_required_is_not_a_success(
        self, replica_set: ReplicaSet, namespace: str
    ) -> None:
        """With both links up a write is `replicated to 2/2 replicas`; with one link
        black-holed `min_replicas=2` raises `ReplicationUnconfirmedError` naming the
        revision (the write is on the primary, 1/2 acknowledged), and `min_replicas=1`
        is still confirmed (1/2)."""
        url = replica_set.primary.url
        strict = Publisher(url, namespace, "op", min_replicas=2, replication_timeout_s=CONFIRM_S)
        with strict:
            strict.apply(model_document())
            confirmed = strict.kill(KEY)
            assert strict.last_write is not None
            assert strict.last_write.replication == Replication(acked=2, replicas=2, required=2)
            assert str(strict.last_write.replication) == "replicated to 2/2 replicas"

            replica_set.proxies[0].blackhole()
            with pytest.raises(ReplicationUnconfirmedError) as raised:
                strict.enable(KEY)
            error = raised.value
            assert (error.revision, error.acked, error.replicas, error.required) == (
                confirmed + 1,
                1,
                2,
                2,
            )
            assert "not confirmed" in str(error)
            assert "replicated to 1/2 replicas" in str(error)
            assert strict.last_write is not None
            assert strict.last_write.replication is not None
            assert not strict.last_write.replication.confirmed
            assert strict.revision()[1] == confirmed + 1  # written on the primary, unconfirmed

        lax = Publisher(url, namespace, "op", min_replicas=1, replication_timeout_s=CONFIRM_S)
        with lax:
            lax.kill(KEY)
            assert lax.last_write is not None
            assert lax.last_write.replication == Replication(acked=1, replicas=2, required=1)

    def test_the_cli_says_replicated_beside_reached_and_exits_1_when_not_confirmed(
        self, replica_set: ReplicaSet, namespace: str
    ) -> None:
        """`kill --min-replicas 2` prints `replicated to 2/2 replicas`; with a link
        black-holed it exits 1 with `not confirmed` and the revision, and `--json` carries
        the replication counts."""
        url = replica_set.primary.url
        with Publisher(url, namespace, "op") as publisher:
            publisher.apply(model_document())
        done = flagsync_cli(url, namespace, "kill", KEY, "--min-replicas", "2")
        assert done.returncode == 0, done.stderr
        assert "replicated to 2/2 replicas" in done.stdout

        listed = flagsync_cli(url, namespace, "--json", "enable", KEY, "--min-replicas", "2")
        assert listed.returncode == 0, listed.stderr
        assert '"replication":{"acked":2,"replicas":2,"required":2}' in listed.stdout

        replica_set.proxies[1].blackhole()
        refused = flagsync_cli(
            url, namespace, "kill", KEY, "--min-replicas", "2", "--replication-timeout", "0.3"
        )
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        assert "not confirmed" in refused.stderr
        assert "replicated to 1/2 replicas (required: 2)" in refused.stderr

        bad = flagsync_cli(url, namespace, "kill", KEY, "--min-replicas", "-1")
        assert bad.returncode == 2
        assert "--min-replicas" in bad.stderr

    def test_the_operator_acl_can_confirm_and_without_info_waits_for_the_minimum(
        self, replica_set: ReplicaSet, namespace: str
    ) -> None:
        """`flagsync acl`'s operator user confirms replication (2/2); one without `+info`
        cannot count the replicas, so it waits for `min_replicas` and reports `N/?`."""
        rules = acl_rules(namespace)["operator"]
        with redis.Redis(port=replica_set.primary.port, protocol=2) as admin:
            admin.execute_command("ACL", "SETUSER", "op", "on", ">pw", *rules.split())
            admin.execute_command(
                "ACL", "SETUSER", "op-no-info", "on", ">pw", *rules.split(), "-info"
            )
        host = f"127.0.0.1:{replica_set.primary.port}"
        with Publisher(f"redis://op:pw@{host}", namespace, "op", min_replicas=2) as operator:
            operator.apply(model_document())
            assert operator.last_write is not None
            assert str(operator.last_write.replication) == "replicated to 2/2 replicas"
        with Publisher(f"redis://op-no-info:pw@{host}", namespace, "op", min_replicas=1) as blind:
            blind.kill(KEY)
            assert blind.last_write is not None
            replication = blind.last_write.replication
            assert replication is not None
            assert (replication.replicas, replication.required) == (None, 1)
            # WAIT 1 returns once one replica acknowledged; the other may have too by then
            assert replication.acked in {1, 2}
            assert str(replication) == f"replicated to {replication.acked}/? replicas"


class TestOutcomeUnknown:
    """The reply never came: the write is reported as unknown, never as a success."""

    def test_a_put_whose_reply_is_lost_is_unknown_and_is_applied_later(
        self, replica_set: ReplicaSet, namespace: str
    ) -> None:
        """The primary is SIGSTOPped after the put was sent: `put` raises
        `WriteOutcomeUnknownError` (no revision known, `flagsync history` named) and does
        not retry; after SIGCONT the store holds the put exactly once."""
        url = replica_set.primary.url
        with Publisher(url, namespace, "op", timeout_s=0.4, failover_timeout_s=5) as publisher:
            publisher.apply(model_document())
            definition: dict[str, Any] = {**model_document()["flags"][KEY], "default": "candidate"}
            with (
                stopped_during_write(replica_set, publisher),
                pytest.raises(WriteOutcomeUnknownError) as raised,
            ):
                publisher.put(KEY, definition)
            assert raised.value.revision is None
            assert "flagsync history" in str(raised.value)
        assert wait_until(lambda: len(stored_ops(url, namespace)) == 2, 5)
        assert stored_ops(url, namespace) == [(1, "apply"), (2, "put")]

    def test_a_kill_whose_reply_is_lost_is_retried_after_re_reading_and_lands_once(
        self, replica_set: ReplicaSet, namespace: str
    ) -> None:
        """The same loss under `kill` (idempotent in effect): the publisher retries
        through the stop, re-reads, finds the flag killed and returns its revision; the
        change log has one kill. One warning for the episode, not one per attempt."""
        url = replica_set.primary.url
        with Publisher(url, namespace, "op", timeout_s=0.4, failover_timeout_s=8) as publisher:
            publisher.apply(model_document())
            with captured_logs() as logs, stopped_during_write(replica_set, publisher):
                revision = publisher.kill(KEY)
            assert revision == 2
            stored = publisher.get(KEY)
            assert stored is not None
            assert not stored.flag.enabled
        assert stored_ops(url, namespace) == [(1, "apply"), (2, "kill")]
        assert len(events(logs, "store_failover_retrying")) == 1
        assert len(events(logs, "store_failover_recovered")) == 1


@contextlib.contextmanager
def stopped_during_write(replica_set: ReplicaSet, publisher: Publisher) -> Iterator[None]:
    """SIGSTOP the primary as the publisher's next write script goes out (the reads
    before it were answered), SIGCONT it `STOPPED_S` later from a timer thread."""
    confirmed = publisher._confirmed
    original = confirmed._send
    primary = replica_set.primary
    timers: list[threading.Timer] = []

    def send(*args: Any, **kwargs: Any) -> Any:
        if not timers:
            primary.pause()
            timers.append(threading.Timer(STOPPED_S, primary.resume))
            timers[0].start()
        return original(*args, **kwargs)

    confirmed._send = send  # type: ignore[method-assign]
    try:
        yield
    finally:
        confirmed._send = original  # type: ignore[method-assign]
        for timer in timers:
            timer.join()
    with redis.Redis(port=primary.port, protocol=2) as client:
        assert client.ping()
