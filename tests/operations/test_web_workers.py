"""Every recipe of the "Running it in your web worker" guide (docs/web-workers.md), run as
real gunicorn/uvicorn processes on 127.0.0.1 against a real server: each worker syncs on
its own, follows a flag change, logs through the recipe's structlog setup, and closes its
client on a graceful stop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from tests.integration.support import wait_until
from tests.operations.support import WebServer, children

FLAG: Final = "llm-model-version"
DOCUMENT: Final[dict[str, Any]] = {
    "flags": {
        FLAG: {
            "variants": {"current": "gpt-4o", "candidate": "gpt-4.1"},
            "off": "current",
            "default": "current",
        }
    }
}
WORKERS: Final = 2
GUNICORN: Final = ["gunicorn", "-c", "gunicorn_conf.py", "-w", str(WORKERS)]
BIND: Final = ["-b", "127.0.0.1:{port}", "wsgi_app:app"]
RECIPES: Final[dict[str, list[str]]] = {
    "gunicorn": [*GUNICORN, *BIND],
    "gunicorn-preload": [*GUNICORN, "--preload", *BIND],
    "uvicorn-workers": [
        "uvicorn", "asgi_app:app", "--workers", str(WORKERS), "--host", "127.0.0.1",
        "--port", "{port}",
    ],
}  # fmt: skip


def json_lines(output: str) -> list[dict[str, Any]]:
    """The structlog JSON lines among a server's output (gunicorn's own lines are text)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def worker_pids(publisher: Publisher) -> set[int]:
    """The pids of the live flagsync workers of the namespace."""
    return {worker.pid for worker in publisher.workers()}


def only_workers(publisher: Publisher, master: int) -> bool:
    """True once the live flagsync workers are exactly `WORKERS` children of `master` (a
    --preload master's own record is withdrawn at its first heartbeat after the fork)."""
    pids = worker_pids(publisher)
    return len(pids) == WORKERS and pids <= children(master)


@pytest.fixture(params=list(RECIPES))
def recipe(request: pytest.FixtureRequest) -> str:
    """The name of one recipe of the guide."""
    name: str = request.param
    return name


class TestRecipes:
    """Each recipe's workers sync, follow a change, log JSON, and close on stop."""

    def test_workers_follow_a_change_and_close_on_stop(
        self,
        recipe: str,
        server: ServerProcess,
        publisher: Publisher,
        namespace: str,
        tmp_path: Path,
    ) -> None:
        """Every worker (and only workers: a --preload master is not one) reports the
        change as applied and serves it; INFO JSON logs name each worker's pid; after
        SIGTERM the presence records are withdrawn at once (close() ran), not expired."""
        publisher.apply(DOCUMENT)
        env = {"REDIS_URL": server.url, "FLAGSYNC_NAMESPACE": namespace, "LOG_LEVEL": "info"}
        web = WebServer(RECIPES[recipe], env, tmp_path / "server.log")
        try:
            assert web.wait_serving()["model"] == "gpt-4o"
            assert wait_until(lambda: only_workers(publisher, web.pid), 15.0, 0.05), (
                worker_pids(publisher),
                children(web.pid),
                web.output(),
            )
            workers = worker_pids(publisher)
            assert web.pid not in workers

            revision = publisher.set_default(FLAG, "candidate")
            report = publisher.wait_propagated(revision, 5.0)
            assert report.complete, report
            assert {ack.worker.pid for ack in report.reached} == workers
            answers = [web.get(user=f"user-{i}") for i in range(20)]
            assert {(a["model"], a["revision"], a["state"]) for a in answers} == {
                ("gpt-4.1", revision, "ready")
            }
            # the OpenFeature recipe: a provider per worker over the same client
            assert {a["openfeature_model"] for a in answers} == {"gpt-4.1"}
            assert {a["pid"] for a in answers} <= workers

            logged = json_lines(web.output())
            loaded = {line["pid"] for line in logged if line["event"] == "snapshot_loaded"}
            assert workers <= loaded | {web.pid}, (workers, loaded)
            assert all(line["level"] in {"info", "warning", "error"} for line in logged)
            if recipe == "uvicorn-workers":
                self.check_metrics(web, revision)
        finally:
            returncode = web.stop()
        assert returncode == 0, web.output()
        assert wait_until(lambda: not publisher.workers(), 2.0), web.output()  # TTL is 5 s

    @staticmethod
    def check_metrics(web: WebServer, revision: int) -> None:
        """The FastAPI recipe's /metrics: the answering worker is ready at `revision`."""
        families = {
            family.name: family for family in text_string_to_metric_families(web.text("metrics/"))
        }
        states = {
            sample.labels["state"]: sample.value
            for sample in families["flagsync_sync_state"].samples
        }
        assert states["ready"] == 1.0
        assert families["flagsync_revision"].samples[0].value == float(revision)


class TestLogging:
    """The recipes' structlog setup keeps flagsync's INFO lines out by default."""

    def test_default_level_is_warning(
        self, server: ServerProcess, publisher: Publisher, namespace: str, tmp_path: Path
    ) -> None:
        """Without LOG_LEVEL a gunicorn worker logs no flagsync INFO event (no
        snapshot_loaded), while it serves the flags all the same."""
        publisher.apply(DOCUMENT)
        env = {"REDIS_URL": server.url, "FLAGSYNC_NAMESPACE": namespace}
        web = WebServer(RECIPES["gunicorn"], env, tmp_path / "server.log")
        try:
            assert web.wait_serving()["model"] == "gpt-4o"
            assert wait_until(lambda: len(publisher.workers()) == WORKERS, 15.0, 0.05)
        finally:
            assert web.stop() == 0
        assert [line for line in json_lines(web.output()) if line["level"] == "info"] == []
        assert "snapshot_loaded" not in web.output()
