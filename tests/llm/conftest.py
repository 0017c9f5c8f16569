"""Fixtures of the llm suite: the integration suite's real servers, clients and publishers."""

from __future__ import annotations

from tests.integration.conftest import (  # noqa: F401 - fixtures shared with this suite
    make_client,
    make_publisher,
    make_raw,
    namespace,
    publisher,
    raw,
    server,
    server_kind,
)
