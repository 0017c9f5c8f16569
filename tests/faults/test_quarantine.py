"""S12: a flag no worker can use is quarantined alone (issue #11, item 6).

An operator's raw write (with the namespace's operator ACL credentials, outside the
publisher) leaves one bad `model` definition in the store beside a valid change of
`temperature`. Every worker, old or started afterwards, loads everything else: an old
one keeps serving its last-known-good `model`, a fresh one serves the caller's default
with PARSE_ERROR; both list the quarantined flags in `status()` and log them once. The
publisher's own validator refuses the same inputs, and a repair lifts the quarantine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
import redis

from flagsync import ErrorCode, FlagClient, Reason
from flagsync._codec import encode_definition
from flagsync._sync.quarantine import KEPT
from flagsync.errors import InvalidFlagError
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.store import StoreKeys
from tests.faults.acl_users import create_acl_users, delete_acl_users
from tests.faults.figures import record
from tests.faults.recovery import MESSAGES_ONLY
from tests.faults.test_bad_input import (
    MODEL_CURRENT,
    TEMPERATURE_LOW,
    duplicate_key_blob,
    nudge,
    ready_client,
)
from tests.integration.conftest import ClientFactory, RawFactory
from tests.integration.support import (
    ANYONE,
    BASE_VALUES,
    CALLER_DEFAULTS,
    base_document,
    model_flag,
    served,
    store_state,
    stored_epoch,
    wait_until,
)
from tests.logs import captured_logs, events


@dataclass(frozen=True)
class BadStored:
    """A bad `model` entry an operator's raw write can leave in the store."""

    blob: Callable[[], bytes]
    reason: str
    """A fragment of the quarantine reason in `status().quarantined["model"]`."""
    definition: dict[str, Any] | None = None
    """The same mistake as the publisher's input, when it can be one (a definition)."""


WEIGHTS_150: Final = model_flag() | {"default": {"rollout": {"candidate": 100, "current": 50}}}
UNKNOWN_VARIANT: Final = model_flag(default="gpt-5")
NEWER_FIELD: Final = model_flag() | {"ttl_s": 30}
"""A field a newer publisher might write: this worker does not know it."""
BAD_REGEX: Final = model_flag() | {
    "rules": [
        {"when": [{"attr": "email", "op": "matches", "values": ["(unclosed"]}], "serve": "current"}
    ]
}
"""A pattern no regex engine compiles."""

BAD_STORED: Final[dict[str, BadStored]] = {
    "weights-150": BadStored(
        lambda: encode_definition("flag", "model", 2, WEIGHTS_150),
        "flags.model.default.rollout: weights sum to 150, not 100",
        definition=WEIGHTS_150,
    ),
    "unknown-variant": BadStored(
        lambda: encode_definition("flag", "model", 2, UNKNOWN_VARIANT),
        "flags.model.default: unknown variant 'gpt-5'",
        definition=UNKNOWN_VARIANT,
    ),
    "newer-field": BadStored(
        lambda: encode_definition("flag", "model", 2, NEWER_FIELD),
        "unknown field `ttl_s`",
        definition=NEWER_FIELD,
    ),
    "refused-regex": BadStored(
        lambda: encode_definition("flag", "model", 2, BAD_REGEX),
        "invalid regex '(unclosed'",
        definition=BAD_REGEX,
    ),
    "blob-of-another-key": BadStored(
        lambda: encode_definition("flag", "temperature", 2, TEMPERATURE_LOW),
        "flag 'model': blob is for flag 'temperature'",
    ),
    "truncated-blob": BadStored(
        lambda: encode_definition("flag", "model", 2, MODEL_CURRENT)[:-6],
        "flag 'model': undecodable definition",
    ),
    "duplicate-keys": BadStored(
        duplicate_key_blob, "flag 'model': a map in the definition repeats a key"
    ),
}

DANGLING: Final = "flags.context-window.requires.model: flag 'model' is not in the store"

FRESH_VALUES: Final = BASE_VALUES | {
    "temperature": 0.2,
    "model": CALLER_DEFAULTS["model"],
    "context-window": CALLER_DEFAULTS["context-window"],
}
"""What a worker without a last-known-good `model` serves: the caller's default for it
and for `context-window` (which requires it), the rest as stored."""


@pytest.fixture
def operator(
    server: ServerProcess, raw: redis.Redis, make_raw: RawFactory, namespace: str
) -> Iterator[redis.Redis]:
    """A raw client with the namespace's operator ACL credentials (users removed after)."""
    users = create_acl_users(raw, server.port, namespace, tag=f"-{namespace}")
    try:
        yield make_raw(users.operator_url)
    finally:
        delete_acl_users(raw, users)


def tampered_write(operator: redis.Redis, namespace: str, model_blob: bytes | None) -> int:
    """One atomic operator write outside the publisher: a bad `model` blob (or, with None,
    `model` deleted although `context-window` requires it) beside a valid change of
    `temperature`, with the revision bumped. Returns the new revision."""
    keys = StoreKeys(namespace)
    pipe = operator.pipeline(transaction=True)
    if model_blob is None:
        pipe.hdel(keys.flags, "model")
        pipe.hdel(keys.versions, "flag:model")
    else:
        pipe.hset(keys.flags, "model", model_blob)
        pipe.hset(keys.versions, "flag:model", 2)
    pipe.hset(
        keys.flags, "temperature", encode_definition("flag", "temperature", 2, TEMPERATURE_LOW)
    )
    pipe.hset(keys.versions, "flag:temperature", 2)
    pipe.incr(keys.revision)
    revision: int = pipe.execute()[-1]
    return revision


