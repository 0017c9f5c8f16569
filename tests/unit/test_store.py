"""The wire protocol as data: key names, the write script's arguments and replies, the
change-message header, and the mapping of redis-py errors to flagsync errors.

Pure: nothing here talks to a server (the script itself runs against real servers in
tests/integration/test_publisher.py).
"""

from __future__ import annotations

import hashlib

import pytest
import redis

from flagsync._codec import (
    Change,
    ChangeSet,
    MalformedMessageError,
    decode_definition,
    encode_changeset,
    encode_definition,
)
from flagsync.errors import (
    FlagsyncError,
    PermissionDeniedError,
    StoreError,
    StoreUnavailableError,
)
from flagsync.store import (
    GUARD_OP,
    MESSAGE_SCHEMA,
    WRITE_SCRIPT,
    ScriptWrite,
    StoreKeys,
    WriteApplied,
    WriteConflict,
    WriteMoved,
    decode_message,
    encode_message,
    parse_write_reply,
    store_errors,
    write_arguments,
)

URL = "redis://operator:s3cret@127.0.0.1:6390/0"


class TestStoreKeys:
    """Every key of a namespace comes from StoreKeys and shares the namespace's hash tag."""

    def test_every_key_name(self) -> None:
        """The documented layout, key by key."""
        keys = StoreKeys("prod")
        assert [
            keys.flags,
            keys.segments,
            keys.versions,
            keys.revision,
            keys.epoch,
            keys.log,
            keys.channel,
            keys.plans,
            keys.worker("w1"),
            keys.metrics("model"),
            keys.rollout("model"),
            keys.rollout_log("model"),
            keys.lease("model"),
        ] == [
            "{fs:prod}:flags",
            "{fs:prod}:segments",
            "{fs:prod}:versions",
            "{fs:prod}:rev",
            "{fs:prod}:epoch",
            "{fs:prod}:log",
            "{fs:prod}:changes",
            "{fs:prod}:plans",
            "{fs:prod}:worker:w1",
            "{fs:prod}:metrics:model",
            "{fs:prod}:rollout:model",
            "{fs:prod}:rollout-log:model",
            "{fs:prod}:lease:model",
        ]

    def test_patterns(self) -> None:
        """The SCAN/ACL patterns cover the namespace, its workers and its metrics."""
        keys = StoreKeys("prod")
        assert (keys.pattern, keys.worker_pattern, keys.metrics_pattern) == (
            "{fs:prod}:*",
            "{fs:prod}:worker:*",
            "{fs:prod}:metrics:*",
        )

    @pytest.mark.parametrize("namespace", ["", "Prod", "-x", "a b", "x" * 65])
    def test_invalid_namespace(self, namespace: str) -> None:
        """A namespace outside the key alphabet is refused, naming it."""
        with pytest.raises(FlagsyncError, match="invalid namespace"):
            StoreKeys(namespace)


D = b"d" * 40
"""A well-formed digest field."""


class TestWriteArguments:
    """`write_arguments` lays out ARGV exactly as WRITE_SCRIPT reads it."""

    def test_layout(self) -> None:
        """Nine header fields and the count, then five per change; each definition is
        stored with its next version, guards and deletes carry an empty blob; an unsigned
        write expects no state and carries no signature."""
        keys = StoreKeys("ns")
        definition = {"variants": {"on": True}, "off": "on", "default": "on"}
        args = write_arguments(
            keys,
            [
                ScriptWrite("flag", "model", 3, "put", definition),
                ScriptWrite("flag", "old", 2, "delete"),
                ScriptWrite("flag", "other", 5, GUARD_OP),
            ],
            seen_revision=41,
            epoch_candidate="e0",
            log_maxlen=100,
            actor="alice",
            reason="why",
        )
        blob = encode_definition("flag", "model", 4, definition)
        payload = encode_changeset(
            ChangeSet(
                "alice",
                "why",
                [Change("flag", "model", "put", blob), Change("flag", "old", "delete", None)],
            )
        )
        assert args == [
            "{fs:ns}:changes", 41, "e0", 100, "alice", "why", payload, "", "", 3,
            "flag", "model", 3, "put", blob,
            "flag", "old", 2, "delete", b"",
            "flag", "other", 5, "guard", b"",
        ]  # fmt: skip
        assert decode_definition(blob, "flag", "model").version == 4

    def test_script_reads_the_same_positions(self) -> None:
        """The script's per-change base offset and stride match the builder's layout."""
        assert WRITE_SCRIPT.count("local base = 11 + i * 5") == 2
        assert "local count = tonumber(ARGV[10])" in WRITE_SCRIPT
        assert f"if op ~= '{GUARD_OP}' then" in WRITE_SCRIPT


