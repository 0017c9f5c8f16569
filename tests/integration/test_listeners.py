"""What listeners and logs see of each write, against a real server (issue #11, "Smaller").

A listener hears of each revision once, even when a resync reads the revision it just
applied from the change message; the publisher's `flags_written` line stays one short
line however many flags one write touches.
"""

from __future__ import annotations

import redis

from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from tests.integration.conftest import ClientFactory
from tests.integration.support import RevisionRecorder, counter_flag, wait_until
from tests.logs import captured_logs, events

ROUNDS = 5


class TestListenerCalls:
    """Each revision reaches a listener exactly once."""

    def test_resync_after_an_applied_change_notifies_nobody(
        self,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        raw: redis.Redis,
    ) -> None:
        """After each change (applied from its message) the pub/sub link is killed: the
        reconnect's resync reads the same revision and calls no listener again."""
        publisher.put("counter", counter_flag(0))
        client = make_client(server.url, backoff_max_s=0.05)
        assert client.wait_ready(5), client.status()
        recorder = RevisionRecorder()
        client.add_listener(recorder)
        written = []
        for value in range(1, ROUNDS + 1):
            revision = publisher.put("counter", counter_flag(value))
            written.append(revision)
            assert recorder.wait_for(revision, 3), client.status()
            resyncs = client.status().resyncs
            raw.client_kill_filter(_type="pubsub")
            assert wait_until(lambda r=resyncs: client.status().resyncs > r, 3), client.status()  # type: ignore[misc]
        assert client.status().reconnects >= ROUNDS
        assert recorder.revisions == written
        assert client.variation("counter", {}, -1) == ROUNDS


class TestWriteLog:
    """`flags_written` says how many keys a write touched and names only the first few."""

    def test_bulk_apply_is_summarised(self, publisher: Publisher) -> None:
        """An apply of 2,000 flags logs the count and ten keys, not 2,000."""
        flags = {f"flag-{index:04d}": counter_flag(index) for index in range(2000)}
        with captured_logs() as logs:
            revision = publisher.apply({"flags": flags})
        (written,) = events(logs, "flags_written")
        assert (written["count"], written["revision"], written["op"]) == (2000, revision, "apply")
        assert written["keys"] == sorted(flags)[:10]
