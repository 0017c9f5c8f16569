"""The issue's public names, checked as written: the write answers, bad input naming its
field with nothing written, the rollout routes' bodies, and the page names."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from flagsync import FlagClient
from flagsync.dashboard.serve import DashboardServer
from flagsync.metrics import MetricStat, encode_series, flush_commands
from flagsync.publisher import Publisher
from flagsync.server import free_port
from flagsync.store import StoreKeys
from tests.dashboard.conftest import SECRET, DashboardFactory
from tests.dashboard.support import api, fake_presence, sse_events, wait_until

MODEL = "llm-model-version"
PASSWORD = "hunter2-not-shown"  # noqa: S105 - a test URL's password
REPORT = re.compile(r"^reached (\d+)/(\d+) workers in \d+\.\d ms")


class TestBadInputWritesNothing:
    """Well-formed JSON that asks for something impossible: 4xx naming the field."""

    @pytest.mark.parametrize(
        ("op", "body", "field"),
        [
            ("ramp", {"variant": "candidate", "percent": 150}, "percent"),
            ("ramp", {"variant": "candidate", "percent": -1}, "percent"),
            ("ramp", {"variant": "no-such-variant", "percent": 5}, "variant"),
            ("ramp", {"variant": "candidate", "percent": 5, "rule": "no-such-rule"}, "rule"),
            ("rollback", {"to_version": 99}, "to_version"),
            ("kill", {"expected_version": -1}, "expected_version"),
        ],
    )
    def test_impossible_writes_are_4xx_naming_the_field(
        self,
        dashboard: DashboardServer,
        store: Publisher,
        op: str,
        body: dict[str, Any],
        field: str,
    ) -> None:
        """The answer is 400/404/422 with the field's name in the message; the store's
        revision and the flag's version stay where they were."""
        before = store.revision()[1]
        payload = {"expected_version": 1, "reason": "probe", **body}
        with api(dashboard.url) as client:
            response = client.post(f"/api/flags/{MODEL}/{op}", json=payload)
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["message"].startswith(f"{field}:"), response.json()
        assert store.revision()[1] == before
        assert store.get(MODEL).version == 1  # type: ignore[union-attr]

    def test_nan_percent_is_refused(self, dashboard: DashboardServer, store: Publisher) -> None:
        """Python's JSON parser reads `NaN`; a ramp to NaN percent is 400, nothing written."""
        body = '{"expected_version": 1, "variant": "candidate", "percent": NaN, "reason": "r"}'
        with api(dashboard.url) as client:
            response = client.post(
                f"/api/flags/{MODEL}/ramp", content=body,
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
        assert response.status_code == 400
        assert response.json()["message"].startswith("percent:")
        assert store.get(MODEL).version == 1  # type: ignore[union-attr]

    def test_unknown_rollout_action_is_404_before_the_body_is_read(
        self, dashboard: DashboardServer
    ) -> None:
        """`/api/rollouts/<key>/<action>` takes pause, resume and abort only."""
        with api(dashboard.url) as client:
            response = client.post(f"/api/rollouts/{MODEL}/restart", json={"reason": 5})
        assert response.status_code == 404
        assert "restart" in response.json()["message"]


class TestWriteAnswer:
    """A write answers the new revision and the `--wait` propagation report."""

    def test_kill_answers_revision_and_reached_n_of_m(
        self, dashboard: DashboardServer, store: Publisher, workers: list[FlagClient]
    ) -> None:
        """`revision` is the store's new revision; `propagation.text` reads
        `reached 3/3 workers in X ms` and its counts agree with the fields."""
        with api(dashboard.url) as client:
            response = client.post(
                f"/api/flags/{MODEL}/kill", json={"expected_version": 1, "reason": "probe"}
            )
        body = response.json()
        assert response.status_code == 200, body
        assert body["revision"] == store.revision()[1] == 2
        assert body["version"] == 2
        report = body["propagation"]
        match = REPORT.match(report["text"])
        assert match is not None, report["text"]
        assert (int(match[1]), int(match[2])) == (report["reached"], report["total"]) == (3, 3)


class TestLogin:
    """The login form's `next` is a path on this dashboard, never another site."""

    @pytest.mark.parametrize(
        "target", ["//evil.example/", "/\\evil.example/", "https://evil.example/"]
    )
    def test_next_cannot_leave_the_dashboard(self, secured: DashboardServer, target: str) -> None:
        """A correct token with a `next` pointing elsewhere lands on `/`."""
        with httpx.Client(base_url=secured.url, timeout=10) as browser:
            answer = browser.post("/login", params={"next": target}, data={"token": SECRET})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/"


class TestMetricCharts:
    """Per variant over time: requests, error rate, p95 latency, cost per request and each
    tracked outcome, as server-rendered SVG."""

    def test_every_metric_kind_is_a_chart_with_a_line_per_variant(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """Errors, latency, cost and a tracked `thumbs_down` from two workers give five
        charts, each with both variants in its legend; the candidate's worse error and
        thumbs-down rates are the charts' maxima."""
        keys = StoreKeys(store.keys.namespace)
        now_ms = int(time.time() * 1000)
        for variant, worker, bad in (("candidate", "w1", 0.5), ("current", "w2", 0.1)):
            fields: dict[str, Any] = {}
            for metric, values in (
                ("exposures", [1.0] * 40),
                ("error", [1.0] * int(40 * bad) + [0.0] * int(40 * (1 - bad))),
                ("latency_ms", [300.0] * 40),
                ("cost", [0.008] * 40),
                ("thumbs_down", [1.0] * int(40 * bad) + [0.0] * int(40 * (1 - bad))),
            ):
                stat = MetricStat()
                for value in values:
                    stat.add(value)
                fields |= encode_series(variant, metric, stat)
            for command in flush_commands(keys, {MODEL: fields}, 600_000, now_ms, worker):
                store.client.execute_command(*command)
        with api(dashboard.url) as client:
            page = client.get(f"/flags/{MODEL}").text
        charts = {
            match[1]: match[0]
            for match in re.finditer(
                r"<svg[^>]*>\s*<title>([^<]*) per variant</title>.*?</svg>", page, re.S
            )
        }
        assert set(charts) == {
            "requests", "error rate", "p95 latency_ms", "cost per request", "thumbs_down rate",
        }  # fmt: skip
        for svg in charts.values():
            assert "&#9632; candidate" in svg
            assert "&#9632; current" in svg
        assert "max 0.5<" in charts["error rate"]
        assert "max 0.5<" in charts["thumbs_down rate"]
        assert "max $0.008<" in charts["cost per request"]


class TestStoreDown:
    """A dashboard started before its server answers 503 saying why, never a 500, and
    never shows the password of its URL."""

    def test_every_route_answers_503_or_the_stale_state_without_the_password(
        self, make_dashboard: DashboardFactory
    ) -> None:
        """Nothing listens on the URL's port (127.0.0.1): pages and API reads/writes are
        503 naming the redacted URL, the workers page and the event stream say not live."""
        url = f"redis://ops:{PASSWORD}@127.0.0.1:{free_port()}/0"
        running = make_dashboard(url=url)
        with api(running.url) as client:
            for path in ("/", f"/flags/{MODEL}", "/api/flags", f"/api/flags/{MODEL}",
                         "/api/history", "/api/workers"):  # fmt: skip
                answer = client.get(path)
                assert answer.status_code == 503, (path, answer.status_code)
                assert PASSWORD not in answer.text
                assert "redis://ops:***@127.0.0.1" in answer.text, path
            written = client.post(f"/api/flags/{MODEL}/kill", json={"expected_version": 1})
            assert written.status_code == 503
            assert PASSWORD not in written.text
            workers = client.get("/workers")
            assert workers.status_code == 200
            assert PASSWORD not in workers.text
            with client.stream("GET", "/api/events") as stream:
                event, state = next(sse_events(stream))
        assert event == "state"
        assert state["ok"] is False
        assert PASSWORD not in state["error"]


class TestWorkersApi:
    """`GET /api/workers`: each live worker with what the workers page shows."""

    def test_each_worker_has_id_host_pid_revision_lag_state_and_last_seen(
        self,
        dashboard: DashboardServer,
        store: Publisher,
        workers: list[FlagClient],
        namespace: str,
    ) -> None:
        """Three workers at the new revision have lag 0; one stuck a revision behind has
        lag 1 and is not applied; every row has its heartbeat time and state."""
        epoch, old = store.revision()
        assert epoch is not None
        fake_presence(store.client, namespace, 1, old, epoch)
        store.kill(MODEL, reason="lag probe")
        revision = store.revision()[1]
        assert wait_until(lambda: sum(w.revision == revision for w in store.workers()) == 3, 10)
        with api(dashboard.url) as client:
            body = client.get("/api/workers").json()
        assert (body["epoch"], body["revision"]) == (epoch, revision)
        rows = {row["id"]: row for row in body["workers"]}
        assert set(rows) == {"worker-0", "worker-1", "worker-2", "load-0000"}
        for row in rows.values():
            assert {"host", "pid", "revision", "lag", "state", "heartbeat_ms"} <= set(row)
            assert row["state"] == "ready"
        assert [rows[f"worker-{i}"]["lag"] for i in range(3)] == [0, 0, 0]
        assert all(rows[f"worker-{i}"]["applied"] for i in range(3))
        stuck = rows["load-0000"]
        assert (stuck["revision"], stuck["lag"], stuck["applied"]) == (old, 1, False)
        assert stuck["host"] == "loadhost"
