"""What a worker serves is verifiable against the store, not only its revision number
(FAULTS.md S21, S22, S31; DESIGN.md "Integrity (contract)").

The write script keeps a state digest beside the revision; workers compute the same
digest from what they applied and compare (epoch, revision, digest) at every check. A
restored backup, a failover to a lagging replica or a forged message is then corrected
within one check interval, whatever revision numbers it carries; a flood of garbage
messages costs cheap checks, not full loads.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Final

import pytest
import redis

from flagsync import FlagClient
from flagsync._digest import StateDigest
from flagsync._signing import SignedState, Signer, UntrustedStateError, generate_key_pair
from flagsync.errors import FlagsyncError
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess
from flagsync.store import SEED_DIGEST_SCRIPT, StoreKeys, connect
from tests.faults.figures import record
from tests.integration.conftest import ClientFactory, PublisherFactory, RawFactory
from tests.integration.support import (
    ANYONE,
    base_document,
    change_message,
    flag_change,
    model_flag,
    stored_epoch,
    wait_until,
)
from tests.integration.test_subscriber import DRIVERS, Clients
from tests.logs import captured_logs, events

CHECK_INTERVAL_S: Final = 0.25
"""The default periodic check: a divergence must be corrected within it (plus scheduling)."""
CORRECTED_WITHIN_S: Final = 1.0
"""The issue's bound: never past 1 s."""
KILLED: Final = [f"gate-{index}" for index in range(5)]


def gate_flag() -> dict[str, Any]:
    """An enabled boolean gate (serves True); killed, it serves False."""
    return {"variants": {"on": True, "off": False}, "off": "off", "default": "on"}


def document() -> dict[str, Any]:
    """`base_document()` plus the five gates the scenarios kill."""
    doc = base_document()
    doc["flags"].update({key: gate_flag() for key in KILLED})
    return doc


def store_digest(raw: redis.Redis, namespace: str) -> str:
    """The digest the store states beside its revision."""
    digest = raw.get(StoreKeys(namespace).digest)
    assert isinstance(digest, bytes), "the store holds no digest"
    return digest.decode()


def blobs(raw: redis.Redis, key: str) -> dict[str, bytes]:
    """A hash of blobs (flags or segments) as {name: blob}."""
    stored: dict[bytes, bytes] = raw.hgetall(key)  # type: ignore[assignment]
    return {name.decode(): value for name, value in stored.items()}


def content_state(raw: redis.Redis, namespace: str) -> StateDigest:
    """The digest of the store's content, computed here from its blobs."""
    keys = StoreKeys(namespace)
    return StateDigest.of_store(blobs(raw, keys.flags), blobs(raw, keys.segments))


def content_digest(raw: redis.Redis, namespace: str) -> str:
    """The digest value of the store's content."""
    return content_state(raw, namespace).value


def at_revision(workers: list[FlagClient], revision: int) -> bool:
    """True when every worker applied `revision`."""
    return all(worker.revision == revision for worker in workers)


def converged(client: FlagClient, publisher: Publisher) -> bool:
    """True when the client serves exactly the definitions the store holds."""
    return client.snapshot.definitions.to_builtins() == publisher.definitions().to_builtins()


def backup(raw: redis.Redis, namespace: str) -> dict[bytes, bytes]:
    """DUMP of every key of the namespace but the workers' presence (a backup)."""
    keys = StoreKeys(namespace)
    names = [
        name
        for name in raw.scan_iter(match=keys.pattern.replace("{", "\\{").replace("}", "\\}"))
        if b":worker:" not in name
    ]
    dumped = {name: raw.dump(name) for name in names}
    return {name: value for name, value in dumped.items() if isinstance(value, bytes)}


def restore(raw: redis.Redis, namespace: str, saved: dict[bytes, bytes]) -> None:
    """Put the namespace back as `saved` (keys written since are gone), workers running."""
    current = set(backup(raw, namespace))
    pipe = raw.pipeline(transaction=True)
    for name in current - set(saved):
        pipe.delete(name)
    for name, value in saved.items():
        pipe.restore(name, 0, value, replace=True)
    pipe.execute()


@pytest.fixture(params=DRIVERS)
def any_client(request: pytest.FixtureRequest, make_client: ClientFactory) -> Iterator[Clients]:
    """`any_client(url, **options)`: a client of the test's driver (thread or asyncio task)."""
    clients = Clients(request.param, make_client)
    try:
        yield clients
    finally:
        clients.close_all()


