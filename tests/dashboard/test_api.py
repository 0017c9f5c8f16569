"""The JSON API against a real server: reads, version-checked writes with propagation
reports, the 409 conflict body, the change log's actor and reason, rollouts, events."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from flagsync import FlagClient
from flagsync.controller import RolloutController, RolloutPlan
from flagsync.dashboard.serve import DashboardServer
from flagsync.errors import ConflictError
from flagsync.publisher import Publisher
from tests.dashboard.conftest import DashboardFactory
from tests.dashboard.support import api, sse_events

MODEL = "llm-model-version"


def post(base: str, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST a JSON body to the dashboard (no token: a loopback dashboard)."""
    with api(base) as client:
        return client.post(path, json=body)


class TestReading:
    """GET routes answer what the store holds."""

    def test_flags_lists_every_flag_with_version_and_last_change(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """/api/flags has each flag's definition, version and last change-log entry."""
        with api(dashboard.url) as client:
            body = client.get("/api/flags").json()
        assert body["revision"] == store.revision()[1]
        assert sorted(body["flags"]) == sorted(store.versions())
        model = body["flags"][MODEL]
        assert model["version"] == 1
        assert model["definition"]["variants"] == {"current": "gpt-4o", "candidate": "gpt-4.1"}
        assert model["last_change"]["actor"] == "setup"
        assert model["last_change"]["reason"] == "fixture"

    def test_flag_answers_definition_version_and_revision(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """/api/flags/<key> has the definition, version and store revision; unknown is 404."""
        with api(dashboard.url) as client:
            body = client.get(f"/api/flags/{MODEL}").json()
            missing = client.get("/api/flags/no-such-flag")
        assert (body["key"], body["version"], body["revision"]) == (MODEL, 1, 1)
        assert body["enabled"] is True
        assert missing.status_code == 404
        assert "no-such-flag" in missing.json()["message"]

    def test_history_carries_field_diffs(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """/api/history lists changes newest first with their field-level diff lines."""
        store.kill(MODEL, reason="by hand")
        with api(dashboard.url) as client:
            entries = client.get("/api/history", params={"key": MODEL}).json()["entries"]
        assert [e["op"] for e in entries] == ["kill", "apply"]
        assert entries[0]["diff"] == ["enabled: true -> false"]


class TestWrites:
    """Writes name the version they are based on and answer revision and propagation."""

    def test_kill_reaches_every_live_worker_and_is_logged_with_actor_and_reason(
        self, dashboard: DashboardServer, store: Publisher, workers: list[FlagClient]
    ) -> None:
        """A kill answers the new revision and "reached 3/3 workers", and the workers
        serve `off`; the change log names the dashboard's operator and the reason."""
        response = post(
            dashboard.url, f"/api/flags/{MODEL}/kill", {"expected_version": 1, "reason": "bad"}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["changed"], body["revision"], body["version"]) == (True, 2, 2)
        report = body["propagation"]
        assert (report["reached"], report["total"], report["complete"]) == (3, 3, True)
        assert report["text"].startswith("reached 3/3 workers in ")
        assert {c.detail(MODEL, {"key": "u1"}).reason for c in workers} == {"DISABLED"}
        entry = store.history(MODEL, limit=1)[0]
        assert (entry.op, entry.actor, entry.reason) == ("kill", "dash-operator", "bad")

    def test_stale_version_is_refused_with_the_current_definition_and_diff(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """A write based on v1 after someone ramped to v2 is a 409 with the current
        definition, the field diff and who changed it; nothing is written."""
        store.ramp(MODEL, "candidate", 50, "paid-ramp", reason="colleague")
        response = post(
            dashboard.url,
            f"/api/flags/{MODEL}/ramp",
            {"variant": "candidate", "percent": 5, "rule": "paid-ramp",
             "expected_version": 1, "reason": "stale screen"},
        )  # fmt: skip
        assert response.status_code == 409
        body = response.json()
        assert (body["expected_version"], body["version"]) == (1, 2)
        assert body["definition"]["rules"][1]["serve"]["rollout"] == {
            "candidate": 50,
            "current": 50,
        }
        assert [d["text"] for d in body["diff"]] == [
            "rules[1].serve.rollout.candidate: 20 -> 50",
            "rules[1].serve.rollout.current: 80 -> 50",
        ]
        assert [(c["actor"], c["reason"]) for c in body["changes_since"]] == [
            ("setup", "colleague")
        ]
        assert store.get(MODEL) is not None
        assert store.get(MODEL).version == 2  # type: ignore[union-attr]

    def test_ramp_enable_and_rollback_write_what_they_say(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """Ramp moves the rule's split, rollback restores v1's split as a new version."""
        ramp = post(
            dashboard.url,
            f"/api/flags/{MODEL}/ramp",
            {"variant": "candidate", "percent": 30, "rule": "paid-ramp",
             "expected_version": 1, "reason": "quality ok"},
        )  # fmt: skip
        assert ramp.status_code == 200, ramp.text
        assert ramp.json()["propagation"]["text"] == (
            "no live workers reported: nobody confirmed the change"
        )
        rollback = post(
            dashboard.url,
            f"/api/flags/{MODEL}/rollback",
            {"to_version": 1, "expected_version": 2, "reason": "back"},
        )
        assert rollback.json()["version"] == 3
        stored = store.get(MODEL)
        assert stored is not None
        assert stored.flag.rules[1].serve.rollout == {"candidate": 20, "current": 80}  # type: ignore[union-attr]
        assert store.history(MODEL, limit=1)[0].op == "rollback"

    def test_rollback_of_a_flag_that_moved_is_409_with_the_diff(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """A rollback from a screen showing v1 after a colleague's ramp writes nothing and
        answers the current definition and what changed."""
        store.ramp(MODEL, "candidate", 50, "paid-ramp", reason="colleague")
        store.ramp(MODEL, "candidate", 60, "paid-ramp", reason="colleague again")
        response = post(
            dashboard.url,
            f"/api/flags/{MODEL}/rollback",
            {"to_version": 2, "expected_version": 1, "reason": "stale screen"},
        )
        assert response.status_code == 409, response.text
        body = response.json()
        assert (body["expected_version"], body["version"]) == (1, 3)
        assert "rules[1].serve.rollout.candidate: 20 -> 60" in [d["text"] for d in body["diff"]]
        assert store.get(MODEL).version == 3  # type: ignore[union-attr]

    def test_rollback_is_refused_by_the_write_itself_when_the_flag_moves_meanwhile(
        self, server: Any, namespace: str, store: Publisher
    ) -> None:
        """A change landing between rollback's version check and its write is refused by
        the write script (not overwritten): the check is not read-then-write."""
        store.ramp(MODEL, "candidate", 50, "paid-ramp", reason="v2")
        colleague = Publisher(server.url, namespace, actor="colleague")

        class Raced(Publisher):
            """A colleague ramps the flag just after the state the write is based on was
            read (the last read before the write script runs)."""

            def _read_all(self) -> Any:
                state = super()._read_all()
                if colleague.get(MODEL).version == 2:  # type: ignore[union-attr]
                    colleague.ramp(MODEL, "candidate", 70, "paid-ramp", reason="meanwhile")
                return state

        with colleague, Raced(server.url, namespace, actor="dash") as raced:
            with pytest.raises(ConflictError):
                raced.rollback(MODEL, to_version=1, expected_version=2, reason="back")
            stored = store.get(MODEL)
            assert stored is not None
            assert stored.version == 3
            assert stored.flag.rules[1].serve.rollout["candidate"] == 70  # type: ignore[union-attr]
            assert store.history(MODEL, limit=1)[0].actor == "colleague"

    def test_enable_of_an_enabled_flag_changes_nothing(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """A write with nothing to change says so and issues no revision."""
        body = post(
            dashboard.url, f"/api/flags/{MODEL}/enable", {"expected_version": 1, "reason": ""}
        ).json()
        assert (body["changed"], body["revision"], body["propagation"]) == (False, 1, None)

    @pytest.mark.parametrize(
        ("path", "body", "field"),
        [
            ("kill", {"reason": "no version"}, "expected_version"),
            ("kill", {"expected_version": "1"}, "expected_version"),
            ("ramp", {"expected_version": 1, "percent": 5}, "variant"),
            ("ramp", {"expected_version": 1, "variant": "candidate"}, "percent"),
            ("rollback", {"expected_version": 1}, "to_version"),
            ("kill", {"expected_version": 1, "reason": 5}, "reason"),
        ],
    )
    def test_malformed_bodies_are_400_naming_the_field(
        self, dashboard: DashboardServer, path: str, body: dict[str, Any], field: str
    ) -> None:
        """A body missing or mistyping a field is refused with its name; nothing written."""
        response = post(dashboard.url, f"/api/flags/{MODEL}/{path}", body)
        assert response.status_code == 400
        assert response.json()["message"].startswith(field)

    def test_read_only_dashboard_refuses_writes(
        self, make_dashboard: DashboardFactory, store: Publisher
    ) -> None:
        """With `read_only` set (the signed-mode hook), every write is 403 and says why."""
        running = make_dashboard(read_only="signed store and no signing key")
        response = post(running.url, f"/api/flags/{MODEL}/kill", {"expected_version": 1})
        assert response.status_code == 403
        assert "signed store" in response.json()["message"]
        assert store.get(MODEL).flag.enabled  # type: ignore[union-attr]


class TestRollouts:
    """Pause/resume/abort of a guarded rollout."""

    def test_abort_stops_the_rollout_and_serves_the_variant_to_nobody(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """Abort marks the rollout aborted and ramps the candidate to 0 % in its rule."""
        controller = RolloutController(store, MODEL)
        controller.set_plan(
            RolloutPlan(variant="candidate", control="current", rule="paid-ramp",
                        steps=[5, 50], guards=["cost_per_request(candidate) <= 1"])
        )  # fmt: skip
        controller.tick()  # start: 5 %
        response = post(dashboard.url, f"/api/rollouts/{MODEL}/abort", {"reason": "cost"})
        assert response.status_code == 200, response.text
        assert response.json()["changed"] is True
        assert controller.state().status == "aborted"
        assert controller.tick().decision == "stopped"
        rule = store.get(MODEL).flag.rules[1]  # type: ignore[union-attr]
        assert rule.serve.rollout["candidate"] == 0  # type: ignore[union-attr]
        assert store.history(MODEL, limit=1)[0].reason == "rollout aborted: cost"

    def test_pause_and_resume_go_through_the_controller_and_into_the_change_log(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """Pause holds the rollout (a tick writes nothing), resume lets it run again; both
        are in the change log with the dashboard's operator and the reason."""
        controller = RolloutController(store, MODEL)
        controller.set_plan(
            RolloutPlan(variant="candidate", control="current", rule="paid-ramp",
                        steps=[20, 50], guards=["cost_per_request(candidate) <= 1"])
        )  # fmt: skip

        paused = post(dashboard.url, f"/api/rollouts/{MODEL}/pause", {"reason": "look"})
        again = post(dashboard.url, f"/api/rollouts/{MODEL}/pause", {"reason": "twice"})
        held = controller.tick()
        resumed = post(dashboard.url, f"/api/rollouts/{MODEL}/resume", {"reason": "fine"})

        assert paused.status_code == 200, paused.text
        assert paused.json()["result"]["state"]["status"] == "paused"
        assert again.status_code == 400
        assert "not running: nothing to pause" in again.json()["message"]
        assert held.decision == "stopped"
        assert resumed.status_code == 200, resumed.text
        assert controller.state().status == "running"
        logged = [
            (entry.op, entry.actor, entry.reason)
            for entry in store.history(MODEL, limit=2)
            if entry.kind == "rollout"
        ]
        assert logged == [("resume", "dash-operator", "fine"), ("pause", "dash-operator", "look")]

    def test_rollout_of_a_flag_without_plan_is_404(self, dashboard: DashboardServer) -> None:
        """No plan, no rollout to act on."""
        response = post(dashboard.url, f"/api/rollouts/{MODEL}/abort", {"reason": ""})
        assert response.status_code == 404


class TestEvents:
    """/api/events: the full state on connect, then each change."""

    def test_full_state_first_then_the_new_revision_and_its_convergence(
        self, dashboard: DashboardServer, store: Publisher, workers: list[FlagClient]
    ) -> None:
        """The first event is the state (r1, 3 workers); after a kill an event shows r2
        applied by 3/3 workers."""
        seen: list[dict[str, Any]] = []
        with (
            httpx.Client(base_url=dashboard.url, timeout=10.0) as client,
            client.stream("GET", "/api/events") as response,
        ):
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response)
            _name, first = next(events)
            assert _name == "state"
            assert {"ok", "revision", "workers", "convergence"} <= set(first)
            data = first
            for _name, data in events:  # the poller reads presence every 250 ms
                if data["ok"] and len(data["workers"]) == 3:
                    break
            assert (data["revision"], len(data["workers"])) == (1, 3)
            killer = threading.Timer(0.2, lambda: store.kill(MODEL, reason="sse"))
            killer.start()
            started = time.monotonic()
            for _name, data in events:
                seen.append(data)
                conv = data["convergence"]
                if (data["revision"] == 2 and conv["complete"]) or time.monotonic() - started > 5:
                    break
            killer.join()
        last = seen[-1]
        assert last["revision"] == 2
        assert last["convergence"]["reached"] == last["convergence"]["total"] == 3
        assert last["convergence"]["text"].startswith("3/3 workers applied r2")
