"""Signed mode on a real server: without the operator's signing key the dashboard of a
signed store is read-only by itself and says so on every page and in the API; with the
key (`signing_key`, like the CLI's `FLAGSYNC_SIGNING_KEY`) its writes are signed, and a
worker holding only the public key applies them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flagsync import FlagClient
from flagsync._signing import SigningKeyError, generate_key_pair
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from tests.dashboard.conftest import DashboardFactory
from tests.dashboard.support import EXAMPLE, api, wait_until

MODEL = "llm-model-version"
BANNER = "Read-only: the store is in signed mode and this dashboard has no signing key"


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[Path, str]:
    """A signing key file (0600) and its public line, as `flagsync keygen` writes them."""
    pem, public = generate_key_pair()
    path = tmp_path / "signing.key"
    path.write_bytes(pem)
    path.chmod(0o600)
    return path, public


@pytest.fixture
def signed_store(
    server: ServerProcess,
    namespace: str,
    key_pair: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Publisher]:
    """The example flags written by a signing publisher (the store is in signed mode);
    no signing key in the environment, so only what a test passes counts."""
    monkeypatch.delenv("FLAGSYNC_SIGNING_KEY", raising=False)
    with Publisher(server.url, namespace, actor="signer", signing_key=key_pair[0]) as publisher:
        publisher.apply(EXAMPLE, reason="signed fixture")
        yield publisher


class TestWithoutTheKey:
    """A signed store and no signing key: read-only, said everywhere."""

    def test_every_page_shows_the_banner_and_disables_the_buttons(
        self, make_dashboard: DashboardFactory, signed_store: Publisher
    ) -> None:
        """The flags, flag and workers pages carry the read-only banner; write buttons are
        disabled."""
        running = make_dashboard(actor="viewer")
        with api(running.url) as client:
            pages = {path: client.get(path).text for path in ("/", f"/flags/{MODEL}", "/workers")}

        for path, html in pages.items():
            assert BANNER in html, path
        assert " disabled>Kill</button>" in pages["/"]
        assert " disabled>Kill</button>" in pages[f"/flags/{MODEL}"]
        assert "--signing-key" in pages["/workers"]

    def test_writes_are_403_saying_why_and_nothing_is_written(
        self, make_dashboard: DashboardFactory, signed_store: Publisher
    ) -> None:
        """Kill, ramp and rollout commands through the API are refused with the reason;
        the flags list says the dashboard is read-only; the flag keeps its version."""
        running = make_dashboard(actor="viewer")
        with api(running.url) as client:
            kill = client.post(f"/api/flags/{MODEL}/kill", json={"expected_version": 1})
            ramp = client.post(
                f"/api/flags/{MODEL}/ramp",
                json={"expected_version": 1, "variant": "candidate", "percent": 50},
            )
            pause = client.post(f"/api/rollouts/{MODEL}/pause", json={"reason": "x"})
            listing = client.get("/api/flags").json()

        for response in (kill, ramp, pause):
            assert response.status_code == 403, response.text
            assert response.json()["error"] == "read_only"
            assert "signed mode" in response.json()["message"]
            assert "nothing was written" in response.json()["message"]
        assert listing["read_only"].startswith("the store is in signed mode")
        assert listing["signs_writes"] is False
        stored = signed_store.get(MODEL)
        assert stored is not None
        assert (stored.version, stored.flag.enabled) == (1, True)

    def test_an_unsigned_store_is_writable(
        self, make_dashboard: DashboardFactory, store: Publisher, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The same dashboard on an unsigned store writes and shows no banner."""
        monkeypatch.delenv("FLAGSYNC_SIGNING_KEY", raising=False)
        running = make_dashboard(actor="viewer")
        with api(running.url) as client:
            page = client.get("/").text
            kill = client.post(f"/api/flags/{MODEL}/kill", json={"expected_version": 1})
        assert "Read-only" not in page
        assert kill.status_code == 200, kill.text

    def test_a_store_switched_to_signed_mode_turns_the_dashboard_read_only(
        self,
        *,
        server: ServerProcess,
        namespace: str,
        make_dashboard: DashboardFactory,
        store: Publisher,
        key_pair: tuple[Path, str],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A running dashboard follows the store: once a signing publisher adopts the
        unsigned state, the next pages and writes are read-only without a restart."""
        monkeypatch.delenv("FLAGSYNC_SIGNING_KEY", raising=False)
        running = make_dashboard(actor="viewer")
        with api(running.url) as client:
            assert client.get("/api/flags").json()["read_only"] is None
            with Publisher(
                server.url, namespace, "signer", signing_key=key_pair[0], adopt_unsigned=True
            ) as signer:
                signer.kill(MODEL, reason="signed from now on")

            assert wait_until(lambda: client.get("/api/flags").json()["read_only"], 5)
            enable = client.post(f"/api/flags/{MODEL}/enable", json={"expected_version": 2})
            assert enable.status_code == 403
            assert BANNER in client.get("/").text


class TestWithTheKey:
    """Given the operator's key, the dashboard signs what it writes."""

    def test_a_kill_is_signed_and_a_verifying_worker_applies_it(
        self,
        server: ServerProcess,
        namespace: str,
        make_dashboard: DashboardFactory,
        signed_store: Publisher,
        key_pair: tuple[Path, str],
    ) -> None:
        """A worker holding only the public key serves the kill the dashboard wrote, and
        the change log names the dashboard's operator."""
        private, public = key_pair
        running = make_dashboard(actor="alice", signing_key=str(private))
        worker = FlagClient.connect(server.url, namespace, verify_keys=[public], worker_id="w-1")
        try:
            assert worker.wait_ready(10), worker.status()
            assert worker.variation(MODEL, {"key": "u"}, None) is not None
            with api(running.url) as client:
                page = client.get("/").text
                response = client.post(
                    f"/api/flags/{MODEL}/kill", json={"expected_version": 1, "reason": "bad"}
                )
            body = response.json()

            assert "Read-only" not in page
            assert response.status_code == 200, response.text
            assert wait_until(lambda: worker.revision == body["revision"], 5), worker.status()
            assert worker.detail(MODEL, {"key": "u"}, None).reason == "DISABLED"
            assert worker.status().last_error is None
            entry = signed_store.history(MODEL, limit=1)[0]
            assert (entry.actor, entry.op, entry.reason) == ("alice", "kill", "bad")
        finally:
            worker.close()

    def test_a_bad_key_refuses_to_start(
        self, make_dashboard: DashboardFactory, signed_store: Publisher, tmp_path: Path
    ) -> None:
        """A key file that is not an Ed25519 private key stops the dashboard before it
        listens, naming the file."""
        bogus = tmp_path / "not-a-key"
        bogus.write_text("hello")
        with pytest.raises(SigningKeyError, match="not-a-key"):
            make_dashboard(signing_key=str(bogus))
