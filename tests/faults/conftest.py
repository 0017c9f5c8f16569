"""Fixtures of the fault suite: the integration suite's real servers, clients and publishers.

Every scenario of shared/FAULTS.md (S1-S20) runs against real server processes on
127.0.0.1 only (Valkey always; Debian's redis-server too, an optional part that skips
where missing unless `FLAGSYNC_REQUIRE` names `redis`, see `tests.optional`), bounds its
own loops and time, and records what it measured.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults import figures
from tests.integration.conftest import (  # noqa: F401 - fixtures shared with this suite
    dedicated_server,
    make_client,
    make_publisher,
    make_raw,
    namespace,
    publisher,
    raw,
    server,
    server_kind,
)


@pytest.fixture(scope="session", autouse=True)
def fault_figures() -> Iterator[None]:
    """Write the measured figures at the end of the session (see `figures.write`)."""
    yield
    figures.write()
