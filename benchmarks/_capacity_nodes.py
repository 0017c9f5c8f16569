"""The servers of the capacity benchmark and what is read from them: CPU, commands, memory.

A node is a Valkey process on 127.0.0.1 (started here, or given by URL on loopback), read
two ways: its CPU time from /proc/<pid>/stat (utime + stime, all threads) and its
counters from INFO (commandstats, clients, memory). A `Sample` holds both at one
instant; the difference of two samples is what happened in between.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis

from flagsync.server import ServerProcess

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_FD_MARGIN = 200
"""Open files a server keeps besides its clients (Valkey reserves 32; room for more)."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process `pid` (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the ")" closing the command name: state is field 3, utime 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


@dataclass(frozen=True)
class Sample:
    """One node's counters at one instant."""

    at_s: float
    cpu_s: float
    calls: dict[str, int]
    """Calls per command since the server started (INFO commandstats)."""
    usec: dict[str, int]
    """Microseconds spent per command since the server started."""
    reads: int
    """Socket reads processed (INFO stats): one per request or pipeline, i.e. round trips."""
    connected_clients: int
    used_memory: int


class Node:
    """A server the benchmark reads: its role, URL and process id, and one connection
    kept open for INFO (a new one per sample would show up in the counts)."""

    def __init__(self, role: str, url: str, pid: int) -> None:
        self.role = role
        self.url = url
        self.pid = pid
        self._connection: redis.Redis | None = None

    def client(self) -> redis.Redis:
        """A new plain connection (RESP2, 10 s timeout)."""
        return redis.Redis.from_url(self.url, protocol=2, socket_timeout=10.0)

    def sample(self) -> Sample:
        """CPU time and INFO counters now."""
        if self._connection is None:
            self._connection = self.client()
        connection = self._connection
        stats = connection.info("commandstats")
        reads = connection.info("stats")["total_reads_processed"]
        clients = connection.info("clients")
        memory = connection.info("memory")
        names = {name.removeprefix("cmdstat_"): row for name, row in stats.items()}
        return Sample(
            at_s=time.monotonic(),
            cpu_s=cpu_seconds(self.pid),
            calls={name: int(row["calls"]) for name, row in names.items()},
            usec={name: int(row["usec"]) for name, row in names.items()},
            reads=int(reads),
            connected_clients=int(clients["connected_clients"]),
            used_memory=int(memory["used_memory"]),
        )

    def version(self) -> str:
        """The server's name and version, e.g. `valkey 9.1.2`."""
        with self.client() as connection:
            info = connection.info("server")
        if "valkey_version" in info:
            return f"valkey {info['valkey_version']}"
        return f"redis {info['redis_version']}"

    def close(self) -> None:
        """Close the INFO connection (idempotent)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


def commands_between(before: Sample, after: Sample) -> dict[str, int]:
    """Calls per command between two samples, leaving out the samples' own INFO calls."""
    counts = {
        name: after.calls[name] - before.calls.get(name, 0)
        for name in after.calls
        if name != "info" and after.calls[name] != before.calls.get(name, 0)
    }
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def reads_between(before: Sample, after: Sample) -> int:
    """Socket reads (round trips) between two samples, less the 4 INFO reads of sampling."""
    return after.reads - before.reads - 4


def cpu_percent_between(before: Sample, after: Sample) -> float:
    """The node's CPU use between two samples, as % of one core."""
    return 100.0 * (after.cpu_s - before.cpu_s) / (after.at_s - before.at_s)


def usec_per_call(before: Sample, after: Sample, command: str) -> float | None:
    """Mean server µs per call of `command` between two samples (None: never called)."""
    calls = after.calls.get(command, 0) - before.calls.get(command, 0)
    if calls <= 0:
        return None
    return (after.usec[command] - before.usec.get(command, 0)) / calls


def max_clients_for(workers: int, connections_per_worker: int = 4) -> int:
    """`maxclients` for `workers` clients of up to 4 connections, within our open-files limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(10_000, min(workers * connections_per_worker + 100, soft - _FD_MARGIN))


def pid_of(url: str) -> int:
    """The process id of the loopback server at `url` (INFO server), for /proc readings."""
    host = urlsplit(url).hostname or ""
    if host not in _LOOPBACK:
        raise ValueError(f"--url: host {host!r} is not loopback: server CPU is read from /proc")
    with redis.Redis.from_url(url, protocol=2, socket_timeout=5.0) as connection:
        return int(connection.info("server")["process_id"])


@contextmanager
def nodes(url: str | None, replicas: int, workers: int) -> Iterator[list[Node]]:
    """The primary (started here unless `url` is given) and `replicas` replicas of it,
    all replicas synced; everything started here is stopped by PID on exit."""
    if url is not None and replicas:
        raise ValueError("--replicas: only with a server started by the benchmark (no --url)")
    args = ["--maxclients", str(max_clients_for(workers)), "--repl-diskless-sync-delay", "0"]
    with ExitStack() as stack:
        started: list[Node] = []

        @stack.callback
        def close_connections() -> None:
            for node in started:
                node.close()

        if url is not None:
            started.append(Node("primary", url, pid_of(url)))
            yield started
            return
        primary = stack.enter_context(ServerProcess(args=args))
        assert primary.pid is not None
        started.append(Node("primary", primary.url, primary.pid))
        for _ in range(replicas):
            replica = stack.enter_context(
                ServerProcess(args=[*args, "--replicaof", "127.0.0.1", str(primary.port)])
            )
            assert replica.pid is not None
            started.append(Node("replica", replica.url, replica.pid))
        _wait_replicated(started[1:])
        yield started


def _wait_replicated(replica_nodes: Sequence[Node], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    for node in replica_nodes:
        with node.client() as connection:
            while True:
                info: dict[str, Any] = connection.info("replication")
                if info.get("master_link_status") == "up":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {node.url} did not sync in {timeout_s} s")
                time.sleep(0.05)
