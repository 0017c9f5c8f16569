"""Fixtures of the OpenFeature suite: the integration suite's real servers, clients and
publishers, and an OpenFeature domain of its own per test.

The provider is always driven through the real `openfeature` API (`api.get_client()`,
`add_handler`, `track`); each test binds its provider to a fresh domain and every
provider is shut down after the test, so no event handler or watcher thread outlives it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from openfeature import api

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


@pytest.fixture
def domain() -> Iterator[str]:
    """An OpenFeature domain no other test uses; its providers are shut down afterwards."""
    name = f"flagsync-{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        api.shutdown()
