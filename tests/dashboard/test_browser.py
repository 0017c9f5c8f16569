"""The pages in a real browser (Debian's Chromium driven by Playwright): the kill switch
with its convergence, two operators on one flag, reconnects, escaping, a guard breach
appearing live, and the README's screenshots."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flagsync import FlagClient
from flagsync.controller import RolloutController, RolloutPlan
from flagsync.dashboard._config import DashboardConfig
from flagsync.dashboard.serve import DashboardServer
from flagsync.metrics import MetricStat, encode_series, flush_commands
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess, free_port
from tests.dashboard.conftest import DashboardFactory
from tests.dashboard.support import HOSTILE, hostile_flag, wait_until

pytestmark = pytest.mark.requires("browser")

MODEL = "llm-model-version"


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    """`new_page()`: a page in a fresh context that accepts confirmations (a prompt gets
    "from the browser" as its reason); every context is closed after the test."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept("from the browser"))
        page.set_default_timeout(10_000)
        return page

    try:
        yield make
    finally:
        for context in contexts:
            context.close()


def text_of(page: Any, selector: str) -> str:
    """The visible text of the first element matching `selector` ('' if none)."""
    found = page.query_selector(selector)
    return "" if found is None else str(found.inner_text())


class TestKillSwitch:
    """Kill from the page; every worker applies; the page says so within 1 s."""

    def test_kill_from_the_page_shows_convergence_within_one_second(
        self,
        dashboard: DashboardServer,
        store: Publisher,
        workers: list[FlagClient],
        new_page: Any,
    ) -> None:
        """The Kill button (after its confirmation) writes, the three live workers serve
        `off`, and the page shows "reached 3/3 workers" and "3/3 workers applied r2"."""
        page = new_page()
        page.goto(f"{dashboard.url}/flags/{MODEL}")
        page.wait_for_function("document.body.dataset.stream === 'open'")
        page.get_by_label("Reason").first.fill("thumbs-down up 3%")
        started = time.monotonic()
        page.get_by_role("button", name="Kill", exact=True).click()
        page.wait_for_selector("#outcome .propagation", timeout=5_000)
        page.wait_for_function(
            "document.getElementById('convergence').textContent.includes('3/3 workers applied r2')",
            timeout=5_000,
        )
        elapsed = time.monotonic() - started
        assert "reached 3/3 workers in" in text_of(page, "#outcome")
        assert elapsed <= 1.0, f"convergence shown after {elapsed:.3f} s"
        assert {c.detail(MODEL, {"key": "u"}).reason for c in workers} == {"DISABLED"}
        entry = store.history(MODEL, limit=1)[0]
        assert (entry.actor, entry.reason) == ("dash-operator", "thumbs-down up 3%")
        assert page.get_by_role("button", name="Enable", exact=True).count() == 1

    def test_kill_from_the_flags_table_asks_for_a_reason(
        self, dashboard: DashboardServer, store: Publisher, new_page: Any
    ) -> None:
        """The table's Kill button prompts for a reason, writes it to the change log, and
        the row turns KILLED."""
        page = new_page()
        page.goto(f"{dashboard.url}/")
        page.wait_for_function("document.body.dataset.stream === 'open'")
        row = page.locator(f"#flag-{MODEL}")
        row.get_by_role("button", name="Kill", exact=True).click()
        page.wait_for_selector("#outcome")
        assert store.history(MODEL, limit=1)[0].reason == "from the browser"
        assert not store.get(MODEL).flag.enabled  # type: ignore[union-attr]


class TestTwoOperators:
    """A stale screen never overwrites a colleague's change."""

    def test_second_page_gets_the_conflict_view_with_the_diff(
        self, dashboard: DashboardServer, store: Publisher, new_page: Any
    ) -> None:
        """Pages A and B show v1; A kills; B, mid-edit of a ramp, submits: B sees "Not
        written" with `enabled: true → false` and A's reason, and nothing is written."""
        first, second = new_page(), new_page()
        for page in (first, second):
            page.goto(f"{dashboard.url}/flags/{MODEL}")
            page.wait_for_function("document.body.dataset.stream === 'open'")
        ramp = second.get_by_role("form", name="Ramp rule paid-ramp")
        ramp.get_by_label("Percent").fill("50")
        ramp.get_by_label("Reason").fill("quality looks fine")
        first.get_by_label("Reason").first.fill("colleague: kill it")
        first.get_by_role("button", name="Kill", exact=True).click()
        first.wait_for_selector("#outcome")
        ramp.get_by_role("button", name="Ramp").click()
        second.wait_for_selector("#conflict")
        conflict = text_of(second, "#conflict")
        assert "Not written" in conflict
        assert "colleague: kill it" in conflict
        diff_row = second.locator("#conflict table.diff tbody tr").first.inner_text()
        assert diff_row.split() == ["enabled", "true", "false"]
        stored = store.get(MODEL)
        assert stored is not None
        assert stored.version == 2
        assert stored.flag.rules[1].serve.rollout == {"candidate": 20, "current": 80}  # type: ignore[union-attr]


