"""The wire protocol: every key, the write script with its arguments and reply, the
change-message header, the read commands, and how store errors reach the caller.

Every key of a namespace shares the hash tag `{fs:<ns>}`, so one Lua script can touch
them all, also on Redis Cluster:

    {fs:<ns>}:flags              hash    flag key -> StoredDefinition blob (msgpack)
    {fs:<ns>}:segments           hash    segment name -> StoredDefinition blob
    {fs:<ns>}:versions           hash    "flag:<key>" / "segment:<name>" -> version
    {fs:<ns>}:rev                string  global revision
    {fs:<ns>}:epoch              string  random id of this store's history (new after a wipe)
    {fs:<ns>}:digest             string  state digest of flags + segments (`flagsync._digest`)
    {fs:<ns>}:digests            hash    per-bucket records the digest is updated from
    {fs:<ns>}:sig                string  signature record of the current state (signed mode)
    {fs:<ns>}:log                stream  change log / audit trail (actor, time, before/after)
    {fs:<ns>}:changes            channel `fs2|<epoch>|<rev>|<server µs>|<digest>|<sig>|<payload>`
    {fs:<ns>}:worker:<id>        string  presence heartbeat of one worker (with a TTL)
    {fs:<ns>}:acks               stream  one entry per revision a worker applied (bounded)
    {fs:<ns>}:beacon             string  the beacon lease: the worker that publishes heartbeats
    {fs:<ns>}:heartbeat          channel `fsb1|<epoch>|<rev>|<digest>|<entries>|<holder>|<sig>`
    {fs:<ns>}:metrics:<flag>     stream  metric windows flushed by workers
    {fs:<ns>}:plans              hash    flag key -> rollout plan (JSON)
    {fs:<ns>}:rollout:<flag>     string  rollout controller state
    {fs:<ns>}:rollout-log:<flag> stream  rollout decisions
    {fs:<ns>}:lease:<flag>       string  the controller lease (one controller per flag)

The read commands of a follower and their replies (whole loads, revision checks) live
in `flagsync._reads` and are re-exported here. Blob encodings (definitions,
change sets, presence) live in `flagsync._codec`; connection set-up in
`flagsync._connection`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec

from flagsync._codec import (
    Change,
    ChangeSet,
    MalformedMessageError,
    Message,
    decode_changeset,
    encode_changeset,
    encode_definition,
)
from flagsync._connection import (
    StoreClient,
    connect,
    connection_hint,
    connection_options,
    redact_url,
    store_errors,
)
from flagsync._reads import (
    Command,
    LoadedStore,
    StoreState,
    load_commands,
    parse_load,
    parse_revision,
    parse_state,
    quick_state_commands,
    revision_command,
    state_commands,
    text,
)
from flagsync._write_script import (
    GUARD_OP,
    MESSAGE_SCHEMA,
    NO_DATA_OPS,
    SEED_DIGEST_SCRIPT,
    WRITE_SCRIPT,
)
from flagsync.errors import FlagsyncError

__all__ = [
    "ACKS_MAXLEN",
    "DEFAULT_LOG_MAXLEN",
    "GUARD_OP",
    "HEARTBEAT_SCHEMA",
    "MAX_MESSAGE_BYTES",
    "MESSAGE_SCHEMA",
    "NO_DATA_OPS",
    "SEED_DIGEST_SCRIPT",
    "WRITE_SCRIPT",
    "Command",
    "Heartbeat",
    "LoadedStore",
    "ScriptWrite",
    "StoreClient",
    "StoreKeys",
    "StoreState",
    "WriteApplied",
    "WriteConflict",
    "WriteMoved",
    "ack_command",
    "beacon_state_commands",
    "connect",
    "connection_hint",
    "connection_options",
    "decode_heartbeat",
    "decode_message",
    "decode_versions",
    "encode_blobs",
    "encode_heartbeat",
    "encode_message",
    "encode_payload",
    "load_commands",
    "parse_beacon_state",
    "parse_load",
    "parse_revision",
    "parse_state",
    "parse_write_reply",
    "publish_command",
    "quick_state_commands",
    "redact_url",
    "revision_command",
    "script_arguments",
    "state_commands",
    "store_errors",
    "version_fields",
    "write_arguments",
]

DEFAULT_LOG_MAXLEN: Final = 10_000
NAMESPACE_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class StoreKeys:
    """The key and channel names of one namespace."""

    __slots__ = (
        "acks",
        "beacon",
        "channel",
        "digest",
        "digests",
        "epoch",
        "flags",
        "heartbeat",
        "llm",
        "log",
        "namespace",
        "plans",
        "prefix",
        "revision",
        "segments",
        "signature",
        "versions",
    )

    def __init__(self, namespace: str = "default") -> None:
        if not NAMESPACE_PATTERN.match(namespace):
            raise FlagsyncError(
                f"invalid namespace {namespace!r}: use 1-64 of a-z 0-9 . _ - "
                "starting with a letter or digit"
            )
        self.namespace = namespace
        self.prefix = f"{{fs:{namespace}}}"
        self.flags = f"{self.prefix}:flags"
        self.segments = f"{self.prefix}:segments"
        self.versions = f"{self.prefix}:versions"
        self.revision = f"{self.prefix}:rev"
        self.epoch = f"{self.prefix}:epoch"
        self.digest = f"{self.prefix}:digest"
        self.digests = f"{self.prefix}:digests"
        self.signature = f"{self.prefix}:sig"
        self.log = f"{self.prefix}:log"
        self.channel = f"{self.prefix}:changes"
        self.heartbeat = f"{self.prefix}:heartbeat"
        """The beacon's channel: a channel of its own, so the worker ACL may publish there
        and nowhere else (never on `changes`), and older workers never see it."""
        self.beacon = f"{self.prefix}:beacon"
        self.acks = f"{self.prefix}:acks"
        self.plans = f"{self.prefix}:plans"
        self.llm = f"{self.prefix}:llm"
        """The flag file's `llm:` section (model allow-list, prices): see flagsync.llm.policy."""

    def worker(self, worker_id: str) -> str:
        """The presence key of one worker."""
        return f"{self.prefix}:worker:{worker_id}"

    @property
    def worker_pattern(self) -> str:
        """A SCAN pattern matching every presence key of the namespace."""
        return f"{self.prefix}:worker:*"

    def metrics(self, flag: str) -> str:
        """The stream of metric windows workers flush for one flag."""
        return f"{self.prefix}:metrics:{flag}"

    def worker_metrics(self, flag: str, worker_id: str) -> str:
        """The metrics stream one worker appends to for one flag.

        One stream per worker (not one shared by all) so that a worker's credentials can be
        limited to its own streams (`flagsync acl --worker-id`): one worker cannot trim,
        delete or overwrite another's samples.
        """
        return f"{self.metrics(flag)}:{worker_id}"

    def worker_metrics_pattern(self, flag: str) -> str:
        """A SCAN pattern matching every worker's metrics stream of one flag (flag keys hold
        no `:`, so it cannot match another flag's)."""
        return f"{self.metrics(flag)}:*"

    @property
    def metrics_pattern(self) -> str:
        """A key pattern matching every metrics stream of the namespace (for ACLs)."""
        return f"{self.prefix}:metrics:*"

    def rollout(self, flag: str) -> str:
        """The rollout controller's state of one flag."""
        return f"{self.prefix}:rollout:{flag}"

    def rollout_log(self, flag: str) -> str:
        """The stream of rollout decisions of one flag."""
        return f"{self.prefix}:rollout-log:{flag}"

    def lease(self, flag: str) -> str:
        """The lease that lets one controller at a time drive a flag's rollout."""
        return f"{self.prefix}:lease:{flag}"

    @property
    def pattern(self) -> str:
        """A key pattern matching every key of the namespace (for ACLs)."""
        return f"{self.prefix}:*"

    def script_keys(self, *, llm: bool = False) -> list[str]:
        """KEYS of the write script, in its order (`llm`: with the optional `llm:` key)."""
        keys = [
            self.flags,
            self.segments,
            self.versions,
            self.revision,
            self.epoch,
            self.log,
            self.digests,
            self.digest,
            self.signature,
        ]
        return [*keys, self.llm] if llm else keys


MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
"""Messages above this are refused before decoding (a resync fetches the data instead)."""


class ScriptWrite(msgspec.Struct, frozen=True):
    """One change of a write-script run: a definition (None to delete) or a guard."""

    kind: str
    key: str
    expected: int
    """The version the change is based on (0 for a new key; -1: any); the write makes it +1."""
    op: str
    definition: dict[str, Any] | None = None
    """The file form of what to store; None for a delete or a guard."""


class WriteApplied(msgspec.Struct, frozen=True):
    """The script wrote: the new revision, the epoch, server time and each new version."""

    revision: int
    epoch: str
    server_us: int
    versions: dict[str, int]
    digest: str


class WriteConflict(msgspec.Struct, frozen=True):
    """The script refused: `kind` `key` is at `actual`, not the `expected` version."""

    kind: str
    key: str
    actual: int
    expected: int


class WriteMoved(msgspec.Struct, frozen=True):
    """A signed write refused: the store is no longer at the state that was signed."""

    state: str
    """`<revision>:<digest>` as found."""


def write_arguments(
    keys: StoreKeys,
    writes: Sequence[ScriptWrite],
    *,
    seen_revision: int,
    epoch_candidate: str,
    log_maxlen: int,
    actor: str,
    reason: str,
) -> list[Any]:
    """The ARGV of one unsigned `WRITE_SCRIPT` run (its KEYS are `keys.script_keys()`):
    each definition encoded with its new version, and the change set subscribers receive."""
    blobs = encode_blobs(writes)
    return script_arguments(
        keys,
        writes,
        blobs,
        encode_payload(writes, blobs, actor=actor, reason=reason),
        seen_revision=seen_revision,
        epoch_candidate=epoch_candidate,
        log_maxlen=log_maxlen,
        actor=actor,
        reason=reason,
    )


