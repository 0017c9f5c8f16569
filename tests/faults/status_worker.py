"""A worker process for the fault tests: follows a namespace and reports on request.

    python -m tests.faults.status_worker URL NAMESPACE

Prints `ready` once synced (or `not-ready` and exits 1), then answers every line on stdin
with one JSON line: the client's `status()` and what it serves for each flag (`values`).
It exits when stdin closes. The test can SIGSTOP and SIGCONT it between questions.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import msgspec
import structlog

from flagsync import FlagClient

OPTIONS: dict[str, Any] = {
    "check_interval_s": 0.05,
    "stale_after_s": 0.5,
    "ping_interval_s": 0.2,
    "liveness_timeout_s": 0.6,
    "socket_timeout_s": 0.5,
    "connect_timeout_s": 0.5,
    "heartbeat_interval_s": 0.2,
    "backoff_max_s": 0.2,
}
"""Short deadlines; the bad-input tests give their in-process clients the same."""


def report(client: FlagClient) -> str:
    """One JSON line: status and served values (the variant's value, None for no flag)."""
    values = {key: client.variation(key, {"key": "user-42"}) for key in sorted(client.keys())}
    return json.dumps({"status": msgspec.to_builtins(client.status()), "values": values})


def main(argv: list[str]) -> int:
    """Follow `argv[0]`'s namespace `argv[1]` and answer status questions on stdin."""
    url, namespace = argv
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout answers
    with FlagClient.connect(url, namespace, **OPTIONS) as client:
        if not client.wait_ready(10):
            print("not-ready", flush=True)
            return 1
        print("ready", flush=True)
        for _ in sys.stdin:
            print(report(client), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
