"""Fixtures of the topology suite: the integration suite's clients and servers, plus
replica sets started from the same server binaries (Valkey always, Debian's
redis-server where present, see `tests.optional`)."""

from __future__ import annotations

from tests.integration.conftest import (  # noqa: F401 - fixtures shared with this suite
    make_client,
    make_publisher,
    make_raw,
    namespace,
    server_kind,
)
