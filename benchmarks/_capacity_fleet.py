"""The simulated workers' processes, seen from the capacity benchmark: start, ask, stop.

Each process is `python -m benchmarks._capacity_worker` with its share of the workers.
Requests go to every process at once (a JSON line on stdin) and their replies are read
in parallel with a deadline, so one stuck process fails the run instead of hanging it.
Every process is stopped by its PID at the end, whatever happened.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from benchmarks._capacity_nodes import cpu_seconds


class WorkerProcesses:
    """`workers` simulated workers spread over `processes` processes."""

    def __init__(
        self,
        workers: int,
        processes: int,
        *,
        urls: list[str],
        namespace: str,
        presence_url: str | None = None,
        track_outcomes: bool = False,
    ) -> None:
        self.workers = workers
        self._settings = []
        first = 0
        for number in range(processes):
            count = workers // processes + (number < workers % processes)
            self._settings.append(
                {
                    "urls": urls,
                    "namespace": namespace,
                    "count": count,
                    "first_index": first,
                    "presence_url": presence_url,
                    "track_outcomes": track_outcomes,
                }
            )
            first += count
        self._processes: list[subprocess.Popen[str]] = []
        self._logs: list[IO[str]] = []
        self._pool = ThreadPoolExecutor(max_workers=max(1, processes))

    def __enter__(self) -> WorkerProcesses:
        for settings in self._settings:
            log = tempfile.TemporaryFile("w+", encoding="utf-8")  # closed in stop()
            self._logs.append(log)
            self._processes.append(
                subprocess.Popen(  # noqa: S603 - our own module, our own arguments
                    [sys.executable, "-m", "benchmarks._capacity_worker", json.dumps(settings)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    cwd=Path(__file__).resolve().parents[1],
                )
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None:  # interrupted or failed: no polite close of every client
            for process in self._processes:
                if process.poll() is None:
                    process.kill()
        self.stop()

    @property
    def pids(self) -> list[int]:
        """The process ids of the worker processes."""
        return [process.pid for process in self._processes]

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by all worker processes together."""
        return sum(cpu_seconds(pid) for pid in self.pids)

    def threads(self) -> int:
        """Threads running in all worker processes together (/proc/<pid>/status)."""
        total = 0
        for pid in self.pids:
            with open(f"/proc/{pid}/status", encoding="ascii") as status:
                total += next(
                    int(line.split()[1]) for line in status if line.startswith("Threads:")
                )
        return total

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Every process's ramp-up report, summed: workers ready, slowest ramp, errors."""
        replies = self._read_all(timeout_s)
        return {
            "ready": sum(reply["ready"] for reply in replies),
            "ramp_s": max(reply["ramp_s"] for reply in replies),
            "errors": [error for reply in replies for error in reply["errors"]],
        }

    def ask(self, request: dict[str, Any], timeout_s: float) -> list[dict[str, Any]]:
        """Send `request` to every process; their replies, in process order."""
        line = json.dumps(request) + "\n"
        for process in self._processes:
            assert process.stdin is not None
            process.stdin.write(line)
            process.stdin.flush()
        return self._read_all(timeout_s)

    def status(self) -> dict[str, Any]:
        """The workers' sync counters and states, summed over the processes."""
        totals: Counter[str] = Counter()
        states: Counter[str] = Counter()
        for reply in self.ask({"op": "status"}, 30.0):
            states.update(reply.pop("states"))
            totals.update(reply)
        return {**dict(totals), "states": dict(states)}

    def stop(self) -> dict[str, int]:
        """Stop every process (asked, then killed by PID); the warnings they logged, by event."""
        for process in self._processes:
            if process.poll() is None and process.stdin is not None:
                try:
                    process.stdin.write(json.dumps({"op": "stop"}) + "\n")
                    process.stdin.close()
                except OSError:
                    pass  # already gone: killed below if needed
        for process in self._processes:
            try:
                process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
        events = self._logged_events()
        for log in self._logs:
            log.close()
        self._processes, self._logs = [], []
        self._pool.shutdown(wait=False, cancel_futures=True)
        return events

    def _read_all(self, timeout_s: float) -> list[dict[str, Any]]:
        futures = [self._pool.submit(_read_reply, process) for process in self._processes]
        replies = []
        for future, log in zip(futures, self._logs, strict=True):
            try:
                replies.append(future.result(timeout=timeout_s))
            except RuntimeError as error:
                log.seek(0)
                raise RuntimeError(f"{error}; its last log lines: {log.read()[-2000:]}") from error
        return replies

    def _logged_events(self) -> dict[str, int]:
        events: Counter[str] = Counter()
        for log in self._logs:
            log.seek(0)
            for line in log:
                try:
                    events[str(json.loads(line).get("event"))] += 1
                except (ValueError, AttributeError):
                    events["(not json)"] += 1
        return dict(events.most_common(8))


def _read_reply(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"worker process {process.pid} exited (code {process.poll()})")
    reply: dict[str, Any] = json.loads(line)
    return reply
