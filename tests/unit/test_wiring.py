"""`connect()`'s keyword options as the sync wiring reads them, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from flagsync import FlagClient
from flagsync._sync.wiring import ConnectSettings
from flagsync.errors import FlagsyncError

URL = "redis://127.0.0.1:1"


class TestConnectSettings:
    """Options are checked before anything starts; every documented name is accepted."""

    def test_documented_options_are_accepted(self, tmp_path: Path) -> None:
        """Sync timings, `lkg_path` (a str becomes a Path), `worker_id` and metrics options."""
        settings = ConnectSettings.parse(
            URL,
            "ns",
            {
                "check_interval_s": 0.1,
                "stale_after_s": 2.0,
                "liveness_timeout_s": 3.0,
                "backoff_max_permanent_s": 9.0,
                "lkg_path": str(tmp_path / "flags.lkg"),
                "worker_id": "w-7",
                "exposures": True,
                "metrics_interval_s": 5,
            },
        )
        assert (settings.url, settings.namespace, settings.worker_id) == (URL, "ns", "w-7")
        assert settings.sync.check_interval_s == 0.1
        assert settings.sync.backoff_max_permanent_s == 9.0
        assert settings.sync.lkg_path == tmp_path / "flags.lkg"
        assert (settings.metrics, settings.exposures, settings.metrics_interval_s) == (
            True,
            True,
            5.0,
        )
        assert settings.wants_metrics

    def test_unknown_option_names_it_and_the_known_ones(self) -> None:
        """A misspelt option fails with its name and the list of valid ones."""
        with pytest.raises(
            TypeError, match=r"unknown connect option\(s\) stale_after\b.*stale_after_s"
        ):
            ConnectSettings.parse(URL, "ns", {"stale_after": 1.0})

    def test_unknown_option_fails_connect_before_starting(self) -> None:
        """`FlagClient.connect` refuses it before starting any thread."""
        with pytest.raises(TypeError, match="chek_interval_s"):
            FlagClient.connect(URL, "ns", chek_interval_s=1.0)

    def test_no_url_says_how_to_give_one(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a URL or REDIS_URL the error says where a URL comes from."""
        monkeypatch.delenv("REDIS_URL", raising=False)
        with pytest.raises(FlagsyncError, match="REDIS_URL"):
            ConnectSettings.parse(None, "ns", {})

    @pytest.mark.parametrize(
        ("url", "followed"),
        [
            ("redis://127.0.0.1:1", "redis://127.0.0.1:1?read_from=replica"),
            ("redis://127.0.0.1:1?read_from=primary", "redis://127.0.0.1:1?read_from=replica"),
            (
                "redis+sentinel://127.0.0.1:1/svc",
                "redis+sentinel://127.0.0.1:1/svc?read_from=replica",
            ),
            ("redis+cluster://127.0.0.1:1", "redis+cluster://127.0.0.1:1?read_from=replica"),
        ],
    )
    def test_read_from_keyword_is_the_url_option(self, url: str, followed: str) -> None:
        """`read_from="replica"` sets the URL's option (replacing one the URL had)."""
        assert ConnectSettings.parse(url, "ns", {"read_from": "replica"}).url == followed

    @pytest.mark.parametrize(
        ("url", "value", "words"),
        [
            ("redis://127.0.0.1:1", "replcia", "read_from: must be one of primary, replica"),
            ("unix:///tmp/r.sock", "replica", "read_from=replica needs the primary's"),
        ],
    )
    def test_bad_read_from_keyword_names_the_field(self, url: str, value: str, words: str) -> None:
        """A bad value (or a URL that cannot take it) is a ValueError naming `read_from`."""
        with pytest.raises(ValueError, match="read_from") as caught:
            ConnectSettings.parse(url, "ns", {"read_from": value})
        assert words in str(caught.value)

    def test_metrics_off_keeps_no_tables(self) -> None:
        """With metrics and exposures off nothing is counted or flushed."""
        assert not ConnectSettings.parse(URL, "ns", {"metrics": False}).wants_metrics
