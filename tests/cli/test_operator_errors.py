"""What an operator sees for a wrong store URL, a port where Redis is not, or a rollback
past the first version: one clear line and exit 2 (a usage mistake) or 1 (the store),
never a traceback (issue #10, §3)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flagsync.publisher import Publisher
from flagsync.server import free_port
from tests.cli.support import Cli
from tests.not_redis import NotRedis, not_redis_server


@pytest.fixture
def http_only() -> Iterator[NotRedis]:
    """A port where an HTTP server answers, closed after the test."""
    with not_redis_server() as server:
        yield server


def _assert_clean(code: int, expected: int, stderr: str) -> None:
    assert code == expected, stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


class TestMalformedUrl:
    """A URL that is not a Redis URL is a usage error naming what is wrong."""

    @pytest.mark.parametrize(
        ("url", "words"),
        [
            ("http://127.0.0.1:{port}", "http:// is not a Redis scheme"),
            ("127.0.0.1:{port}", "has no scheme: write redis://127.0.0.1:"),
            ("redis://127.0.0.1:port", "port 'port' is not a number"),
            ("redis://127.0.0.1:99999", "port '99999' is not a number in 0..65535"),
        ],
        ids=["http-scheme", "no-scheme", "non-numeric-port", "port-out-of-range"],
    )
    @pytest.mark.parametrize("command", [["list"], ["kill", "f"], ["history"], ["workers"]])
    def test_exit_2_with_one_line(self, cli: Cli, url: str, words: str, command: list[str]) -> None:
        """Reading and writing commands alike exit 2 with the reason on one line."""
        result = cli(*command, "--url", url.format(port=free_port()))
        _assert_clean(result.code, 2, result.stderr)
        assert words in result.stderr

    def test_same_from_redis_url(self, cli: Cli) -> None:
        """A bad REDIS_URL reads the same as a bad --url, named as REDIS_URL."""
        result = cli("list", env={"REDIS_URL": "http://127.0.0.1:1"})
        _assert_clean(result.code, 2, result.stderr)
        assert result.stderr.startswith("error: REDIS_URL 'http://127.0.0.1:1'")
        assert "http:// is not a Redis scheme" in result.stderr


class TestNoUrl:
    """Without any URL the CLI says how to give one, in CLI words."""

    def test_names_the_option_the_variable_and_the_server(self, cli: Cli) -> None:
        """The message names --url, REDIS_URL and `flagsync server`."""
        result = cli("list", env={"REDIS_URL": None})
        _assert_clean(result.code, 2, result.stderr)
        for words in ("--url redis://HOST:PORT", "REDIS_URL", "`flagsync server`"):
            assert words in result.stderr


class TestNotRedis:
    """A port where something else answers is a store error, not a traceback."""

    @pytest.mark.parametrize("command", [["list"], ["kill", "f"], ["history"]])
    def test_protocol_error_is_a_store_error(
        self, cli: Cli, http_only: NotRedis, command: list[str]
    ) -> None:
        """redis-py's 'Protocol error' becomes `store: ... not as a Redis or Valkey server
        would` and exit 1."""
        result = cli(*command, "--url", f"redis://127.0.0.1:{http_only.port}")
        _assert_clean(result.code, 1, result.stderr)
        assert result.stderr.startswith(f"store: redis://127.0.0.1:{http_only.port} answered")
        assert "not as a Redis or Valkey server would" in result.stderr


class TestRollbackRange:
    """`rollback --steps` past the first version says how many earlier versions exist."""

    def test_too_many_steps(self, cli: Cli, store: Publisher, example: int) -> None:
        """On v3, `--steps 999` exits 2 saying only 2 earlier versions exist."""
        store.kill("llm-model-version")
        store.enable("llm-model-version")

        result = cli("rollback", "llm-model-version", "--steps", "999")

        assert result.code == 2, str(result)
        assert (
            "flags.llm-model-version: cannot go back 999 steps: only 2 earlier versions exist "
            "(current is v3)"
        ) in result.stderr
        assert "-996" not in result.stderr
        assert store.revision()[1] == example + 2