class TestReconnects:
    """The page survives a dashboard restart and a Redis restart, stale meanwhile."""

    def test_dashboard_restart(
        self, server: ServerProcess, namespace: str, store: Publisher, new_page: Any
    ) -> None:
        """While the dashboard is down the page says STALE; once it is back the stream
        reconnects by itself and later changes appear without a reload."""
        port = free_port()
        config = DashboardConfig(server.url, namespace, port=port)
        page = new_page()
        with DashboardServer(config) as first:
            page.goto(f"{first.url}/")
            page.wait_for_function("document.body.dataset.stream === 'open'")
        page.wait_for_function(
            "document.getElementById('connection').textContent.includes('STALE')"
        )
        with DashboardServer(config):
            page.wait_for_function("document.body.dataset.stream === 'open'", timeout=10_000)
            store.kill(MODEL, reason="while reconnected")
            page.wait_for_function(
                f"document.querySelector('#flag-{MODEL}').textContent.includes('KILLED')"
            )
            assert "live" in text_of(page, "#connection")

    def test_redis_restart(
        self, make_dashboard: DashboardFactory, namespace: str, new_page: Any
    ) -> None:
        """While Redis is down the page says STALE with the reason; after the restart (an
        empty store re-seeded) it is live again and shows the re-seeded flags."""
        process = ServerProcess(kind="valkey")
        try:
            process.start()
            with Publisher(process.url, namespace) as publisher:
                publisher.put("seeded", {"variants": {"a": 1}, "off": "a", "default": "a"})
            running = make_dashboard(url=process.url)
            page = new_page()
            page.goto(f"{running.url}/")
            page.wait_for_function("document.body.dataset.stream === 'open'")
            process.stop()
            page.wait_for_function(
                "document.getElementById('connection').textContent.includes('STALE')"
            )
            process.start()
            with Publisher(process.url, namespace) as publisher:
                publisher.put("reseeded", {"variants": {"a": 1}, "off": "a", "default": "a"})
            page.wait_for_function("document.querySelector('#flag-reseeded') !== null")
            assert "live" in text_of(page, "#connection")
        finally:
            process.close()


class TestHostileText:
    """Markup in flag text never runs in the browser."""

    def test_script_in_names_descriptions_values_and_reasons_does_not_run(
        self, dashboard: DashboardServer, store: Publisher, new_page: Any
    ) -> None:
        """Every page shows the text literally and no injected script or handler runs."""
        store.put("evil", hostile_flag(), reason=HOSTILE)
        store.kill("evil", reason=HOSTILE)
        page = new_page()
        for path in ("/", "/flags/evil", "/workers"):
            page.goto(f"{dashboard.url}{path}")
            page.wait_for_load_state("load")
            assert page.evaluate("window.__pwned === undefined")
        page.goto(f"{dashboard.url}/flags/evil")
        assert HOSTILE in text_of(page, "main")


def write_metrics(
    store: Publisher, candidate_thumbs: float, count: int = 300, candidate_count: int = 300
) -> None:
    """One metrics flush for the model flag: the candidate's thumbs-down rate as given,
    the control's 3 %, costs and latencies per variant."""
    fields: dict[str, str] = {}
    for variant, thumbs, cost, latency, samples in (
        ("candidate", candidate_thumbs, 0.0074, 620.0, candidate_count),
        ("current", 0.03, 0.0094, 540.0, count),
    ):
        stats = {name: MetricStat() for name in ("exposures", "thumbs_down", "cost", "latency_ms")}
        for index in range(samples):
            stats["exposures"].add(1.0)
            stats["thumbs_down"].add(1.0 if index < thumbs * samples else 0.0)
            stats["cost"].add(cost)
            stats["latency_ms"].add(latency * (0.6 + (index % 10) / 10))
        for name, stat in stats.items():
            fields |= encode_series(variant, name, stat)
    now_ms = int(time.time() * 1000)
    for command in flush_commands(store.keys, {MODEL: fields}, 3_600_000, now_ms):
        store.client.execute_command(*command)


