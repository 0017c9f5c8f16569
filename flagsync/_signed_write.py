"""How a signing publisher knows what to sign before the write script runs.

The script computes the new revision and state digest; the signature must cover them, and
it is made here, before. So the publisher reads the state it writes on (revision, epoch,
digest, and the digest records of the buckets it touches), predicts the script's result
with the same algorithm (`flagsync._digest.digest_after`), signs that, and passes the
state it read: the script refuses (`WriteMoved`) if anything moved in between, and the
publisher reads and signs again (bounded).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from flagsync._digest import digest_after, entry_hash, slots, touched_buckets
from flagsync._signing import SignatureRejected, SignedState, Signer, UntrustedStateError
from flagsync._write_script import NO_DATA_OPS, SEED_DIGEST_SCRIPT
from flagsync.errors import StoreUnavailableError
from flagsync.store import (
    ScriptWrite,
    StoreKeys,
    WriteApplied,
    WriteConflict,
    WriteMoved,
    encode_blobs,
    encode_payload,
    parse_write_reply,
    script_arguments,
)

__all__ = ["SignedPlan", "plan_signed_write", "run_write_script"]

_log = structlog.get_logger("flagsync.publisher")
_SIGNED_RETRIES: Final = 20


@dataclass(frozen=True)
class SignedPlan:
    """What to pass the script for a signed write, and what it must return."""

    expected_state: str
    signature: str
    revision: int
    digest: str


def run_write_script(
    execute: Callable[[Sequence[str], Sequence[object]], Any],
    client: Any,
    keys: StoreKeys,
    writes: Sequence[ScriptWrite],
    *,
    signer: Signer | None,
    seen_revision: int,
    log_maxlen: int,
    actor: str,
    reason: str,
    llm_section: bytes | None = None,
) -> WriteApplied | WriteConflict:
    """Run the write script once (unsigned), or sign and run it until the state it signed
    is the one it lands on (bounded). `execute(keys, args)` sends it and returns its reply
    (see `flagsync._confirmed_write`); `llm_section`: see `store.script_arguments`."""
    blobs = encode_blobs(writes)
    payload = encode_payload(writes, blobs, actor=actor, reason=reason, llm_section=llm_section)
    for _ in range(_SIGNED_RETRIES):
        epoch_candidate = uuid.uuid4().hex
        plan = None
        if signer is not None:
            plan = plan_signed_write(
                client,
                keys,
                writes,
                blobs,
                payload,
                signer=signer,
                seen_revision=seen_revision,
                epoch_candidate=epoch_candidate,
            )
        args = script_arguments(
            keys,
            writes,
            blobs,
            payload,
            seen_revision=seen_revision,
            epoch_candidate=epoch_candidate,
            log_maxlen=log_maxlen,
            actor=actor,
            reason=reason,
            expected_state="" if plan is None else plan.expected_state,
            signature="" if plan is None else plan.signature,
            llm_section=llm_section,
        )
        script_keys = keys.script_keys(llm=llm_section is not None)
        result = parse_write_reply(execute(script_keys, args))
        if isinstance(result, WriteMoved):
            continue  # another write landed between our read and ours: sign again
        if isinstance(result, WriteApplied) and plan is not None and result.digest != plan.digest:
            _log.error(  # workers will refuse this state; the next signed write fixes it
                "signed_write_mismatch",
                namespace=keys.namespace,
                revision=result.revision,
                predicted=plan.digest,
                digest=result.digest,
            )
        return result
    raise StoreUnavailableError(f"signed write: the store kept moving ({_SIGNED_RETRIES} tries)")


def plan_signed_write(
    client: Any,
    keys: StoreKeys,
    writes: Sequence[ScriptWrite],
    blobs: Sequence[bytes],
    payload: bytes,
    *,
    signer: Signer,
    seen_revision: int,
    epoch_candidate: str,
) -> SignedPlan:
    """Read the state the write lands on, predict the script's result and sign it."""
    changed = [
        (write.kind, write.key, blob or None)
        for write, blob in zip(writes, blobs, strict=True)
        if write.op not in NO_DATA_OPS
    ]
    for attempt in range(2):
        stored, epoch, digest, signature, before, members, digests = _read(client, keys, changed)
        records_fit = all(
            old is None
            or entry_hash(kind, key, old) in members.get(entry_hash(kind, key, old)[:2], "")
            for (kind, key, _), old in zip(changed, before, strict=True)
        )
        if digest is not None and records_fit:
            break
        # Records missing (a store older than digests, a wipe) or stale (hashes changed
        # behind the script): have the script recompute them, then read again.
        client.eval(SEED_DIGEST_SCRIPT, len(keys.script_keys()), *keys.script_keys(), "force")
        if attempt:
            raise RuntimeError("digest records still inconsistent after a re-seed")
    if stored and epoch is not None and not signer.adopt_unsigned:
        try:
            signer.trusted().verify(
                signature,
                namespace=keys.namespace,
                epoch=epoch,
                revision=stored,
                digest=digest or "",
            )
        except SignatureRejected as error:
            raise UntrustedStateError(
                f"namespace {keys.namespace!r}: will not sign on top of revision {stored}: "
                f"{error}. It may hold changes made without the signing key; review them "
                "(flagsync history), then sign once with adopt_unsigned=True "
                "(FLAGSYNC_ADOPT_UNSIGNED=1)"
            ) from None
    revision = max(stored, seen_revision) + 1
    predicted = digest_after(
        members,
        digests,
        [(kind, key, old, new) for (kind, key, new), old in zip(changed, before, strict=True)],
    )
    state = SignedState(
        namespace=keys.namespace,
        epoch=epoch or epoch_candidate,
        revision=revision,
        digest=predicted,
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        signed_ms=time.time_ns() // 1_000_000,
    )
    return SignedPlan(f"{stored}:{digest or ''}", signer.sign(state), revision, predicted)