def encode_blobs(writes: Sequence[ScriptWrite]) -> list[bytes]:
    """The stored blob of each write (empty for a delete or a guard)."""
    return [
        b""
        if write.definition is None
        else encode_definition(write.kind, write.key, write.expected + 1, write.definition)
        for write in writes
    ]


def encode_payload(
    writes: Sequence[ScriptWrite],
    blobs: Sequence[bytes],
    *,
    actor: str,
    reason: str,
    llm_section: bytes | None = None,
) -> bytes:
    """The change set subscribers receive (empty when too large to inline). A new `llm:`
    section rides along as a change of kind `llm` (key `settings`), so workers keep their
    prices current without reading the store (see `flagsync._sync.llm_section`)."""
    changes = [
        Change(write.kind, write.key, write.op, blob or None)
        for write, blob in zip(writes, blobs, strict=True)
        if write.op not in NO_DATA_OPS
    ]
    if llm_section is not None:
        changes.append(Change("llm", "settings", "put", llm_section))
    return encode_changeset(ChangeSet(actor=actor, reason=reason, changes=changes))


def script_arguments(
    keys: StoreKeys,
    writes: Sequence[ScriptWrite],
    blobs: Sequence[bytes],
    payload: bytes,
    *,
    seen_revision: int,
    epoch_candidate: str,
    log_maxlen: int,
    actor: str,
    reason: str,
    expected_state: str = "",
    signature: str = "",
    llm_section: bytes | None = None,
) -> list[Any]:
    """The ARGV of one `WRITE_SCRIPT` run; a signed write passes the state it read
    (`<revision>:<digest>`) and the signature record of the state it will produce.
    `llm_section`: the namespace's `llm:` section to store with the changes (KEYS then
    `keys.script_keys(llm=True)`)."""
    args: list[Any] = [
        keys.channel,
        seen_revision,
        epoch_candidate,
        log_maxlen,
        actor,
        reason,
        payload,
        expected_state,
        signature,
        len(writes),
    ]
    for write, blob in zip(writes, blobs, strict=True):
        expected = "" if write.expected < 0 else write.expected  # -1: any version
        args.extend([write.kind, write.key, expected, write.op, blob])
    if llm_section is not None:
        args.append(llm_section)
    return args


