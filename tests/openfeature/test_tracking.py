"""`track()` through the real OpenFeature API lands in flagsync's outcome metrics, against
the variant the context gets, as `FlagClient.track` records it for guarded rollouts."""

from __future__ import annotations

import redis
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.track import TrackingEventDetails

from flagsync._metrics_window import read_window
from flagsync.metrics import MetricStat
from flagsync.openfeature import FlagsyncProvider
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.store import StoreKeys
from tests.integration.conftest import ClientFactory
from tests.integration.support import base_document, wait_until

PAID_USER = EvaluationContext("user-42", {"plan": "paid", "email": "a@example.com"})
STAFF = EvaluationContext("user-7", {"email": "x@acme.com"})


def window(raw: redis.Redis, namespace: str, flag: str) -> dict[tuple[str, str], MetricStat]:
    """Everything flushed for `flag`, summed per (variant, metric)."""
    keys = StoreKeys(namespace)
    return read_window(raw, "redis://test", keys, flag, 0).stats  # every worker's stream


class TestTracking:
    """Tracking events become outcome series keyed by flag, variant and event name."""

    def test_track_by_attribute_and_by_mapping(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        raw: redis.Redis,
        domain: str,
    ) -> None:
        """The `flag` attribute names the flag, `track_flags` maps an event to flags, the
        value defaults to 1.0, and each lands on the variant that user is served."""
        publisher.apply(base_document())
        client = make_client(server.url, metrics_interval_s=0.1)
        provider = FlagsyncProvider(client, track_flags={"thumbs_down": ["model"]})
        api.set_provider_and_wait(provider, domain)
        of_client = api.get_client(domain)
        assert of_client.get_string_value("model", "x", STAFF) == "gpt-4.1"  # candidate

        of_client.track("cost", STAFF, TrackingEventDetails(0.25, {"flag": "model"}))
        of_client.track("cost", STAFF, TrackingEventDetails(0.75).add("flags", ["model"]))
        of_client.track("thumbs_down", STAFF)  # by the mapping, value 1.0
        of_client.track("thumbs_down", EvaluationContext("u-1"))  # fallthrough: candidate too
        of_client.track("Not A Metric!", STAFF, TrackingEventDetails(5.0, {"flag": "model"}))
        of_client.track("unmapped", STAFF)  # no flag named: nothing recorded

        namespace = make_client.namespace

        def flushed() -> bool:
            seen = window(raw, namespace, "model")
            return ("candidate", "cost") in seen and ("candidate", "thumbs_down") in seen

        assert wait_until(flushed, 3.0)
        seen = window(raw, namespace, "model")
        cost, thumbs = seen["candidate", "cost"], seen["candidate", "thumbs_down"]
        assert (cost.count, cost.total) == (2, 1.0)
        assert (thumbs.count, thumbs.total) == (2, 2.0)
        metrics = {metric for _, metric in seen}
        assert "Not A Metric!" not in metrics
        assert "unmapped" not in metrics

    def test_track_never_raises(
        self, server: ServerProcess, publisher: Publisher, make_client: ClientFactory, domain: str
    ) -> None:
        """Unknown flags, odd attributes and non-numeric values are ignored, not raised."""
        publisher.apply(base_document())
        api.set_provider_and_wait(FlagsyncProvider(make_client(server.url)), domain)
        of_client = api.get_client(domain)
        of_client.track("cost", STAFF, TrackingEventDetails(1.0, {"flag": "no-such-flag"}))
        of_client.track("cost", STAFF, TrackingEventDetails(1.0, {"flags": [1, {}, "model"]}))
        of_client.track("cost", None, TrackingEventDetails(float("nan"), {"flag": "model"}))
