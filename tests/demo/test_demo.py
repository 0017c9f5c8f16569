"""The one-command demo, run as a user would: the real console script in a subprocess."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flagsync.demo import shares_in_tenths

ROOT = Path(__file__).resolve().parents[2]


def _flagsync_command() -> list[str]:
    script = Path(sys.executable).with_name("flagsync")
    return [str(script)] if script.exists() else [sys.executable, "-m", "flagsync.cli"]


DEMO_NAMESPACE = "demo-tests"
"""The namespace the test's demo run is given with `-n` (FLAGSYNC_NAMESPACE says another)."""


@pytest.fixture(scope="module")
def summary() -> dict[str, Any]:
    """One quick demo run with three workers in namespace `demo-tests`, its JSON summary
    parsed (the narration, on stderr with --json, under "narration")."""
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env["FLAGSYNC_NAMESPACE"] = "not-for-the-demo"
    result = subprocess.run(
        [
            *_flagsync_command(),
            "demo",
            "--workers",
            "3",
            "--duration",
            "9",
            "--rps",
            "400",
            "-n",
            DEMO_NAMESPACE,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    parsed["narration"] = result.stderr
    return parsed


def _tolerance(share: float, samples: float) -> float:
    """Four standard deviations of a binomial share, but at least two points."""
    return max(0.02, 4 * math.sqrt(max(share * (1 - share), 0.01) / max(samples, 1)))


class TestShares:
    """The printed split is rounded so that it adds up to 100 %."""

    @pytest.mark.parametrize(
        "counts",
        [[1, 1, 1], [976, 24], [2, 998, 0], [1, 2, 3, 4, 5, 6, 7], [333, 333, 334], [0, 0]],
    )
    def test_tenths_sum_to_1000_and_stay_within_a_tenth(self, counts: list[float]) -> None:
        """Each share is within 0.1 % of the exact one and together they make 1000
        tenths (or all zero when there is no traffic)."""
        tenths = shares_in_tenths(counts)

        total = sum(counts)
        assert sum(tenths) == (1000 if total else 0)
        for count, share in zip(counts, tenths, strict=True):
            exact = count * 1000 / total if total else 0
            assert abs(share - exact) < 1


class TestDemoHelp:
    def test_help_names_the_demo_namespace(self) -> None:
        """`flagsync demo --help` says its namespace defaults to `demo`, not `default`."""
        result = subprocess.run(
            [*_flagsync_command(), "demo", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

        assert result.returncode == 0, result.stderr
        assert "(default: 'demo'; $FLAGSYNC_NAMESPACE is not used here)" in " ".join(
            result.stdout.split()
        )


class TestDemo:
    """`flagsync demo` tells the whole story with measured figures."""

    def test_every_step_reached_every_worker(self, summary: dict[str, Any]) -> None:
        """Each step (by hand or by the controller) reached all three workers, measured."""
        steps = [*summary["steps"], summary["regression"]]
        assert len(steps) >= 5
        for step in steps:
            assert step["reached"] == step["total"] == 3
            assert step["max_latency_ms"] is not None
            assert 0 <= step["max_latency_ms"] < 1000

    def test_shares_follow_the_configured_percentages(self, summary: dict[str, Any]) -> None:
        """Paid users land on the candidate at 0 %, 5 % and 25 % as ramped (within 4 sigma)."""
        ramped = {step["target"]: step for step in summary["steps"] if step["target"] is not None}
        assert set(ramped) >= {0.0, 5, 25}
        for target in (0.0, 5, 25):
            step = ramped[target]
            samples = step["paid_ramp_requests"]
            assert samples > 100
            share = target / 100
            assert abs(step["paid_ramp_share"] - share) <= _tolerance(share, samples), step

    def test_staff_see_the_candidate_first(self, summary: dict[str, Any]) -> None:
        """With paid traffic at 0 %, the candidate serves only staff (about 2 % of users)."""
        staff_only = summary["steps"][0]["variants"]
        assert 0.005 < staff_only["candidate"]["share"] < 0.05

    def test_the_controller_rolls_back_by_itself(self, summary: dict[str, Any]) -> None:
        """The guard sees the simulated regression and the controller kills the flag within
        one metrics window (plus one flush and one tick) of its start."""
        regression = summary["regression"]
        assert regression["guard"].startswith("thumbs_down_rate(candidate)")
        assert regression["candidate_rate"] > regression["threshold"]
        assert regression["detected_after_s"] <= regression["window_s"] + 0.75

    def test_no_candidate_request_after_the_kill(self, summary: dict[str, Any]) -> None:
        """Once the rollback revision is applied, not one request is served by the candidate."""
        after = summary["after_kill"]
        assert after["requests"] > 100
        assert after["variants"].get("candidate", {}).get("requests", 0) == 0
        assert summary["ok"] is True

    def test_the_fallback_episode_moves_requests_and_back(self, summary: dict[str, Any]) -> None:
        """While the SIMULATED primary answers 429 nearly every `chat-llm` call falls back
        (per variant, from the flag's metrics); once it answers again few do."""
        episode = summary["fallback_episode"]
        assert set(episode["during"]) >= {"current"}
        for row in episode["during"].values():
            assert row["calls"] > 0
            assert row["fallback_rate"] >= 0.9
        current = episode["after"]["current"]
        assert current["calls"] > 0
        assert current["fallback_rate"] <= 0.25

    def test_narration_labels_the_simulation(self, summary: dict[str, Any]) -> None:
        """The output says the LLM backends are simulated and shows the measured reach."""
        assert "SIMULATED" in summary["narration"]
        assert "reached 3/3 workers in" in summary["narration"]

    def test_the_namespace_given_with_n_is_used(self, summary: dict[str, Any]) -> None:
        """`-n NAME` picks the demo's namespace (FLAGSYNC_NAMESPACE, set to something else,
        is not used: the demo replaces its namespace's flags)."""
        assert summary["namespace"] == DEMO_NAMESPACE
        assert f"to namespace '{DEMO_NAMESPACE}' as revision" in summary["narration"]

    def test_printed_shares_add_up_to_100_percent(self, summary: dict[str, Any]) -> None:
        """Every traffic line's per-variant percentages add up to exactly 100.0 %."""
        lines = [line for line in summary["narration"].splitlines() if " requests: " in line]
        assert len(lines) >= 4
        for line in lines:
            shares = [float(share) for share in re.findall(r"[a-z]+ (\d+\.\d)% \(", line)]
            assert shares, line
            assert round(sum(shares), 1) == 100.0, line

    def test_nothing_is_left_running(self, summary: dict[str, Any]) -> None:
        """After the demo no worker process or embedded server remains."""
        assert summary["steps"]
        if shutil.which("pgrep") is None:
            pytest.skip("pgrep is not installed")  # pragma: no cover
        # This run's workers only: this environment's Python, this test's namespace (other
        # checkouts on the machine may be running their own demo meanwhile).
        ours = (
            f"^{re.escape(sys.prefix)}/.* -m flagsync[.]examples[.]inference "
            f".*--namespace {DEMO_NAMESPACE}( |$)"
        )
        leftovers = subprocess.run(
            ["pgrep", "-f", ours],
            capture_output=True,
            text=True,
            check=False,
        )
        assert leftovers.stdout.strip() == ""
