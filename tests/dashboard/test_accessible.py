"""The pages by role and accessible name in Debian's Chromium: without JavaScript they
read and work (the issue's button names "Kill", "Enable", "Ramp", "Rollback to v1",
tables with column headers, a kill by keyboard alone); a late worker is red; with
JavaScript the kill switch asks first, and a token's login form leads to a logged kill."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from flagsync import FlagClient
from flagsync.controller import RolloutController, RolloutPlan
from flagsync.dashboard.serve import DashboardServer
from flagsync.metrics import MetricStat, encode_series, flush_commands
from flagsync.publisher import Publisher
from tests.dashboard.conftest import SECRET
from tests.dashboard.support import fake_presence, wait_until

pytestmark = pytest.mark.requires("browser")

MODEL = "llm-model-version"
PROMPT = "prompt-template-v2"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page with JavaScript off (generous timeouts: a loaded 2-core machine)."""
    context = browser.new_context(java_script_enabled=False)
    try:
        opened = context.new_page()
        opened.set_default_timeout(15_000)
        yield opened
    finally:
        context.close()


def column_headers(page: Any) -> list[str]:
    """The text of every column header of the page's tables."""
    return [str(text).strip() for text in page.get_by_role("columnheader").all_inner_texts()]


class TestWithoutJavaScript:
    """Server-rendered pages: everything readable and every write a plain form."""

    def test_flags_page_reads_with_headers_and_kill_enable_buttons(
        self, dashboard: DashboardServer, store: Publisher, page: Any
    ) -> None:
        """Every flag is a row under named column headers; enabled flags have a "Kill"
        button, a killed one an "Enable" button."""
        store.kill(PROMPT, reason="prompt regression")
        page.goto(f"{dashboard.url}/")
        assert {"Flag", "State", "Kill switch", "Last change"} <= set(column_headers(page))
        for key in store.versions():
            if not key.startswith("beta"):  # a segment, not a flag
                assert page.get_by_role("link", name=key, exact=True).count() == 1
        killed = page.locator(f"#flag-{PROMPT}")
        assert killed.get_by_role("button", name="Enable", exact=True).count() == 1
        model = page.locator(f"#flag-{MODEL}")
        assert model.get_by_role("button", name="Kill", exact=True).count() == 1
        assert "prompt regression" in str(killed.inner_text())

    def test_flag_page_has_ramp_and_rollback_to_a_version(
        self, dashboard: DashboardServer, store: Publisher, page: Any
    ) -> None:
        """After a ramp the flag page offers "Ramp" per rollout and "Rollback to v1"."""
        store.ramp(MODEL, "candidate", 30, "paid-ramp", reason="quality holds")
        page.goto(f"{dashboard.url}/flags/{MODEL}")
        assert page.get_by_role("button", name="Kill", exact=True).count() == 1
        ramp = page.get_by_role("form", name="Ramp rule paid-ramp")
        assert ramp.get_by_role("button", name="Ramp", exact=True).count() == 1
        assert page.get_by_role("button", name="Rollback to v1", exact=True).count() == 1
        assert {"Version", "Who", "Why", "Rollback"} <= set(column_headers(page))
        assert "quality holds" in str(page.locator("section.card").last.inner_text())

    def test_kill_by_keyboard_alone_answers_the_propagation_report(
        self,
        dashboard: DashboardServer,
        store: Publisher,
        workers: list[FlagClient],
        page: Any,
    ) -> None:
        """Type the reason, Tab to "Kill", press Enter: the form posts (no script), the
        flag is killed with that reason, and the page answers `reached 3/3 workers`."""
        page.goto(f"{dashboard.url}/flags/{MODEL}")
        page.get_by_label("Reason").first.focus()
        page.keyboard.type("keyboard kill")
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.textContent")
        assert focused == "Kill"
        with page.expect_navigation():
            page.keyboard.press("Enter")
        outcome = str(page.locator("#outcome").inner_text())
        assert "reached 3/3 workers in" in outcome, outcome
        stored = store.get(MODEL)
        assert stored is not None
        assert not stored.flag.enabled
        assert store.history(MODEL, limit=1)[0].reason == "keyboard kill"
        assert page.get_by_role("button", name="Enable", exact=True).count() == 1

    def test_workers_page_lists_workers_and_convergence_text(
        self,
        dashboard: DashboardServer,
        store: Publisher,
        workers: list[FlagClient],
        page: Any,
    ) -> None:
        """Each live worker is a row under named headers; the convergence line reads
        "3/3 workers applied rN" (as server-rendered, no live updates needed)."""
        revision = store.revision()[1]
        assert wait_until(lambda: "3/3" in _convergence(dashboard, page), 10)
        assert f"3/3 workers applied r{revision}" in _convergence(dashboard, page)
        assert {"Worker", "Host", "PID", "Applied revision", "Lag", "State", "Last seen"} <= set(
            column_headers(page)
        )
        for index in range(3):
            row = page.get_by_role("row").filter(has_text=f"worker-{index}")
            assert row.count() == 1
            assert f"r{revision}" in str(row.inner_text())


