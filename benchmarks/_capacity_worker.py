"""One process of simulated workers for the capacity benchmark (run by `benchmarks.capacity`).

    python -m benchmarks._capacity_worker '<json settings>'

Starts `count` real `FlagClient.connect_async` clients on one asyncio loop, in batches
(each batch ready before the next starts, so start-up is not a connection storm), and
evaluates the benchmark flag once a second in each, as a serving worker would. With
`track_outcomes` each also records one outcome a second (`client.track`), so its metrics
reporter flushes and holds its connection, as in a guarded rollout.

It talks to its parent in JSON lines: stdout carries one `{"event": "ready", ...}` line
once every client is ready, then one reply per request read from stdin:

- `{"op": "wait", "revision": R, "timeout_s": T}`: until every client has applied R (or
  T passes); reply with each client's first wall-clock time (ns) at a revision >= R.
- `{"op": "status"}`: the clients' summed sync counters.
- `{"op": "stop"}` (or stdin closing): stop every client, reply `{"event": "closed"}`.

Logs (warnings and up) go to stderr as JSON lines; the parent counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import structlog

from flagsync import FlagClient

FLAG = "capacity-flag"
"""The one flag of the benchmark namespace (seeded by the parent)."""
_POLL_S = 0.005


def raise_open_files_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to its hard limit; the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


@dataclass
class Settings:
    """What the parent asks of this process (the JSON of argv[1])."""

    urls: list[str]
    """Nodes to follow, assigned round-robin by global client index."""
    namespace: str
    count: int
    first_index: int = 0
    presence_url: str | None = None
    batch: int = 50
    track_outcomes: bool = False
    ready_timeout_s: float = 60.0


@dataclass
class Workers:
    """The clients of this process and what they have applied."""

    settings: Settings
    clients: list[FlagClient | None] = field(default_factory=list)
    applied: list[dict[int, int]] = field(default_factory=list)
    """Per client: revision -> wall-clock ns at which it was first swapped in."""
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.clients = [None] * self.settings.count
        self.applied = [{} for _ in range(self.settings.count)]

    async def follow(self, index: int) -> None:
        """One simulated worker: connect, record every swap, serve until stopped."""
        settings = self.settings
        number = settings.first_index + index
        url = settings.urls[number % len(settings.urls)]
        record = self.applied[index]

        def note(revision: int, _keys: frozenset[str]) -> None:
            record.setdefault(revision, time.time_ns())

        options: dict[str, Any] = {}
        if settings.presence_url is not None:
            options["presence_url"] = settings.presence_url
        try:
            async with FlagClient.connect_async(url, settings.namespace, **options) as client:
                client.add_listener(note)
                self.clients[index] = client
                await self.stop.wait()
        except Exception as error:  # noqa: BLE001 - reported to the parent, counted there
            self.errors.append(f"{type(error).__name__}: {error}")

    def ready(self, index: int) -> bool:
        """True once client `index` completed its first sync."""
        client = self.clients[index]
        return client is not None and client.wait_ready(0)

    async def evaluate(self) -> None:
        """Evaluate the flag (and track an outcome) once a second in every client."""
        track = self.settings.track_outcomes
        while not self.stop.is_set():
            for index, client in enumerate(self.clients):
                if client is not None:
                    context = {"targetingKey": f"user-{index}"}
                    client.variation(FLAG, context, "off")
                    if track:
                        client.track(FLAG, context, "latency_ms", 100.0 + index % 50)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 1.0)

    def applied_at(self, index: int, revision: int) -> int | None:
        """Client `index`'s first wall-clock ns at a revision >= `revision` (None: not yet)."""
        times = [at for seen, at in self.applied[index].items() if seen >= revision]
        return min(times) if times else None

    def status(self) -> dict[str, Any]:
        """The clients' sync counters, summed, and their states, counted."""
        totals: Counter[str] = Counter()
        states: Counter[str] = Counter()
        for client in self.clients:
            if client is None:
                states["not_started"] += 1
                continue
            status = client.status()
            states[str(status.state.value)] += 1
            totals["reconnects"] += status.reconnects
            totals["resyncs"] += status.resyncs
            totals["applied_changes"] += status.applied_changes
            totals["state_diverged"] += status.state_diverged
            totals["presence_errors"] += status.presence_error is not None
            totals["disconnected"] += not status.connected
        return {**totals, "states": dict(states), "errors": len(self.errors)}


async def _ramp(fleet: Workers, tasks: list[asyncio.Task[None]]) -> dict[str, Any]:
    """Start the clients batch by batch, each batch ready before the next starts."""
    settings = fleet.settings
    started = time.monotonic()
    for first in range(0, settings.count, settings.batch):
        batch = range(first, min(first + settings.batch, settings.count))
        tasks.extend(asyncio.create_task(fleet.follow(index)) for index in batch)
        deadline = time.monotonic() + settings.ready_timeout_s
        while not all(fleet.ready(index) for index in batch):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
    ready = sum(fleet.ready(index) for index in range(settings.count))
    return {
        "event": "ready",
        "ready": ready,
        "count": settings.count,
        "ramp_s": round(time.monotonic() - started, 2),
        "errors": fleet.errors[:5],
    }


async def _wait(fleet: Workers, revision: int, timeout_s: float) -> dict[str, Any]:
    """Reply to a `wait` request: each client's first time at `revision` or later."""
    deadline = time.monotonic() + timeout_s
    pending = set(range(fleet.settings.count))
    while pending and time.monotonic() < deadline:
        pending = {index for index in pending if fleet.applied_at(index, revision) is None}
        if pending:
            await asyncio.sleep(_POLL_S)
    times = [fleet.applied_at(index, revision) for index in range(fleet.settings.count)]
    return {"revision": revision, "applied": sum(t is not None for t in times), "times_ns": times}


def _read_requests(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str]) -> None:
    """stdin lines onto the loop's queue, then "" at end of input (a thread)."""
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line)
    loop.call_soon_threadsafe(queue.put_nowait, "")


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve(settings: Settings) -> None:
    """Ramp up, report ready, answer requests until told to stop; then close every client."""
    fleet = Workers(settings)
    tasks: list[asyncio.Task[None]] = []
    _reply(await _ramp(fleet, tasks))
    evaluator = asyncio.create_task(fleet.evaluate())
    queue: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    threading.Thread(target=_read_requests, args=(loop, queue), daemon=True).start()
    while True:
        line = await queue.get()
        request = json.loads(line) if line.strip() else {"op": "stop"}
        if request["op"] == "wait":
            _reply(await _wait(fleet, int(request["revision"]), float(request["timeout_s"])))
        elif request["op"] == "status":
            _reply(fleet.status())
        else:
            break
    fleet.stop.set()
    await asyncio.wait([*tasks, evaluator], timeout=30)
    _reply({"event": "closed", "errors": len(fleet.errors)})


def main() -> None:
    """Entry point: settings from argv[1] (JSON)."""
    raise_open_files_limit()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    asyncio.run(serve(Settings(**json.loads(sys.argv[1]))))


if __name__ == "__main__":
    main()
