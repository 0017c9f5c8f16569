"""Every way a command can fail: one clear message, the right exit code, nothing written."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from flagsync.publisher import Publisher
from tests.cli.support import INVALID, RUN_TIMEOUT_S, Cli, command_prefix

_DOWN = "redis://127.0.0.1:1"
_SECRET_URL = "redis://operator:s3cr3t-pa55@127.0.0.1:1"  # noqa: S105 - must never be printed


class TestInvalidInput:
    def test_invalid_file_lists_every_problem_and_writes_nothing(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """An invalid file exits 2, prints every problem with its path, and the store keeps
        its revision."""
        result = cli("apply", "-f", str(INVALID / "many-problems.yaml"))

        assert result.code == 2, str(result)
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            "segments.Beta-Testers: invalid key 'Beta-Testers': use 1-128 of a-z 0-9 . _ - "
            "starting with a letter or digit",
            "flags.llm-model-version.off: unknown variant 'curent'",
            "flags.llm-model-version.default.rollout: weights sum to 90, not 100",
            "flags.prompt-template-v2.variants: all variants must share one type, "
            "got on=boolean, off=number",
            "flags.context-window.requires.retrieval-strategy: unknown flag 'retrieval-strategy'",
            "nothing was changed",
        ]
        assert store.revision()[1] == example
        assert store.versions() == dict.fromkeys(store.versions(), 1)

    def test_invalid_file_json_lists_the_problems(self, cli: Cli, store: Publisher) -> None:
        """With --json an invalid file prints one JSON error document listing the problems."""
        result = cli("apply", "-f", str(INVALID / "weights-150.yaml"), "--json")

        assert result.code == 2, str(result)
        document = result.json()
        assert document["error"] == "invalid"
        assert document["messages"]
        assert all(message.startswith("flags.") for message in document["messages"])
        assert store.revision() == (None, 0)

    def test_yaml_syntax_error_names_the_file(self, cli: Cli, store: Publisher) -> None:
        """A file that is not valid YAML exits 2 naming the file and the line."""
        path = INVALID / "syntax-error.yaml"

        result = cli("apply", "-f", str(path), "--dry-run")

        assert result.code == 2, str(result)
        assert result.stderr.startswith(f"{path}: invalid yaml")
        assert "(line " in result.stderr
        assert "<unicode string>" not in result.stderr

    def test_missing_file_is_a_usage_error(self, cli: Cli, tmp_path: Path) -> None:
        """A file that does not exist exits 2 naming it, before connecting anywhere."""
        path = tmp_path / "nope.yaml"

        result = cli("apply", "-f", str(path), "--url", _DOWN)

        assert result.code == 2, str(result)
        assert result.stderr.startswith(f"{path}: cannot read:")
        assert "No such file" in result.stderr

    @pytest.mark.parametrize(
        ("option", "value"),
        [("--context", "{bad"), ("--context", "[1, 2]"), ("--default", "nope")],
    )
    def test_bad_eval_json_is_a_usage_error(
        self, cli: Cli, store: Publisher, option: str, value: str
    ) -> None:
        """`eval` with a --context or --default that is not the JSON it needs exits 2
        naming the option."""
        result = cli("eval", "llm-model-version", option, value)

        assert result.code == 2, str(result)
        assert result.stderr.startswith(f"{option}: ")
        assert "nothing was changed" not in result.stderr

    def test_ramp_beyond_100_percent_is_refused(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`ramp` to 150 % exits 2 naming the flag and the percentage; nothing is written."""
        result = cli("ramp", "llm-model-version", "candidate", "150")

        assert result.code == 2, str(result)
        assert "flags.llm-model-version.default: percent 150.0 is not in 0..100" in result.stderr
        assert store.revision()[1] == example

    def test_invalid_namespace_is_a_usage_error(self, cli: Cli) -> None:
        """A namespace outside [a-z0-9._-] exits 2 saying what is allowed."""
        result = cli("list", "-n", "Bad Namespace")

        assert result.code == 2, str(result)
        assert "invalid namespace 'Bad Namespace'" in result.stderr


class TestNotFound:
    @pytest.mark.parametrize(
        "args",
        [
            ["get", "nope"],
            ["eval", "nope"],
            ["kill", "nope"],
            ["ramp", "nope", "on", "5"],
            ["delete", "nope"],
            ["rollback", "nope", "--to", "1"],
        ],
        ids=lambda args: args[0],
    )
    def test_unknown_flag_exits_1(
        self, cli: Cli, store: Publisher, example: int, args: list[str]
    ) -> None:
        """Naming a flag the namespace lacks exits 1 with the key, the namespace and a hint."""
        result = cli(*args)

        assert result.code == 1, str(result)
        assert result.stderr == (
            f"not found: no flag 'nope' in the store of namespace {cli.namespace!r} "
            "(see: flagsync list)\n"
        )
        assert store.revision()[1] == example


