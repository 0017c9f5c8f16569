"""Metrics from a connected client to the store, and through an outage (issue #7).

A connected client counts exposures (with `exposures=True`) and tracked outcomes in
process; its reporter appends them to the flag's metrics stream. While the server is
down the counts stay pending in memory, bounded by `metrics_max_series` (new series
beyond it are dropped and counted), and are written once the server is back; the
failure is logged once per outage, not per attempt.

Reporters here flush by hand (`metrics_interval_s=60` keeps the thread out of the way)
except in the test of the background thread itself.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
import redis

from flagsync import FlagClient
from flagsync.metrics import EXPOSURES, MetricStat, merge_window
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.store import StoreKeys
from tests.integration.conftest import ClientFactory, PublisherFactory, RawFactory
from tests.integration.support import wait_until
from tests.logs import captured_logs, events
from tests.rollout.support import KEY, model_document, reporter_of

VARIANTS = {"gpt-4.1": "candidate", "gpt-4o": "current"}


def split_document() -> dict[str, Any]:
    """The model flag with its fallthrough split 50/50 between the two variants."""
    document = model_document()
    document["flags"][KEY]["default"] = {"rollout": {"current": 50, "candidate": 50}}
    return document


def stream_keys(raw: redis.Redis, namespace: str) -> list[bytes]:
    """The model flag's metrics streams: the shared one and each worker's own."""
    shared = f"{StoreKeys(namespace).prefix}:metrics:{KEY}"
    found = raw.scan_iter(match=f"{shared}:*", count=1000)
    return sorted({*found, *([shared.encode()] if raw.exists(shared) else [])})


def stream(raw: redis.Redis, namespace: str) -> dict[tuple[str, str], MetricStat]:
    """Everything flushed for the model flag, summed per (variant, metric)."""
    entries: list[Any] = []
    for key in stream_keys(raw, namespace):
        entries.extend(raw.xrange(key))  # type: ignore[arg-type]
    return merge_window(fields for _, fields in entries)


def entries_flushed(raw: redis.Redis, namespace: str) -> int:
    """How many entries the model flag's streams hold."""
    return sum(int(raw.xlen(key)) for key in stream_keys(raw, namespace))


def exposures(window: dict[tuple[str, str], MetricStat]) -> dict[str, int]:
    """Exposure counts per variant in a window."""
    return {
        variant: stat.count for (variant, metric), stat in window.items() if metric == EXPOSURES
    }


def send(client: FlagClient, users: range, served: dict[str, int]) -> None:
    """Evaluate the flag once per user (through each evaluation API in turn) and track the
    latency; `served` counts the variants served, as the client should have."""
    for index in users:
        context = {"key": f"user-{index}"}
        if index % 3 == 0:
            model = client.string_value(KEY, context, "caller-default")
        elif index % 3 == 1:
            model = client.variation(KEY, context, "caller-default")
        else:
            model = client.detail(KEY, context, "caller-default").value
        variant = VARIANTS[model]
        served[variant] = served.get(variant, 0) + 1
        client.track(KEY, context, "latency_ms", 1000.0 if variant == "candidate" else 500.0)


@pytest.fixture
def connected(
    server: ServerProcess, publisher: Publisher, make_client: ClientFactory
) -> FlagClient:
    """A client counting exposures, on the split flag, flushing only by hand."""
    publisher.apply(split_document())
    client = make_client(server.url, exposures=True, metrics_interval_s=60.0)
    assert client.wait_ready(5)
    return client


