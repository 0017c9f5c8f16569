"""`flagsync server`: a local server for development that really stops when told to."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
from pathlib import Path

import pytest
import redis

from flagsync.server import free_port
from tests.cli.support import Cli


def _answers_ping(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except redis.ConnectionError:
        return False


def _children(pid: int) -> list[int]:
    """The child processes of `pid` (Linux /proc; empty elsewhere)."""
    try:
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except OSError:
        return []


def _is_server(pid: int) -> bool:
    try:
        return b"valkey-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class TestServer:
    @pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
    def test_server_prints_its_url_and_stops_on_a_signal(
        self, namespace: str, signum: signal.Signals
    ) -> None:
        """`flagsync server` prints a URL that answers PING; Ctrl-C or `kill` stops the
        server process with it (nothing keeps listening) and exits 0."""
        port = free_port()
        server = Cli("redis://unused:1", namespace).start("server", "--port", str(port))
        children: list[int] = []
        try:
            first = server.read_line()
            second = server.read_line()
            children = _children(server.process.pid)
            match = re.fullmatch(r"valkey running at (redis://127\.0\.0\.1:(\d+))\n", first)
            assert match is not None, first
            url = match[1]
            assert int(match[2]) == port
            assert second == f"  export REDIS_URL={url}\n"
            assert _answers_ping(url)

            server.process.send_signal(signum)
            result = server.wait()
        finally:
            server.kill()
            for child in children:  # never leave an orphaned server behind, even on failure
                if _is_server(child):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)

        assert result.code == 0, str(result)
        assert result.stderr.splitlines()[-1] == "stopped"
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), timeout=1),
        ):
            pass