class TestGuardedRollout:
    """A guard breach appears on the open page as it happens."""

    def test_breach_shows_live(
        self, dashboard: DashboardServer, store: Publisher, new_page: Any
    ) -> None:
        """The controller's rollback (a kill) appears on the open flag page with the
        breached guard, without a reload."""
        controller = RolloutController(store, MODEL)
        controller.set_plan(
            RolloutPlan(variant="candidate", control="current", rule="paid-ramp",
                        steps=[5, 25], hold_s=0, window_s=60, min_samples=100,
                        guards=["thumbs_down_rate(candidate) <= thumbs_down_rate(current) * 1.5"])
        )  # fmt: skip
        controller.tick()  # start at 5 %
        page = new_page()
        page.goto(f"{dashboard.url}/flags/{MODEL}")
        page.wait_for_function("document.body.dataset.stream === 'open'")
        assert "Guarded rollout: running" in text_of(page, "#live")
        write_metrics(store, candidate_thumbs=0.2)
        assert controller.tick().decision == "rollback"
        page.wait_for_function(
            "document.querySelector('#rollout-h').textContent.includes('rolled_back')"
        )
        decisions = text_of(page, "table.decisions")
        assert "rollback" in decisions
        assert "guard breached" in decisions
        assert "KILLED" in text_of(page, "#live")


class TestScreenshots:
    """The README's pictures, from the demo's flags, live workers and their metrics."""

    def test_take_the_three_pages(
        self,
        server: ServerProcess,
        make_dashboard: DashboardFactory,
        new_page: Any,
        tmp_path: Path,
    ) -> None:
        """Flags, flag and workers pages with the demo's data are photographed (into
        `$FLAGSYNC_SCREENSHOTS`, e.g. `docs`, for the README; else a temporary folder)."""
        from flagsync.demo import DEMO_FLAGS

        folder = Path(os.environ.get("FLAGSYNC_SCREENSHOTS") or tmp_path)

        namespace = "demo"  # this module's own server: the pictures show the demo's name
        guards = [
            "thumbs_down_rate(candidate) <= thumbs_down_rate(current) * 1.5",
            "cost_per_request(candidate) <= 0.0085",
        ]
        clients: list[FlagClient] = []
        with Publisher(server.url, namespace, actor="alice") as store:
            store.apply(DEMO_FLAGS, prune=True, reason="initial rollout plan")
            try:
                for index in range(4):
                    client = FlagClient.connect(server.url, namespace, worker_id=f"gpu-{index}")
                    clients.append(client)
                    assert client.wait_ready(10)
                store.ramp(MODEL, "candidate", 5, "paid-ramp", reason="staff happy")
                controller = RolloutController(store, MODEL)
                controller.set_plan(
                    RolloutPlan(variant="candidate", control="current", rule="paid-ramp",
                                steps=[5, 25, 50, 100], hold_s=600, window_s=300,
                                min_samples=200, guards=guards)
                )  # fmt: skip
                controller.tick()  # step 1 starts counting samples now
                for thumbs in (0.03, 0.035, 0.03, 0.04, 0.045, 0.06, 0.07, 0.08):
                    write_metrics(store, thumbs, count=600, candidate_count=240)
                    time.sleep(0.3)
                controller.tick()
                revision = store.revision()[1]
                assert wait_until(
                    lambda: sum(w.revision == revision for w in store.workers()) == 4, 10
                )
                running = make_dashboard(url=server.url, namespace=namespace, actor="alice")
                page = new_page()
                folder.mkdir(parents=True, exist_ok=True)
                for path, name in (("/", "flags"), (f"/flags/{MODEL}", "flag"),
                                   ("/workers", "workers")):  # fmt: skip
                    page.goto(f"{running.url}{path}")
                    page.wait_for_function("document.body.dataset.stream === 'open'")
                    page.wait_for_function(
                        "document.getElementById('connection').textContent.includes('live')"
                    )
                    target = folder / f"dashboard-{name}.png"
                    page.screenshot(path=str(target), full_page=True)
                    assert target.stat().st_size > 10_000
            finally:
                for client in clients:
                    client.close()
