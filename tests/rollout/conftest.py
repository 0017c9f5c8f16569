"""Fixtures of the rollout suite: the integration suite's real servers, clients and publishers.

Guarded rollouts are tested end to end: a controller on a real server, metrics written
by a really connected client (or by hand with `flagsync.metrics`' own encoder), and the
`flagsync rollout` commands run as an operator runs them.
"""

from __future__ import annotations

from functools import partial

import pytest
import redis

from flagsync.publisher import Publisher
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
from tests.rollout.support import KEY, Feed, model_document, write_metrics


@pytest.fixture
def store(publisher: Publisher) -> Publisher:  # noqa: F811 - the fixture imported above
    """The test's publisher, with the model flag serving `current` to everyone."""
    publisher.apply(model_document())
    return publisher


@pytest.fixture
def feed(raw: redis.Redis, namespace: str) -> Feed:  # noqa: F811 - the fixtures imported above
    """`feed(samples)`: append a metrics entry for the model flag, as a worker's flush does."""
    return partial(write_metrics, raw, namespace, KEY)