class TestFlush:
    """What a connected client counts is what reaches the stream."""

    def test_exposures_and_outcomes_reach_the_stream_per_variant(
        self, connected: FlagClient, raw: redis.Redis, namespace: str
    ) -> None:
        """Each evaluation is one exposure of the variant served; tracked values keep their
        count, sum and histogram."""
        served: dict[str, int] = {}
        send(connected, range(300), served)

        assert reporter_of(connected).flush()

        window = stream(raw, namespace)
        assert set(served) == {"candidate", "current"}
        assert exposures(window) == served
        for variant, latency in (("candidate", 1000.0), ("current", 500.0)):
            stat = window[(variant, "latency_ms")]
            assert (stat.count, stat.total) == (served[variant], latency * served[variant])
            assert sum(stat.histogram.values()) == served[variant]
        assert entries_flushed(raw, namespace) == 1

    def test_a_flush_with_nothing_new_writes_nothing(
        self, connected: FlagClient, raw: redis.Redis, namespace: str
    ) -> None:
        """Flushing again without new counts appends no entry and counts nothing twice."""
        served: dict[str, int] = {}
        send(connected, range(50), served)
        reporter = reporter_of(connected)

        assert reporter.flush()
        assert reporter.flush()

        assert entries_flushed(raw, namespace) == 1
        assert exposures(stream(raw, namespace)) == served

    def test_the_reporter_thread_flushes_every_interval_and_on_close(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        raw: redis.Redis,
        namespace: str,
    ) -> None:
        """The background thread flushes on its own, and closing the client flushes the rest
        and stops the thread."""
        publisher.apply(split_document())
        client = make_client(server.url, exposures=True, metrics_interval_s=0.05)
        assert client.wait_ready(5)
        served: dict[str, int] = {}
        send(client, range(100), served)

        assert wait_until(lambda: exposures(stream(raw, namespace)) == served, 5)
        send(client, range(100, 130), served)
        client.close()

        assert exposures(stream(raw, namespace)) == served
        thread_name = f"flagsync-metrics-{namespace}"
        assert wait_until(lambda: not any(t.name == thread_name for t in threading.enumerate()), 2)

    def test_without_exposures_only_tracked_outcomes_are_flushed(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        raw: redis.Redis,
        namespace: str,
    ) -> None:
        """The default client tracks outcomes but counts no exposures."""
        publisher.apply(split_document())
        client = make_client(server.url, metrics_interval_s=60.0)
        assert client.wait_ready(5)
        served: dict[str, int] = {}
        send(client, range(40), served)

        assert reporter_of(client).flush()

        window = stream(raw, namespace)
        assert exposures(window) == {}
        assert {v: window[(v, "latency_ms")].count for v in served} == served

    def test_with_metrics_off_nothing_is_tracked_or_flushed(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        raw: redis.Redis,
        namespace: str,
    ) -> None:
        """`metrics=False` starts no reporter and makes track() a no-op."""
        publisher.apply(split_document())
        client = make_client(server.url, metrics=False)
        assert client.wait_ready(5)

        send(client, range(20), {})

        handle = client._sync
        assert handle is not None
        assert handle.reporter is None
        assert stream(raw, namespace) == {}

    def test_bad_values_and_unknown_flags_are_ignored(
        self, connected: FlagClient, raw: redis.Redis, namespace: str
    ) -> None:
        """track() never raises: non-finite values, unknown flags and bad contexts are skipped."""
        context = {"key": "user-1"}
        for value in (math.nan, math.inf, -math.inf):
            connected.track(KEY, context, "latency_ms", value)
        connected.track("no-such-flag", context, "latency_ms", 1.0)
        connected.track(KEY, "not a mapping", "latency_ms", 1.0)  # type: ignore[arg-type]
        connected.track(KEY, context, "latency_ms", 250.0)

        assert reporter_of(connected).flush()

        window = stream(raw, namespace)
        latency = [stat for (_, metric), stat in window.items() if metric == "latency_ms"]
        assert [(stat.count, stat.total) for stat in latency] == [(1, 250.0)]


