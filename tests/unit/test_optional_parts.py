"""The optional-parts rule (tests/optional.py): skip with how to get it, fail when required.

Parts are found on PATH, so each test sets PATH to a directory it controls: empty (the
part is missing) or holding an executable of the part's name (the part is there).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.optional import PARTS, REQUIRE_ENV, UnknownPartError, require_part, required_parts


def _path_with(directory: Path, *commands: str) -> str:
    """`directory` holding an executable script for each command, as a PATH value."""
    directory.mkdir(parents=True, exist_ok=True)
    for command in commands:
        script = directory / command
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)
    return str(directory)


def _outcome(name: str, environ: dict[str, str] | None = None) -> BaseException:
    """What `require_part` raised: a skip or a failure (caught here, so a wrong skip cannot
    skip the test that checks for a failure)."""
    try:
        require_part(name, environ)
    except (pytest.skip.Exception, pytest.fail.Exception) as outcome:
        return outcome
    raise AssertionError(f"require_part({name!r}) neither skipped nor failed")


@pytest.fixture
def nothing_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH holds no optional part and FLAGSYNC_REQUIRE is unset."""
    monkeypatch.setenv("PATH", _path_with(tmp_path / "empty"))
    monkeypatch.delenv(REQUIRE_ENV, raising=False)


class TestRequiredParts:
    """FLAGSYNC_REQUIRE is a comma-separated list of known part names."""

    def test_unset_or_empty_requires_nothing(self) -> None:
        """Without the variable, or with only separators and spaces, no part is required."""
        assert required_parts({}) == frozenset()
        assert required_parts({REQUIRE_ENV: " , ,"}) == frozenset()

    def test_names_are_split_on_commas_and_trimmed(self) -> None:
        """`redis, browser` requires both parts."""
        assert required_parts({REQUIRE_ENV: "redis, browser"}) == {"redis", "browser"}

    def test_an_unknown_name_is_an_error(self) -> None:
        """A misspelt name raises, naming it and the known parts, instead of requiring
        nothing."""
        with pytest.raises(UnknownPartError, match=r"'chrome': known parts are browser, redis"):
            required_parts({REQUIRE_ENV: "redis,chrome"})


@pytest.mark.usefixtures("nothing_installed")
class TestRequirePart:
    """A missing part skips the test saying how to get it, unless it is required."""

    @pytest.mark.parametrize("name", sorted(PARTS))
    def test_missing_part_skips_with_how_to_get_it(self, name: str) -> None:
        """Missing and not required: the test skips, the reason names the install command."""
        skipped = _outcome(name)
        assert isinstance(skipped, pytest.skip.Exception), skipped
        assert PARTS[name].how in str(skipped)
        assert f"{REQUIRE_ENV}={name}" in str(skipped)

    @pytest.mark.parametrize("name", sorted(PARTS))
    def test_missing_required_part_fails(self, name: str) -> None:
        """Missing and named by FLAGSYNC_REQUIRE: the test fails, saying what to install."""
        failed = _outcome(name, {REQUIRE_ENV: "redis,browser"})
        assert isinstance(failed, pytest.fail.Exception), failed
        assert f"requires {name!r}: {PARTS[name].how}" in str(failed)

    def test_requiring_another_part_still_skips(self) -> None:
        """FLAGSYNC_REQUIRE=browser does not turn a missing redis-server into a failure."""
        assert isinstance(_outcome("redis", {REQUIRE_ENV: "browser"}), pytest.skip.Exception)

    @pytest.mark.parametrize(
        ("name", "command"), [("redis", "redis-server"), ("browser", "chromium")]
    )
    def test_present_part_returns_its_path(
        self, name: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Installed, the part's path is returned, required or not."""
        monkeypatch.setenv("PATH", _path_with(tmp_path / "bin", command))
        assert require_part(name) == tmp_path / "bin" / command
        assert require_part(name, {REQUIRE_ENV: name}) == tmp_path / "bin" / command

    def test_unknown_part_name_is_an_error(self) -> None:
        """Asking for a part nobody defined raises rather than skipping."""
        with pytest.raises(UnknownPartError, match="'redis-server'"):
            require_part("redis-server")

    def test_unknown_name_in_the_variable_is_an_error(self) -> None:
        """A misspelt FLAGSYNC_REQUIRE stops a test that asks for a known part too."""
        with pytest.raises(UnknownPartError, match="'reddis'"):
            require_part("redis", {REQUIRE_ENV: "reddis"})


INNER_TESTS = """
import pytest

@pytest.mark.requires("browser")
def test_needs_a_browser():
    pass

def test_needs_nothing():
    pass
"""


@pytest.mark.usefixtures("nothing_installed")
class TestSessionHooks:
    """tests/conftest.py applies `@pytest.mark.requires` and checks FLAGSYNC_REQUIRE."""

    @pytest.fixture
    def inner(self, pytester: pytest.Pytester) -> pytest.Pytester:
        """A pytest project using this suite's hooks, with one browser test and one other."""
        pytester.makeconftest(
            "from tests.conftest import pytest_configure, pytest_runtest_setup  # noqa: F401"
        )
        pytester.makeini("[pytest]\nmarkers =\n    requires(*parts): optional parts\n")
        pytester.makepyfile(INNER_TESTS)
        return pytester

    def test_marked_test_skips_without_the_part(self, inner: pytest.Pytester) -> None:
        """Without a browser and not required, the marked test skips, the other passes."""
        result = inner.runpytest("-rs")
        result.assert_outcomes(passed=1, skipped=1)
        result.stdout.fnmatch_lines(["*apt-get install chromium*"])

    def test_marked_test_fails_when_required(
        self, inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With FLAGSYNC_REQUIRE=browser and no browser, the marked test fails at setup."""
        monkeypatch.setenv(REQUIRE_ENV, "browser")
        result = inner.runpytest()
        result.assert_outcomes(passed=1, errors=1)
        result.stdout.fnmatch_lines(["*FLAGSYNC_REQUIRE requires 'browser'*"])

    def test_unknown_required_part_stops_the_run(
        self, inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A misspelt FLAGSYNC_REQUIRE is a usage error before any test runs."""
        monkeypatch.setenv(REQUIRE_ENV, "redis,brower")
        result = inner.runpytest()
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*FLAGSYNC_REQUIRE: unknown optional part 'brower'*"])
