"""A TCP server on 127.0.0.1 served by an asyncio loop in a daemon thread of its own.

The fault proxy (`tests.faults.proxy`) and the TLS terminator (`tests.faults.tls_terminator`)
sit between a client and a real server process and are driven from the test's thread:
both need the same lifecycle, kept here once. `start()` returns once the server
listens (its start-up error raised in the caller's thread); `close()` stops the loop
after the subclass has closed its connections, joins the thread, and is safe to call
twice; as a `tests.deployment.Deployment` it is a context manager, so a failing test
still closes everything. It only ever listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

from tests.deployment import Deployment

__all__ = ["CHUNK_BYTES", "LOOPBACK", "LoopServer"]

LOOPBACK: Final = "127.0.0.1"
CHUNK_BYTES: Final = 16 * 1024
"""Largest read per chunk; also the stream buffer limit, so a stalled link buffers little."""
CALL_TIMEOUT_S: Final = 5.0
"""How long starting, stopping or a call on the loop may take."""

_T = TypeVar("_T")


class LoopServer(Deployment):
    """Listens on 127.0.0.1:`port` (0: a free one) from a loop thread named `thread_name`.

    Subclasses implement `_accept` (one connection, on the loop) and `_shutdown` (close
    what they hold, on the loop, once the listener has closed), and may override
    `_prepare` (loop-side state, created on the loop before it listens).
    """

    start_timeout_s = CALL_TIMEOUT_S

    def __init__(self, *, thread_name: str, port: int = 0) -> None:
        self.port = port
        """The listening port (known after `start` when 0 was asked for)."""
        self._thread_name = thread_name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    # -- what subclasses provide ------------------------------------------------

    def _prepare(self) -> None:
        """Create loop-side state (events, queues) on the loop, before listening."""

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        """Close every connection (the listener is closed already)."""

    # -- lifecycle ----------------------------------------------------------------

    def _start(self, timeout_s: float) -> None:
        """Start the loop's thread and wait until it listens."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s) or self._start_error is not None:
            error = self._start_error
            raise RuntimeError(f"{self._thread_name} did not start on port {self.port}") from error

    def close(self) -> None:
        """Stop the thread and close every socket; safe to call twice."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(stop.set)
        thread.join(CALL_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError(f"{self._thread_name}'s thread did not stop")
        self._thread = None

    def _call(self, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run `function` on the loop (from any other thread) and return its result."""
        loop = self._loop
        if loop is None or self._thread is None:
            raise RuntimeError(f"{self._thread_name} is not running")

        async def call() -> _T:
            return function(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(call(), loop).result(CALL_TIMEOUT_S)

    # -- the loop's side ------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as error:  # noqa: BLE001 - reported to start() or lost at close
            self._start_error = error
        finally:
            self._started.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._prepare()
        listener = socket.create_server((LOOPBACK, self.port))  # SO_REUSEADDR: restartable
        server = await asyncio.start_server(self._accept, sock=listener, limit=CHUNK_BYTES)
        self.port = listener.getsockname()[1]
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            await self._shutdown()
            await server.wait_closed()