class TestOutage:
    """Counts survive a server outage in memory, bounded, and are flushed afterwards."""

    @pytest.fixture
    def outage_client(
        self,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: ClientFactory,
    ) -> FlagClient:
        """A client counting exposures on a server the test may kill (at most 2 series)."""
        make_publisher(dedicated_server.url).apply(split_document())
        client = make_client(
            dedicated_server.url, exposures=True, metrics_interval_s=60.0, metrics_max_series=2
        )
        assert client.wait_ready(5)
        return client

    def test_counts_wait_in_memory_and_are_flushed_after_the_outage(
        self,
        dedicated_server: ServerProcess,
        outage_client: FlagClient,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """Flushes fail while the server is down; the counts are all written once it is back."""
        reporter = reporter_of(outage_client)
        before, during = range(0, 200, 2), range(1, 200, 2)
        expected_before = exposures_of(outage_client, before)
        expected_all = exposures_of(outage_client, range(200))
        for index in before:  # exposures only: two series, within the bound
            outage_client.variation(KEY, {"key": f"user-{index}"}, "caller-default")
        dedicated_server.kill()

        first = reporter.flush()
        pending_first = pending_exposures(outage_client)
        for index in during:
            outage_client.variation(KEY, {"key": f"user-{index}"}, "caller-default")
        second = reporter.flush()
        pending_second = pending_exposures(outage_client)
        dedicated_server.restart()
        third = reporter.flush()

        assert (first, second, third) == (False, False, True)
        assert (pending_first, pending_second) == (expected_before, expected_all)
        assert reporter.pending.series == {}
        assert reporter.pending.dropped == 0
        raw = make_raw(dedicated_server.url)
        assert exposures(stream(raw, namespace)) == expected_all

    def test_the_bound_drops_new_series_and_counts_them(
        self,
        dedicated_server: ServerProcess,
        outage_client: FlagClient,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """Beyond metrics_max_series new series are dropped and counted, while series already
        pending keep growing; the recovery log reports what was dropped."""
        reporter = reporter_of(outage_client)
        users = range(100)
        for index in users:
            outage_client.variation(KEY, {"key": f"user-{index}"}, "caller-default")
        dedicated_server.kill()

        with captured_logs() as logs:
            assert not reporter.flush()
            for index in users:  # two new series (latency per variant): over the bound
                context = {"key": f"user-{index}"}
                outage_client.variation(KEY, context, "caller-default")
                outage_client.track(KEY, context, "latency_ms", 800.0)
            assert not reporter.flush()
            dropped = reporter.pending.dropped
            dedicated_server.restart()
            assert reporter.flush()

        assert dropped == 100
        window = stream(make_raw(dedicated_server.url), namespace)
        assert sorted(window) == [("candidate", EXPOSURES), ("current", EXPOSURES)]
        assert sum(exposures(window).values()) == 200
        [recovered] = events(logs, "metrics_flush_recovered")
        assert recovered["dropped"] == 100

    def test_the_failure_is_logged_once_per_outage(
        self, dedicated_server: ServerProcess, outage_client: FlagClient, namespace: str
    ) -> None:
        """metrics_flush_failed is logged at the first failed flush of each outage only."""
        reporter = reporter_of(outage_client)

        def failed_flushes(count: int) -> list[bool]:
            results = []
            for index in range(count):
                outage_client.variation(KEY, {"key": f"user-{index}"}, "caller-default")
                results.append(reporter.flush())
            return results

        with captured_logs() as logs:
            dedicated_server.kill()
            first_outage = failed_flushes(3)
            dedicated_server.restart()
            assert reporter.flush()
            dedicated_server.kill()
            second_outage = failed_flushes(2)

        assert first_outage + second_outage == [False] * 5
        failed = events(logs, "metrics_flush_failed")
        assert len(failed) == 2
        assert [entry["log_level"] for entry in failed] == ["warning", "warning"]
        assert failed[0]["namespace"] == namespace
        assert failed[0]["pending_series"] >= 1
        assert failed[0]["error"].startswith("StoreUnavailableError: flush metrics: cannot reach")
        assert len(events(logs, "metrics_flush_recovered")) == 1


def pending_exposures(client: FlagClient) -> dict[str, int]:
    """Exposure counts per variant waiting in `client`'s reporter."""
    pending = reporter_of(client).pending.series
    return {
        variant: stat.count for (_, variant, metric), stat in pending.items() if metric == EXPOSURES
    }


def exposures_of(client: FlagClient, users: range) -> dict[str, int]:
    """The variants `client`'s current snapshot serves to `users`, evaluated by a plain
    (uncounted) client over the same snapshot."""
    offline = FlagClient(client.snapshot)
    counts: dict[str, int] = {}
    for index in users:
        variant = VARIANTS[offline.variation(KEY, {"key": f"user-{index}"}, "caller-default")]
        counts[variant] = counts.get(variant, 0) + 1
    return counts
