"""Fixtures of the operations suite: the integration suite's real servers, clients and
publishers (Prometheus exposition, and web-worker recipes run as real processes)."""

from __future__ import annotations

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
