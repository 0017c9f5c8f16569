"""Least-privilege users, revoked credentials and secrets (FAULTS.md S13, S15; DESIGN.md
"Security").

The users are the ones `flagsync acl` prints, created on a dedicated server: a worker can
read its namespace, subscribe and heartbeat, and nothing else, so it cannot forge a change;
an operator can write flags but not wipe or reconfigure the server. Revoked credentials are
a lasting condition: reported once, retried slowly, served from the last-known-good snapshot
until restored. No password ever reaches a log line, a status or an exception message.
"""

from __future__ import annotations

import time
import traceback
from functools import partial
from typing import Any, Final

import pytest
import redis

from flagsync import FlagClient
from flagsync.errors import PermissionDeniedError, StoreUnavailableError
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess, free_port
from flagsync.status import SyncState
from flagsync.store import WRITE_SCRIPT, StoreKeys, connect
from tests.faults.acl_users import (
    AclUsers,
    auth_failures,
    create_acl_users,
    denied_commands,
)
from tests.faults.figures import record
from tests.integration.conftest import ClientFactory, RawFactory
from tests.integration.support import (
    ANYONE,
    BASE_VALUES,
    CALLER_DEFAULTS,
    MODEL_OFF,
    base_document,
    change_message,
    flag_change,
    model_flag,
    served,
    store_state,
    stored_epoch,
    wait_until,
)
from tests.logs import captured_logs, events

FAST: Final[dict[str, Any]] = {
    "check_interval_s": 0.05,
    "stale_after_s": 0.5,
    "ping_interval_s": 0.2,
    "liveness_timeout_s": 0.6,
    "socket_timeout_s": 0.5,
    "connect_timeout_s": 0.5,
    "heartbeat_interval_s": 0.2,
}


def acl_client(make_raw: RawFactory, url: str) -> redis.Redis:
    """A raw client as flagsync connects (no CLIENT SETINFO, which no ACL user here may
    send), closed after the test: every refusal in the ACL LOG is then the test's own."""
    client = connect(url, timeout_s=5.0, connect_timeout_s=5.0)
    make_raw.clients.append(client)
    return client


@pytest.fixture
def acl(dedicated_server: ServerProcess, make_raw: RawFactory, namespace: str) -> AclUsers:
    """The namespace's worker and operator users on a dedicated server."""
    return create_acl_users(make_raw(dedicated_server.url), dedicated_server.port, namespace)


