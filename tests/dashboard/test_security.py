"""Who may read and write: the start-up refusal (checked without binding anything), the
bearer token, the login cookie, CSRF on browser writes, redacted URLs."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import httpx
import pytest

from flagsync.cli import main
from flagsync.dashboard import DashboardConfig, DashboardConfigError, check_config, is_loopback
from flagsync.dashboard._config import split_token
from flagsync.dashboard.serve import DashboardServer
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from tests.dashboard.conftest import SECRET, DashboardFactory
from tests.dashboard.support import api

MODEL = "llm-model-version"
URL = "redis://127.0.0.1:1"
LONG, SHORT = "ops:long-enough", "ops:short"
BARE, NAMED = "s3cret-s3cret", "alice:s3cret-s3cret"


class TestStartupRefusal:
    """A dashboard that would listen beyond this machine without a token never starts."""

    @pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.invalid"])  # noqa: S104
    def test_non_loopback_host_without_token_is_refused(self, host: str) -> None:
        """The config check refuses it, naming the host and the two ways to give a token."""
        with pytest.raises(DashboardConfigError, match="token is required") as caught:
            check_config(DashboardConfig(URL, host=host))
        assert host in str(caught.value)
        assert "FLAGSYNC_DASHBOARD_TOKEN" in str(caught.value)

    @pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
    def test_loopback_needs_no_token(self, host: str) -> None:
        """Loopback addresses (and `localhost`) are this machine only: no token needed."""
        assert is_loopback(host)
        check_config(DashboardConfig(URL, host=host))

    def test_non_loopback_with_a_token_is_allowed_and_short_tokens_are_not(self) -> None:
        """A token of 8+ secret characters allows any host; a shorter one is refused."""
        anywhere = "0.0.0.0"  # noqa: S104 - only checked, never bound
        check_config(DashboardConfig(URL, host=anywhere, token=LONG))
        with pytest.raises(DashboardConfigError, match="at least 8"):
            check_config(DashboardConfig(URL, host=anywhere, token=SHORT))

    def test_token_names_the_operator(self) -> None:
        """`NAME:SECRET` records NAME; a bare secret names nobody (the actor option does)."""
        assert split_token("alice:s3cret-s3cret") == ("alice", "s3cret-s3cret")
        assert split_token("s3cret-s3cret") == (None, "s3cret-s3cret")
        assert DashboardConfig(URL, token=BARE, actor="bob").operator == "bob"
        assert DashboardConfig(URL, token=NAMED, actor="bob").operator == "alice"

    def test_the_cli_refuses_before_starting_anything(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`flagsync dashboard --host 0.0.0.0` exits 2 with the reason; the check runs before
        any server or socket (the URL given points at a closed port and is never used)."""
        monkeypatch.delenv("FLAGSYNC_DASHBOARD_TOKEN", raising=False)
        code = main(["dashboard", "--url", URL, "--host", "0.0.0.0"])  # noqa: S104
        assert code == 2
        assert "refusing to start" in capsys.readouterr().err


