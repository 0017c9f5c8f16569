"""Session-wide rules for optional parts (see `tests.optional`).

`FLAGSYNC_REQUIRE` is checked once at start-up, so a misspelt part name stops the run
instead of letting the tests it meant to require skip. `@pytest.mark.requires(name, ...)`
skips (or, when required, fails) a test before its fixtures start. The report header says
which parts this run has, and the summary counts what each missing part skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from tests.optional import PARTS, REQUIRE_ENV, UnknownPartError, find_part, require_part
from tests.optional import required_parts as _required_parts


@pytest.fixture(autouse=True)
def _structlog_config_restored() -> Iterator[None]:
    """Whatever a test configures in structlog (an in-process `flagsync` command configures
    logging to the stderr pytest captures for that test only) is undone after it, so later
    tests and their background threads never log into a closed stream."""
    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run with a `FLAGSYNC_REQUIRE` that names an unknown part."""
    try:
        _required_parts()
    except UnknownPartError as error:
        raise pytest.UsageError(f"{REQUIRE_ENV}: {error}") from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    """One line: each optional part, where it was found, and whether it is required."""
    required = _required_parts()
    states = []
    for name, part in PARTS.items():
        found = find_part(name)
        state = str(found) if found is not None else f"missing ({part.how})"
        states.append(f"{name}{' [required]' if name in required else ''}: {state}")
    return [f"optional parts ({REQUIRE_ENV}={','.join(sorted(required))}): {'; '.join(states)}"]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Apply `@pytest.mark.requires(...)` before any fixture of the test starts."""
    for marker in item.iter_markers("requires"):
        for name in marker.args:
            require_part(name)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """For each missing part that skipped tests: how many, and how to get it."""
    skipped = terminalreporter.stats.get("skipped", [])
    lines = []
    for name, part in PARTS.items():
        count = sum(1 for report in skipped if part.skip_reason in str(report.longrepr))
        if count:
            lines.append(f"{name}: {count} tests skipped, {part.what} is missing ({part.how})")
    if lines:
        terminalreporter.write_sep("-", "optional parts")
        for line in lines:
            terminalreporter.write_line(line)