class TestDigestInTheStore:
    """The script's digest equals the one computed from the content, whatever was written."""

    def test_every_write_keeps_the_digest_of_the_content(
        self, server: ServerProcess, publisher: Publisher, raw: redis.Redis
    ) -> None:
        """After an apply, puts, kills, a segment change and a delete, the stored digest is
        the Python digest of the stored blobs, and each message carries the stored one."""
        ns = publisher.keys.namespace
        tap = raw.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        tap.subscribe(publisher.keys.channel)
        try:
            publisher.apply(document())
            assert store_digest(raw, ns) == content_digest(raw, ns)
            publisher.kill("gate-0")
            publisher.put("extra", gate_flag())
            doc = document()
            doc["segments"]["beta"] = {"keys": ["user-1", "user-2"]}
            doc["flags"]["extra"] = gate_flag()
            publisher.apply(doc)
            publisher.delete("extra")
            assert store_digest(raw, ns) == content_digest(raw, ns)
            published: list[bytes] = []
            for _ in range(20):  # bounded: the subscribe confirmation reads as None
                message = tap.get_message(timeout=0.5)
                if message is not None:
                    published.append(message["data"])
                if len(published) == 5:
                    break
        finally:
            tap.close()
        assert len(published) == 5
        assert published[-1].split(b"|")[4].decode() == store_digest(raw, ns)

    def test_missing_digest_records_are_seeded(
        self, server: ServerProcess, publisher: Publisher, raw: redis.Redis
    ) -> None:
        """A store written before digests existed (records deleted) gets them at its next
        write; the seed script computes them without a revision."""
        ns = publisher.keys.namespace
        keys = publisher.keys
        publisher.apply(document())
        raw.delete(keys.digest, keys.digests)
        revision = publisher.revision()[1]
        seeded = raw.eval(SEED_DIGEST_SCRIPT, len(keys.script_keys()), *keys.script_keys())
        assert isinstance(seeded, bytes)
        assert seeded.decode() == content_digest(raw, ns)
        assert publisher.revision()[1] == revision
        raw.delete(keys.digest, keys.digests)
        publisher.kill("gate-1")
        assert store_digest(raw, ns) == content_digest(raw, ns)

    def test_hashes_changed_behind_the_script_are_reseeded(
        self, server: ServerProcess, publisher: Publisher, raw: redis.Redis
    ) -> None:
        """A flag written or deleted with raw HSET/HDEL leaves the records stale; the next
        write notices (count or a missing entry) and recomputes them from the content."""
        ns = publisher.keys.namespace
        publisher.apply(document())
        blob = raw.hget(publisher.keys.flags, "gate-0")
        assert isinstance(blob, bytes)
        raw.hset(publisher.keys.flags, "gate-1", blob.replace(b"gate-0", b"gate-1"))
        publisher.kill("gate-2")
        assert store_digest(raw, ns) == content_digest(raw, ns)
        raw.hdel(publisher.keys.flags, "gate-3")
        raw.hset(publisher.keys.flags, "gate-4", b"\x80")
        publisher.kill("gate-0")
        assert store_digest(raw, ns) == content_digest(raw, ns)