def _convergence(dashboard: DashboardServer, page: Any) -> str:
    page.goto(f"{dashboard.url}/workers")
    return str(page.locator("#convergence-text").inner_text())


class TestLateWorker:
    """A worker that has not applied the latest revision within 1 s is shown red."""

    def test_a_stuck_worker_turns_red_and_the_applied_ones_do_not(
        self,
        dashboard: DashboardServer,
        store: Publisher,
        workers: list[FlagClient],
        namespace: str,
        page: Any,
    ) -> None:
        """One presence record stays at the old revision (a stuck worker); after a kill
        the three live workers apply it and the stuck one is drawn in the "bad" red with
        the convergence line saying "3/4 ... 1 late"."""
        epoch, old = store.revision()
        assert epoch is not None
        fake_presence(store.client, namespace, 1, old, epoch)
        store.kill(MODEL, reason="stuck-worker probe")
        revision = store.revision()[1]
        assert wait_until(lambda: sum(w.revision == revision for w in store.workers()) == 3, 10)

        def stuck_row_is_late() -> bool:
            page.goto(f"{dashboard.url}/workers")
            row = page.get_by_role("row").filter(has_text="load-0000")
            return row.count() == 1 and "late" in str(row.get_attribute("class") or "")

        assert wait_until(stuck_row_is_late, 15, interval_s=0.3), page.content()[-2500:]
        line = str(page.locator("#convergence-text").inner_text())
        assert line.startswith(f"3/4 workers applied r{revision}"), line
        assert "1 late" in line
        red = "rgb(207, 34, 46)"  # --bad in dashboard.css
        stuck = page.get_by_role("row").filter(has_text="load-0000").get_by_role("rowheader")
        assert stuck.evaluate("cell => getComputedStyle(cell).color") == red
        for index in range(3):
            row = page.get_by_role("row").filter(has_text=f"worker-{index}")
            assert "late" not in str(row.get_attribute("class") or "")
            cell = row.get_by_role("rowheader")
            assert cell.evaluate("cell => getComputedStyle(cell).color") != red
        text = page.locator("#convergence-text")
        assert text.evaluate("p => getComputedStyle(p).color") == red


@pytest.fixture
def scripted(browser: Any) -> Iterator[Any]:
    """A page with JavaScript on; dialogs are answered by `page.answer` (accept with a
    text, or dismiss when it is None)."""
    context = browser.new_context()
    try:
        opened = context.new_page()
        opened.set_default_timeout(15_000)
        answers: list[str | None] = []

        def on_dialog(dialog: Any) -> None:
            given = answers.pop(0) if answers else None
            if given is None:
                dialog.dismiss()
            else:
                dialog.accept(given)

        opened.on("dialog", on_dialog)
        yield opened, answers
    finally:
        context.close()


class TestConfirmation:
    """The kill switch asks before it writes; "no" writes nothing."""

    def test_dismissed_confirmation_and_prompt_write_nothing(
        self, dashboard: DashboardServer, store: Publisher, scripted: Any
    ) -> None:
        """On the flag page a dismissed confirm, in the flags table a dismissed reason
        prompt: the flag stays enabled at v1; an accepted prompt kills with its reason."""
        page, answers = scripted
        page.goto(f"{dashboard.url}/flags/{MODEL}")
        page.locator("#switch-reason").fill("second thoughts")
        answers.append(None)
        page.get_by_role("button", name="Kill", exact=True).click()
        page.goto(f"{dashboard.url}/")
        row = page.locator(f"#flag-{MODEL}")
        answers.append(None)
        row.get_by_role("button", name="Kill", exact=True).click()
        page.wait_for_timeout(500)  # a submit would have navigated by now; none may
        assert store.get(MODEL).version == 1  # type: ignore[union-attr]
        answers.append("from the table")
        with page.expect_navigation():
            row.get_by_role("button", name="Kill", exact=True).click()
        stored = store.get(MODEL)
        assert stored is not None
        assert (stored.version, stored.flag.enabled) == (2, False)
        assert store.history(MODEL, limit=1)[0].reason == "from the table"


