"""Optional parts of the test environment: things a fresh machine with only Python lacks.

`python -m pytest` must pass on a fresh clone with a fresh venv, so a test that needs
such a part (Debian's redis-server, a browser) SKIPS without it, with a reason that says
how to get it. Where the part must be there, CI for one, `FLAGSYNC_REQUIRE` names it
(comma-separated, e.g. `FLAGSYNC_REQUIRE=redis,browser`): then the test FAILS instead,
so nothing is ever skipped silently. Every test and fixture that needs a part calls
`require_part(name)` (or carries `@pytest.mark.requires(name)`); nothing else decides.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from flagsync.server import ServerNotFoundError, find_server_binary

__all__ = [
    "PARTS",
    "REQUIRE_ENV",
    "OptionalPart",
    "UnknownPartError",
    "find_part",
    "require_part",
    "required_parts",
]

REQUIRE_ENV: Final = "FLAGSYNC_REQUIRE"


class UnknownPartError(ValueError):
    """A part name that `PARTS` does not know (a typo would otherwise skip silently)."""


@dataclass(frozen=True)
class OptionalPart:
    """Something some tests need that a fresh machine may lack, and how to get it."""

    name: str
    what: str
    how: str
    find: Callable[[], Path | None]
    """Where the part is on this machine, or None."""

    @property
    def skip_reason(self) -> str:
        """Why a test needing this part skipped, and how to get the part."""
        return (
            f"{self.what} is not installed ({self.how}; "
            f"set {REQUIRE_ENV}={self.name} to fail instead of skipping)"
        )


def _redis_server() -> Path | None:
    try:
        return find_server_binary("redis")
    except ServerNotFoundError:
        return None


def _chromium() -> Path | None:
    for command in ("chromium", "chromium-browser"):
        if (found := shutil.which(command)) is not None:
            return Path(found)
    return None


PARTS: Final[Mapping[str, OptionalPart]] = {
    part.name: part
    for part in (
        OptionalPart(
            "redis",
            "Debian's redis-server",
            "apt-get install redis-server",
            _redis_server,
        ),
        OptionalPart("browser", "a Chromium browser", "apt-get install chromium", _chromium),
    )
}


def _known(name: str) -> OptionalPart:
    try:
        return PARTS[name]
    except KeyError:
        raise UnknownPartError(
            f"unknown optional part {name!r}: known parts are {', '.join(sorted(PARTS))}"
        ) from None


def required_parts(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """The parts `FLAGSYNC_REQUIRE` names; an unknown name raises `UnknownPartError`."""
    value = (os.environ if environ is None else environ).get(REQUIRE_ENV, "")
    names = frozenset(name.strip() for name in value.split(",") if name.strip())
    for name in sorted(names):
        _known(name)
    return names


def find_part(name: str) -> Path | None:
    """Where the part `name` is on this machine, or None (unknown names raise)."""
    return _known(name).find()


def require_part(name: str, environ: Mapping[str, str] | None = None) -> Path:
    """The part's location; without it the calling test skips, or fails when required."""
    part = _known(name)
    required = required_parts(environ)
    found = part.find()
    if found is not None:
        return found
    if name in required:
        pytest.fail(
            f"{part.what} is missing and {REQUIRE_ENV} requires {name!r}: {part.how}",
            pytrace=False,
        )
    pytest.skip(part.skip_reason)
