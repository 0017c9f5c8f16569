"""Helpers of the dashboard tests: flags with hostile text, presence records, an HTTP
client on the running dashboard, and reading a Server-Sent Events stream."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import httpx

from flagsync._codec import WorkerInfo, encode_presence
from flagsync.store import StoreKeys
from tests.integration.support import wait_until as poll_until

ROOT: Final = Path(__file__).resolve().parents[2]
EXAMPLE: Final = ROOT / "examples" / "flags.yaml"
HOSTILE: Final = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2">'


def hostile_flag() -> dict[str, Any]:
    """A flag whose description and variant values are markup."""
    return {
        "description": f"evil {HOSTILE}",
        "variants": {"on": HOSTILE, "off": "plain"},
        "off": "off",
        "rules": [
            {"name": "r1", "when": [{"attr": "email", "op": "in", "values": [HOSTILE]}],
             "serve": {"rollout": {"on": 10, "off": 90}}},
        ],
        "default": "off",
    }  # fmt: skip


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.01) -> bool:
    """`tests.integration.support.wait_until`, polling every 10 ms unless told otherwise
    (most predicates here are HTTP requests or store scans)."""
    return poll_until(predicate, timeout_s, interval_s)


def fake_presence(raw: Any, namespace: str, count: int, revision: int, epoch: str) -> None:
    """`count` presence records as live workers would write them (for load tests)."""
    keys = StoreKeys(namespace)
    now_ms = int(time.time() * 1000)
    with raw.pipeline(transaction=False) as pipe:
        for index in range(count):
            worker_id = f"load-{index:04d}"
            record = WorkerInfo(
                id=worker_id, host="loadhost", pid=10_000 + index, namespace=namespace,
                epoch=epoch, revision=revision, applied_us=now_ms * 1000, published_us=0,
                started_ms=now_ms, heartbeat_ms=now_ms, state="ready",
            )  # fmt: skip
            pipe.set(keys.worker(worker_id), encode_presence(record), px=120_000)
        pipe.execute()


def api(base: str, token: str | None = None) -> httpx.Client:
    """An HTTP client on the dashboard (bearer token when given)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base, headers=headers, timeout=10.0)


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, data) pairs of an open event stream, as they arrive."""
    event, data = "message", []
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data.append(line.split(":", 1)[1].strip())
        elif not line and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []
