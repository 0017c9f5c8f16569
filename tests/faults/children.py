"""Separate processes for the fault suite: inference-like workers and a doomed publisher.

The parent side is `ChildProcess` (start, exchange protocol lines, kill, always reap).
The child side runs as `python -m tests.faults.children <role> ...`:

- `worker URL NAMESPACE FLAG OPTIONS_JSON`: follows the namespace with
  `FlagClient.connect` (its own subscriber thread, connections and presence key), says
  `ready`, then on each `measure` line times its own evaluations of FLAG and reports
  them; `exit` (or EOF) closes the client.
- `publisher URL NAMESPACE FLAGS`: writes revisions in a loop until killed; each is one
  bulk `apply` setting FLAGS counter flags to the same value, reported as `written`.

Protocol lines are `@@ <json>` on stdout; anything else there is ignored. Library logs
(warnings and above) go to stderr, which the parent keeps in a file for failure messages.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Final

PREFIX: Final = b"@@ "
ROOT: Final = Path(__file__).resolve().parents[2]


class ChildProcess:
    """One child of this module, with bounded waits on its protocol lines."""

    def __init__(self, role: str, args: list[str], stderr_path: Path) -> None:
        self.role = role
        self.stderr_path = stderr_path
        self._stderr: IO[bytes] = stderr_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.children", role, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.process.pid

    def expect(self, event: str, timeout_s: float) -> dict[str, Any]:
        """The next protocol line of kind `event` (earlier ones are skipped); fails the
        test with the child's stderr when it does not come within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            line = self.read_line(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(
                    f"{self.role} {self.pid}: no {event!r} within {timeout_s}s "
                    f"(exit code {self.process.poll()}); stderr:\n{self.stderr_tail()}"
                )
            if line.get("event") == event:
                return line

    def read_line(self, timeout_s: float) -> dict[str, Any] | None:
        """The next protocol line, or None on timeout or end of output."""
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout_s
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line, self._buffer = self._buffer[:newline], self._buffer[newline + 1 :]
                if line.startswith(PREFIX):
                    parsed: dict[str, Any] = json.loads(line[len(PREFIX) :])
                    return parsed
                continue
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                return None
            readable, _, _ = select.select([stdout], [], [], remaining_s)
            if not readable:
                return None
            chunk = os.read(stdout.fileno(), 65536)
            if not chunk:
                return None
            self._buffer += chunk

    def send(self, command: str) -> None:
        """Send one command line to the child."""
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(command.encode() + b"\n")
        stdin.flush()

    def kill(self) -> None:
        """SIGKILL the child (no cleanup of any kind) and reap it."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(5)

    def close(self, timeout_s: float = 5.0) -> int:
        """Ask the child to exit, kill it if it does not, reap it; returns its exit code."""
        if self.process.poll() is None:
            try:
                self.send("exit")
                assert self.process.stdin is not None
                self.process.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        self._stderr.close()
        return self.process.returncode

    def stderr_tail(self) -> str:
        self._stderr.flush()
        try:
            return self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


# -- the child's side ------------------------------------------------------------------


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.buffer.write(PREFIX + json.dumps({"event": event, **fields}).encode() + b"\n")
    sys.stdout.buffer.flush()


def _quiet_logs() -> None:
    import structlog

    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


def _measure(client: Any, flag: str) -> dict[str, Any]:
    """Time this process's own evaluations of `flag` (ns resolution, after a warm-up)."""
    context = {"key": "user-42", "plan": "paid"}
    for _ in range(500):
        client.variation(flag, context, "default")
    samples_ns: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(5000):
        started = clock()
        client.variation(flag, context, "default")
        samples_ns.append(clock() - started)
    samples_ns.sort()
    detail = client.detail(flag, context, "default")
    status = client.status()
    return {
        "value": detail.value,
        "reason": str(detail.reason),
        "revision": status.revision,
        "state": str(status.state),
        "median_us": statistics.median(samples_ns) / 1000,
        "p99_us": samples_ns[int(len(samples_ns) * 0.99)] / 1000,
    }


def _worker(url: str, namespace: str, flag: str, options_json: str) -> int:
    from flagsync import FlagClient

    client = FlagClient.connect(url, namespace, **json.loads(options_json))
    try:
        if not client.wait_ready(15):
            _emit("failed", status=str(client.status()))
            return 2
        status = client.status()
        _emit("ready", pid=os.getpid(), worker_id=status.worker_id, revision=status.revision)
        for raw in sys.stdin:
            command = raw.strip()
            if command == "measure":
                _emit("measured", pid=os.getpid(), **_measure(client, flag))
            elif command == "exit":
                break
        return 0
    finally:
        client.close()


def _publisher(url: str, namespace: str, flags: int) -> int:
    from flagsync.publisher import Publisher
    from tests.integration.support import counter_flag

    with Publisher(url, namespace, actor="doomed-publisher") as publisher:
        value = 0
        while True:  # until SIGKILLed
            value += 1
            document = {"flags": {f"f{index}": counter_flag(value) for index in range(flags)}}
            revision = publisher.apply(document)
            _emit("written", revision=revision, value=value)


def main(argv: list[str]) -> int:
    _quiet_logs()
    role, *args = argv
    if role == "worker":
        url, namespace, flag, options_json = args
        return _worker(url, namespace, flag, options_json)
    if role == "publisher":
        url, namespace, flags = args
        return _publisher(url, namespace, int(flags))
    raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
