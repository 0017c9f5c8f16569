"""The beacon without a server: the heartbeat's wire form, what a follower makes of one,
the session's cadence while heartbeats flow or not, and the lease election's schedule.

Time is a fake clock the tests move; randomness is a fixed value.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from flagsync._codec import MalformedMessageError
from flagsync._digest import StateDigest
from flagsync._signing import SignedState, Signer, generate_key_pair
from flagsync._sync.beacon import Beacon, grace_s, heard_beacon, read_own_beat
from flagsync._sync.follower import MESSAGE_GRACE_S, Follower
from flagsync._sync.options import SyncOptions
from flagsync._sync.presence import Presence
from flagsync._sync.timers import LivenessError, SessionTimers
from flagsync.store import (
    HEARTBEAT_SCHEMA,
    Heartbeat,
    StoreState,
    decode_heartbeat,
    encode_heartbeat,
)
from tests.unit.test_follower import EPOCH, KEYS, SYNCED, Clock, blob, loaded

OPTIONS = SyncOptions()


def synced_follower(clock: Clock, verify_keys: tuple[str, ...] = ()) -> Follower:
    """A follower at revision 5 (flags a=x, b=y) on `clock`."""
    follower = Follower(KEYS, SyncOptions(verify_keys=verify_keys), lambda _: None, clock=clock)
    if verify_keys:
        return follower
    assert follower.on_loaded(loaded(5, SYNCED))
    return follower


def digest_of(flags: dict[str, str]) -> str:
    return StateDigest.of_store({key: blob(key, value) for key, value in flags.items()}, {}).value


def beat(revision: int = 5, digest: str | None = None, entries: int = 2, **extra: str) -> bytes:
    """A heartbeat as the beacon publishes it (default: the synced follower's state)."""
    return encode_heartbeat(
        Heartbeat(EPOCH, revision, digest or digest_of(SYNCED), entries, "w-9", **extra)
    )


class TestWireForm:
    """`fsb1|<epoch>|<rev>|<digest>|<entries>|<holder>|<sig>`, strictly parsed."""

    def test_round_trip(self) -> None:
        """What is encoded decodes to the same heartbeat; a `|` in the holder is replaced."""
        heartbeat = Heartbeat(EPOCH, 7, "d" * 40, 3, "host|1", "sig")
        data = encode_heartbeat(heartbeat)
        assert data.startswith(HEARTBEAT_SCHEMA + b"|")
        assert decode_heartbeat(data) == Heartbeat(EPOCH, 7, "d" * 40, 3, "host_1", "sig")

    @pytest.mark.parametrize(
        "data",
        [
            b"fs2|e1|5|1|" + b"d" * 40 + b"||",  # a change message is no heartbeat
            b"fsb1|e1|5|" + b"d" * 40 + b"|2|w",  # a field short
            b"fsb1|e1|x|" + b"d" * 40 + b"|2|w|",  # revision not a number
            b"fsb1||5|" + b"d" * 40 + b"|2|w|",  # no epoch
            b"fsb1|e1|5|short|2|w|",  # no digest
            b"fsb1|e1|0|" + b"d" * 40 + b"|2|w|",  # revision below 1
            b"fsb1|e1|5|" + b"d" * 40 + b"|-1|w|",  # negative entries
            "fsb1|e1|5",  # not bytes
            b"fsb1|" + b"x" * 5000,  # too long
        ],
    )
    def test_refuses_anything_else(self, data: bytes) -> None:
        with pytest.raises(MalformedMessageError):
            decode_heartbeat(data)


class TestFollowerVerdicts:
    """A heartbeat confirms our state, asks for a check, or is ignored: never applied."""

    def test_same_state_confirms(self) -> None:
        clock = Clock()
        follower = synced_follower(clock)
        clock.now += 0.9
        assert follower.on_heartbeat(beat()) == "confirmed"
        assert follower.seconds_since_sync() == 0.0
        assert follower.snapshot.revision == 5

    @pytest.mark.parametrize(
        ("data", "why"),
        [
            (beat(revision=6), "the store is ahead: our nudge may be lost"),
            (beat(digest="f" * 40), "our revision with another digest: one of us diverged"),
            (beat(entries=3), "a hash changed behind the write script's back"),
            (encode_heartbeat(Heartbeat("other", 5, "d" * 40, 2, "w")), "another history"),
        ],
    )
    def test_any_difference_asks_for_a_check(self, data: bytes, why: str) -> None:
        follower = synced_follower(Clock())
        assert follower.on_heartbeat(data) == "check", why
        assert follower.snapshot.revision == 5  # nothing applied from a heartbeat

    def test_older_revision_is_only_heard(self) -> None:
        """A beat read just before a change we applied: no check storm after each write."""
        follower = synced_follower(Clock())
        assert follower.on_heartbeat(beat(revision=4)) == "heard"

    def test_garbage_is_rejected(self) -> None:
        follower = synced_follower(Clock())
        assert follower.on_heartbeat(b"fsb1|nonsense") == "rejected"
        assert follower.heartbeats_rejected == 1

    def test_signed_mode_ignores_unsigned_and_forged(self, tmp_path: Path) -> None:
        """A signed worker takes only heartbeats carrying a valid record of the state
        they state (what the last write stored): an unsigned or re-used one proves
        nothing, so it neither confirms nor slows polling."""
        pem, public = generate_key_pair()
        (tmp_path / "key.pem").write_bytes(pem)
        signer = Signer(tmp_path / "key.pem")
        clock = Clock()
        follower = synced_follower(clock, verify_keys=(public,))
        digest = digest_of(SYNCED)
        record = signer.sign(SignedState(KEYS.namespace, EPOCH, 5, digest, "0" * 64, 1))
        assert follower.on_heartbeat(beat(digest=digest)) == "rejected"  # unsigned
        other = signer.sign(SignedState(KEYS.namespace, EPOCH, 4, digest, "0" * 64, 1))
        assert follower.on_heartbeat(beat(digest=digest, signature=other)) == "rejected"
        assert follower.heartbeats_rejected == 2
        # validly signed: compared like any heartbeat (this follower has loaded nothing)
        assert follower.on_heartbeat(beat(digest=digest, signature=record)) == "check"

    def test_grace_only_for_the_next_revision_once(self) -> None:
        """A check that finds exactly the next revision waits once for its message; the
        same state seen again, or any other difference, loads at once."""
        follower = synced_follower(Clock())
        ahead = StoreState(6, EPOCH, "a" * 40)
        assert follower.grace_s(ahead) == MESSAGE_GRACE_S
        assert follower.grace_s(ahead) == 0.0
        assert follower.grace_s(StoreState(8, EPOCH, "b" * 40)) == 0.0  # a gap: load
        assert follower.grace_s(StoreState(6, "other", "a" * 40)) == 0.0  # another history
        assert follower.grace_s(StoreState(4, EPOCH, "c" * 40)) == MESSAGE_GRACE_S  # lag
        assert follower.grace_s(StoreState(7, EPOCH, "d" * 40), 0.0) == 0.0


class TestCadence:
    """While heartbeats flow: a check a second at most, no pings; else today's cadence."""

    def test_polling_without_heartbeats(self) -> None:
        clock = Clock()
        timers = SessionTimers(OPTIONS, clock)
        clock.now += 0.25
        assert timers.check_due()
        timers.checked()
        clock.now += 0.2
        assert not timers.check_due()
        clock.now += 0.05
        assert timers.check_due()
        assert timers.ping_due()  # 0.5 s since the start

    def test_heartbeats_slow_checks_to_a_second_never_more(self) -> None:
        clock = Clock()
        timers = SessionTimers(OPTIONS, clock)
        timers.checked()
        for _ in range(2):  # heartbeats every 0.4 s
            clock.now += 0.4
            timers.beacon_heard()
            timers.heard()
            assert not timers.check_due()
            assert not timers.ping_due()  # a heartbeat proves the link alive
        clock.now += 0.2
        assert timers.check_due()  # 1.0 s: whatever heartbeats say
        assert math.isclose(timers.wait_s(), 0.0)

    def test_fast_cadence_returns_when_heartbeats_stop(self) -> None:
        clock = Clock()
        timers = SessionTimers(OPTIONS, clock)
        timers.beacon_heard()
        timers.checked()
        clock.now += 0.3
        assert not timers.check_due()
        clock.now += 0.6  # 0.9 s without a heartbeat: no longer flowing
        assert not timers.beacon_flowing()
        assert timers.check_due()
        assert timers.ping_due()

    def test_disagreeing_heartbeat_checks_at_most_every_quarter_second(self) -> None:
        clock = Clock()
        timers = SessionTimers(OPTIONS, clock)
        timers.beacon_heard()
        timers.checked()
        clock.now += 0.1
        timers.check_soon()
        assert timers.urgent
        assert not timers.check_due()  # 0.1 s after a check: a flood costs no more
        clock.now += 0.15
        assert timers.check_due()
        timers.checked()
        assert not timers.urgent

    def test_grace_fits_only_the_fast_cadence(self) -> None:
        clock = Clock()
        timers = SessionTimers(OPTIONS, clock)
        clock.now += 0.25
        assert timers.grace_fits(MESSAGE_GRACE_S)
        clock.now += 0.75  # a check a second after the last: no time to spare
        assert not timers.grace_fits(MESSAGE_GRACE_S)

    def test_start_grace_until_confirmed_and_loaded(self) -> None:
        """A busy start reads its confirmation late: no liveness verdict for
        `start_grace_s`; after the first load and confirmation, the usual deadline."""
        clock = Clock()
        timers = SessionTimers(OPTIONS, clock)
        clock.now += 3.0
        assert timers.ping_due()  # silent 3 s, still starting: ping, no verdict
        timers.subscribed()
        timers.loaded()
        assert timers.started
        clock.now += 1.0
        timers.ping_due()
        clock.now += 0.6
        with pytest.raises(LivenessError):
            timers.ping_due()


class TestElection:
    """One holder per namespace; the others contend only after heartbeats went missing."""

    def make(self, clock: Clock, worker: str = "w-1", rng: float = 0.5) -> Beacon:
        return Beacon(KEYS, OPTIONS, lambda: worker, clock=clock, rng=lambda: rng)

    def test_contends_after_silence_with_spread(self) -> None:
        clock = Clock()
        start = clock.now
        beacon = self.make(clock, rng=0.5)
        assert beacon.step() is None
        assert beacon.next_due() == pytest.approx(start + beacon.missing_s * 1.5)
        clock.now = beacon.next_due()
        assert beacon.step() == "contend"
        assert beacon.contend_commands() == [
            ("SET", KEYS.beacon, "w-1", "NX", "PX", 2000),
            ("GET", KEYS.beacon),
        ]

    def test_heartbeats_postpone_contention(self) -> None:
        clock = Clock()
        beacon = self.make(clock)
        for _ in range(10):
            clock.now += 0.4
            beacon.heard()
            assert beacon.step() is None

    def test_refused_attempts_back_off(self) -> None:
        clock = Clock()
        beacon = self.make(clock, rng=0.0)
        gaps = []
        for _ in range(8):
            clock.now = beacon.next_due()
            before = clock.now
            beacon.contended([None, b"w-2"])
            gaps.append(beacon.next_due() - before)
        assert not beacon.holding
        assert gaps[:3] == pytest.approx([2.4, 4.8, 9.6])
        assert max(gaps) == pytest.approx(30.0)

    def test_holder_beats_renews_and_counts_entries(self) -> None:
        clock = Clock()
        beacon = self.make(clock)
        clock.now = beacon.next_due()
        beacon.contended([True, b"w-1"])
        assert beacon.holding
        assert beacon.step() == "beat"
        header = [b"5", EPOCH.encode(), b"d" * 40, None]
        commands = beacon.beat_commands()
        assert [command[0] for command in commands] == ["MGET", "HLEN", "HLEN"]
        publish = beacon.beaten([header, 1, 1])
        assert publish is not None
        assert publish[:2] == ("PUBLISH", KEYS.heartbeat)
        assert decode_heartbeat(publish[2]) == Heartbeat(EPOCH, 5, "d" * 40, 2, "w-1")
        clock.now += 0.4
        assert [command[0] for command in beacon.beat_commands()] == ["MGET"]
        # the revision moved since the count: count again at once, publish nothing stale
        moved = [b"6", EPOCH.encode(), b"e" * 40, None]
        assert beacon.beaten([moved]) is None
        assert beacon.step() == "beat"
        clock.now += 0.7  # a second since the lease was taken: renew with the beat
        assert [command[0] for command in beacon.beat_commands()] == [
            "MGET",
            "HLEN",
            "HLEN",
            "GET",
            "PEXPIRE",
        ]

    def test_beat_interval_counts_from_the_read(self) -> None:
        """A beat's own round trips (0.2-0.6 s under 100 ms of latency each way, S19) do
        not stretch the interval: the next beat is due an interval after the read was
        sent, or at once when the beat took longer than that."""
        clock = Clock()
        beacon = self.make(clock)
        clock.now = beacon.next_due()
        beacon.contended([True, b"w-1"])
        header = [b"5", EPOCH.encode(), b"d" * 40, None]
        started = clock.now
        beacon.beat_commands()
        clock.now += 0.3  # the read's round trip
        assert beacon.beaten([header, 1, 1]) is not None
        assert beacon.next_due() == pytest.approx(started + OPTIONS.beacon_interval_s)
        clock.now = beacon.next_due()
        beacon.beat_commands()
        clock.now += 0.9  # longer than an interval: due again at once, never in the past
        assert beacon.beaten([header]) is not None
        assert beacon.next_due() == pytest.approx(clock.now)

    def test_own_beat_is_a_check_when_it_confirms(self) -> None:
        """The holder's beat read the followed node: when it states our state, the
        periodic check moves a check interval on (as after a check); when it disagrees
        nothing changes here (the heartbeat heard back on the channel asks for the check)."""
        clock = Clock()
        follower = synced_follower(clock)
        timers = SessionTimers(OPTIONS, clock)
        timers.beacon_heard()
        timers.checked()
        clock.now += 0.9
        read_own_beat(follower, timers, ("PUBLISH", KEYS.heartbeat, beat()))
        clock.now += 0.5  # 1.4 s after the last periodic check, 0.5 s after the beat
        timers.beacon_heard()
        assert not timers.check_due()
        assert follower.seconds_since_sync() == pytest.approx(0.5)
        read_own_beat(follower, timers, ("PUBLISH", KEYS.heartbeat, beat(revision=6)))
        assert not timers.urgent
        clock.now += 0.5
        assert timers.check_due()  # a second after the confirming beat, whatever follows
        assert follower.heartbeats_rejected == 0
        timers.checked()
        clock.now += 0.2
        read_own_beat(follower, timers, ("PUBLISH", KEYS.heartbeat, beat()))
        clock.now += 0.1
        # A disagreeing heartbeat heard back checks 0.25 s after the last *check*: a
        # confirming beat in between does not delay it (S8's bound).
        heard_beacon(follower, self.make(clock), timers, beat(revision=6))
        assert timers.urgent
        assert timers.check_due()
        timers.checked()
        clock.now += 0.9  # heartbeats stopped (the holder's own came back late)
        assert not timers.beacon_flowing()
        read_own_beat(follower, timers, ("PUBLISH", KEYS.heartbeat, beat()))
        clock.now += 0.2  # the fast cadence counts from the confirming beat
        assert not timers.check_due()
        clock.now += 0.05
        assert timers.check_due()

    def test_holder_steps_down_when_the_lease_moved(self) -> None:
        clock = Clock()
        beacon = self.make(clock)
        clock.now = beacon.next_due()
        beacon.contended([True, b"w-1"])
        clock.now += 1.0
        header = [b"5", EPOCH.encode(), b"d" * 40, None]
        assert beacon.beaten([header, 1, 1, b"w-2", 1]) is None
        assert not beacon.holding
        assert beacon.step() is None  # a contender again, after the usual silence

    def test_refusal_disables_this_process_only(self) -> None:
        clock = Clock()
        beacon = self.make(clock)
        beacon.refused(RuntimeError("NOPERM"))
        clock.now += 100
        assert beacon.step() is None
        assert beacon.next_due() == math.inf

    def test_heard_beacon_wires_follower_timers_and_election(self) -> None:
        """A valid heartbeat slows polling and postpones contention; one that disagrees
        also makes a check due; a rejected one does neither."""
        clock = Clock()
        follower = synced_follower(clock)
        timers = SessionTimers(OPTIONS, clock)
        beacon = self.make(clock)
        due = beacon.next_due()
        heard_beacon(follower, beacon, timers, b"junk")
        assert not timers.beacon_flowing()
        clock.now += 0.5
        heard_beacon(follower, beacon, timers, beat(revision=6))
        assert timers.beacon_flowing()
        assert timers.urgent
        assert beacon.next_due() > due
        assert grace_s(follower, StoreState(6, EPOCH, "a" * 40), timers) == MESSAGE_GRACE_S


class TestAcks:
    """Each applied revision is acked once, with the presence write after it."""

    def test_one_ack_per_revision_after_the_record(self) -> None:

        clock = Clock()
        follower = synced_follower(clock)
        presence = Presence(follower, "w-1")
        assert presence.ack_command() is None  # no record written yet: nothing to point at
        assert presence.heartbeat_command() is not None
        ack = presence.ack_command()
        assert ack is not None
        assert ack[:2] == ("XADD", KEYS.acks)
        assert ack[ack.index("rev") + 1] == 5
        assert presence.ack_command() is None  # the same revision: once
        presence.ack_refused(RuntimeError("NOPERM"))
        assert follower.on_loaded(loaded(6, {"a": "z"}))
        assert presence.heartbeat_command() is not None
        assert presence.ack_command() is None  # refused once: never again

    def test_a_lost_store_is_reported_at_once(self) -> None:
        """Whether the store lost data this worker holds is written within `ack_delay_s`."""

        clock = Clock()
        follower = synced_follower(clock)
        presence = Presence(follower, "w-1")
        assert presence.heartbeat_command() is not None
        assert not presence.outdated()
        assert follower.on_revision(StoreState(0, None, None)) == "missing"
        assert presence.outdated()
        assert presence.heartbeat_command() is not None
        assert not presence.outdated()


class TestOptions:
    """Bad timing options are refused with the field and the reason."""

    @pytest.mark.parametrize(
        ("field", "value", "reason"),
        [
            ("beacon_interval_s", 0, "positive"),
            ("presence_ttl_s", -1.0, "positive"),
            ("heartbeat_interval_s", "5", "positive"),
            ("beacon_lease_s", True, "positive"),
            ("beacon_check_interval_s", 2.0, "at most 1.0"),
        ],
    )
    def test_refused(self, field: str, value: object, reason: str) -> None:
        with pytest.raises(ValueError, match=field) as raised:
            SyncOptions(**{field: value})  # type: ignore[arg-type]
        assert reason in str(raised.value)