def repair(operator: redis.Redis, namespace: str) -> int:
    """Write a valid `model` back (as an operator would by hand); returns the revision."""
    keys = StoreKeys(namespace)
    pipe = operator.pipeline(transaction=True)
    pipe.hset(keys.flags, "model", encode_definition("flag", "model", 3, model_flag()))
    pipe.hset(keys.versions, "flag:model", 3)
    pipe.incr(keys.revision)
    revision: int = pipe.execute()[-1]
    return revision


def error_code(client: FlagClient, key: str) -> ErrorCode | None:
    """The error code of `key`'s evaluation for ANYONE (None when a value was served)."""
    detail = client.detail(key, ANYONE, CALLER_DEFAULTS[key])
    assert (detail.reason is Reason.ERROR) is (detail.error_code is not None)
    return detail.error_code


class TestQuarantine:
    """S12: the bad flag is set aside alone, on old and fresh workers alike."""

    @pytest.mark.parametrize("name", list(BAD_STORED))
    def test_bad_flag_is_quarantined_alone(
        self,
        *,
        name: str,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        operator: redis.Redis,
        raw: redis.Redis,
        tmp_path: Path,
    ) -> None:
        """The old worker keeps its `model` and applies the valid change; a worker started
        afterwards serves everything but `model` (and what requires it); both say why; the
        publisher refuses the same input; a repair lifts the quarantine everywhere."""
        namespace = publisher.keys.namespace
        start = publisher.apply(base_document())
        case = BAD_STORED[name]
        untouched = store_state(raw, namespace)
        if case.definition is not None:
            with pytest.raises(InvalidFlagError) as refused:
                publisher.put("model", case.definition)
            assert case.reason in str(refused.value)
        if name == "duplicate-keys":
            flags_file = tmp_path / "flags.yaml"
            flags_file.write_text(
                "flags:\n  model:\n    variants: {current: gpt-4o, candidate: gpt-4.1}\n"
                "    off: current\n    default: candidate\n    default: current\n"
            )
            with pytest.raises(InvalidFlagError, match="duplicate key 'default'"):
                publisher.apply(flags_file)
        assert store_state(raw, namespace) == untouched  # the publisher wrote nothing

        old = ready_client(make_client, server.url, **MESSAGES_ONLY)
        with captured_logs() as logs:
            revision = tampered_write(operator, namespace, case.blob())
            nudge(operator, namespace, stored_epoch(raw, namespace), revision)
            assert wait_until(lambda: old.revision == revision, 3), old.status()
        status = old.status()
        assert set(status.quarantined) == {"model"}, status.quarantined
        assert case.reason in status.quarantined["model"], status.quarantined
        assert status.quarantined["model"].endswith(KEPT)
        assert (status.rejected_snapshots, status.last_error) == (0, None)
        assert served(old) == BASE_VALUES | {"temperature": 0.2}  # old model kept, change applied
        (logged,) = events(logs, "flag_quarantined")
        assert (logged["key"], logged["revision"], logged["log_level"]) == (
            "model",
            revision,
            "warning",
        )
        assert start < revision

        fresh = ready_client(make_client, server.url, **MESSAGES_ONLY)
        assert served(fresh) == FRESH_VALUES
        assert set(fresh.status().quarantined) == {"model", "context-window"}
        assert error_code(fresh, "model") is ErrorCode.PARSE_ERROR
        assert error_code(fresh, "context-window") is ErrorCode.PARSE_ERROR
        assert error_code(fresh, "temperature") is None
        assert fresh.status().quarantined["context-window"] == (
            "flags.context-window.requires.model: flag 'model' is quarantined"
        )

        started = time.monotonic()
        repaired = repair(operator, namespace)
        nudge(operator, namespace, stored_epoch(raw, namespace), repaired)
        for client in (old, fresh):
            assert wait_until(lambda c=client: c.revision == repaired, 2), client.status()  # type: ignore[misc]
            assert served(client) == BASE_VALUES | {"temperature": 0.2}
            assert client.status().quarantined == {}
        record("S12", server.kind, recovery_s=time.monotonic() - started, case=name)

    def test_deleted_prerequisite_quarantines_its_dependent(
        self,
        *,
        server: ServerProcess,
        publisher: Publisher,
        make_client: ClientFactory,
        operator: redis.Redis,
        raw: redis.Redis,
    ) -> None:
        """`model` deleted behind the publisher while `context-window` requires it: every
        worker, old or new, serves the rest and the caller's default for the dependent,
        and `delete` through the publisher refuses the same change."""
        namespace = publisher.keys.namespace
        publisher.apply(base_document())
        with pytest.raises(InvalidFlagError, match="required by context-window"):
            publisher.delete("model")
        old = ready_client(make_client, server.url, **MESSAGES_ONLY)
        revision = tampered_write(operator, namespace, None)
        nudge(operator, namespace, stored_epoch(raw, namespace), revision)
        assert wait_until(lambda: old.revision == revision, 3), old.status()
        fresh = ready_client(make_client, server.url, **MESSAGES_ONLY)
        for client in (old, fresh):
            status = client.status()
            assert status.quarantined == {"context-window": DANGLING}
            assert served(client) == FRESH_VALUES
            assert error_code(client, "context-window") is ErrorCode.PARSE_ERROR
            assert error_code(client, "model") is ErrorCode.FLAG_NOT_FOUND
            assert (status.state, status.rejected_snapshots) == ("ready", 0)