class TestLoginInBrowser:
    """With a token: the login form, an HttpOnly session, and a kill by the operator."""

    def test_login_then_kill_is_logged_under_the_tokens_name(
        self, secured: DashboardServer, store: Publisher, scripted: Any
    ) -> None:
        """The flag page sends the browser to the login form; the token (labelled
        "Dashboard token") opens it; the session cookie is invisible to scripts; a kill
        from the page is written as alice (the token's name) with the typed reason."""
        page, answers = scripted
        page.goto(f"{secured.url}/flags/{MODEL}")
        assert "/login" in page.url
        page.get_by_label("Dashboard token").fill(SECRET)
        with page.expect_navigation():
            page.get_by_role("button", name="Log in").click()
        assert page.url.endswith(f"/flags/{MODEL}")
        assert page.evaluate("document.cookie") == ""
        page.locator("#switch-reason").fill("logged-in kill")
        answers.append("")
        with page.expect_navigation():
            page.get_by_role("button", name="Kill", exact=True).click()
        assert f"kill {MODEL}: revision 2 (v2)" in str(page.locator("#outcome").inner_text())
        entry = store.history(MODEL, limit=1)[0]
        assert (entry.op, entry.actor, entry.reason) == ("kill", "alice", "logged-in kill")


class TestGuardedRolloutView:
    """The guarded rollout on the flag page, read without JavaScript."""

    def test_step_guard_values_with_both_sides_samples_decisions_and_controls(
        self, dashboard: DashboardServer, store: Publisher, page: Any
    ) -> None:
        """Step 1/3 at 5 %; the guard's row shows the candidate's and the control's
        thumbs-down rates and sample counts (240 and 600); the decisions table has the
        controller's decisions; "Pause" and "Abort" are buttons, "Resume" is not."""
        controller = RolloutController(store, MODEL)
        controller.set_plan(
            RolloutPlan(variant="candidate", control="current", rule="paid-ramp",
                        steps=[5, 25, 50], hold_s=3600, window_s=600, min_samples=100,
                        guards=[GUARD])
        )  # fmt: skip
        controller.tick()  # step 1 starts counting samples now
        flush_thumbs(store, {"candidate": (240, 0.05), "current": (600, 0.03)})
        controller.tick()
        page.goto(f"{dashboard.url}/flags/{MODEL}")
        section = page.get_by_role("region", name="Guarded rollout: running")
        assert "step 1/3" in str(section.inner_text())
        guards = section.get_by_role("table", name="Guards on this step's samples")
        headers = [str(t).strip() for t in guards.get_by_role("columnheader").all_inner_texts()]
        assert headers == [
            "Guard", "Verdict", "Candidate", "Candidate samples", "Compared with",
            "Control samples",
        ]  # fmt: skip
        cells = [str(t).strip() for t in guards.get_by_role("row").nth(1).get_by_role(
            "cell").all_inner_texts()]  # fmt: skip
        assert cells[1:] == ["0.05", "240", "0.045", "600"], cells
        decisions = section.get_by_role("table", name="Decisions (newest first)")
        assert decisions.get_by_role("row").count() >= 2
        assert section.get_by_role("button", name="Pause", exact=True).count() == 1
        assert section.get_by_role("button", name="Abort", exact=True).count() == 1
        assert section.get_by_role("button", name="Resume", exact=True).count() == 0


GUARD = "thumbs_down_rate(candidate) <= thumbs_down_rate(current) * 1.5"


def flush_thumbs(store: Publisher, sides: dict[str, tuple[int, float]]) -> None:
    """One metrics flush for the model flag: per variant (samples, thumbs-down rate)."""
    fields: dict[str, str] = {}
    for variant, (samples, rate) in sides.items():
        exposures, thumbs = MetricStat(), MetricStat()
        for index in range(samples):
            exposures.add(1.0)
            thumbs.add(1.0 if index < rate * samples else 0.0)
        fields |= encode_series(variant, "exposures", exposures)
        fields |= encode_series(variant, "thumbs_down", thumbs)
    now_ms = int(time.time() * 1000)
    for command in flush_commands(store.keys, {MODEL: fields}, 3_600_000, now_ms):
        store.client.execute_command(*command)