class TestSameEpochRewind:
    """S21: a backup restored while workers run (same epoch), then written on again."""

    @pytest.mark.parametrize("writer", ["saw-higher-revision", "fresh"])
    def test_workers_converge_on_the_store_within_one_check(
        self,
        *,
        writer: str,
        server_kind: str,
        server: ServerProcess,
        publisher: Publisher,
        make_publisher: PublisherFactory,
        any_client: Clients,
        raw: redis.Redis,
    ) -> None:
        """Revisions 1-5, a backup, five kills (6-10), the backup restored, then writes from
        a publisher that saw revision 10 or from a fresh one: every worker serves the
        store's content within one check interval of each write, the divergence is logged
        and counted, and nothing is left to a lucky revision number."""
        ns = publisher.keys.namespace
        publisher.apply(document())
        for value in range(4):
            publisher.set_default("temperature", "high" if value % 2 else "low")
        assert publisher.revision()[1] == 5
        saved = backup(raw, ns)
        workers = [any_client(server.url) for _ in range(3)]
        assert all(worker.wait_ready(5) for worker in workers)
        for key in KILLED:
            publisher.kill(key)
        assert wait_until(lambda: all(w.revision == 10 for w in workers), 2)
        assert all(w.variation("gate-0", ANYONE, None) is False for w in workers)
        with captured_logs() as logs:
            restore(raw, ns, saved)
            if writer == "fresh":
                writer_publisher = make_publisher(server.url, ns)
                writes = [
                    partial(writer_publisher.put, f"new-{index}", gate_flag()) for index in range(6)
                ]
            else:
                writer_publisher = publisher  # it saw revision 10: writes 11
                writes = [partial(writer_publisher.put, "new-0", gate_flag())]
            slowest = 0.0
            for write in writes:
                write()
                started = time.monotonic()
                assert wait_until(
                    lambda: all(converged(w, writer_publisher) for w in workers),
                    CORRECTED_WITHIN_S,
                ), [w.status() for w in workers]
                slowest = max(slowest, time.monotonic() - started)
        record("S21 same-epoch rewind", server_kind, recovery_s=slowest, writer=writer)
        assert all(w.variation("gate-0", ANYONE, None) is True for w in workers)
        assert sum(w.status().state_diverged for w in workers) >= len(workers)
        assert events(logs, "state_diverged")


def attacker_url(admin: redis.Redis, port: int, channel: str) -> str:
    """A user allowed only PUBLISH and SUBSCRIBE on the change channel (no key access)."""
    name, password = f"attacker-{secrets.token_hex(4)}", secrets.token_hex(12)
    admin.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", name, "on", f">{password}", "resetkeys", "resetchannels",
        f"&{channel}", "+publish", "+subscribe", "+ping", "+hello", "+auth", "+client|setname",
    )  # fmt: skip
    return f"redis://{name}:{password}@127.0.0.1:{port}"


