"""The command line itself: the entry point, help, global options, namespaces, start-up time."""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from importlib.metadata import entry_points

import pytest

from flagsync.cli import build_parser
from flagsync.publisher import Publisher
from tests.cli.support import EXAMPLE, RUN_TIMEOUT_S, SCRIPT, Cli, command_prefix


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands by name (argparse has no public API to list them)."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: sub for action in actions for name, sub in action.choices.items()}


def _command_names() -> list[str]:
    """Every top-level command name."""
    return list(_subcommands(build_parser()))


def _command_paths() -> list[tuple[str, ...]]:
    """Every command, with the actions of command groups (`rollout plan`), as argv."""
    paths: list[tuple[str, ...]] = []

    def walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...]) -> None:
        for name, sub in _subcommands(parser).items():
            paths.append((*prefix, name))
            walk(sub, (*prefix, name))

    walk(build_parser(), ())
    return paths


class TestEntryPoint:
    def test_console_script_is_installed_for_cli_main(self) -> None:
        """The package declares `flagsync = flagsync.cli:main` and the venv has the script."""
        [script] = entry_points(group="console_scripts", name="flagsync")

        assert script.value == "flagsync.cli:main"
        assert SCRIPT.is_file()
        assert os.access(SCRIPT, os.X_OK)
        assert command_prefix() == [str(SCRIPT)]

    def test_help_starts_quickly(self) -> None:
        """`flagsync --help` completes within 1.5 s wall clock (it imports only argparse)."""
        started = time.perf_counter()
        completed = subprocess.run(
            [*command_prefix(), "--help"],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        elapsed_s = time.perf_counter() - started

        assert completed.returncode == 0, completed.stderr
        assert elapsed_s < 1.5, f"flagsync --help took {elapsed_s:.2f} s"
        for name in _command_names():
            assert f"    {name} " in completed.stdout

    @pytest.mark.parametrize("path", _command_paths(), ids=" ".join)
    def test_help_of_every_command_exits_0(self, cli: Cli, path: tuple[str, ...]) -> None:
        """`flagsync COMMAND --help` prints that command's usage and exits 0."""
        result = cli(*path, "--help", env={"REDIS_URL": None})

        assert result.code == 0, str(result)
        assert result.stdout.startswith(f"usage: flagsync {' '.join(path)} ")
        assert result.stderr == ""

    def test_no_command_prints_help_and_exits_2(self, cli: Cli) -> None:
        """`flagsync` alone prints the usage and the commands, and exits 2."""
        result = cli()

        assert result.code == 2, str(result)
        assert result.stdout.startswith("usage: flagsync ")
        assert "Exit codes: 0 ok" in result.stdout

    def test_unknown_command_is_a_usage_error(self, cli: Cli) -> None:
        """An unknown command exits 2 with argparse's message."""
        result = cli("deploy")

        assert result.code == 2, str(result)
        assert "invalid choice: 'deploy'" in result.stderr


class TestGlobalOptions:
    def test_options_before_and_after_the_command_name_agree(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`flagsync --json list` and `flagsync list --json` print the same document, and
        `-n`/`--url` work on either side too."""
        before = cli(
            "--json", "-n", cli.namespace, "--url", cli.url, "list", env={"REDIS_URL": None}
        )
        after = cli(
            "list", "--json", "-n", cli.namespace, "--url", cli.url, env={"REDIS_URL": None}
        )

        assert before.code == after.code == 0, f"{before}\n{after}"
        assert before.json() == after.json()
        assert len(before.json()["flags"]) == 6

    def test_option_after_the_command_overrides_the_one_before(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """A global option given after the command name wins over the same one before it."""
        result = cli("-n", "someone-else", "list", "--json", "-n", cli.namespace)

        assert result.code == 0, str(result)
        assert len(result.json()["flags"]) == 6

    def test_verbose_logs_the_write_and_quiet_logs_nothing(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """A write logs nothing to stderr by default; `-v` logs the write as an event."""
        quiet = cli.ok("kill", "llm-model-version")
        verbose = cli.ok("enable", "llm-model-version", "-v", "--actor", "dana")

        assert quiet.stderr == ""
        assert "flags_written" in verbose.stderr
        assert "actor=dana" in verbose.stderr
        assert verbose.stdout.startswith("enabled llm-model-version: ")

    def test_namespace_env_isolates_flags(self, cli: Cli, store: Publisher) -> None:
        """FLAGSYNC_NAMESPACE picks the namespace: flags applied in one are not seen from
        another, and `-n` overrides the variable."""
        other = f"{cli.namespace}-other"
        cli.ok("apply", "-f", str(EXAMPLE), env={"FLAGSYNC_NAMESPACE": other})

        theirs = cli.ok("list", "--json", env={"FLAGSYNC_NAMESPACE": other})
        explicit = cli.ok("list", "--json", "-n", other)

        assert store.revision() == (None, 0)
        assert len(theirs.json()["flags"]) == 6
        assert explicit.json() == theirs.json()

    def test_default_namespace_is_default(self, cli: Cli) -> None:
        """Without FLAGSYNC_NAMESPACE or -n, commands use the namespace `default`."""
        with Publisher(cli.url, "default") as publisher:
            publisher.apply(EXAMPLE)

        result = cli.ok("list", "--json", env={"FLAGSYNC_NAMESPACE": None})

        assert len(result.json()["flags"]) == 6
