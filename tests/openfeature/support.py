"""Recording OpenFeature events as a handler sees them, with bounded waits."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from openfeature.client import OpenFeatureClient
from openfeature.event import EventDetails, EventHandler, ProviderEvent

ALL_EVENTS = (
    ProviderEvent.PROVIDER_READY,
    ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
    ProviderEvent.PROVIDER_STALE,
    ProviderEvent.PROVIDER_ERROR,
)


@dataclass(frozen=True)
class Seen:
    """One event a handler received, and when (monotonic seconds)."""

    event: ProviderEvent
    details: EventDetails
    at: float


class EventRecorder:
    """Handlers for every provider event of one OpenFeature client, recording in order."""

    def __init__(self, client: OpenFeatureClient) -> None:
        self.seen: list[Seen] = []
        self._condition = threading.Condition()
        for event in ALL_EVENTS:
            client.add_handler(event, self._handler(event))

    def _handler(self, event: ProviderEvent) -> EventHandler:
        def handle(details: EventDetails) -> None:
            with self._condition:
                self.seen.append(Seen(event, details, time.monotonic()))
                self._condition.notify_all()

        return handle

    def names(self) -> list[str]:
        """The events seen so far, by short name (`READY`, `STALE`, ...)."""
        with self._condition:
            return [seen.event.value.removeprefix("PROVIDER_") for seen in self.seen]

    def wait_for(self, event: ProviderEvent, timeout_s: float, after: int = 0) -> Seen | None:
        """The first `event` at index `after` or later, waiting up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._condition:
            while True:
                for seen in self.seen[after:]:
                    if seen.event is event:
                        return seen
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._condition.wait(remaining)

    def count(self) -> int:
        """How many events were seen so far."""
        with self._condition:
            return len(self.seen)
