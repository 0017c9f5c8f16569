"""Measurements against the issue's targets (reported, asserted only loosely): page loads
with 1,000 flags and 200 presence records, change-to-page latency, the process's RSS.

The dashboard runs as its own process (`flagsync dashboard`), so its RSS is its own.
Set `FLAGSYNC_DASHBOARD_FIGURES=path.json` to keep the figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flagsync.publisher import Publisher
from flagsync.server import ServerProcess, free_port
from tests.dashboard.support import fake_presence, wait_until
from tests.optional import require_part

HOLD_S = float(os.environ.get("FLAGSYNC_DASHBOARD_HOLD_S", "20"))
"""How long 5 pages stay open for the memory figure (the issue's target says 600)."""
pytestmark = [
    pytest.mark.requires("browser"),
    pytest.mark.slow,
    pytest.mark.timeout(600 + HOLD_S),
]

FLAGS = 1000
WORKERS = 200
LOADS = 20


def many_flags(count: int) -> dict[str, Any]:
    """`count` flags shaped like the model flag: a targeting rule, a split, a default."""
    return {
        "flags": {
            f"flag-{index:04d}": {
                "description": f"generated flag {index}",
                "variants": {"current": "gpt-4o", "candidate": "gpt-4.1"},
                "off": "current",
                "rules": [
                    {"name": "staff", "when": [{"attr": "email", "op": "ends_with",
                                                "values": ["@acme.com"]}], "serve": "candidate"},
                    {"name": "paid", "when": [{"attr": "plan", "op": "in", "values": ["paid"]}],
                     "serve": {"rollout": {"candidate": 20, "current": 80}}},
                ],
                "default": "current",
            }
            for index in range(count)
        }
    }  # fmt: skip


def rss_mb(pid: int) -> float:
    """The resident set size of a process, in MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank) of a sample."""
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


@pytest.fixture
def dashboard_process(server: ServerProcess, namespace: str) -> Iterator[tuple[str, int]]:
    """`flagsync dashboard` as a subprocess on a free loopback port: (url, pid)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "flagsync.cli", "dashboard", "--url", server.url,
         "-n", namespace, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            try:
                return httpx.get(f"{url}/api/workers", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(answers, 20, 0.1), "the dashboard did not start"
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


class TestTargets:
    """1,000 flags, 200 workers: load times, change-to-page latency, memory."""

    def test_measure(
        self, server: ServerProcess, namespace: str, dashboard_process: tuple[str, int]
    ) -> None:
        """Page p95 (navigation timing, warm), change-to-page latency and RSS are
        measured and reported; they must stay within generous bounds."""
        chromium = require_part("browser")
        from playwright.sync_api import sync_playwright

        url, pid = dashboard_process
        figures: dict[str, Any] = {"flags": FLAGS, "workers": WORKERS}
        with Publisher(server.url, namespace, actor="load") as store:
            revision = store.apply(many_flags(FLAGS), reason="load")
            fake_presence(store.client, namespace, WORKERS, revision, store.revision()[0] or "")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(chromium), args=["--no-sandbox"]
                )
                try:
                    figures |= self._loads(browser, url)
                    figures |= self._latency(browser, url, store)
                    figures |= self._memory(browser, url, pid, store)
                finally:
                    browser.close()
        print("\ndashboard figures:", json.dumps(figures, indent=1))
        if path := os.environ.get("FLAGSYNC_DASHBOARD_FIGURES"):
            Path(path).write_text(json.dumps(figures, indent=1))
        assert all(figures[f"p95_ms_{name}"] < 2000 for name in ("flags", "flag", "workers"))
        assert figures["change_to_page_ms_max"] < 2000
        assert figures["rss_mb_after"] < 300

    def _loads(self, browser: Any, url: str) -> dict[str, float]:
        page = browser.new_page()
        found: dict[str, float] = {}
        for name, path in (("flags", "/"), ("flag", "/flags/flag-0500"), ("workers", "/workers")):
            page.goto(url + path)  # warm
            durations = []
            for _ in range(LOADS):
                page.goto(url + path)
                durations.append(
                    page.evaluate("performance.getEntriesByType('navigation')[0].duration")
                )
            found[f"p95_ms_{name}"] = round(p95(durations), 1)
            found[f"median_ms_{name}"] = round(statistics.median(durations), 1)
        page.close()
        return found

    def _latency(self, browser: Any, url: str, store: Publisher) -> dict[str, float]:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_function("document.body.dataset.stream === 'open'")
        latencies = []
        for index in range(10):
            key = f"flag-{index * 5:04d}"  # on the first page (50 flags a page)
            store.kill(key, reason="latency probe")
            written = time.monotonic()
            page.wait_for_function(
                f"document.querySelector('#flag-{key}').textContent.includes('KILLED')",
                polling=5,
                timeout=10_000,
            )
            latencies.append((time.monotonic() - written) * 1000)
        page.close()
        return {
            "change_to_page_ms_median": round(statistics.median(latencies), 1),
            "change_to_page_ms_max": round(max(latencies), 1),
        }

    def _memory(self, browser: Any, url: str, pid: int, store: Publisher) -> dict[str, float]:
        before = rss_mb(pid)
        pages = [browser.new_page() for _ in range(5)]
        paths = ["/", "/workers", "/flags/flag-0001", "/", "/workers"]
        for page, path in zip(pages, paths, strict=True):
            page.goto(url + path)
        hold_s = HOLD_S
        deadline = time.monotonic() + hold_s
        writes = 0
        while time.monotonic() < deadline:
            store.ramp("flag-0001", "candidate", writes % 100, "paid", reason="memory probe")
            writes += 1
            time.sleep(0.5)
        after = rss_mb(pid)
        for page in pages:
            page.close()
        return {
            "rss_mb_before": round(before, 1),
            "rss_mb_after": round(after, 1),
            "hold_s": hold_s,
            "writes_during_hold": writes,
        }
