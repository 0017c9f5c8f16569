"""Fixtures of the rollout suite: the integration suite's real servers, clients and publishers.

Guarded rollouts are tested end to end: a controller on a real server, metrics written
by a really connected client (or by hand with `flagsync.metrics`' own encoder), and the
`flagsync rollout` commands run as an operator runs them.
"""

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