def _read(
    client: Any, keys: StoreKeys, changed: list[tuple[str, str, bytes | None]]
) -> tuple[
    int, str | None, str | None, str | None, list[bytes | None], dict[str, str], dict[str, str]
]:
    """(revision, epoch, digest or None when the records need a seed, signature record,
    blobs before, touched buckets' members, every bucket digest): two round trips."""
    pipe = client.pipeline(transaction=False)
    pipe.mget(keys.revision, keys.epoch, keys.digest, keys.signature)
    pipe.hget(keys.digests, "n")
    pipe.hlen(keys.flags)
    pipe.hlen(keys.segments)
    for kind, key, _ in changed:
        pipe.hget(keys.flags if kind == "flag" else keys.segments, key)
    replies = pipe.execute()
    (raw_revision, raw_epoch, raw_digest, raw_signature), count, flags, segments = replies[:4]
    before = [None if blob is None else bytes(blob) for blob in replies[4:]]
    # A second round trip: which buckets change depends on the blobs before. A write in
    # between moves (revision, digest), and the script then refuses ours (`WriteMoved`).
    touched = sorted(
        touched_buckets(
            (kind, key, old, new) for (kind, key, new), old in zip(changed, before, strict=True)
        )
    )
    pipe = client.pipeline(transaction=False)
    pipe.hmget(keys.digests, [f"m:{bucket}" for bucket in touched] or ["m:--"])
    pipe.hget(keys.digests, "top")
    member_values, top = pipe.execute()
    consistent = raw_digest is not None and count is not None and int(count) == flags + segments
    members = {
        bucket: value.decode()
        for bucket, value in zip(touched, member_values, strict=False)
        if value is not None
    }
    digests = {} if top is None else slots(top.decode())
    return (
        int(raw_revision or 0),
        None if raw_epoch is None else raw_epoch.decode(),
        raw_digest.decode() if consistent else None,
        None if raw_signature is None else raw_signature.decode(),
        before,
        members,
        digests,
    )
