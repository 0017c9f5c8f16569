"""The shared lifecycle of the suite's deployments (`tests.deployment`): a start that fails
half-way stops every process and proxy it had started, and closing goes on past a part
that fails to close."""

from __future__ import annotations

import socket

import pytest
import redis

from flagsync.server import free_port
from tests.deployment import close_each
from tests.faults.proxy import FaultProxy
from tests.topology.nodes import ReplicaSet


def listening(port: int) -> bool:
    """Whether anything accepts a connection on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class _FailsToClose:
    """A part whose close fails, as a process that will not die would."""

    def __init__(self) -> None:
        self.calls = 0

    def close(self) -> None:
        self.calls += 1
        raise RuntimeError("this part did not stop")


class TestDeploymentLifecycle:
    """Whatever a deployment started is stopped, whichever way it ends."""

    def test_a_start_that_fails_half_way_stops_every_node_and_proxy(self, server_kind: str) -> None:
        """Replicas that cannot authenticate to their primary never sync, so `start()`
        fails after starting the primary, both replicas and their proxies: afterwards
        none of them listens and no node has a PID."""
        nodes = ReplicaSet(server_kind, 2, proxied=True, extra=["--requirepass", "unshared"])
        with pytest.raises((RuntimeError, redis.RedisError)):
            nodes.start(timeout_s=2.0)
        started = [nodes.primary, *nodes.replicas]
        assert len(nodes.replicas) == len(nodes.proxies) == 2  # all were started
        assert [node.pid for node in started] == [None, None, None]
        ports = [node.port for node in started] + [proxy.port for proxy in nodes.proxies]
        assert [port for port in ports if listening(port)] == []

    def test_closing_goes_on_past_a_part_that_fails_and_raises_its_error(self) -> None:
        """The proxies before and after a part whose close fails are both stopped, and
        the failure is raised once all were tried (the proxies forward to a free port:
        nothing needs to listen there)."""
        first, last = FaultProxy(free_port()).start(), FaultProxy(free_port()).start()
        failing = _FailsToClose()
        try:  # started: both listen (no probe here: it would race the proxy's accept)
            with pytest.raises(RuntimeError, match="did not stop"):
                close_each([first, failing, last])
            assert failing.calls == 1
            assert not listening(first.port)
            assert not listening(last.port)
        finally:
            first.close()  # safe twice: a no-op once close_each did its work
            last.close()