class TestToken:
    """With a token, the API needs `Authorization: Bearer`, the pages a login."""

    def test_api_without_token_is_401_and_with_it_works(self, secured: DashboardServer) -> None:
        """No or a wrong token: 401 for reads and writes; the right one: 200, and the
        write is logged under the name the token carries."""
        with api(secured.url) as anonymous, api(secured.url, "wrong-token-x") as wrong:
            assert anonymous.get("/api/flags").status_code == 401
            assert wrong.get("/api/flags").status_code == 401
            refused = anonymous.post(f"/api/flags/{MODEL}/kill", json={"expected_version": 1})
            assert refused.status_code == 401
        with api(secured.url, SECRET) as client:
            assert client.get("/api/flags").status_code == 200
            written = client.post(
                f"/api/flags/{MODEL}/kill", json={"expected_version": 1, "reason": "r"}
            )
        assert written.status_code == 200
        assert written.json()["actor"] == "alice"

    def test_pages_redirect_to_login_and_the_cookie_is_httponly(
        self, secured: DashboardServer
    ) -> None:
        """A page without a session goes to /login; the right token sets an HttpOnly,
        SameSite=Strict cookie that opens the pages; a wrong token is 401."""
        with httpx.Client(base_url=secured.url, timeout=10) as browser:
            first = browser.get("/workers")
            assert (first.status_code, first.headers["location"]) == (303, "/login?next=/workers")
            assert browser.post("/login", data={"token": "nope-nope-nope"}).status_code == 401
            logged = browser.post("/login?next=/workers", data={"token": SECRET})
            cookie = logged.headers["set-cookie"].lower()
            assert "httponly" in cookie
            assert "samesite=strict" in cookie
            assert SECRET not in logged.headers["set-cookie"]
            assert browser.get("/workers").status_code == 200

    def test_cookie_writes_need_the_csrf_token(
        self, secured: DashboardServer, store: Publisher
    ) -> None:
        """A logged-in browser's API write without the CSRF header, or form post without
        the field, is 403 and writes nothing; with it, it is written."""
        with httpx.Client(base_url=secured.url, timeout=10) as browser:
            browser.post("/login", data={"token": SECRET})
            page = browser.get(f"/flags/{MODEL}").text
            match = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page)
            assert match is not None
            csrf = match.group(1)
            body = {"expected_version": 1, "reason": "csrf"}
            assert browser.post(f"/api/flags/{MODEL}/kill", json=body).status_code == 403
            form = {"expected_version": "1", "reason": "csrf"}
            assert browser.post(f"/flags/{MODEL}/kill", data=form).status_code == 403
            assert store.get(MODEL).flag.enabled  # type: ignore[union-attr]
            written = browser.post(
                f"/api/flags/{MODEL}/kill", json=body, headers={"X-CSRF-Token": csrf}
            )
            assert written.status_code == 200, written.text
        assert not store.get(MODEL).flag.enabled  # type: ignore[union-attr]


class TestOpenMode:
    """Without a token (loopback), writes still cannot come from another web site."""

    def test_cross_site_and_non_json_writes_are_refused(
        self, dashboard: DashboardServer, store: Publisher
    ) -> None:
        """A POST with a foreign Origin, or a form-encoded API post, writes nothing."""
        body = {"expected_version": 1, "reason": "x"}
        with api(dashboard.url) as client:
            foreign = client.post(
                f"/api/flags/{MODEL}/kill", json=body, headers={"Origin": "https://evil.example"}
            )
            form = client.post(f"/api/flags/{MODEL}/kill", data={"expected_version": "1"})
            page_form = client.post(f"/flags/{MODEL}/kill", data={"expected_version": "1"})
        assert (foreign.status_code, form.status_code, page_form.status_code) == (403, 415, 403)
        assert store.get(MODEL).flag.enabled  # type: ignore[union-attr]


class TestRedaction:
    """The store password never appears on a page or in the API."""

    def test_password_in_the_url_is_shown_as_stars(
        self, server: ServerProcess, namespace: str, make_dashboard: DashboardFactory
    ) -> None:
        """A dashboard on `redis://ops:PASSWORD@…` shows `ops:***@` and never the password."""
        import redis

        raw: Any = redis.Redis.from_url(server.url)
        raw.execute_command(
            "ACL", "SETUSER", "dash-ops", "on", ">pa55-w0rd-xyz", "~*", "&*", "+@all"
        )
        try:
            url = server.url.replace("redis://", "redis://dash-ops:pa55-w0rd-xyz@")
            with Publisher(url, namespace) as publisher:
                publisher.put("plain", {"variants": {"a": 1}, "off": "a", "default": "a"})
            running = make_dashboard(url=url)
            with api(running.url) as client:
                pages = [client.get(path).text for path in ("/", "/workers", "/flags/plain")]
        finally:
            raw.execute_command("ACL", "DELUSER", "dash-ops")
            raw.close()
        assert all("pa55-w0rd-xyz" not in page for page in pages)
        assert "dash-ops:***@" in pages[0]


class TestImportIsolation:
    """The library and the CLI never load the web stack."""

    def test_flagsync_and_its_cli_do_not_import_starlette(self) -> None:
        """`import flagsync`, `flagsync.cli` and building the parser load no Starlette,
        uvicorn, Jinja2 or sse-starlette."""
        code = (
            "import sys, flagsync, flagsync.cli, flagsync.publisher;"
            "flagsync.cli.build_parser();"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'starlette', 'uvicorn', 'jinja2', 'sse_starlette'}))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        )
        assert result.stdout.strip() == "[]"
