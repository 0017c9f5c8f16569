"""`llm_call` costs calls with the namespace's stored prices from memory, on a real server:
the sync keeps the `llm:` section (a whole load reads it, a change message carries it), so
the request path opens no connection and sends no command, with either driver."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis

from flagsync import FlagClient, load_flags
from flagsync.publisher import Publisher
from tests.integration.conftest import ClientFactory
from tests.integration.support import wait_until
from tests.llm.support import FLAGS_FILE

FREE = {"key": "user-1", "plan": "free"}


@pytest.fixture
def anyio_backend() -> str:
    """redis.asyncio runs on asyncio only."""
    return "asyncio"


def priced(input_per_mtok: float | None) -> dict[str, Any]:
    """The llm suite's file with gpt-4o's input price replaced (None: no `llm:` section)."""
    document = load_flags(FLAGS_FILE).to_builtins()
    if input_per_mtok is None:
        del document["llm"]
    else:
        document["llm"]["prices"]["gpt-4o"]["input_per_mtok"] = input_per_mtok
    return document


def server_counters(raw: redis.Redis) -> tuple[int, int]:
    """(connections ever accepted, commands ever processed) by the server: the request
    path must move neither (the probe's own INFO counts one command)."""
    stats: dict[str, Any] = raw.info("stats")
    return int(stats["total_connections_received"]), int(stats["total_commands_processed"])


def input_cost(client: FlagClient) -> float | None:
    """The cost `llm_call` records for 1M input tokens of the config served to `FREE`."""
    config = client.llm_config("chat-llm", FREE, None)
    assert config is not None
    assert config.model == "gpt-4o"
    with client.llm_call(config) as call:
        call.usage(1_000_000, 0)
    return call.cost


def costed_without_io(raw: redis.Redis, client: FlagClient) -> float | None:
    """`input_cost`, checking that the server saw no connection and no command meanwhile
    but the probe's (the sync's own periodic check may add one command: allowed)."""
    connections, commands = server_counters(raw)
    cost = input_cost(client)
    after_connections, after_commands = server_counters(raw)
    assert after_connections == connections, "llm_call opened a connection"
    assert after_commands - commands <= 3, "llm_call sent commands"  # probe + a sync check
    return cost


class TestThreadDriver:
    """A connected (thread) worker prices calls with what the sync applied."""

    def test_prices_follow_writes_without_io(
        self, publisher: Publisher, make_client: ClientFactory, raw: redis.Redis
    ) -> None:
        """No section: no cost; a section applied later arrives by the change message; a
        later edit of the prices alone (no flag changes) reaches the worker too; and no
        call opens a connection."""
        publisher.apply(priced(None))
        worker = make_client(publisher.url, metrics_interval_s=60)
        assert worker.wait_ready(5.0)
        assert costed_without_io(raw, worker) is None
        revision = publisher.apply(priced(2.5))
        assert wait_until(lambda: worker.revision == revision, 5.0)
        assert costed_without_io(raw, worker) == pytest.approx(2.5)
        version = publisher.get("chat-llm")
        edited = publisher.apply(priced(7.0))
        assert edited == revision + 1
        assert publisher.get("chat-llm") == version  # the flag itself did not change
        assert wait_until(lambda: worker.revision == edited, 5.0)
        assert costed_without_io(raw, worker) == pytest.approx(7.0)

    def test_a_fresh_worker_loads_them(
        self, publisher: Publisher, make_client: ClientFactory, raw: redis.Redis
    ) -> None:
        """A worker started after the write gets the section with its first (whole) load."""
        publisher.apply(priced(4.0))
        worker = make_client(publisher.url, metrics_interval_s=60)
        assert worker.wait_ready(5.0)
        assert costed_without_io(raw, worker) == pytest.approx(4.0)


@pytest.mark.anyio
class TestAsyncDriver:
    """The asyncio driver keeps the section the same way."""

    async def test_prices_follow_writes_without_io(
        self, publisher: Publisher, raw: redis.Redis
    ) -> None:
        """A fresh async worker loads the prices; an edit of the prices alone arrives; no
        call opens a connection."""
        publisher.apply(priced(3.0))
        namespace = publisher.keys.namespace
        async with FlagClient.connect_async(
            publisher.url, namespace, metrics_interval_s=60
        ) as worker:
            assert await worker.wait_ready_async(5.0)
            assert costed_without_io(raw, worker) == pytest.approx(3.0)
            edited = publisher.apply(priced(6.0))
            with anyio.move_on_after(5.0):
                while worker.revision != edited:
                    await anyio.sleep(0.005)
            assert worker.revision == edited
            assert costed_without_io(raw, worker) == pytest.approx(6.0)
