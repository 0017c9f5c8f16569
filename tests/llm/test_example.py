"""The fallback episode example (`python -m flagsync.examples.llm_fallback`): requests move
to the fallback while the SIMULATED primary answers 429, and come back after."""

from __future__ import annotations

import subprocess
import sys

from flagsync.examples.llm_fallback import run


class TestFallbackEpisode:
    """The three phases show what the flag's metrics say per variant."""

    def test_phases(self) -> None:
        """No fallback before, all requests on the fallback during the outage, few after."""
        before, during, after = run(1500)
        assert before["variants"]["current"]["fallback_rate"] == 0.0
        assert during["variants"]["current"]["fallback_rate"] == 1.0
        assert during["served_by"] == {"anthropic/claude-sonnet-4": 500}
        assert after["variants"]["candidate"]["fallback_rate"] < 0.05
        assert during["guard"].startswith("breach")
        assert before["guard"].startswith("pass")

    def test_runs_as_a_module(self) -> None:
        """The module prints its labelled summary and exits 0."""
        done = subprocess.run(
            [sys.executable, "-m", "flagsync.examples.llm_fallback", "--requests", "600"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert done.stdout.startswith("SIMULATED providers")
        assert "[primary answers 429] served by: anthropic/claude-sonnet-4 200" in done.stdout
        assert done.stderr == ""
