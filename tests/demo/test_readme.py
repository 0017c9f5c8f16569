"""The README's commands are real: every `flagsync ...` line parses, every `python -m`
module exists, every `from flagsync... import` line imports, and the local URL its
snippets use is the one it tells how to start."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from flagsync.cli import build_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _console_commands() -> list[str]:
    """The `$ ...` lines of the README's console blocks, continuation lines joined."""
    commands: list[str] = []
    for block in re.findall(r"```console\n(.*?)```", README, flags=re.DOTALL):
        pending = ""
        for line in block.splitlines():
            if line.startswith("$ "):
                pending = line[2:]
            elif pending:
                pending += " " + line.strip()
            else:
                continue
            if pending.endswith("\\"):
                pending = pending[:-1]
                continue
            commands.append(pending.split(" #")[0].strip())
            pending = ""
    return commands


_FLAGSYNC = [c for c in _console_commands() if c.startswith("flagsync ")]


class TestReadme:
    def test_the_readme_shows_flagsync_commands(self) -> None:
        """The README's console blocks show the CLI (so the next test checks something)."""
        assert len(_FLAGSYNC) >= 12

    @pytest.mark.parametrize("command", _FLAGSYNC)
    def test_every_flagsync_command_parses(self, command: str) -> None:
        """Each `$ flagsync ...` line of the README is accepted by the real parser."""
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit as error:  # argparse exits on a usage error
            pytest.fail(f"README command does not parse ({error.code}): {command}")

    def test_every_python_m_module_exists(self) -> None:
        """Every `python -m MODULE` the README names can be found (no `workers.inference`)."""
        modules = set(re.findall(r"python -m ([a-z_][a-z0-9_.]*)", README))

        assert "flagsync.examples.inference" in modules
        assert [m for m in sorted(modules) if importlib.util.find_spec(m) is None] == []

    def test_every_documented_import_works(self) -> None:
        """Each `from flagsync... import ...` line of the README's snippets imports the names
        it names: documented import paths keep working across reorganisations."""
        lines = sorted(
            set(re.findall(r"^from flagsync[a-z_.]* import [A-Za-z_, ]+$", README, re.M))
        )
        assert len(lines) >= 2
        failures = []
        for line in lines:
            module, _, names = line.removeprefix("from ").partition(" import ")
            imported = importlib.import_module(module)
            failures += [
                f"{module}.{n.strip()}"
                for n in names.split(",")
                if not hasattr(imported, n.strip())
            ]
        assert failures == []

    def test_the_local_url_is_the_one_flagsync_server_is_told_to_use(self) -> None:
        """The snippets connect to 127.0.0.1:6379, and the README says to start the local
        server with `--port 6379` (by default it picks a free port)."""
        assert "redis://127.0.0.1:6379" in README
        assert "flagsync server --port 6379" in README
