"""Provider events from the sync state, observed through `add_handler` against real
servers: READY on the first sync, CONFIGURATION_CHANGED per change, STALE when the
server freezes (SIGSTOP), ERROR past `error_after_s`, READY again on SIGCONT."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode as OFErrorCode
from openfeature.exception import ProviderNotReadyError
from openfeature.flag_evaluation import Reason as OFReason
from openfeature.provider import ProviderStatus

from flagsync import FlagClient
from flagsync.openfeature import FlagsyncProvider
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from tests.integration.conftest import ClientFactory, PublisherFactory
from tests.integration.support import base_document, counter_flag, wait_until
from tests.openfeature.support import EventRecorder

USER = EvaluationContext("user-42")


def watcher_threads() -> list[str]:
    """The provider event watcher threads alive in this process."""
    return [
        thread.name
        for thread in threading.enumerate()
        if thread.name.startswith("flagsync-openfeature-") and thread.is_alive()
    ]


class TestReadyAndChanges:
    """READY once synced, then one CONFIGURATION_CHANGED per change with its flags."""

    def test_set_provider_and_wait_then_changes(
        self, server: ServerProcess, publisher: Publisher, make_client: ClientFactory, domain: str
    ) -> None:
        """`set_provider_and_wait` returns READY with the store's flags served; each
        write then reaches handlers as CONFIGURATION_CHANGED naming exactly its flags."""
        publisher.apply(base_document())
        provider = FlagsyncProvider(make_client(server.url))
        api.set_provider_and_wait(provider, domain)
        client = api.get_client(domain)
        assert client.get_provider_status() is ProviderStatus.READY
        recorder = EventRecorder(client)
        assert recorder.wait_for(ProviderEvent.PROVIDER_READY, 2.0) is not None  # immediate
        assert client.get_string_value("model", "x", USER) == "gpt-4.1"

        revision = publisher.put("counter", counter_flag(1))
        changed = recorder.wait_for(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, 2.0)
        assert changed is not None
        assert changed.details.flags_changed == ["counter"]
        assert changed.details.metadata["revision"] == revision
        assert changed.details.provider_name == "flagsync"
        assert client.get_integer_details("counter", 0, USER).flag_metadata["revision"] == revision

        after = recorder.count()
        publisher.kill("model")
        killed = recorder.wait_for(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, 2.0, after)
        assert killed is not None
        # context-window requires model: its evaluation may change too
        assert killed.details.flags_changed == ["context-window", "model"]
        details = client.get_string_details("model", "x", USER)
        assert (details.value, details.reason) == ("gpt-4o", OFReason.DISABLED)
        assert recorder.names() == ["READY", "CONFIGURATION_CHANGED", "CONFIGURATION_CHANGED"]

    def test_initialize_times_out_then_ready_on_first_sync(
        self, dedicated_server: ServerProcess, make_client: ClientFactory, domain: str
    ) -> None:
        """Against a frozen server `set_provider_and_wait` raises PROVIDER_NOT_READY after
        `ready_timeout_s` (status ERROR, defaults served); READY follows the first sync,
        without a CONFIGURATION_CHANGED for the initial load."""
        with Publisher(dedicated_server.url, make_client.namespace) as publisher:
            publisher.apply(base_document())
        dedicated_server.pause()
        try:
            provider = FlagsyncProvider(make_client(dedicated_server.url), ready_timeout_s=0.5)
            started = time.monotonic()
            with pytest.raises(ProviderNotReadyError):
                api.set_provider_and_wait(provider, domain)
            assert time.monotonic() - started < 2.0
            client = api.get_client(domain)
            recorder = EventRecorder(client)
            assert client.get_provider_status() is ProviderStatus.ERROR
            details = client.get_string_details("model", "x", USER)
            assert (details.value, details.error_code) == ("x", OFErrorCode.PROVIDER_NOT_READY)
        finally:
            dedicated_server.resume()
        assert recorder.wait_for(ProviderEvent.PROVIDER_READY, 5.0) is not None
        assert client.get_provider_status() is ProviderStatus.READY
        assert client.get_string_value("model", "x", USER) == "gpt-4.1"
        time.sleep(0.3)  # a CONFIGURATION_CHANGED for the first load would have come by now
        assert recorder.names() == ["ERROR", "READY"]


class TestFreezeAndRecovery:
    """A SIGSTOPped server: STALE, then ERROR past the deadline, then READY on SIGCONT."""

    def test_stale_error_ready_in_order_within_bounds(
        self,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: ClientFactory,
        domain: str,
    ) -> None:
        """With the client's default options: STALE ≤ 5 s after the freeze (the client's
        1 s grace), ERROR once unconfirmed for `error_after_s`, READY ≤ 5 s after SIGCONT,
        then the change written after recovery; the last value is served throughout."""
        publisher = make_publisher(dedicated_server.url)
        publisher.apply(base_document())
        provider = FlagsyncProvider(make_client(dedicated_server.url), error_after_s=2.5)
        api.set_provider_and_wait(provider, domain)
        client = api.get_client(domain)
        recorder = EventRecorder(client)
        assert recorder.wait_for(ProviderEvent.PROVIDER_READY, 2.0) is not None
        dedicated_server.pause()
        frozen_at = time.monotonic()
        try:
            stale = recorder.wait_for(ProviderEvent.PROVIDER_STALE, 5.0)
            assert stale is not None, recorder.names()
            served = client.get_string_details("model", "x", USER)
            assert (served.value, served.reason) == ("gpt-4.1", OFReason.STALE)
            assert served.flag_metadata["stale"] is True
            error = recorder.wait_for(ProviderEvent.PROVIDER_ERROR, 5.0)
            assert error is not None, recorder.names()
            assert client.get_provider_status() is ProviderStatus.ERROR
            assert error.details.error_code == OFErrorCode.GENERAL
            assert "error_after_s=2.5" in (error.details.message or "")
            assert client.get_string_value("model", "x", USER) == "gpt-4.1"  # still served
        finally:
            dedicated_server.resume()
        resumed_at = time.monotonic()
        ready = recorder.wait_for(ProviderEvent.PROVIDER_READY, 5.0, after=3)
        assert ready is not None, recorder.names()
        publisher.kill("model")
        assert recorder.wait_for(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, 3.0) is not None
        stale_s, error_s = stale.at - frozen_at, error.at - frozen_at
        ready_s = ready.at - resumed_at
        assert stale_s <= 5.0
        assert 2.5 - 1.0 <= error_s <= 2.5 + 2.0  # unconfirmed for 2.5 s: frozen ≤ 2.5 s ago
        assert ready_s <= 5.0
        assert recorder.names() == ["READY", "STALE", "ERROR", "READY", "CONFIGURATION_CHANGED"]
        assert client.get_string_details("model", "x", USER).reason == OFReason.DISABLED
        print(
            f"\nSTALE {stale_s:.2f} s, ERROR {error_s:.2f} s; READY {ready_s:.2f} s after SIGCONT"
        )


class TestShutdown:
    """Shutting the provider down stops its watcher and closes what it opened."""

    def test_shutdown_closes_an_owned_client_only(
        self, server: ServerProcess, publisher: Publisher, make_client: ClientFactory, domain: str
    ) -> None:
        """`api.shutdown()` closes the client `connect` opened and stops the watcher thread;
        a client passed in stays open."""
        publisher.apply(base_document())
        owned = FlagsyncProvider.connect(server.url, make_client.namespace)
        make_client.clients.append(owned.client)  # closed after the test in any case
        shared_client = make_client(server.url)
        shared = FlagsyncProvider(shared_client)
        api.set_provider_and_wait(owned, domain)
        api.set_provider_and_wait(shared, f"{domain}-shared")
        api.shutdown()
        assert wait_until(lambda: owned.client.status().state == "closed", 2.0)
        assert shared_client.status().state == "ready"
        assert wait_until(lambda: not watcher_threads(), 2.0), watcher_threads()


class TestAsyncClient:
    """A `connect_async` client behind the provider: events and async resolution."""

    def test_connect_async_client_events_and_async_resolution(
        self, server: ServerProcess, publisher: Publisher, namespace: str, domain: str
    ) -> None:
        """Awaiting `wait_ready_async` first makes `set_provider_and_wait` return at once
        inside the event loop; changes applied by the async task reach handlers, and the
        async API serves them."""
        publisher.apply(base_document())

        async def main() -> tuple[float, list[str], str, str]:
            async with FlagClient.connect_async(server.url, namespace) as flags:
                assert await flags.wait_ready_async(5.0)
                started = time.monotonic()
                api.set_provider_and_wait(FlagsyncProvider(flags), domain)
                waited_s = time.monotonic() - started
                client = api.get_client(domain)
                recorder = EventRecorder(client)
                before = await client.get_string_value_async("model", "x", USER)
                publisher.kill("model")
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline and recorder.count() < 2:
                    await asyncio.sleep(0.01)
                details = await client.get_string_details_async("model", "x", USER)
                api.shutdown()
                return waited_s, recorder.names(), before, str(details.reason)

        waited_s, names, before, reason = asyncio.run(main())
        assert waited_s < 0.5
        assert names == ["READY", "CONFIGURATION_CHANGED"]
        assert (before, reason) == ("gpt-4.1", "DISABLED")
