"""Each worker's sync status for Prometheus, read from `FlagClient.status()` at scrape time.

`pip install 'flagsync[prometheus]'`, then::

    from prometheus_client import start_http_server
    from flagsync.prometheus import register

    register(client)          # into prometheus_client's default registry
    start_http_server(9464)   # or mount prometheus_client's ASGI/WSGI app

Nothing is counted on the evaluation path: the collector asks the client for its status
when Prometheus scrapes (one `status()` call, a few microseconds). Every sample carries
the `namespace` and `worker_id` labels (the worker id is the one `flagsync workers`
lists), plus any constant labels given.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

try:
    from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "flagsync.prometheus needs prometheus-client: pip install 'flagsync[prometheus]'"
    ) from missing

from flagsync.status import ClientStatus, SyncState

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from flagsync.client import FlagClient

__all__ = ["COUNTERS", "FlagsyncCollector", "register"]

COUNTERS: Final[Mapping[str, str]] = {
    "resyncs": "Full reloads of the namespace (gap, doubt, reconnect, new epoch).",
    "reconnects": "Connections to the store re-established after a loss.",
    "applied_changes": "Change messages applied in revision order.",
    "ignored_messages": "Duplicate or older revisions received and dropped.",
    "malformed_messages": "Messages refused as malformed (the read loop kept going).",
    "rejected_snapshots": "Whole snapshots refused as invalid (the previous one kept).",
}
"""`ClientStatus` counters exposed as `flagsync_<name>_total`, with their help text."""


class FlagsyncCollector(Collector):
    """A Prometheus collector over one client's `status()` (see the module docstring)."""

    def __init__(
        self, client: FlagClient, *, prefix: str = "flagsync", labels: Mapping[str, str] = {}
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.labels = dict(labels)

    def describe(self) -> Iterable[Metric]:
        """The metric families without samples, so registering never calls `status()`."""
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        """The families with this scrape's samples, from one `status()` call."""
        return list(self._families(self.client.status()))

    def _families(self, status: ClientStatus | None) -> Iterator[Metric]:
        names = ["namespace", "worker_id", *self.labels]
        values: list[str] = []
        if status is not None:
            values = [status.namespace or "", status.worker_id or "", *self.labels.values()]
        p = self.prefix

        def gauge(name: str, doc: str, value: float | None, extra: Mapping[str, str] = {}) -> Any:
            family = GaugeMetricFamily(f"{p}_{name}", doc, labels=[*names, *extra])
            if status is not None and value is not None:
                family.add_metric([*values, *extra.values()], value)
            return family

        state = GaugeMetricFamily(
            f"{p}_sync_state",
            "1 for the client's current sync state, 0 for the others.",
            labels=[*names, "state"],
        )
        if status is not None:
            for candidate in SyncState:
                state.add_metric(
                    [*values, str(candidate)], 1.0 if status.state is candidate else 0.0
                )
        yield state
        yield gauge(
            "connected",
            "1 while the client holds a live connection to the store.",
            None if status is None else float(status.connected),
        )
        yield gauge(
            "revision",
            "The store revision of the snapshot being served.",
            None if status is None else float(status.revision),
        )
        yield gauge(
            "flags", "Flags in the snapshot being served.", None if status is None else status.flags
        )
        yield gauge(
            "seconds_since_sync",
            "Seconds since the store last confirmed the served revision (absent: never).",
            None if status is None else status.seconds_since_sync,
        )
        yield gauge(
            "lag_seconds",
            "How far the served snapshot may be behind the store: seconds since the store"
            " last confirmed the served revision (absent: never synced). Revision lag is"
            " the fleet's view: `flagsync workers` (LAG).",
            None if status is None else status.seconds_since_sync,
        )
        yield gauge(
            "snapshot_missing",
            "1 when the store has no data for the namespace (the last snapshot is kept).",
            None if status is None else float(status.snapshot_missing),
        )
        for name, doc in COUNTERS.items():
            counter = CounterMetricFamily(f"{p}_{name}", doc, labels=names)
            if status is not None:
                counter.add_metric(values, float(getattr(status, name)))
            yield counter
        exposures = CounterMetricFamily(
            f"{p}_exposures",
            "Evaluations per flag and served variant since the client started"
            " (connect(..., exposures=True); flags serving one variant to all are not counted).",
            labels=[*names, "flag", "variant"],
        )
        if status is not None:
            for flag, variants in sorted(status.exposures.items()):
                for variant, count in sorted(variants.items()):
                    exposures.add_metric([*values, flag, variant], float(count))
        yield exposures


def register(
    client: FlagClient,
    registry: CollectorRegistry = REGISTRY,
    *,
    prefix: str = "flagsync",
    labels: Mapping[str, str] = {},
) -> FlagsyncCollector:
    """Register a `FlagsyncCollector` for `client` (default: prometheus_client's registry);
    unregister it with `registry.unregister(collector)` when the client closes."""
    collector = FlagsyncCollector(client, prefix=prefix, labels=labels)
    registry.register(collector)
    return collector
