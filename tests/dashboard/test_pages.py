"""The server-rendered pages: readable without JS, escaped, accessible, and the form
posts' answers (the propagation report, the 409 view with its diff)."""

from __future__ import annotations

import html
import re
import time

import httpx

from flagsync import FlagClient
from flagsync.controller import RolloutController, RolloutPlan
from flagsync.dashboard.serve import DashboardServer
from flagsync.metrics import MetricStat, encode_series, flush_commands
from flagsync.publisher import Publisher
from flagsync.store import StoreKeys
from tests.dashboard.support import HOSTILE, api, hostile_flag

MODEL = "llm-model-version"


def csrf_of(page: str) -> str:
    """The CSRF token a page carries."""
    match = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page)
    assert match is not None
    return match.group(1)


class TestReadable:
    """Each page shows what the operator needs, with real buttons and table headers."""

    def test_flags_page_has_state_weights_last_change_and_a_kill_button_per_flag(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """`/` lists every flag with its weights per rule, last change and a Kill button."""
        store.kill("prompt-template-v2", reason="too chatty")
        with api(dashboard.url) as client:
            page = client.get("/").text
        assert page.count('<tr id="flag-') == len(store.versions())
        assert "paid-ramp: candidate 20% / current 80%" in page
        assert "KILLED" in page
        assert "too chatty" in page
        assert page.count(">Kill</button>") == len(store.versions()) - 1
        assert page.count(">Enable</button>") == 1
        assert '<th scope="col">Flag</th>' in page

    def test_flag_page_reads_rules_as_text_with_ramp_and_rollback_buttons(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """Rules read as text, each rollout has a Ramp form, older versions a rollback."""
        store.ramp(MODEL, "candidate", 25, "paid-ramp", reason="up")
        with api(dashboard.url) as client:
            page = html.unescape(client.get(f"/flags/{MODEL}").text)
        assert 'if email ends_with "@acme.com" → candidate' in page
        assert 'if plan in "paid" → candidate 25% / current 75%' in page
        assert ">Ramp</button>" in page
        assert ">Rollback to v1</button>" in page
        assert "rules[1].serve.rollout.candidate</code>: 20 → 25" in page

    def test_workers_page_shows_each_worker_and_the_convergence(
        self, dashboard: DashboardServer, store: Publisher, workers: list[FlagClient]
    ) -> None:
        """`/workers` has a row per live worker and "3/3 workers applied r1"."""
        deadline = time.monotonic() + 5
        with api(dashboard.url) as client:
            page = client.get("/workers").text
            while "3/3 workers applied r1" not in page and time.monotonic() < deadline:
                time.sleep(0.1)
                page = client.get("/workers").text
        assert "3/3 workers applied r1" in page
        for index in range(3):
            assert f'<th scope="row">worker-{index}</th>' in page

    def test_metrics_render_as_svg_charts_per_variant(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """Metrics flushed by several workers (their own streams and the shared one) appear
        as SVG charts (requests, cost, p95 latency) and as the request share on `/`."""
        keys = StoreKeys(store.keys.namespace)
        now_ms = int(time.time() * 1000)
        # Each variant's counts from another worker's own stream (and one in the shared one).
        for variant, count, cost, worker in (
            ("candidate", 30, 0.007, "w1"),
            ("current", 50, 0.009, "w2"),
            ("current", 20, 0.009, None),
        ):
            exposures, costs, latency = MetricStat(), MetricStat(), MetricStat()
            for _ in range(count):
                exposures.add(1.0)
                costs.add(cost)
                latency.add(400.0)
            fields = encode_series(variant, "exposures", exposures)
            fields |= encode_series(variant, "cost", costs)
            fields |= encode_series(variant, "latency_ms", latency)
            for command in flush_commands(keys, {MODEL: fields}, 600_000, now_ms, worker):
                store.client.execute_command(*command)
        with api(dashboard.url) as client:
            flag_page = client.get(f"/flags/{MODEL}").text
            flags_page = client.get("/").text
        assert flag_page.count("<svg") == 3
        for title in ("requests", "cost per request", "p95 latency_ms"):
            assert f"<title>{title} per variant</title>" in flag_page
        assert "candidate 30.0%" in flags_page
        assert "current 70.0%" in flags_page


class TestManyFlags:
    """A namespace of many flags is paged (50 a page) and can be filtered, without JS."""

    def test_pages_and_filter(self, dashboard: DashboardServer, store: Publisher) -> None:
        """120 generated flags beside the examples: page 1 holds 50 rows and links the
        others; page 3 holds the rest; a filter matches keys and descriptions; a page's
        live rows fragment holds only that page's changed flags."""
        generated = {
            f"gen-{index:03d}": {
                "description": "needle" if index == 77 else f"generated {index}",
                "variants": {"on": True, "off": False},
                "off": "off",
                "default": "on",
            }
            for index in range(120)
        }
        store.apply({"flags": generated}, reason="many")
        revision = store.revision()[1]
        total = len(store.definitions().flags)
        with api(dashboard.url) as client:
            first = client.get("/").text
            last = client.get("/", params={"page": 3}).text
            needle = client.get("/", params={"q": "NEEDLE"}).text
            by_key = client.get("/", params={"q": "gen-11"}).text
            store.kill("gen-100", reason="on page 3")
            store.kill("gen-010", reason="on page 1")
            epoch = store.revision()[0]
            rows = client.get(
                "/", params={"page": 3, "fragment": "rows", "since": revision, "epoch": epoch}
            ).text

        def shown(page: str) -> list[str]:
            return re.findall(r'<tr id="flag-([^"]+)"', page)

        assert len(shown(first)) == 50
        assert f"flags 1\N{EN DASH}50 of {total}" in first
        assert '<a href="/?page=2" rel="next">Next →</a>' in first
        assert len(shown(last)) == total - 100
        assert '<strong aria-current="page">3</strong>' in last
        assert shown(needle) == ["gen-077"]
        assert "matching “NEEDLE”" in html.unescape(needle)
        assert shown(by_key) == [f"gen-11{digit}" for digit in range(10)]
        assert shown(rows) == ["gen-100"]


class TestEscaping:
    """Flag text is data, never markup."""

    def test_hostile_description_values_and_reasons_are_escaped(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """`<script>` in a description, a variant value, a clause value and a reason is
        shown as text on every page and in the history."""
        store.put("evil", hostile_flag(), reason=HOSTILE)
        store.kill("evil", reason=HOSTILE)
        with api(dashboard.url) as client:
            pages = [client.get(path).text for path in ("/", "/flags/evil", "/workers")]
        for page in pages:
            assert "<script>window" not in page
            assert "<img src=x" not in page
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in pages[0]
        assert pages[1].count("&lt;script&gt;") >= 4


class TestFormWrites:
    """The pages' forms write and answer with the result, without JS."""

    def test_kill_form_answers_the_propagation_report(
        self, dashboard: DashboardServer, store: Publisher, workers: list[FlagClient]
    ) -> None:
        """A Kill form post answers the flag page saying "reached 3/3 workers"."""
        with httpx.Client(base_url=dashboard.url, timeout=10) as browser:
            csrf = csrf_of(browser.get(f"/flags/{MODEL}").text)
            answer = browser.post(
                f"/flags/{MODEL}/kill",
                data={"csrf": csrf, "expected_version": "1", "reason": "form kill"},
            )
        assert answer.status_code == 200
        assert re.search(r"reached 3/3 workers in \d+\.\d ms", answer.text)
        assert ">Enable</button>" in answer.text

    def test_stale_form_gets_the_conflict_view_with_the_diff(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """A form based on v1 after a colleague's kill answers 409: nothing written, who
        changed it and why, and the field that differs."""
        store.kill(MODEL, reason="colleague saw thumbs-down")
        with httpx.Client(base_url=dashboard.url, timeout=10) as browser:
            csrf = csrf_of(browser.get("/").text)
            answer = browser.post(
                f"/flags/{MODEL}/ramp",
                data={"csrf": csrf, "expected_version": "1", "variant": "candidate",
                      "percent": "50", "rule": "paid-ramp", "reason": "stale"},
            )  # fmt: skip
        assert answer.status_code == 409
        assert "Not written" in answer.text
        assert "colleague saw thumbs-down" in answer.text
        assert "<code>enabled</code></th><td><code>true</code></td><td><code>false</code>" in (
            answer.text
        )
        assert store.get(MODEL).version == 2  # type: ignore[union-attr]

    def test_pause_and_resume_forms_follow_the_rollouts_status(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """A running rollout offers Pause and Abort; the Pause form answers the flag page
        saying who paused it and why, with Resume instead of Pause."""
        RolloutController(store, MODEL).set_plan(
            RolloutPlan(variant="candidate", control="current", rule="paid-ramp",
                        steps=[20, 50], guards=["cost_per_request(candidate) <= 1"])
        )  # fmt: skip
        with httpx.Client(base_url=dashboard.url, timeout=10, follow_redirects=True) as browser:
            before = browser.get(f"/flags/{MODEL}").text
            answer = browser.post(
                f"/rollouts/{MODEL}/pause", data={"csrf": csrf_of(before), "reason": "lunch"}
            )
        assert ">Pause</button>" in before
        assert ">Resume</button>" not in before
        assert answer.status_code == 200
        assert "Guarded rollout: paused" in answer.text
        assert "Paused: paused by dash-operator at" in answer.text
        assert "(lunch)" in answer.text
        assert ">Resume</button>" in answer.text
        assert ">Pause</button>" not in answer.text
        assert ">Abort</button>" in answer.text
        assert "<td>rollout pause</td><td>lunch</td>" in answer.text  # in the history
        assert "rollout of llm-model-version paused by dash-operator" in answer.text

    def test_abort_form_answers_the_ramps_propagation_report(
        self, dashboard: DashboardServer, store: Publisher, workers: list[FlagClient]
    ) -> None:
        """Abort from the page ramps the candidate to 0 % and answers how far that write
        spread ("reached 3/3 workers"), with no Pause or Resume left to press."""
        controller = RolloutController(store, MODEL)
        controller.set_plan(
            RolloutPlan(variant="candidate", control="current", rule="paid-ramp",
                        steps=[20, 50], guards=["cost_per_request(candidate) <= 1"])
        )  # fmt: skip
        with httpx.Client(base_url=dashboard.url, timeout=10) as browser:
            csrf = csrf_of(browser.get(f"/flags/{MODEL}").text)
            answer = browser.post(
                f"/rollouts/{MODEL}/abort", data={"csrf": csrf, "reason": "too expensive"}
            )
        assert answer.status_code == 200
        text = html.unescape(answer.text)
        assert "rollout of llm-model-version aborted by dash-operator; its variant ramped" in text
        assert re.search(r"reached 3/3 workers in \d+\.\d ms", answer.text)
        assert "Guarded rollout: aborted" in answer.text
        assert ">Pause</button>" not in answer.text
        assert ">Resume</button>" not in answer.text
        rule = store.get(MODEL).flag.rules[1]  # type: ignore[union-attr]
        assert rule.serve.rollout["candidate"] == 0  # type: ignore[union-attr]


class TestLiveFragments:
    """What the pages' script fetches after a change: the changed rows, or everything."""

    def test_flags_page_sends_only_the_rows_changed_since_the_shown_revision(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """After one kill, `?fragment=rows&since=1` holds that flag's row alone; another
        epoch (a wiped store) gets the whole table."""
        store.kill(MODEL, reason="one row")
        epoch = store.revision()[0] or ""
        with api(dashboard.url) as client:
            rows = client.get("/", params={"fragment": "rows", "since": 1, "epoch": epoch})
            other = client.get("/", params={"fragment": "rows", "since": 1, "epoch": "x"})
        assert rows.headers["x-flagsync-fragment"] == "rows"
        assert re.findall(r'<tr id="([^"]+)"', rows.text) == [f"flag-{MODEL}"]
        assert "KILLED" in rows.text
        assert "x-flagsync-fragment" not in other.headers
        assert other.text.count('<tr id="flag-') == len(store.versions())
