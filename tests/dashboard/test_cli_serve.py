"""`flagsync dashboard` as an operator starts it: a subprocess on a free 127.0.0.1 port,
against `REDIS_URL` or its own embedded server, with the token from
`FLAGSYNC_DASHBOARD_TOKEN`; and the refusal to listen beyond loopback without one."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from flagsync.publisher import Publisher
from flagsync.server import ServerProcess, free_port
from tests.dashboard.support import EXAMPLE, wait_until

TOKEN_ENV = "FLAGSYNC_DASHBOARD_TOKEN"  # noqa: S105 - the variable's name
SECRET = "cli-secret-long-enough"  # noqa: S105 - a test token
STARTUP_S = 90.0
"""Generous: a cold interpreter importing the web stack on a loaded 2-core machine."""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the variables the dashboard reads, plus `extra`."""
    read = {"REDIS_URL", TOKEN_ENV, "FLAGSYNC_SIGNING_KEY", "FLAGSYNC_NAMESPACE"}
    return {k: v for k, v in os.environ.items() if k not in read} | extra


@contextmanager
def dashboard_process(
    args: list[str], env: dict[str, str], stderr: list[str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """`flagsync dashboard ARGS` running; stopped by its PID (SIGTERM, then SIGKILL); what
    it wrote to stderr is appended to `stderr` once it has stopped."""
    process = subprocess.Popen(
        [sys.executable, "-m", "flagsync.cli", "dashboard", *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    try:
        yield process
    finally:
        process.terminate()
        try:
            _, errors = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, errors = process.communicate(timeout=30)
        if stderr is not None:
            stderr.append(errors)


def answers(url: str, headers: dict[str, str] | None = None) -> bool:
    """True once the dashboard answers at all (any status)."""
    try:
        httpx.get(url, headers=headers or {}, timeout=2)
    except httpx.HTTPError:
        return False
    return True


class TestServe:
    """The command serves the JSON API on the given port."""

    def test_redis_url_and_the_token_from_the_environment(self, server: ServerProcess) -> None:
        """`REDIS_URL` picks the server, `-n` the namespace, `FLAGSYNC_DASHBOARD_TOKEN`
        the token: no token is 401, `Authorization: Bearer` reads the flags."""
        with Publisher(server.url, "cli-serve", actor="setup") as store:
            store.apply(EXAMPLE, reason="fixture")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = clean_env(REDIS_URL=server.url, **{TOKEN_ENV: f"carol:{SECRET}"})
        with dashboard_process(["--port", str(port), "-n", "cli-serve"], env) as process:
            assert wait_until(lambda: answers(f"{base}/api/flags"), STARTUP_S, 0.2), process.poll()
            assert httpx.get(f"{base}/api/flags", timeout=10).status_code == 401
            bearer = {"Authorization": f"Bearer {SECRET}"}
            body = httpx.get(f"{base}/api/flags", headers=bearer, timeout=10).json()
            assert body["namespace"] == "cli-serve"
            assert "llm-model-version" in body["flags"]
            killed = httpx.post(
                f"{base}/api/flags/llm-model-version/kill",
                json={"expected_version": 1, "reason": "from a script"},
                headers=bearer, timeout=30,
            )  # fmt: skip
            assert killed.status_code == 200, killed.text
            assert killed.json()["actor"] == "carol"

    def test_without_a_url_it_starts_its_own_server(self) -> None:
        """No `--url`, no `REDIS_URL`: an embedded server (its URL printed), an empty
        namespace served on the port."""
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        stderr: list[str] = []
        with dashboard_process(["--port", str(port)], clean_env(), stderr) as process:
            assert wait_until(lambda: answers(f"{base}/api/flags"), STARTUP_S, 0.2), process.poll()
            body = httpx.get(f"{base}/api/flags", timeout=10).json()
            assert (body["namespace"], body["flags"]) == ("default", {})
        assert "server: embedded Valkey at redis://127.0.0.1:" in stderr[0]


class TestRefusal:
    """Beyond loopback without a token it never starts (nothing binds, no traffic)."""

    @pytest.mark.parametrize("host", ["0.0.0.0", "::"])  # noqa: S104 - refused, never bound
    def test_non_loopback_without_token_exits_before_listening(self, host: str) -> None:
        """Exit 2 naming the host and `FLAGSYNC_DASHBOARD_TOKEN` (an empty one is none);
        the port is never listened on (checked on 127.0.0.1 only)."""
        port = free_port()
        finished = subprocess.run(
            [sys.executable, "-m", "flagsync.cli", "dashboard", "--url",
             f"redis://127.0.0.1:{free_port()}", "--host", host, "--port", str(port)],
            capture_output=True, text=True, timeout=120, check=False,
            env=clean_env(**{TOKEN_ENV: ""}),
        )  # fmt: skip
        assert finished.returncode == 2
        assert "refusing to start" in finished.stderr
        assert TOKEN_ENV in finished.stderr
        assert not answers(f"http://127.0.0.1:{port}/")
