"""The heartbeat pipeline's replies, judged in one place for both drivers (see
`Presence.write_commands`): what is reported, what ends the session. The replies are
the objects redis-py's pipeline returns with `raise_on_error=False`."""

from __future__ import annotations

import pytest
import redis

from flagsync._sync.presence import Presence
from tests.logs import captured_logs, events
from tests.unit.test_follower import KEYS, SYNCED, Harness, loaded


@pytest.fixture
def presence() -> Presence:
    """The presence of a follower that loaded revision 5."""
    harness = Harness()
    assert harness.follower.on_loaded(loaded(5, SYNCED))
    return Presence(harness.follower, "w-1")


class TestWriteCommands:
    """One pipeline: the record, then the ack of a newly applied revision."""

    def test_record_then_ack_once(self, presence: Presence) -> None:
        """The first heartbeat acks revision 5 after the record; the next only writes."""
        first = presence.write_commands()
        assert first is not None
        assert [command[0] for command in first] == ["SET", "XADD"]
        assert first[0][1] == KEYS.worker("w-1")
        again = presence.write_commands()
        assert again is not None
        assert [command[0] for command in again] == ["SET"]


class TestReplies:
    """What each reply means."""

    def test_success_ends_a_refusal_episode(self, presence: Presence) -> None:
        """After a refusal, a written record clears the error and logs it once."""
        presence.write_failed(redis.ReadOnlyError("READONLY"), separate_node=False, where="r")
        assert presence.error is not None
        with captured_logs() as logs:
            presence.write_replied([True, b"1-0"])
        assert presence.error is None
        assert len(events(logs, "presence_written")) == 1

    def test_refused_ack_stops_acking_only(self, presence: Presence) -> None:
        """A denied XADD warns once and stops acks; the record still counts."""
        presence.write_commands()
        with captured_logs() as logs:
            presence.write_replied([True, redis.ResponseError("NOPERM")])
        assert presence.acks_refused
        assert presence.error is None
        assert len(events(logs, "ack_refused")) == 1

    def test_refused_record_is_raised_for_the_driver(self, presence: Presence) -> None:
        """An error reply to the record's SET is raised, to be judged by `write_failed`."""
        with pytest.raises(redis.ReadOnlyError):
            presence.write_replied([redis.ReadOnlyError("READONLY")])

    def test_read_only_followed_node_is_reported_not_fatal(self, presence: Presence) -> None:
        """A read-only replica refusing the record: reported, the session goes on."""
        presence.write_failed(redis.ReadOnlyError("READONLY"), separate_node=False, where="r:1")
        assert presence.error is not None
        assert "read-only replica refused it" in presence.error

    def test_lost_followed_node_ends_the_session(self, presence: Presence) -> None:
        """Any other failure of the followed node is re-raised (the driver reconnects)."""
        with pytest.raises(redis.ConnectionError):
            presence.write_failed(redis.ConnectionError("gone"), separate_node=False, where="r")
        assert presence.error is None

    def test_separate_node_failure_is_only_reported(self, presence: Presence) -> None:
        """On a separate presence node every failure is reported: the followed node is fine."""
        presence.write_failed(redis.ConnectionError("gone"), separate_node=True, where="p:2")
        assert presence.error is not None
        assert "presence not written on p:2: failed" in presence.error