class TestStoreDown:
    def test_unreachable_server_names_the_url_and_a_hint(self, cli: Cli) -> None:
        """A server that does not answer exits 1 naming the URL and how to point elsewhere."""
        result = cli("list", "--url", _DOWN)

        assert result.code == 1, str(result)
        assert result.stderr.startswith(f"store: cannot reach {_DOWN}: ")
        assert "(is the server running? set --url or REDIS_URL)" in result.stderr

    @pytest.mark.parametrize(
        "args",
        [
            ["list"],
            ["-v", "kill", "llm-model-version", "--wait", "1"],
            ["--json", "history"],
        ],
        ids=["list", "verbose-write", "json"],
    )
    def test_password_in_the_url_is_never_printed(self, cli: Cli, args: list[str]) -> None:
        """A password in the URL is redacted from every error, log line and JSON output."""
        result = cli(*args, env={"REDIS_URL": _SECRET_URL})

        assert result.code == 1, str(result)
        assert "s3cr3t-pa55" not in result.stdout + result.stderr
        assert "redis://operator:***@127.0.0.1:1" in result.stdout + result.stderr

    def test_no_url_at_all_is_a_usage_error(self, cli: Cli) -> None:
        """Without --url or REDIS_URL a command exits 2 naming the option, the variable and
        `flagsync server`, in the CLI's words (not the Python API's)."""
        result = cli("list", env={"REDIS_URL": None})

        assert result.code == 2, str(result)
        assert result.stderr == (
            "error: no server URL: pass --url redis://HOST:PORT or set REDIS_URL "
            "(`flagsync server` starts a local server and prints its URL)\n"
        )

    def test_store_error_as_json(self, cli: Cli) -> None:
        """With --json a store error is also one JSON document on stdout."""
        result = cli("list", "--json", "--url", _DOWN)

        assert result.code == 1, str(result)
        document = json.loads(result.stdout)
        assert document["error"] == "store"
        assert document["messages"][0].startswith(f"cannot reach {_DOWN}")


class TestOperatorMistakes:
    """What a new operator tripped over: each ends in one clear line and exit 2 or 1."""

    def test_history_into_a_closed_pipe_ends_quietly(
        self, cli: Cli, store: Publisher, tmp_path: Path
    ) -> None:
        """`flagsync history | head -1`: once the reader goes away the command stops
        without a word on stderr, with the shell status of a Unix tool killed by SIGPIPE."""
        flags = {f"flag-{n:04d}": {"variants": {"on": True, "off": False}, "off": "off",
                                   "default": "on"} for n in range(1500)}  # fmt: skip
        store.apply({"flags": flags})  # 1,500 log entries: far more than a pipe buffer
        pipeline = f"{shlex.join([*command_prefix(), 'history', '--limit', '1500'])} | head -1"

        completed = subprocess.run(
            ["bash", "-o", "pipefail", "-c", pipeline],
            env=cli.env(),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )

        assert completed.stdout.startswith("r1 "), completed
        assert completed.stderr == ""
        assert completed.returncode == 141

    @pytest.mark.parametrize(
        ("syntax", "text"),
        [
            ("json", "[" * 100_000 + "]" * 100_000),
            ("yaml", "flags:\n  x:\n    variants: " + "[" * 5_000 + "]" * 5_000),
        ],
        ids=["json", "yaml"],
    )
    def test_deeply_nested_flag_file_is_refused(
        self, cli: Cli, tmp_path: Path, syntax: str, text: str
    ) -> None:
        """A flag file nested far too deeply exits 2 naming the file, not a RecursionError."""
        path = tmp_path / f"deep.{syntax}"
        path.write_text(text)

        result = cli("apply", "-f", str(path))

        assert result.code == 2, str(result)
        assert result.stderr.startswith(f"{path}")
        assert "nested deeper than 64 levels" in result.stderr
        assert "Traceback" not in result.stderr

    def test_integer_beyond_64_bits_is_refused_with_its_path(
        self, cli: Cli, store: Publisher, tmp_path: Path
    ) -> None:
        """A variant value above 2**64 exits 2 naming the file and the value's path, and
        nothing is written (not an OverflowError)."""
        path = tmp_path / "big.yaml"
        path.write_text(
            "flags:\n  big:\n    variants: {small: 1, huge: 18446744073709551616}\n"
            "    off: small\n    default: small\n"
        )

        result = cli("apply", "-f", str(path))

        assert result.code == 2, str(result)
        assert result.stderr.splitlines() == [
            f"{path} at flags.big.variants.huge: integer 18446744073709551616 is outside "
            "-2**63..2**64-1",
            "nothing was changed",
        ]
        assert store.revision() == (None, 0)

    @pytest.mark.parametrize(
        ("option", "value", "expected"),
        [
            ("--context", "[" * 20_000 + "]" * 20_000, "--context: JSON nested too deeply"),
            ("--context", '{"a":' * 40 + "1" + "}" * 40, "--context at a.a.a.a"),
            ("--default", str(2**70), f"--default: integer {2**70} is outside"),
        ],
        ids=["deep-context", "nested-context", "huge-default"],
    )
    def test_unusable_eval_json_says_nothing_about_changes(
        self, cli: Cli, example: int, option: str, value: str, expected: str
    ) -> None:
        """`eval` (a read-only command) refuses unusable JSON with exit 2 naming the option,
        and does not claim "nothing was changed"."""
        result = cli("eval", "llm-model-version", option, value)

        assert result.code == 2, str(result)
        assert result.stderr.startswith(expected)
        assert "nothing was changed" not in result.stderr
        assert "Traceback" not in result.stderr
