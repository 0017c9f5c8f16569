"""Faults of delivery on the change channel: a nudge that never comes, and messages out of
order, duplicated or replayed (FAULTS.md S8, S10). Every scenario runs on each server kind,
on 127.0.0.1 only, and records what it measured (`tests.faults.figures`)."""

from __future__ import annotations

import statistics
import time
from typing import Final

import pytest
import redis

from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.store import StoreKeys
from tests.faults.figures import record
from tests.faults.recovery import MESSAGES_ONLY, ready_client, serving, time_to
from tests.integration.conftest import ClientFactory
from tests.integration.support import (
    BASE_VALUES,
    MODEL_OFF,
    RevisionRecorder,
    base_document,
    channel_tap,
    counter_flag,
    muted_publisher,
    served,
    wait_until,
    write_by_hand,
)

LOST_NUDGE_BUDGET_S: Final = 0.5
"""FAULTS.md S8 with default options: the revision check runs every 250 ms."""


class TestLostNudge:
    """S8: a write whose PUBLISH never happened is applied by the revision check."""

    @pytest.mark.parametrize("writer", ["script-bogus-channel", "by-hand"])
    def test_unannounced_write_applied_within_check_interval(
        self,
        writer: str,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        raw: redis.Redis,
    ) -> None:
        """With default options, each of 5 writes without a message (the write script
        publishing to a channel nobody hears, or HSET + INCR by hand) is served within
        500 ms, the slowest included."""
        publisher.apply(base_document())
        publisher.put("counter", counter_flag(0))
        namespace = publisher.keys.namespace
        client = ready_client(make_client, server.url)
        recorder = RevisionRecorder()
        client.add_listener(recorder)
        before = client.status()
        muted = muted_publisher(server.url, namespace)
        delays_s: list[float] = []
        try:
            for value in range(1, 6):
                started = time.monotonic()
                if writer == "by-hand":
                    revision = write_by_hand(raw, namespace, "counter", counter_flag(value))
                else:
                    revision = muted.put("counter", counter_flag(value))
                elapsed_s = time_to(serving(client, "counter", value), 2.0)
                assert elapsed_s is not None, client.status()
                delays_s.append(time.monotonic() - started)
                assert client.revision == revision
        finally:
            muted.close()
        assert max(delays_s) < LOST_NUDGE_BUDGET_S, delays_s
        after = client.status()
        assert after.applied_changes == before.applied_changes  # no message carried them
        assert after.resyncs - before.resyncs == 5  # each found by a check, then loaded
        assert recorder.revisions == sorted(set(recorder.revisions))
        assert served(client) == BASE_VALUES
        record(
            "S8",
            server.kind,
            recovery_s=max(delays_s),
            variant=writer,
            median_s=round(statistics.median(delays_s), 4),
        )


class TestOrdering:
    """S10: revisions apply strictly in order; duplicates and old ones are counted, gaps
    resync."""

    def test_out_of_order_duplicate_and_replayed_messages(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        raw: redis.Redis,
    ) -> None:
        """r+3 published before r+2 triggers one resync to r+3; then r+2, r+3 again and an
        old r+1 are ignored and counted; the next change applies from its message. The
        client's revisions only ever go up."""
        start = publisher.apply(base_document())
        namespace = publisher.keys.namespace
        client = ready_client(make_client, server.url, **MESSAGES_ONLY)
        recorder = RevisionRecorder()
        client.add_listener(recorder)
        before = client.status()

        with channel_tap(raw, StoreKeys(namespace).channel) as take:
            first = publisher.kill("model")  # r+1, announced and applied from its message
            (first_message,) = take(1)
        assert wait_until(lambda: client.revision == first, 2)
        muted = muted_publisher(server.url, namespace)
        try:
            with channel_tap(raw, muted.keys.channel) as take:
                second = muted.set_default("temperature", "low")  # r+2, unheard
                third = muted.enable("model")  # r+3, unheard
                second_message, third_message = take(2)
        finally:
            muted.close()
        assert (first, second, third) == (start + 1, start + 2, start + 3)
        assert client.revision == first

        jumped_at = time.monotonic()
        raw.publish(publisher.keys.channel, third_message)  # r+3 on top of r+1: a gap
        assert wait_until(lambda: client.revision == third, 2), client.status()
        resynced_s = time.monotonic() - jumped_at
        for message in (second_message, third_message, first_message):  # old, dup, replay
            raw.publish(publisher.keys.channel, message)
        ignored = before.ignored_messages + 3
        assert wait_until(lambda: client.status().ignored_messages == ignored, 2), client.status()
        after_replays = client.status()
        assert after_replays.revision == third
        assert served(client) == BASE_VALUES | {"temperature": 0.2}

        fourth = publisher.kill("model")
        assert wait_until(lambda: client.revision == fourth, 2)
        after = client.status()
        assert recorder.revisions == [first, third, fourth]
        assert after.ignored_messages == ignored
        assert after.resyncs == before.resyncs + 1  # the gap, and nothing else
        assert after.applied_changes == before.applied_changes + 2  # r+1 and r+4
        assert after.malformed_messages == before.malformed_messages
        assert served(client) == BASE_VALUES | MODEL_OFF | {"temperature": 0.2}
        record(
            "S10",
            server.kind,
            recovery_s=resynced_s,
            ignored_messages=after.ignored_messages - before.ignored_messages,
            resyncs=after.resyncs - before.resyncs,
        )
