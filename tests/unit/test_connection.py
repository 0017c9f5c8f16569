"""The store URL rule: where the URL comes from, what a Redis URL is, and what a
mistake reads like (issue #10, section 3: never a bare ValueError or Python wording)."""

from __future__ import annotations

import pytest

from flagsync._connection import redact_url, resolve_url
from flagsync._replicas import primary_url
from flagsync.errors import FlagsyncError, StoreURLError


class TestResolveUrl:
    """`resolve_url` takes the argument, else REDIS_URL, and checks it is a Redis URL."""

    def test_argument_wins_over_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An explicit URL is used even when REDIS_URL is set."""
        monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1")
        assert resolve_url("redis://127.0.0.1:2") == "redis://127.0.0.1:2"

    def test_environment_is_the_fallback(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without an argument, REDIS_URL is used."""
        monkeypatch.setenv("REDIS_URL", "rediss://127.0.0.1:1")
        assert resolve_url(None) == "rediss://127.0.0.1:1"

    def test_no_url_names_the_cli_options(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With neither, the message names --url, REDIS_URL and `flagsync server`."""
        monkeypatch.delenv("REDIS_URL", raising=False)
        with pytest.raises(StoreURLError) as caught:
            resolve_url(None)
        message = str(caught.value)
        assert "--url redis://HOST:PORT" in message
        assert "REDIS_URL" in message
        assert "`flagsync server`" in message

    @pytest.mark.parametrize(
        "url",
        [
            "redis://127.0.0.1:6379",
            "rediss://h:1/0",
            "REDIS://h",
            "unix:///tmp/r.sock",
            "redis://[::1]:7",
            "redis://h:1?read_from=replica",
            "redis://h:1/0?read_from=primary&socket_timeout=1",
            "rediss://h:1?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required",
        ],
    )
    def test_redis_urls_pass(self, url: str) -> None:
        """redis://, rediss:// (any case) and unix:// URLs are accepted as given."""
        assert resolve_url(url) == url

    @pytest.mark.parametrize(
        ("url", "words"),
        [
            ("http://127.0.0.1:6379", "http:// is not a Redis scheme"),
            ("https://u:pw@host:1", "https:// is not a Redis scheme"),
            ("127.0.0.1:6379", "has no scheme: write redis://127.0.0.1:6379"),
            ("redis://127.0.0.1:abc", "port 'abc' is not a number"),
            ("redis://127.0.0.1:99999", "port '99999' is not a number in 0..65535"),
            ("redis://h:1?read_from=replcia", "read_from='replcia' is not one of primary, replica"),
            ("redis://h:1?readfrom=replica", "unknown option(s) readfrom"),
            ("rediss://h:1?ssl_ca_cert=/ca.pem", "unknown option(s) ssl_ca_cert"),
            ("unix:///tmp/r.sock?read_from=replica", "read_from=replica needs the primary's"),
        ],
    )
    def test_malformed_urls(self, url: str, words: str) -> None:
        """Each mistake is a StoreURLError (a FlagsyncError and ValueError) saying what."""
        with pytest.raises(StoreURLError) as caught:
            resolve_url(url)
        assert words in str(caught.value)
        assert isinstance(caught.value, FlagsyncError)
        assert isinstance(caught.value, ValueError)

    def test_password_never_shown(self) -> None:
        """A refused URL is shown with its password redacted."""
        with pytest.raises(StoreURLError) as caught:
            resolve_url("http://user:hunter2@host:1")
        assert "hunter2" not in str(caught.value)
        assert "user:***@host" in str(caught.value)


class TestPrimaryUrl:
    """A plain URL's `read_from` is the worker's: writers connect to the URL without it."""

    @pytest.mark.parametrize(
        ("url", "primary"),
        [
            ("redis://h:1?read_from=replica", "redis://h:1"),
            (
                "redis://u:p@h:1/2?socket_timeout=1&read_from=replica",
                "redis://u:p@h:1/2?socket_timeout=1",
            ),
            ("redis://h:1?socket_timeout=1", "redis://h:1?socket_timeout=1"),
            ("unix:///tmp/r.sock?read_from=primary", "unix:///tmp/r.sock"),
        ],
    )
    def test_read_from_is_dropped(self, url: str, primary: str) -> None:
        """Only `read_from` goes; credentials, database and other options stay."""
        assert primary_url(url) == primary


class TestRedactUrl:
    """Passwords in the authority and the query string are replaced by ***."""

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("redis://u:p@h:1/0", "redis://u:***@h:1/0"),
            ("rediss://:p@ss@h:1", "rediss://:***@h:1"),
            ("redis://h:1/0?password=p&db=1", "redis://h:1/0?password=***&db=1"),
            ("redis://h:1", "redis://h:1"),
        ],
    )
    def test_redaction(self, url: str, shown: str) -> None:
        """The password goes, everything else stays."""
        assert redact_url(url) == shown