class TestForgedChange:
    """S22, unsigned mode: a PUBLISH-only user forges the next revision re-enabling a kill."""

    @pytest.mark.parametrize("digest", ["guessed", "right"])
    def test_forgery_is_corrected_and_the_next_write_applies(
        self,
        *,
        digest: str,
        server_kind: str,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        any_client: Clients,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """A forged "next revision" with a made-up digest is never applied; one carrying the
        right digest (an attacker who also reads the store) is served for at most one check
        interval; either way the operator's next real write is applied, not ignored."""
        admin = make_raw(dedicated_server.url)
        operator = make_publisher(dedicated_server.url, namespace)
        operator.apply(document())
        killed = operator.kill("gate-0")
        worker = any_client(dedicated_server.url)
        assert worker.wait_ready(5)
        assert wait_until(lambda: worker.revision == killed, 2)
        attacker = connect(
            attacker_url(admin, dedicated_server.port, operator.keys.channel),
            timeout_s=2.0,
            connect_timeout_s=2.0,
        )
        make_raw.clients.append(attacker)
        with pytest.raises(redis.exceptions.NoPermissionError):
            attacker.get(operator.keys.revision)
        change = flag_change("gate-0", 3, gate_flag())
        forged_digest = "0" * 40
        if digest == "right":
            state = content_state(admin, namespace)
            forged_digest = state.update([("flag", "gate-0", change.blob)])
        epoch = stored_epoch(admin, namespace)
        forged = change_message(epoch, killed + 1, [change], digest=forged_digest)
        served: list[bool] = []
        attacker.publish(operator.keys.channel, forged)
        started = time.monotonic()
        while time.monotonic() - started < CORRECTED_WITHIN_S:
            served.append(worker.variation("gate-0", ANYONE, None))
            time.sleep(0.002)
        assert worker.variation("gate-0", ANYONE, None) is False
        assert worker.revision == killed
        forged_share = served.count(True) / len(served)
        if digest == "guessed":
            assert forged_share == 0.0
        else:
            corrected = wait_until(lambda: worker.status().state_diverged >= 1, 0.1)
            assert corrected or forged_share == 0.0
            assert forged_share <= CHECK_INTERVAL_S * 2 / CORRECTED_WITHIN_S
        record("S22 forged change (unsigned)", server_kind, recovery_s=None, digest=digest,
               forged_share=round(forged_share, 4))  # fmt: skip
        revision = operator.put("after-attack", gate_flag())
        assert revision == killed + 1
        assert wait_until(lambda: worker.revision == revision, 5.0), worker.status()
        assert worker.variation("after-attack", ANYONE, None) is True
        assert worker.variation("gate-0", ANYONE, None) is False


class TestResyncAmplification:
    """S31: garbage on the channel costs cheap checks, never a full load each."""

    def test_garbage_flood_costs_checks_not_loads(
        self,
        *,
        server_kind: str,
        server: ServerProcess,
        publisher: Publisher,
        any_client: Clients,
        raw: redis.Redis,
    ) -> None:
        """300 tiny garbage messages (and forged next revisions) cost a handful of full
        loads at most, while a real change in the middle of the flood applies on time."""
        publisher.apply(document())
        workers = [any_client(server.url) for _ in range(2)]
        assert all(worker.wait_ready(5) for worker in workers)
        before = [worker.status() for worker in workers]
        epoch = stored_epoch(raw, publisher.keys.namespace)
        channel = publisher.keys.channel
        revision = publisher.revision()[1]
        applied_after = 0.0
        for index in range(300):
            if index % 3:
                raw.publish(channel, secrets.token_bytes(7))
            else:
                raw.publish(
                    channel,
                    change_message(epoch, revision + 1, [flag_change("model", 9, model_flag())]),
                )
            if index == 150:
                real = publisher.kill("gate-1")
                written = time.monotonic()
                assert wait_until(partial(at_revision, workers, real), 2.0)
                applied_after = time.monotonic() - written
        assert wait_until(partial(at_revision, workers, real), 5.0)
        time.sleep(CHECK_INTERVAL_S)
        after = [worker.status() for worker in workers]
        loads = [a.resyncs - b.resyncs for a, b in zip(after, before, strict=True)]
        checks = [a.state_checks - b.state_checks for a, b in zip(after, before, strict=True)]
        record("S31 resync amplification", server_kind, recovery_s=applied_after,
               full_loads=loads, cheap_checks=checks, messages=300)  # fmt: skip
        assert all(load <= 3 for load in loads), after
        assert all(worker.variation("gate-1", ANYONE, None) is False for worker in workers)
        assert all(worker.variation("model", ANYONE, None) == "gpt-4.1" for worker in workers)


def key_pair(directory: Path, name: str) -> tuple[Path, str]:
    """A signing key file and its public line (what `flagsync keygen` writes)."""
    pem, public = generate_key_pair()
    path = directory / name
    path.write_bytes(pem)
    path.chmod(0o600)
    return path, public


def never_served(client: FlagClient, key: str, value: Any, seconds: float) -> bool:
    """True when `client` did not serve `value` for `key` once in `seconds` of sampling."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.variation(key, ANYONE, None) == value:
            return False
        time.sleep(0.002)
    return True


class TestSignedMode:
    """S13, S22 signed: workers with verify keys apply nothing unsigned, badly signed or
    older than what they applied; one signature covers a full load."""

    def test_forged_unsigned_and_foreign_changes_are_never_applied(
        self,
        *,
        server_kind: str,
        server: ServerProcess,
        make_publisher: PublisherFactory,
        any_client: Clients,
        raw: redis.Redis,
        namespace: str,
        tmp_path: Path,
    ) -> None:
        """A forged next revision (right digest, no signature or another key's), and a real
        operator write without the key, are never served, not for one sample; each is
        counted, logged at error level and named in status; the signing publisher then
        refuses to vouch for the unsigned state until told to adopt it."""
        private, public = key_pair(tmp_path, "signing")
        foreign, _ = key_pair(tmp_path, "foreign")
        operator = Publisher(server.url, namespace, "operator", signing_key=private)
        make_publisher.publishers.append(operator)
        operator.apply(document())
        killed = operator.kill("gate-0")
        worker = any_client(server.url, verify_keys=(public,))
        assert worker.wait_ready(5)
        assert wait_until(lambda: worker.revision == killed, 2)
        epoch = stored_epoch(raw, namespace)
        change = flag_change("gate-0", 3, gate_flag())
        digest = content_state(raw, namespace).update([("flag", "gate-0", change.blob)])
        unsigned = change_message(epoch, killed + 1, [change], digest=digest)
        parts = unsigned.split(b"|", 6)
        payload_sha = hashlib.sha256(parts[6]).hexdigest()
        state = SignedState(namespace, epoch, killed + 1, digest, payload_sha, 1)
        foreign_signed = change_message(
            epoch, killed + 1, [change], digest=digest, signature=Signer(foreign).sign(state)
        )
        with captured_logs() as logs:
            for forged in (unsigned, foreign_signed):
                raw.publish(operator.keys.channel, forged)
                assert never_served(worker, "gate-0", True, 0.5)
            keyless = make_publisher(server.url, namespace)
            rogue = keyless.put("rogue", gate_flag())
            assert never_served(worker, "rogue", True, 1.0)
        status = worker.status()
        assert status.revision == killed
        assert status.signature_rejected >= 3, status
        assert (status.last_error or "").startswith("signature rejected: revision"), status
        rejected = events(logs, "signature_rejected")
        assert rejected
        assert all(event["log_level"] == "error" for event in rejected)
        assert any("unsigned" in event["reason"] for event in rejected), rejected
        with pytest.raises(UntrustedStateError, match=f"revision {rogue}"):
            operator.put("after", gate_flag())
        adopting = Publisher(
            server.url, namespace, "reviewer", signing_key=private, adopt_unsigned=True
        )
        make_publisher.publishers.append(adopting)
        adopted = adopting.put("after", gate_flag())
        assert wait_until(lambda: worker.revision == adopted, 5.0), worker.status()
        assert converged(worker, adopting)
        record("S22 forged change (signed)", server_kind, recovery_s=None, served_forged=0)

    def test_replayed_old_signed_state_is_refused(
        self,
        *,
        server_kind: str,
        server: ServerProcess,
        make_publisher: PublisherFactory,
        any_client: Clients,
        raw: redis.Redis,
        namespace: str,
        tmp_path: Path,
    ) -> None:
        """A backup of a validly signed older state restored under a running worker is
        refused as a replay (the kill stays served); the operator's next signed write
        supersedes it and is applied."""
        private, public = key_pair(tmp_path, "signing")
        operator = Publisher(server.url, namespace, "operator", signing_key=private)
        make_publisher.publishers.append(operator)
        operator.apply(document())
        saved = backup(raw, namespace)
        killed = operator.kill("gate-0")
        worker = any_client(server.url, verify_keys=(public,))
        assert worker.wait_ready(5)
        assert wait_until(lambda: worker.revision == killed, 2)
        with captured_logs() as logs:
            restore(raw, namespace, saved)
            assert never_served(worker, "gate-0", True, CORRECTED_WITHIN_S)
        status = worker.status()
        assert "replay" in (status.last_error or ""), status
        assert any("replay" in event["reason"] for event in events(logs, "signature_rejected"))
        assert status.resyncs < 10, status  # the refused state is not reloaded at every check
        revision = operator.put("after", gate_flag())
        assert revision == killed + 1
        assert wait_until(lambda: worker.revision == revision, 5.0), worker.status()
        assert converged(worker, operator)
        record("S13 replay of an old signed state", server_kind, recovery_s=None, refused=True)

    def test_full_load_verifies_one_signature_and_rotation(
        self,
        *,
        server: ServerProcess,
        make_publisher: PublisherFactory,
        any_client: Clients,
        namespace: str,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A worker started on a signed store loads it; one holding the old and the new key
        follows a rotation (the new publisher trusts the old key's state through
        FLAGSYNC_VERIFY_KEYS); a worker started on an unsigned store serves nothing of it."""
        old_key, old_public = key_pair(tmp_path, "old")
        new_key, new_public = key_pair(tmp_path, "new")
        unsigned_ns = f"{namespace}-unsigned"
        make_publisher(server.url, unsigned_ns).apply(document())
        refusing = any_client(server.url, unsigned_ns, verify_keys=(old_public,))
        assert not refusing.wait_ready(1.0)
        assert refusing.variation("gate-0", ANYONE, "default") == "default"
        assert (refusing.status().last_error or "").startswith("signature rejected"), (
            refusing.status()
        )
        old = Publisher(server.url, namespace, "old", signing_key=old_key)
        make_publisher.publishers.append(old)
        old.apply(document())
        worker = any_client(server.url, verify_keys=(old_public, new_public))
        assert worker.wait_ready(5)
        assert converged(worker, old)
        monkeypatch.setenv("FLAGSYNC_VERIFY_KEYS", old_public)
        new = Publisher(server.url, namespace, "new", signing_key=new_key)
        make_publisher.publishers.append(new)
        rotated = new.kill("gate-1")
        assert wait_until(lambda: worker.revision == rotated, 5.0), worker.status()
        assert worker.variation("gate-1", ANYONE, None) is False

    def test_racing_signing_publishers_all_land_signed(
        self,
        *,
        server: ServerProcess,
        make_publisher: PublisherFactory,
        any_client: Clients,
        namespace: str,
        tmp_path: Path,
    ) -> None:
        """Two signing publishers writing at once each re-sign when the state moved under
        them: every write lands, and the worker applies the final state, refusing none."""
        private, public = key_pair(tmp_path, "signing")
        writers = [Publisher(server.url, namespace, f"w{n}", signing_key=private) for n in (1, 2)]
        make_publisher.publishers.extend(writers)
        writers[0].apply(document())
        worker = any_client(server.url, verify_keys=(public,))
        assert worker.wait_ready(5)
        errors: list[BaseException] = []

        def toggle(publisher: Publisher, key: str) -> None:
            try:
                for _ in range(15):
                    publisher.kill(key)
                    publisher.enable(key)
            except BaseException as error:  # noqa: BLE001 - reported by the assertion below
                errors.append(error)

        threads = [
            threading.Thread(target=toggle, args=(writer, f"gate-{n}"))
            for n, writer in enumerate(writers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        final = writers[0].revision()[1]
        assert final == 1 + 2 * 2 * 15
        assert wait_until(lambda: worker.revision == final, 2.0), worker.status()
        assert converged(worker, writers[0])
        assert worker.status().signature_rejected == 0


def race(*calls: Callable[[], object]) -> list[BaseException | None]:
    """Run `calls` at once (a barrier releases them together); each one's error or None."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[BaseException | None] = [None] * len(calls)

    def run(index: int, call: Callable[[], object]) -> None:
        barrier.wait(5)
        try:
            call()
        except FlagsyncError as error:
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return outcomes


class TestReferenceIntegrity:
    """S25: a delete racing a write that references what it deletes never both succeed."""

    def test_delete_racing_a_put_that_requires_it(
        self, *, server: ServerProcess, make_publisher: PublisherFactory, namespace: str
    ) -> None:
        """`delete(y)` and `put(x requires y)` from two publishers at once, 30 times: at
        most one succeeds each time, and the store always exports (no dangling reference)."""
        deleter, putter = make_publisher(server.url), make_publisher(server.url)
        deleter.apply(document())
        both = 0
        for trial in range(30):
            target, dependent = f"target-{trial}", f"dependent-{trial}"
            deleter.put(target, gate_flag())
            requiring = gate_flag() | {"requires": {target: "on"}}
            outcomes = race(
                partial(deleter.delete, target), partial(putter.put, dependent, requiring)
            )
            both += outcomes == [None, None]
            definitions = putter.definitions()  # raises on a dangling prerequisite
            if dependent in definitions.flags:
                assert target in definitions.flags
        assert both == 0

    def test_segment_pruned_racing_a_put_that_targets_it(
        self, *, server: ServerProcess, make_publisher: PublisherFactory, namespace: str
    ) -> None:
        """An `apply(prune=True)` dropping a segment and a `put` of a flag targeting it,
        at once, 20 times: the store never holds the flag without its segment (both may
        succeed only when the prune ran after the put and removed the flag too)."""
        pruner, putter = make_publisher(server.url), make_publisher(server.url)
        for trial in range(20):
            doc = document()
            doc["segments"]["doomed"] = {"keys": [f"user-{trial}"]}
            pruner.apply(doc, prune=True)
            targeting = gate_flag() | {
                "rules": [
                    {
                        "name": "doomed",
                        "when": [{"attr": "key", "op": "in_segment", "values": ["doomed"]}],
                        "serve": "off",
                    }
                ]
            }
            race(
                partial(pruner.apply, document(), prune=True),
                partial(putter.put, f"targets-{trial}", targeting),
            )
            definitions = putter.definitions()  # raises on an unknown segment
            if f"targets-{trial}" in definitions.flags:
                assert "doomed" in definitions.segments
