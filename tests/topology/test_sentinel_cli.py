"""The CLI and the fleet view through a `redis+sentinel://` URL, on real processes: what an
operator reads when no sentinel answers or the service name is wrong (one line naming the
sentinels or the service, never redis-py's dump of client reprs), and the fleet view
counting a worker that follows the same URL."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from flagsync import Fleet
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess, free_port
from tests.integration.conftest import ClientFactory
from tests.integration.support import wait_until
from tests.rollout.support import KEY, SCRIPT, model_document
from tests.topology.nodes import PRIMARY_ARGS, SERVICE, SentinelProcess


def flagsync(url: str, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as an operator does, with `url` as REDIS_URL."""
    env = {name: value for name, value in os.environ.items() if name != "FLAGSYNC_NAMESPACE"}
    env.update(REDIS_URL=url, FLAGSYNC_NAMESPACE=namespace)
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


@pytest.fixture
def watched(server_kind: str) -> Iterator[tuple[ServerProcess, SentinelProcess]]:
    """One primary and one Sentinel watching it as `SERVICE`."""
    with ServerProcess(kind=server_kind, args=list(PRIMARY_ARGS)) as primary:
        sentinel = SentinelProcess(server_kind, primary.port).start()
        try:
            yield primary, sentinel
        finally:
            sentinel.close()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis+sentinel://127.0.0.1:1", "the path must be the service name"),
        ("redis+sentinel://127.0.0.1:1/svc?readfrom=replica", "unknown option(s) readfrom"),
        ("redis+cluster://127.0.0.1:1?read_from=replicas", "read_from='replicas'"),
        ("redis://127.0.0.1:1?read_from=replcia", "read_from='replcia'"),
        ("redis://127.0.0.1:1?ssl_ca_cert=/ca.pem", "unknown option(s) ssl_ca_cert"),
    ],
)
def test_a_bad_url_exits_2_naming_the_fault(url: str, words: str, namespace: str) -> None:
    """Refused before anything is sent (nothing listens there anyway): exit 2, one line."""
    result = flagsync(url, namespace, "kill", KEY)

    assert result.returncode == 2, result
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


class TestUnreachable:
    """Nothing listens where the URL says the sentinels are."""

    def test_the_cli_names_the_sentinels_that_did_not_answer(self, namespace: str) -> None:
        """`flagsync workers` exits 1 with one line naming both addresses."""
        ports = (free_port(), free_port())
        url = f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/{SERVICE}"
        result = flagsync(url, namespace, "workers")

        assert result.returncode == 1, result
        assert "no sentinel answered" in result.stderr
        assert f"127.0.0.1:{ports[0]}, 127.0.0.1:{ports[1]}" in result.stderr
        assert "<redis." not in result.stderr, result.stderr

    def test_a_write_retries_for_the_failover_timeout_then_says_so(self, namespace: str) -> None:
        """`flagsync kill --failover-timeout 0.5`: retried with backoff for 0.5 s (not the
        default 5 s), then exit 1 saying how long it tried and that no sentinel answered."""
        url = f"redis+sentinel://127.0.0.1:{free_port()}/{SERVICE}"
        started = time.monotonic()
        result = flagsync(url, namespace, "kill", KEY, "--failover-timeout", "0.5")
        took_s = time.monotonic() - started

        assert result.returncode == 1, result
        assert "over 0.5 s" in result.stderr
        assert "failover_timeout_s=0.5" in result.stderr
        assert "no sentinel answered" in result.stderr
        assert took_s < 4.5, took_s  # the process, imports included, under the 5 s default


class TestThroughASentinel:
    """A Sentinel that answers."""

    def test_a_wrong_service_name_is_named(
        self, watched: tuple[ServerProcess, SentinelProcess], namespace: str
    ) -> None:
        """The sentinel answers but knows no `typo` service: the message says so."""
        _, sentinel = watched
        result = flagsync(f"redis+sentinel://{sentinel.address}/typo", namespace, "workers")

        assert result.returncode == 1, result
        assert "none names a primary that is up for service 'typo'" in result.stderr
        assert "<redis." not in result.stderr, result.stderr

    def test_workers_and_the_fleet_view_count_a_worker_on_the_same_url(
        self,
        watched: tuple[ServerProcess, SentinelProcess],
        make_client: ClientFactory,
        namespace: str,
    ) -> None:
        """A worker connected through the Sentinel URL shows in `flagsync workers --json`
        and `Fleet(url).workers()`, at the revision `kill --wait` wrote."""
        _, sentinel = watched
        url = f"redis+sentinel://{sentinel.address}/{SERVICE}"
        with Publisher(url, namespace, "operator") as publisher:
            publisher.apply(model_document())
        client = make_client(url, heartbeat_interval_s=0.1)
        assert client.wait_ready(5), client.status()
        killed = flagsync(url, namespace, "kill", KEY, "--wait", "5")
        listed = flagsync(url, namespace, "--json", "workers")
        with Fleet(url, namespace) as fleet:
            assert wait_until(lambda: fleet.workers() != [], 5)
            workers = fleet.workers()

        assert killed.returncode == 0, killed
        assert "reached 1/1" in killed.stdout
        assert listed.returncode == 0, listed
        assert len(json.loads(listed.stdout)["workers"]) == 1, listed.stdout
        assert [worker.revision for worker in workers] == [client.revision]
