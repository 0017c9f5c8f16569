"""The example inference worker (`python -m flagsync.examples.inference`): what the README
says of it (warnings by default, `-v` for INFO), and that it ships inside the package."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flagsync.publisher import Publisher
from flagsync.server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-m", "flagsync.examples.inference"]


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """A real Valkey on a free loopback port, holding the demo's flags in `default`."""
    process = ServerProcess(kind="valkey")
    try:
        url = process.start().url
        with Publisher(url, "default", actor="tests") as publisher:
            publisher.apply(ROOT / "flagsync" / "data" / "llm-rollout.yaml")
        yield url
    finally:
        process.close()


def _run_worker(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WORKER, "--url", url, "--duration", "0.5", "--rps", "50", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


class TestExampleWorker:
    def test_it_logs_warnings_only_by_default(self, server_url: str) -> None:
        """Without -v the worker serves and reports, and logs nothing at INFO."""
        result = _run_worker(server_url)

        assert result.returncode == 0, result.stderr
        assert '"type": "stats"' in result.stdout
        assert "worker_started" not in result.stderr
        assert "[info" not in result.stderr

    def test_verbose_logs_info(self, server_url: str) -> None:
        """With -v the worker logs its start and stop at INFO."""
        result = _run_worker(server_url, "-v")

        assert result.returncode == 0, result.stderr
        assert "worker_started" in result.stderr
        assert "worker_stopped" in result.stderr

    def test_no_url_is_a_usage_error(self) -> None:
        """Without --url or REDIS_URL the worker exits 2 saying how to give one."""
        env = {"PATH": "/usr/bin:/bin"}
        result = subprocess.run(
            WORKER, capture_output=True, text=True, timeout=60, check=False, env=env
        )

        assert result.returncode == 2
        assert "no server URL: pass --url redis://HOST:PORT or set REDIS_URL" in result.stderr


class TestPackaging:
    @pytest.mark.slow
    def test_the_wheel_ships_the_example_worker_inside_flagsync(self, tmp_path: Path) -> None:
        """A wheel built from the tree holds `flagsync/examples/inference.py` (so `flagsync
        demo` runs from an installed wheel) and no top-level `workers/` package.

        Built from a clean copy of the sources (setuptools reuses a `build/` directory it
        finds, which could hold a stale package), with a stray top-level `workers/` package
        beside them that pyproject must not select.
        """
        source = tmp_path / "source"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, source / name)
        shutil.copytree(
            ROOT / "flagsync", source / "flagsync", ignore=shutil.ignore_patterns("__pycache__")
        )
        (source / "workers").mkdir()
        (source / "workers" / "__init__.py").write_text("")
        out = tmp_path / "wheel"
        pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out)]
        build = subprocess.run(
            [*pip_wheel, str(source)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert build.returncode == 0, build.stderr[-2000:]
        [wheel] = out.glob("flagsync-*.whl")

        names = zipfile.ZipFile(wheel).namelist()

        assert "flagsync/examples/inference.py" in names
        assert "flagsync/examples/simulation.py" in names
        assert "flagsync/data/llm-rollout.yaml" in names
        top_level = {name.split("/", 1)[0] for name in names}
        assert {name for name in top_level if not name.startswith("flagsync")} == set()

    def test_the_library_never_imports_the_example(self) -> None:
        """No flagsync module outside `flagsync/examples/` imports it: the demo starts the
        worker as a process (`python -m flagsync.examples.inference`)."""
        importers: list[str] = []
        for path in sorted((ROOT / "flagsync").rglob("*.py")):
            if "examples" in path.relative_to(ROOT / "flagsync").parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                modules = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                importers.extend(
                    str(path) for module in modules if module.startswith("flagsync.examples")
                )

        assert importers == []
        assert '"flagsync.examples.inference"' in (ROOT / "flagsync" / "demo.py").read_text()
