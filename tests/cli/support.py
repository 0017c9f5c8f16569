"""Run the real `flagsync` console script in a subprocess, and arrange stores by hand.

The CLI is tested from the outside, as an operator or a script uses it: the installed
entry point (or `python -m flagsync.cli` when the venv has no script), the test
process's environment with `REDIS_URL`/`FLAGSYNC_NAMESPACE` replaced by the test's, a
timeout on every run, and assertions on the exit code, stdout and stderr.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec
import redis

from flagsync.loader import load_flags
from flagsync.publisher import Publisher
from flagsync.store import StoreKeys

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "flags.yaml"
INVALID = ROOT / "tests" / "data" / "invalid"
SCRIPT = Path(sys.executable).with_name("flagsync")
"""The console script the venv installed (entry point `flagsync.cli:main`)."""

RUN_TIMEOUT_S = 30.0
_ENV_NAMES = ("REDIS_URL", "FLAGSYNC_NAMESPACE")


def command_prefix() -> list[str]:
    """The installed script when it exists (so the entry point is what runs), else `-m`."""
    if SCRIPT.exists():
        return [str(SCRIPT)]
    return [sys.executable, "-m", "flagsync.cli"]


def example_document() -> dict[str, Any]:
    """The example file as plain data (loaded by flagsync: plain YAML 1.1 would read the
    `off:` keys as booleans)."""
    document: dict[str, Any] = load_flags(EXAMPLE).to_builtins()
    return document


@dataclass(frozen=True)
class Result:
    """What one run of the command left behind."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout parsed as one JSON document."""
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (
            f"flagsync {' '.join(self.args)} -> exit {self.code}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


class Cli:
    """`cli("list", "--json")`: runs the real command against one server and namespace."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace

    def env(self, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """The subprocess environment: ours without flagsync's settings, then this test's."""
        env = {name: value for name, value in os.environ.items() if name not in _ENV_NAMES}
        env["REDIS_URL"] = self.url
        env["FLAGSYNC_NAMESPACE"] = self.namespace
        env["PYTHONUNBUFFERED"] = "1"
        for name, value in (overrides or {}).items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def __call__(
        self,
        *args: str,
        env: Mapping[str, str | None] | None = None,
        timeout_s: float = RUN_TIMEOUT_S,
    ) -> Result:
        """Run `flagsync *args` to completion."""
        completed = subprocess.run(
            [*command_prefix(), *args],
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        return Result(args, completed.returncode, completed.stdout, completed.stderr)

    def ok(self, *args: str, env: Mapping[str, str | None] | None = None) -> Result:
        """Run `flagsync *args` and require exit code 0."""
        result = self(*args, env=env)
        assert result.code == 0, str(result)
        return result

    def start(self, *args: str) -> Background:
        """Start `flagsync *args` in the background (the caller waits for it or kills it)."""
        return Background(
            subprocess.Popen(
                [*command_prefix(), *args],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
            args,
        )


def stored_definition(publisher: Publisher, key: str) -> dict[str, Any]:
    """A flag's stored definition read in-process, in the shape `get --json` prints (for
    arranging and checking where the CLI's own `get` is not what a test is about)."""
    stored = publisher.get(key)
    assert stored is not None, f"no flag {key!r}"
    definition: dict[str, Any] = msgspec.to_builtins(stored.flag)
    return definition


def write_presence(
    url: str,
    namespace: str,
    worker_id: str,
    *,
    epoch: str,
    revision: int,
    ttl_ms: int = 30_000,
) -> None:
    """A worker's heartbeat key, written by hand as a foreign worker would (the wire format
    is a msgpack map of the presence fields), for a worker stuck at `revision`."""
    now_ms = int(time.time() * 1000)
    record = {
        "id": worker_id,
        "host": "stuck-host",
        "pid": 4242,
        "namespace": namespace,
        "epoch": epoch,
        "revision": revision,
        "applied_us": now_ms * 1000,
        "published_us": 0,
        "started_ms": now_ms,
        "heartbeat_ms": now_ms,
        "state": "ready",
    }
    with redis.Redis.from_url(url) as client:
        client.set(
            StoreKeys(namespace).worker(worker_id), msgspec.msgpack.encode(record), px=ttl_ms
        )


class Background:
    """A command running in the background; its stdout is read line by line as it comes."""

    def __init__(self, process: subprocess.Popen[str], args: tuple[str, ...]) -> None:
        self.process = process
        self.args = args
        self._lines: queue.Queue[str] = queue.Queue()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(process.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(process.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: IO[str] | None, is_stdout: bool) -> None:
        assert stream is not None
        for line in stream:
            if is_stdout:
                self._stdout.append(line)
                self._lines.put(line)
            else:
                self._stderr.append(line)
        stream.close()

    def read_line(self, timeout_s: float = 15.0) -> str:
        """The next stdout line, failing after `timeout_s`."""
        try:
            return self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(
                f"no output within {timeout_s} s from flagsync {' '.join(self.args)}; "
                f"stderr: {''.join(self._stderr)}"
            ) from None

    def wait(self, timeout_s: float = 15.0) -> Result:
        """Wait for the command to end (killed after `timeout_s`, failing the test)."""
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        for reader in self._readers:
            reader.join(timeout=5)
        return Result(self.args, code, "".join(self._stdout), "".join(self._stderr))

    def kill(self) -> None:
        """Kill the command if it still runs, and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=5)
        for reader in self._readers:
            reader.join(timeout=5)