class TestWriteReply:
    """`parse_write_reply` turns the script's reply into a typed result."""

    def test_applied(self) -> None:
        """An ok reply carries revision, epoch, server time and each new version."""
        reply = [b"ok", b"7", b"e1", b"1700000000000000", b"flag:a=2,segment:s=1", b"d" * 40]
        assert parse_write_reply(reply) == WriteApplied(
            7, "e1", 1_700_000_000_000_000, {"flag:a": 2, "segment:s": 1}, "d" * 40
        )

    def test_applied_with_only_guards(self) -> None:
        """An empty versions list (nothing but guards) parses to no versions."""
        reply = [b"ok", b"1", b"e", b"5", b"", b"d" * 40]
        assert parse_write_reply(reply) == WriteApplied(1, "e", 5, {}, "d" * 40)

    def test_conflict(self) -> None:
        """A conflict reply names the key, the actual and the expected version."""
        reply = [b"conflict", b"flag", b"a", b"4", b"3"]
        assert parse_write_reply(reply) == WriteConflict("flag", "a", actual=4, expected=3)

    def test_moved(self) -> None:
        """A signed write refused because the state moved names the state found."""
        assert parse_write_reply([b"moved", b"8:abc"]) == WriteMoved("8:abc")


class TestMessageHeader:
    """`fs2|epoch|revision|server µs|digest|signature|payload`: one encoder, one decoder."""

    def test_round_trip(self) -> None:
        """A message encoded here decodes to the same header and change set."""
        changes = ChangeSet("alice", "why", [Change("flag", "a", "put", b"x")])
        payload = encode_changeset(changes)
        data = encode_message("e1", 12, 34, payload, digest="d" * 40, signature="sig")
        message = decode_message(data)
        assert (message.epoch, message.revision, message.published_us) == ("e1", 12, 34)
        assert (message.digest, message.signature) == ("d" * 40, "sig")
        assert message.payload_sha256 == hashlib.sha256(payload).hexdigest()
        assert message.changes == changes

    def test_the_script_publishes_the_same_schema(self) -> None:
        """The write script prefixes the schema this module decodes."""
        assert data_prefix() in WRITE_SCRIPT

    def test_empty_payload_means_resync(self) -> None:
        """A header without a payload decodes with `changes` None (fetch the snapshot)."""
        assert decode_message(encode_message("e", 1, 0, b"", digest="d" * 40)).changes is None

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b"fs1|e|1|0|" + D + b"||", "unknown message schema"),
            (b"fs1|e|1|0|", "incomplete"),
            (b"fs2|e|1|0|" + D + b"|", "incomplete"),
            (b"fs2|e|one|0|" + D + b"||", "bad message header"),
            (b"fs2||1|0|" + D + b"||", "no epoch"),
            (b"fs2|e|0|0|" + D + b"||", "revision below 1"),
            (b"fs2|e|1|0|abc||", "no state digest"),
            (b"fs2|e|1|0|" + D + b"||\xc1", "bad message payload"),
        ],
    )
    def test_malformed(self, data: bytes, reason: str) -> None:
        """Anything off in the header or payload is a MalformedMessageError saying what."""
        with pytest.raises(MalformedMessageError, match=reason):
            decode_message(data)


def data_prefix() -> str:
    """How the script starts each published message."""
    return f"'{MESSAGE_SCHEMA.decode()}|' .. epoch"


class TestStoreErrors:
    """`store_errors` maps each redis-py error to a flagsync error, password redacted."""

    @pytest.mark.parametrize(
        ("raised", "expected", "words"),
        [
            (redis.ConnectionError("Connection refused."), StoreUnavailableError, "cannot reach"),
            (redis.TimeoutError("Timeout reading"), StoreUnavailableError, "cannot reach"),
            (
                redis.exceptions.InvalidResponse('Protocol error, got "H" as reply type byte'),
                StoreUnavailableError,
                "not as a Redis or Valkey server would",
            ),
            (redis.AuthenticationError("invalid password"), PermissionDeniedError, "invalid"),
            (
                redis.exceptions.NoPermissionError("NOPERM no permissions to run 'eval'"),
                PermissionDeniedError,
                "NOPERM",
            ),
            (redis.ResponseError("NOPERM this user has no permissions"), PermissionDeniedError, ""),
            (redis.ResponseError("READONLY You can't write"), StoreUnavailableError, "now"),
            (redis.exceptions.BusyLoadingError("Redis is loading"), StoreUnavailableError, ""),
            (redis.ResponseError("WRONGTYPE Operation"), StoreError, "refused the command"),
        ],
    )
    def test_mapping(
        self, raised: redis.RedisError, expected: type[StoreError], words: str
    ) -> None:
        """The error class names the condition; the message keeps the server's words."""
        with pytest.raises(StoreError) as caught, store_errors(URL):
            raise raised
        assert type(caught.value) is expected
        assert words in str(caught.value)
        assert str(raised) in str(caught.value)

    def test_password_is_redacted_and_context_named(self) -> None:
        """The URL's password never reaches the message; `doing` prefixes it."""
        with pytest.raises(StoreUnavailableError) as caught, store_errors(URL, "flush metrics"):
            raise redis.ConnectionError("refused")
        assert str(caught.value) == (
            "flush metrics: cannot reach redis://operator:***@127.0.0.1:6390/0: refused"
        )
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__

    def test_other_errors_pass_through(self) -> None:
        """Errors that are not redis-py's are left alone."""
        with pytest.raises(KeyError), store_errors(URL):
            raise KeyError("x")
