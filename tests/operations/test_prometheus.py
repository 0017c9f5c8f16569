"""The Prometheus exposition of a worker's sync status, parsed by prometheus-client's own
parser, against real servers: values follow `status()` at each scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flagsync import FlagClient
from flagsync.prometheus import COUNTERS, FlagsyncCollector, register
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.status import ClientStatus, SyncState
from tests.integration.conftest import ClientFactory, PublisherFactory
from tests.integration.support import base_document, counter_flag, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: CollectorRegistry) -> tuple[Samples, dict[str, str]]:
    """The registry's text exposition, parsed: samples by (name, labels), and each family's
    type."""
    text = generate_latest(registry).decode()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples, types


def labelled(client: FlagClient, **extra: str) -> frozenset[tuple[str, str]]:
    """The labels every sample of `client` carries, plus `extra`."""
    status = client.status()
    return frozenset(
        {"namespace": status.namespace or "", "worker_id": status.worker_id or "", **extra}.items()
    )


class CountingClient(FlagClient):
    """An offline FlagClient that counts `status()` calls (to see when the collector reads)."""

    calls = 0

    def status(self) -> ClientStatus:
        self.calls += 1
        return super().status()


class TestExposition:
    """Every status field and counter appears with the right type and value."""

    def test_ready_worker_then_a_change(
        self, server: ServerProcess, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """A synced worker shows state ready, connected, its revision and flag count; the
        next scrape after a change shows the new revision and one applied change."""
        publisher.apply(base_document())
        client = make_client(server.url)
        assert client.wait_ready(5.0)
        registry = CollectorRegistry()
        register(client, registry, labels={"service": "chat"})
        labels = labelled(client, service="chat")
        samples, types = scrape(registry)
        for state in SyncState:
            expected = 1.0 if state is SyncState.READY else 0.0
            assert samples["flagsync_sync_state", labels | {("state", str(state))}] == expected
        assert samples["flagsync_connected", labels] == 1.0
        assert samples["flagsync_revision", labels] == 1.0
        assert samples["flagsync_flags", labels] == 4.0
        assert samples["flagsync_snapshot_missing", labels] == 0.0
        assert 0.0 <= samples["flagsync_seconds_since_sync", labels] < 2.0
        assert types["flagsync_lag_seconds"] == "gauge"
        assert 0.0 <= samples["flagsync_lag_seconds", labels] < 2.0
        assert {types[f"flagsync_{name}"] for name in COUNTERS} == {"counter"}
        assert types["flagsync_revision"] == "gauge"
        assert samples["flagsync_applied_changes_total", labels] == 0.0

        revision = publisher.put("counter", counter_flag(1))
        assert wait_until(lambda: client.revision == revision, 2.0)
        samples, _ = scrape(registry)
        assert samples["flagsync_revision", labels] == float(revision)
        assert samples["flagsync_flags", labels] == 5.0
        assert samples["flagsync_applied_changes_total", labels] == 1.0
        status = client.status()
        for name in COUNTERS:
            assert samples[f"flagsync_{name}_total", labels] == float(getattr(status, name))

    def test_exposures_per_flag_and_variant(
        self, server: ServerProcess, publisher: Publisher, make_client: ClientFactory
    ) -> None:
        """A metered worker's exposures appear as `flagsync_exposures_total{flag, variant}`,
        the totals of `status().exposures`."""
        publisher.apply(base_document())
        client = make_client(server.url, exposures=True, metrics_interval_s=60)
        assert client.wait_ready(5.0)
        registry = CollectorRegistry()
        register(client, registry)
        key = next(k for k in client.snapshot if client.snapshot.flags[k].select is not None)
        for user in range(30):
            client.variation(key, {"key": f"user-{user}", "plan": "paid"}, None)
        samples, types = scrape(registry)
        assert types["flagsync_exposures"] == "counter"
        served = {
            dict(labels)["variant"]: value
            for (name, labels), value in samples.items()
            if name == "flagsync_exposures_total" and dict(labels)["flag"] == key
        }
        assert sum(served.values()) == 30.0
        assert served == {v: float(n) for v, n in client.status().exposures[key].items()}

    def test_frozen_server_shows_stale_and_growing_lag(
        self,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: ClientFactory,
    ) -> None:
        """While the server is SIGSTOPped the scrape says stale with seconds since sync past
        the grace period; after SIGCONT it says ready again."""
        make_publisher(dedicated_server.url).apply(base_document())
        client = make_client(dedicated_server.url)
        assert client.wait_ready(5.0)
        registry = CollectorRegistry()
        register(client, registry)
        labels = labelled(client)
        stale = ("flagsync_sync_state", labels | {("state", "stale")})
        dedicated_server.pause()
        try:
            assert wait_until(lambda: scrape(registry)[0][stale] == 1.0, 5.0)
            samples, _ = scrape(registry)
            assert samples["flagsync_seconds_since_sync", labels] > 1.0
            assert samples["flagsync_lag_seconds", labels] > 1.0
            assert samples["flagsync_sync_state", labels | {("state", "ready")}] == 0.0
        finally:
            dedicated_server.resume()
        ready = ("flagsync_sync_state", labels | {("state", "ready")})
        assert wait_until(lambda: scrape(registry)[0][ready] == 1.0, 5.0)

    def test_offline_client_and_scrape_time_reads(self) -> None:
        """Registering reads nothing (describe has no samples); each scrape reads the
        status once; an offline client is `offline` with no seconds-since-sync sample."""
        client = CountingClient.offline(base_document())
        assert isinstance(client, CountingClient)
        registry = CollectorRegistry()
        collector = FlagsyncCollector(client, prefix="fs")
        registry.register(collector)
        assert client.calls == 0
        samples, _ = scrape(registry)
        assert client.calls == 1
        labels = frozenset({("namespace", ""), ("worker_id", "")})
        assert samples["fs_sync_state", labels | {("state", "offline")}] == 1.0
        assert samples["fs_flags", labels] == 4.0
        assert ("fs_seconds_since_sync", labels) not in samples
        assert ("fs_lag_seconds", labels) not in samples
        registry.unregister(collector)
        assert scrape(registry)[0] == {}