def parse_write_reply(reply: Sequence[Any]) -> WriteApplied | WriteConflict | WriteMoved:
    """The script's reply: what it wrote, the first stale version it found, or (signed
    writes) the state it found instead of the one signed."""
    if text(reply[0]) == "moved":
        return WriteMoved(text(reply[1]))
    if text(reply[0]) == "conflict":
        kind, key, actual, expected = (text(part) for part in reply[1:5])
        return WriteConflict(kind, key, int(actual), int(expected))
    versions: dict[str, int] = {}
    for item in filter(None, text(reply[4]).split(",")):
        field, _, version = item.rpartition("=")
        versions[field] = int(version)
    return WriteApplied(int(reply[1]), text(reply[2]), int(reply[3]), versions, text(reply[5]))


def encode_message(
    epoch: str, revision: int, server_us: int, payload: bytes, *, digest: str, signature: str = ""
) -> bytes:
    """A change message as `WRITE_SCRIPT` publishes it (the script builds the same bytes)."""
    return b"|".join(
        (
            MESSAGE_SCHEMA,
            epoch.encode(),
            str(revision).encode(),
            str(server_us).encode(),
            digest.encode(),
            signature.encode(),
            payload,
        )
    )


def decode_message(data: bytes) -> Message:
    """Parse a change message; raises `MalformedMessageError` on anything unexpected."""
    if not isinstance(data, bytes | bytearray):
        raise MalformedMessageError(f"message is {type(data).__name__}, not bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedMessageError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    parts = bytes(data).split(b"|", 6)
    if len(parts) != 7:
        raise MalformedMessageError("message header is incomplete")
    schema, epoch, revision, published, digest, signature, payload = parts
    if schema != MESSAGE_SCHEMA:
        raise MalformedMessageError(f"unknown message schema {schema[:16]!r}")
    if schema != MESSAGE_SCHEMA:
        raise MalformedMessageError(f"unknown message schema {schema[:16]!r}")
    try:
        message_epoch = epoch.decode("ascii")
        message_revision = int(revision)
        published_us = int(published)
        message_digest = digest.decode("ascii")
        message_signature = signature.decode("ascii")
    except ValueError as error:
        raise MalformedMessageError(f"bad message header: {error}") from error
    if not message_epoch or message_revision < 1:
        raise MalformedMessageError("message header has no epoch or a revision below 1")
    if len(message_digest) != 40:
        raise MalformedMessageError("message header has no state digest")
    changes = decode_changeset(payload) if payload else None
    return Message(
        message_epoch,
        message_revision,
        published_us,
        changes,
        message_digest,
        message_signature,
        hashlib.sha256(payload).hexdigest(),
    )


HEARTBEAT_SCHEMA: Final = b"fsb1"
"""The beacon heartbeat, published on `StoreKeys.heartbeat` (never on the change channel:
workers before it never subscribe there, so a mixed fleet is unaffected; a worker that
did read one on the change channel would count it malformed and answer with a check)."""
ACKS_MAXLEN: Final = 20_000
"""`{fs:<ns>}:acks` is trimmed to about this many entries (two per worker at 10,000)."""


class Heartbeat(msgspec.Struct, frozen=True):
    """What the beacon read from the store: its place in history and, in signed mode, the
    signature record the last write stored (so a heartbeat is as signed as that write)."""

    epoch: str
    revision: int
    digest: str
    entries: int
    """Flags + segments the store holds (HLEN of both hashes)."""
    holder: str
    """The worker id of the publisher (for operators; never trusted)."""
    signature: str = ""


def encode_heartbeat(heartbeat: Heartbeat) -> bytes:
    """`fsb1|<epoch>|<rev>|<digest>|<entries>|<holder>|<sig>`."""
    holder = heartbeat.holder.replace("|", "_")
    fields = (
        heartbeat.epoch,
        str(heartbeat.revision),
        heartbeat.digest,
        str(heartbeat.entries),
        holder,
        heartbeat.signature,
    )
    return b"|".join((HEARTBEAT_SCHEMA, *(field.encode() for field in fields)))


def decode_heartbeat(data: Any) -> Heartbeat:
    """Parse a heartbeat; raises `MalformedMessageError` on anything unexpected."""
    if not isinstance(data, bytes | bytearray) or len(data) > 4096:
        raise MalformedMessageError("heartbeat is not bytes of at most 4096")
    parts = bytes(data).split(b"|")
    if len(parts) != 7 or parts[0] != HEARTBEAT_SCHEMA:
        raise MalformedMessageError(f"not an {HEARTBEAT_SCHEMA.decode()} heartbeat")
    try:
        epoch, revision, digest, entries, holder, signature = (
            part.decode("ascii") for part in parts[1:]
        )
        heartbeat = Heartbeat(epoch, int(revision), digest, int(entries), holder, signature)
    except ValueError as error:
        raise MalformedMessageError(f"bad heartbeat: {error}") from error
    if not epoch or heartbeat.revision < 1 or len(digest) != 40 or heartbeat.entries < 0:
        raise MalformedMessageError("heartbeat has no epoch, digest or a revision below 1")
    return heartbeat


def beacon_state_commands(keys: StoreKeys) -> list[Command]:
    """What the beacon reads before each heartbeat: `state_commands` and the signature."""
    return [
        ("MGET", keys.revision, keys.epoch, keys.digest, keys.signature),
        ("HLEN", keys.flags),
        ("HLEN", keys.segments),
    ]


def parse_beacon_state(header: Sequence[Any], entries: int, holder: str) -> Heartbeat | None:
    """The heartbeat of `beacon_state_commands`' MGET reply and the entries its HLENs
    counted (None: an empty store)."""
    revision, epoch = parse_revision(header[:2])
    if epoch is None or header[2] is None or revision < 1:
        return None
    signature = "" if header[3] is None else text(header[3])
    return Heartbeat(epoch, revision, text(header[2]), entries, holder, signature)


def publish_command(channel: str, payload: bytes, *, sharded: bool = False) -> Command:
    """How a client publishes on a namespace channel: SPUBLISH on a cluster (`sharded`),
    so the message stays on the slot's shard instead of crossing the bus to every node."""
    return ("SPUBLISH" if sharded else "PUBLISH", channel, payload)


def ack_command(
    keys: StoreKeys, worker_id: str, epoch: str, revision: int, applied_us: int
) -> Command:
    """A worker's ack of an applied revision, appended to the bounded ack stream that
    `Fleet.wait_propagated` reads instead of polling every presence record."""
    return (
        "XADD",
        keys.acks,
        "MAXLEN",
        "~",
        ACKS_MAXLEN,
        "*",
        "worker",
        worker_id,
        "epoch",
        epoch,
        "rev",
        revision,
        "applied",
        applied_us,
    )


def version_fields(kind: str, keys: Sequence[str]) -> list[str]:
    """The `versions` hash fields of some flags or segments."""
    return [f"{kind}:{key}" for key in keys]


def decode_versions(fields: Sequence[str], values: Sequence[Any]) -> Mapping[str, int]:
    """HMGET reply of `versions` as {field: version} (0 for never written)."""
    return {
        field: int(value) if value is not None else 0
        for field, value in zip(fields, values, strict=True)
    }
