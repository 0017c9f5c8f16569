"""Web-server processes running the guide's recipes (docs/web-workers), on 127.0.0.1 free
ports, with bounded waits; every process is stopped by its PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

from flagsync.server import free_port

RECIPES: Final = Path(__file__).resolve().parents[2] / "docs" / "web-workers"


def children(pid: int) -> set[int]:
    """The direct child processes of `pid` (Linux /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        found.update(int(item) for item in text.split())
    return found


class WebServer:
    """A gunicorn or uvicorn master started from the recipes' folder; `stop()` sends it
    SIGTERM (graceful: workers run their exit hooks), SIGKILL after `stop_timeout_s`."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", *(arg.format(port=self.port) for arg in argv)]
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                command, cwd=RECIPES, env=full_env, stdout=sink, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        """The master's process id."""
        return self.process.pid

    def get(self, path: str = "", user: str = "user-42") -> dict[str, Any]:
        """One request; the JSON body."""
        request = urllib.request.Request(self.url + path, headers={"X-User": user})  # noqa: S310
        with urllib.request.urlopen(request, timeout=2.0) as response:  # noqa: S310 - loopback
            body: dict[str, Any] = json.loads(response.read())
            return body

    def text(self, path: str) -> str:
        """One request; the body as text."""
        with urllib.request.urlopen(self.url + path, timeout=2.0) as response:  # noqa: S310
            return str(response.read().decode())

    def wait_serving(self, timeout_s: float = 20.0) -> dict[str, Any]:
        """Wait until a request succeeds (or fail with the log)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}:\n{self.output()}")
            try:
                return self.get()
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise AssertionError(f"not serving after {timeout_s} s:\n{self.output()}")

    def output(self) -> str:
        """Everything the server wrote so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")

    def stop(self, stop_timeout_s: float = 15.0) -> int:
        """SIGTERM the master and wait; SIGKILL the group's stragglers after the timeout."""
        if self.process.poll() is None:
            workers = children(self.pid)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                for pid in workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.process.wait(5.0)
        return self.process.returncode
