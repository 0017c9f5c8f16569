"""`flagsync dashboard` and `flagsync demo --dashboard` from the command line's side."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from flagsync.cli import build_parser
from flagsync.server import ServerProcess, free_port
from tests.dashboard.support import wait_until


class TestOptions:
    """The options parse as documented."""

    def test_dashboard_defaults_and_demo_flag(self) -> None:
        """`dashboard` listens on 127.0.0.1:8600 by default; `demo --dashboard` means port
        8600 and `--dashboard 8700` another one; without it there is none."""
        parser = build_parser()
        args = parser.parse_args(["dashboard"])
        assert (args.host, args.port, args.token, args.read_only) == (
            "127.0.0.1",
            8600,
            None,
            False,
        )
        assert parser.parse_args(["demo", "--dashboard"]).dashboard == 8600
        assert parser.parse_args(["demo", "--dashboard", "8700"]).dashboard == 8700
        assert parser.parse_args(["demo"]).dashboard is None


class TestSigningKey:
    """`--signing-key` (or `FLAGSYNC_SIGNING_KEY`) is loaded before anything listens."""

    def test_an_unreadable_key_stops_the_dashboard_naming_the_file(
        self, server: ServerProcess, tmp_path: Path
    ) -> None:
        """A key file that is not an Ed25519 private key: exit non-zero, the file named,
        nothing listening on the port."""
        bogus = tmp_path / "operator.key"
        bogus.write_text("not a key")
        port = free_port()
        env = {key: value for key, value in os.environ.items() if key != "FLAGSYNC_SIGNING_KEY"}
        finished = subprocess.run(
            [sys.executable, "-m", "flagsync.cli", "dashboard", "--url", server.url,
             "--port", str(port), "--signing-key", str(bogus)],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        assert finished.returncode != 0
        assert "operator.key" in finished.stderr
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)


@pytest.mark.slow
class TestDemoDashboard:
    """The demo keeps a dashboard open while its story runs."""

    def test_the_demo_workers_appear_on_the_dashboard_while_it_runs(self) -> None:
        """During `flagsync demo --dashboard PORT` the dashboard lists the demo's two
        workers; when the demo ends, so does the dashboard."""
        port = free_port()
        env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
        demo = subprocess.Popen(
            [sys.executable, "-m", "flagsync.cli", "demo", "--workers", "2", "--duration",
             "9", "--rps", "400", "-n", "demo-dashboard", "--dashboard", str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        )  # fmt: skip
        seen: list[int] = []

        def two_workers() -> bool:
            try:
                workers = httpx.get(f"http://127.0.0.1:{port}/api/workers", timeout=2).json()
            except httpx.HTTPError:
                return False
            seen.append(len(workers["workers"]))
            return len(workers["workers"]) == 2

        try:
            assert wait_until(two_workers, 60, 0.2), f"worker counts seen: {seen}"
            output, errors = demo.communicate(timeout=180)
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.communicate(timeout=30)
        assert demo.returncode == 0, errors[-2000:]
        assert f"dashboard: http://127.0.0.1:{port}/ (open it" in output
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/api/workers", timeout=2)