class TestWorkerUser:
    """S13: the worker ACL user syncs and heartbeats, and every way to forge a change is
    refused to it by the server."""

    def test_worker_cannot_write_publish_or_run_scripts(
        self,
        dedicated_server: ServerProcess,
        acl: AclUsers,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """PUBLISH on the change channel, HSET of a flag, SET of the revision, EVAL of the
        write script and FLUSHALL are each refused with NoPermissionError, changing nothing."""
        admin = make_raw(dedicated_server.url)
        with Publisher(acl.operator_url, namespace, "operator") as operator:
            start = operator.apply(base_document())
        keys = StoreKeys(namespace)
        epoch = stored_epoch(admin, namespace)
        forged = change_message(
            epoch, start + 1, [flag_change("model", 2, model_flag(default="current"))]
        )
        worker = acl_client(make_raw, acl.worker_url)
        assert worker.hgetall(keys.flags)  # it can read what it follows
        before = store_state(admin, namespace)
        tap = admin.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        tap.subscribe(keys.channel)
        attempts: dict[str, Any] = {
            "PUBLISH": lambda: worker.publish(keys.channel, forged),
            "HSET": lambda: worker.hset(keys.flags, "model", b"forged"),
            "SET": lambda: worker.set(keys.revision, start + 1),
            "EVAL": lambda: worker.eval(
                WRITE_SCRIPT,
                len(keys.script_keys()),
                *keys.script_keys(),
                keys.channel,
                0,
                "forged-epoch",
                100,
                "mallory",
                "",
                b"",
                0,
            ),
            "FLUSHALL": worker.flushall,
        }
        for attempt in attempts.values():
            with pytest.raises(redis.exceptions.NoPermissionError):
                attempt()
        try:
            assert tap.get_message(timeout=0.2) is None  # nothing reached the channel
        finally:
            tap.close()
        assert store_state(admin, namespace) == before
        # PUBLISH is denied by channel: the worker may publish beacon heartbeats on
        # `{fs:<ns>}:heartbeat` (an ACL selector), never on the change channel.
        assert sorted(denied_commands(admin, acl.worker)) == [
            f"channel:{keys.channel}",
            "command:eval",
            "command:flushall",
            "command:hset",
            f"key:{keys.revision}",
        ]
        record(
            "S13",
            dedicated_server.kind,
            recovery_s=None,
            case="worker-forgery-refused",
            refused=sorted(attempts),
        )

    def test_publisher_with_worker_credentials_is_denied(
        self,
        dedicated_server: ServerProcess,
        acl: AclUsers,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """`Publisher` with the worker's credentials raises PermissionDeniedError for every
        write, naming the URL without its password, and writes nothing."""
        admin = make_raw(dedicated_server.url)
        with Publisher(acl.operator_url, namespace, "operator") as operator:
            operator.apply(base_document())
        before = store_state(admin, namespace)
        with Publisher(acl.worker_url, namespace, "mallory") as forger:
            writes: dict[str, Any] = {
                "apply": lambda: forger.apply({"flags": {"model": model_flag(default="current")}}),
                "kill": lambda: forger.kill("model"),
                "put": lambda: forger.put("model", model_flag(default="current")),
            }
            for write in writes.values():
                with pytest.raises(PermissionDeniedError) as denied:
                    write()
                message = str(denied.value)
                assert acl.worker_password not in message
                assert f"redis://{acl.worker}:***@127.0.0.1:{acl.port}" in message
                assert "no permissions" in message
        assert store_state(admin, namespace) == before
        record("S13", dedicated_server.kind, recovery_s=None, case="publisher-as-worker-denied")

    def test_worker_client_syncs_and_heartbeats(
        self,
        dedicated_server: ServerProcess,
        acl: AclUsers,
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """A FlagClient with the worker's credentials loads, follows changes and heartbeats
        its presence without a single command refused, and removes its presence on close."""
        admin = make_raw(dedicated_server.url)
        with Publisher(acl.operator_url, namespace, "operator") as operator:
            operator.apply(base_document())
            client = make_client(acl.worker_url, **FAST)
            assert client.wait_ready(5), client.status()
            assert served(client) == BASE_VALUES
            started = time.monotonic()
            revision = operator.kill("model")
            report = operator.wait_propagated(revision, timeout=3)
            propagated_s = time.monotonic() - started
            assert report.complete, report
            assert [ack.worker.id for ack in report.reached] == [client.status().worker_id]
            assert served(client) == BASE_VALUES | MODEL_OFF
            time.sleep(0.3)  # a few more heartbeats and revision checks
            assert client.status().state is SyncState.READY
            assert denied_commands(admin, acl.worker) == []
            client.close()
            assert wait_until(lambda: operator.workers() == [], 2)
        assert denied_commands(admin, acl.worker) == []
        record("S13", dedicated_server.kind, recovery_s=propagated_s, case="worker-client-syncs")


class TestOperatorUser:
    """S13: the operator ACL user can change flags, and cannot wipe or reconfigure the server."""

    def test_operator_writes_but_cannot_flush_or_configure(
        self,
        dedicated_server: ServerProcess,
        acl: AclUsers,
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """The operator can apply, kill, read history and list workers, while FLUSHALL,
        CONFIG GET and CONFIG SET are refused with NoPermissionError."""
        admin = make_raw(dedicated_server.url)
        with Publisher(acl.operator_url, namespace, "operator") as operator:
            operator.apply(base_document())
            client = make_client(acl.worker_url, **FAST)
            assert client.wait_ready(5), client.status()
            revision = operator.kill("model", reason="incident")
            assert wait_until(lambda: client.revision == revision, 2), client.status()
            assert client.variation("model", ANYONE, "x") == "gpt-4o"
            assert [entry.op for entry in operator.history(limit=2)] == ["kill", "apply"]
            assert wait_until(lambda: len(operator.workers()) == 1, 2)
        raw_operator = acl_client(make_raw, acl.operator_url)
        for attempt in (
            raw_operator.flushall,
            lambda: raw_operator.config_get("*"),
            lambda: raw_operator.config_set("maxmemory", "1mb"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                attempt()
        assert admin.config_get("maxmemory") == {"maxmemory": "0"}
        assert admin.hlen(StoreKeys(namespace).flags) == 4
        assert sorted(denied_commands(admin, acl.operator)) == [
            "command:config|get",
            "command:config|set",
            "command:flushall",
        ]
        record("S13", dedicated_server.kind, recovery_s=None, case="operator-limits")


class TestRevokedCredentials:
    """S15: revoked worker credentials are a lasting error: logged once, retried with the long
    capped backoff, the last-known-good flags served, and followed again once restored."""

    @pytest.mark.parametrize("revoke", ["resetpass", "off"])
    def test_revoked_then_restored(
        self,
        *,
        revoke: str,
        dedicated_server: ServerProcess,
        acl: AclUsers,
        make_client: ClientFactory,
        make_raw: RawFactory,
        namespace: str,
    ) -> None:
        """Locked out by `ACL SETUSER <worker> resetpass|off` and `CLIENT KILL USER`, the client
        serves its flags, says why, logs one permanent error for many retries spaced by
        backoff_max_permanent_s, and is READY on the latest revision once restored."""
        admin = make_raw(dedicated_server.url)
        permanent_cap_s, window_s = 0.5, 2.0
        with Publisher(acl.operator_url, namespace, "operator") as operator:
            operator.apply(base_document())
            client = make_client(
                acl.worker_url,
                backoff_initial_s=0.05,
                backoff_max_s=0.01,  # were it classified transient, retries would be ~100/s
                backoff_max_permanent_s=permanent_cap_s,
                **FAST,
            )
            assert client.wait_ready(5), client.status()
            with captured_logs() as logs:
                admin.execute_command("ACL", "LOG", "RESET")  # type: ignore[no-untyped-call]
                admin.execute_command("ACL", "SETUSER", acl.worker, revoke)  # type: ignore[no-untyped-call]
                admin.execute_command("CLIENT", "KILL", "USER", acl.worker)  # type: ignore[no-untyped-call]
                revoked_at = time.monotonic()
                latest = operator.kill("model")  # published while the worker is locked out
                assert wait_until(lambda: auth_failures(admin, acl.worker) >= 1, 2)
                while time.monotonic() - revoked_at < window_s:
                    assert served(client) == BASE_VALUES  # LKG: the kill cannot reach it
                    time.sleep(0.01)
                attempts = auth_failures(admin, acl.worker)
                status = client.status()
                restore = f">{acl.worker_password}" if revoke == "resetpass" else "on"
                admin.execute_command("ACL", "SETUSER", acl.worker, restore)  # type: ignore[no-untyped-call]
                restored_at = time.monotonic()

                def recovered() -> bool:
                    now = client.status()
                    return (now.state, now.revision, now.connected) == (
                        SyncState.READY,
                        latest,
                        True,
                    )

                assert wait_until(recovered, 3), client.status()
                recovery_s = time.monotonic() - restored_at
        assert (status.state, status.connected, status.revision) == (
            SyncState.STALE,
            False,
            latest - 1,
        )
        assert status.last_error is not None
        assert "AuthenticationError" in status.last_error
        assert "invalid username-password pair" in status.last_error
        assert acl.worker_password not in status.last_error
        # Retried, but slowly: full jitter under a 0.5 s cap averages ~0.25 s per try.
        assert 3 <= attempts <= 2 * window_s / (permanent_cap_s / 2) + 6, attempts
        lost = events(logs, "connection_lost")
        permanent = [entry for entry in lost if entry["permanent"]]
        assert len(permanent) == 1, lost
        assert permanent[0]["log_level"] == "error"
        assert "AuthenticationError" in permanent[0]["error"]
        assert lost[-1] is permanent[0]  # no log line per retry
        assert len(events(logs, "connection_restored")) == 1
        assert served(client) == BASE_VALUES | MODEL_OFF
        record(
            "S15",
            dedicated_server.kind,
            recovery_s=recovery_s,
            case=revoke,
            refused_retries=attempts,
            window_s=window_s,
            backoff_max_permanent_s=permanent_cap_s,
        )


SECRET: Final = "s3cret-Pw-7f41c0"  # noqa: S105 - the test's own, it must never be shown
URL_FORMS: Final = {
    "userinfo": "redis://flagsync-worker:{secret}@127.0.0.1:{port}",
    "password-only": "redis://:{secret}@127.0.0.1:{port}/0",
    "query": "redis://127.0.0.1:{port}?username=flagsync-worker&password={secret}",
    "at-sign-in-password": "redis://flagsync-worker:pw@{secret}@127.0.0.1:{port}",
}


def _failed(client: FlagClient) -> bool:
    return client.status().last_error is not None


def _texts(error: BaseException) -> list[str]:
    """What a user may see of an exception: its message, repr and formatted traceback."""
    return [str(error), repr(error), "".join(traceback.format_exception(error))]


class TestSecretsStayOut:
    """No password from the URL reaches a log line, a status or an exception message."""

    @pytest.mark.parametrize("form", list(URL_FORMS))
    def test_password_is_never_shown(
        self, form: str, server_kind: str, make_client: ClientFactory
    ) -> None:
        """A client and a publisher that cannot connect (nothing listening, or the password
        refused) report why with the URL redacted, in errors, status and every log line."""
        with ServerProcess(kind=server_kind, args=["--requirepass", "the-right-one"]) as locked:
            # Nothing listening is an unreachable store; a refused password is a permission
            # problem (PermissionDeniedError), not an outage.
            targets = {
                "Connection refused": (free_port(), StoreUnavailableError),
                "invalid username-password": (locked.port, PermissionDeniedError),
            }
            for reason, (port, expected) in targets.items():
                url = URL_FORMS[form].format(secret=SECRET, port=port)
                with captured_logs() as logs:
                    client = make_client(url, connect_timeout_s=0.2, backoff_max_s=0.02)
                    assert wait_until(partial(_failed, client), 2)
                    time.sleep(0.05)  # a few retries
                    with (
                        pytest.raises(expected) as raised,
                        Publisher(url, "secrets") as publisher,
                    ):
                        publisher.apply(base_document())
                    client.close()
                status = client.status()
                assert served(client) == CALLER_DEFAULTS
                assert status.last_error is not None
                assert reason in status.last_error, status.last_error
                assert reason in str(raised.value), raised.value
                assert "***" in str(raised.value)
                assert events(logs, "connection_lost"), logs
                shown = [*_texts(raised.value), repr(status), repr(client)]
                shown.extend(repr(entry) for entry in logs)
                leaks = [text for text in shown if SECRET in text]
                assert not leaks, leaks
        record("S13", server_kind, recovery_s=None, case=f"redacted-{form}")
