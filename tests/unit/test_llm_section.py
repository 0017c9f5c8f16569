"""The namespace's `llm:` section (prices) travels with the sync: a whole load reads it,
a change message carries it, and the follower keeps the parsed copy `llm_call` reads
(see `flagsync._sync.llm_section`). Messages are built as the publisher builds them."""

from __future__ import annotations

import msgspec

from flagsync._codec import Change, ChangeSet, decode_changeset, encode_changeset
from flagsync._digest import StateDigest
from flagsync._reads import load_commands, parse_load
from flagsync.llm.policy import encode_settings
from flagsync.model import LLMSettings, ModelPrice
from flagsync.store import LoadedStore, ScriptWrite, encode_blobs, encode_payload
from tests.logs import captured_logs, events
from tests.unit.test_follower import EPOCH, KEYS, SYNCED, Harness, blob, loaded

CHEAP = LLMSettings(prices={"gpt-4o": ModelPrice(2.5, 10.0)})
DEAR = LLMSettings(prices={"gpt-4o": ModelPrice(5.0, 10.0)}, models={"openai": ["gpt-4o"]})


def llm_message(revision: int, section: bytes | None, flags: dict[str, str] | None = None) -> bytes:
    """A change message on top of the `SYNCED` store putting `flags` and, unless None,
    storing `section`, with the digest the write script computes (the section is not in it)."""
    store = {key: blob(key, value) for key, value in SYNCED.items()}
    blobs = [(key, blob(key, value, revision)) for key, value in (flags or {}).items()]
    digest = StateDigest.of_store(store, {}).update(("flag", key, data) for key, data in blobs)
    changes = [Change("flag", key, "put", data) for key, data in blobs]
    if section is not None:
        changes.append(Change("llm", "settings", "put", section))
    payload = encode_changeset(ChangeSet(actor="unit", reason="test", changes=changes))
    return f"fs2|{EPOCH}|{revision}|{revision * 1000}|{digest}||".encode() + payload


def with_section(store: LoadedStore, section: bytes | None) -> LoadedStore:
    """`store` as a load that also read `section` from the section's key."""
    return msgspec.structs.replace(store, llm=section)


def synced_with(section: LLMSettings | None) -> Harness:
    """A follower whose first load (revision 5, flags a and b) read `section`."""
    harness = Harness()
    encoded = None if section is None else encode_settings(section)
    assert harness.follower.on_loaded(with_section(loaded(5, SYNCED), encoded))
    return harness


class TestLoads:
    """A whole load adopts the section it read with the flags."""

    def test_first_load_reads_the_prices(self) -> None:
        """The deferred first load keeps the section beside its snapshot."""
        follower = synced_with(CHEAP).follower
        assert follower.llm.settings == CHEAP

    def test_later_load_replaces_or_clears_them(self) -> None:
        """A full load of a newer revision adopts its section; one with none stored clears it."""
        harness = synced_with(CHEAP)
        follower = harness.follower
        assert follower.on_loaded(with_section(loaded(6, {"a": "z"}), encode_settings(DEAR)))
        assert follower.llm.settings == DEAR
        assert follower.on_loaded(loaded(7, {"a": "w"}))
        assert follower.llm.settings is None

    def test_same_flags_new_section(self) -> None:
        """A re-read of the revision held (same flags) still adopts the section it read."""
        harness = synced_with(None)
        assert harness.follower.on_loaded(with_section(loaded(5, SYNCED), encode_settings(DEAR)))
        assert harness.follower.llm.settings == DEAR
        assert len(harness.installed) == 1  # nothing swapped: only the section was new

    def test_missing_store_keeps_them(self) -> None:
        """A store that lost its data (no epoch) keeps the last-known-good section too."""
        harness = synced_with(CHEAP)
        assert not harness.follower.on_loaded(loaded(6, {}, epoch=None))
        assert harness.follower.llm.settings == CHEAP

    def test_unreadable_section_gives_no_prices(self) -> None:
        """Bytes that are no section: no prices (as the publisher reads it), logged once."""
        with captured_logs() as logs:
            harness = synced_with(None)
            bad = b"\x81\xa6prices\x01"
            assert harness.follower.on_loaded(with_section(loaded(6, {"a": "z"}), bad))
            assert harness.follower.on_loaded(with_section(loaded(6, {"a": "z"}), bad))
        assert harness.follower.llm.settings is None
        assert harness.follower.snapshot.revision == 6  # the flags load regardless
        assert len(events(logs, "llm_section_unreadable")) == 1


class TestMessages:
    """A change message that stores a section carries it: no read of the store."""

    def test_prices_alone(self) -> None:
        """A message changing only the section applies (the next revision, same flags)."""
        harness = synced_with(CHEAP)
        follower = harness.follower
        assert follower.on_message(llm_message(6, encode_settings(DEAR))) == "applied"
        assert follower.llm.settings == DEAR
        assert follower.snapshot.revision == 6
        assert harness.values() == {"a": "x", "b": "y"}

    def test_with_flag_changes(self) -> None:
        """A section and a flag in one message: both applied, the digest still agrees."""
        harness = synced_with(None)
        verdict = harness.follower.on_message(llm_message(6, encode_settings(CHEAP), {"a": "z"}))
        assert verdict == "applied"
        assert harness.follower.llm.settings == CHEAP
        assert harness.values() == {"a": "z", "b": "y"}

    def test_a_message_without_a_section_keeps_it(self) -> None:
        """Flag writes that do not store a section leave the prices held."""
        harness = synced_with(CHEAP)
        assert harness.follower.on_message(llm_message(6, None, {"a": "z"})) == "applied"
        assert harness.follower.llm.settings == CHEAP

    def test_a_bad_section_is_a_doubtful_message(self) -> None:
        """An undecodable section applies nothing (flags included): a check follows."""
        harness = synced_with(CHEAP)
        follower = harness.follower
        assert follower.on_message(llm_message(6, b"\xc1", {"a": "z"})) == "check"
        assert follower.llm.settings == CHEAP
        assert follower.snapshot.revision == 5
        assert follower.counts["malformed_messages"] == 1


class TestProtocol:
    """The publisher's payload and the load pipeline carry the section."""

    def test_payload_carries_the_section(self) -> None:
        """`encode_payload` adds a change of kind `llm` only when a section is written."""
        writes = [ScriptWrite("flag", "a", 0, "apply", {"variants": {"x": 1}})]
        blobs = encode_blobs(writes)
        section = encode_settings(CHEAP)
        plain = decode_changeset(encode_payload(writes, blobs, actor="u", reason="r"))
        assert [change.kind for change in plain.changes] == ["flag"]
        carried = decode_changeset(
            encode_payload(writes, blobs, actor="u", reason="r", llm_section=section)
        )
        assert carried.changes[-1] == Change("llm", "settings", "put", section)

    def test_load_pipeline_reads_the_key(self) -> None:
        """The whole load GETs the section between its two revision reads."""
        commands = load_commands(KEYS)
        assert commands[3] == ("GET", KEYS.llm)
        header = [b"5", EPOCH.encode(), None, None]
        read = parse_load([header, {}, {}, b"section", header])
        assert read is not None
        assert read.llm == b"section"
        assert parse_load([header, {}, {}, None, [b"6", *header[1:]]]) is None
