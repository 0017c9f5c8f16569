"""A small TCP proxy on 127.0.0.1 that injects network faults between a client and a server.

toxiproxy is a Go program, not pip-installable (FAULTS.md), so the fault suite carries its
own: an asyncio server in a background thread that forwards every connection to the
server and can be switched, at runtime and from any thread, between these modes:

- `pass_through()`: forward everything as it comes.
- `reset(duration_ms)`: close every connection with RST (SO_LINGER 0) and RST every new
  one for `duration_ms`, then pass through again.
- `blackhole()`: keep every socket open but forward nothing either way, new connections
  included (a half-open link: what was sent is lost). Leaving it resets the connections
  that lost bytes, as the peer of a healed half-open link would.
- `stall()`: stop reading and writing (nothing is lost: the data waits in the socket
  buffers and is delivered when the stall ends). With `receive_buffer_bytes` set the
  server-side buffers stay small, so the server's own output buffer fills up.
- `latency(mean_ms, jitter_ms)`: delay every chunk, each way, by mean ± jitter
  (uniform), keeping the byte order of each direction.
- `slice(delay_ms)`: forward one byte per write (and per TCP segment: Nagle is off).
- `trickle(delay_ms, after)`: only on links whose client has sent `after` (b"SUBSCRIBE":
  the pub/sub link), forward the server's bytes one at a time, `delay_ms` apart; every
  other link, and the client's side of that one, pass through.

Use it as a context manager: the thread stops and every socket is closed on exit, also
after a failure (the lifecycle is `tests.faults.loop_server`'s). It only ever listens
on, and connects to, 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import socket
import struct
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Final

from tests.faults.loop_server import CHUNK_BYTES, LOOPBACK, LoopServer

__all__ = ["LOOPBACK", "FaultProxy", "Mode", "ProxyStats"]

_CLIENT_PREFIX_BYTES: Final = 4096
_Chunk = tuple[float, bytes] | None
"""(deliver at, data) on a direction's queue; None: the sending side ended."""


class Mode(enum.StrEnum):
    """What the proxy does with the bytes it reads."""

    PASS_THROUGH = "pass-through"  # noqa: S105 - a mode, not a password
    RESET = "reset"
    BLACKHOLE = "blackhole"
    STALL = "stall"
    LATENCY = "latency"
    SLICE = "slice"
    TRICKLE = "trickle"


@dataclass(frozen=True)
class ProxyStats:
    """Counters since the proxy started (a copy: taking it is safe from any thread)."""

    accepted: int = 0
    """Connections accepted from clients."""
    resets: int = 0
    """Connections closed with RST (client side and server side each count)."""
    forwarded_bytes: int = 0
    dropped_bytes: int = 0
    """Bytes swallowed while black-holed."""
    writes: int = 0
    """Writes to either side (one per byte while slicing)."""


class _Link:
    """One proxied connection: the client's socket and ours to the server."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.client_reader, self.client_writer = client
        self.server_reader, self.server_writer = server
        self.tasks: list[asyncio.Task[None]] = []
        self.tainted = False
        """Bytes were lost on this link (black-holed): it cannot carry a stream any more."""
        self.client_sent = b""
        """The client's first bytes (up to `_CLIENT_PREFIX_BYTES`): what `trickle` selects by."""
        self.closed = False


class FaultProxy(LoopServer):
    """Forwards connections on 127.0.0.1:`port` to 127.0.0.1:`target_port`, with faults.

    Every mode method blocks until the proxy has switched (so a test knows the fault is
    in effect when the call returns) and may be called from any thread.
    """

    def __init__(
        self,
        target_port: int,
        *,
        target_host: str = LOOPBACK,
        receive_buffer_bytes: int | None = None,
    ) -> None:
        if target_host != LOOPBACK:
            raise ValueError(f"the fault proxy only forwards to {LOOPBACK}, not {target_host!r}")
        super().__init__(thread_name=f"fault-proxy-{target_port}")
        self.target_port = target_port
        self.receive_buffer_bytes = receive_buffer_bytes
        """SO_RCVBUF of the proxy's server-side sockets (None: the kernel's autotuning)."""
        self._mode = Mode.PASS_THROUGH
        self._latency_s = (0.0, 0.0)
        self._slice_delay_s = 0.0
        self._trickle_after = b""
        self._stats = ProxyStats()
        self._links: set[_Link] = set()
        self._transports: list[asyncio.WriteTransport] = []
        """Every socket the proxy opened or accepted: all are ended at shutdown, also those
        of links closed earlier with a FIN still flushing to a peer that never reads."""
        self._mode_changed: asyncio.Event | None = None
        self._reset_timer: asyncio.TimerHandle | None = None

    # -- where it listens (start, close, context manager: see LoopServer) -------

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>`: the server's URL through the proxy."""
        return f"redis://{LOOPBACK}:{self.port}"

    # -- modes (thread-safe; each returns once in effect) ----------------------

    @property
    def mode(self) -> Mode:
        """The current mode."""
        return self._mode

    @property
    def stats(self) -> ProxyStats:
        """A copy of the counters."""
        return replace(self._stats)

    @property
    def connections(self) -> int:
        """Connections currently open through the proxy."""
        return self._call(self._count_links)

    def pass_through(self) -> None:
        """Forward everything again (ends a black hole, a stall, latency or slicing)."""
        self._call(self._switch, Mode.PASS_THROUGH)

    def reset(self, duration_ms: float) -> float:
        """RST every connection now and every new one for `duration_ms`, then pass through.

        Returns the `time.monotonic()` at which new connections are forwarded again.
        """
        return self._call(self._start_reset, duration_ms / 1000)

    def blackhole(self) -> None:
        """Keep the sockets open and forward nothing, either way (a half-open link)."""
        self._call(self._switch, Mode.BLACKHOLE)

    def stall(self) -> None:
        """Stop reading and forwarding; the bytes wait in buffers until the stall ends."""
        self._call(self._switch, Mode.STALL)

    def latency(self, mean_ms: float, jitter_ms: float = 0.0) -> None:
        """Delay each chunk by a uniform `mean_ms` ± `jitter_ms` each way, in order."""
        if mean_ms < 0 or jitter_ms < 0:
            raise ValueError("latency and jitter must not be negative")
        self._call(self._switch, Mode.LATENCY, latency_s=(mean_ms / 1000, jitter_ms / 1000))

    def slice(self, delay_ms: float = 0.0) -> None:
        """Forward one byte per write, waiting `delay_ms` between bytes."""
        self._call(self._switch, Mode.SLICE, slice_delay_s=delay_ms / 1000)

    def trickle(self, delay_ms: float, after: bytes = b"SUBSCRIBE") -> None:
        """On links whose client sent `after`, forward the server's bytes one at a time,
        `delay_ms` apart (a trickling pub/sub frame); everything else passes through."""
        if not after:
            raise ValueError("trickle needs the bytes that select its links")
        self._call(self._switch, Mode.TRICKLE, slice_delay_s=delay_ms / 1000, trickle_after=after)

    # -- the loop's side -------------------------------------------------------

    def _prepare(self) -> None:
        self._mode_changed = asyncio.Event()

    async def _shutdown(self) -> None:
        if self._reset_timer is not None:
            self._reset_timer.cancel()
        links = list(self._links)
        for link in links:
            self._close_link(link, rst=False)
        tasks = [task for link in self._links for task in link.tasks]
        tasks.extend(task for task in asyncio.all_tasks() if task is not asyncio.current_task())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A FIN close first flushes what the peer may never read, and the loop stops next:
        # end every socket now, or the GC finds it open later (a ResourceWarning: an error).
        for transport in self._transports:
            transport.abort()
        self._transports.clear()
        await asyncio.sleep(0)  # the aborts close their sockets on this loop iteration

    def _count_links(self) -> int:
        return len(self._links)

    def _switch(
        self,
        mode: Mode,
        *,
        latency_s: tuple[float, float] | None = None,
        slice_delay_s: float | None = None,
        trickle_after: bytes | None = None,
    ) -> None:
        if self._reset_timer is not None:
            self._reset_timer.cancel()
            self._reset_timer = None
        if latency_s is not None:
            self._latency_s = latency_s
        if slice_delay_s is not None:
            self._slice_delay_s = slice_delay_s
        if trickle_after is not None:
            self._trickle_after = trickle_after
        if self._mode is Mode.BLACKHOLE and mode is not Mode.BLACKHOLE:
            for link in [link for link in self._links if link.tainted]:
                self._close_link(link, rst=True)
        self._mode = mode
        changed = self._mode_changed
        self._mode_changed = asyncio.Event()
        if changed is not None:
            changed.set()

    def _start_reset(self, duration_s: float) -> float:
        self._switch(Mode.RESET)
        for link in list(self._links):
            self._close_link(link, rst=True)
        loop = asyncio.get_running_loop()
        self._reset_timer = loop.call_later(duration_s, self._switch, Mode.PASS_THROUGH)
        return time.monotonic() + duration_s

    async def _wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            changed = self._mode_changed
            assert changed is not None
            await changed.wait()

    def _flowing(self) -> bool:
        return self._mode is not Mode.STALL

    def _delay_s(self) -> float:
        if self._mode is not Mode.LATENCY:
            return 0.0
        mean_s, jitter_s = self._latency_s
        return max(0.0, random.uniform(mean_s - jitter_s, mean_s + jitter_s))

    def _count(self, **increments: int) -> None:
        stats = self._stats
        self._stats = replace(
            stats, **{name: getattr(stats, name) + value for name, value in increments.items()}
        )

    def _trickling(self, link: _Link) -> bool:
        return self._mode is Mode.TRICKLE and self._trickle_after in link.client_sent

    def _resetting(self) -> bool:
        return self._mode is Mode.RESET

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._count(accepted=1)
        self._transports.append(writer.transport)
        if self._resetting():
            self._abort(writer, rst=True)
            return
        _no_delay(writer)
        try:
            upstream = await self._open_upstream()
        except OSError:
            self._abort(writer, rst=True)
            return
        except asyncio.CancelledError:  # closing: asyncio leaves a cancelled handler's socket
            writer.transport.abort()
            raise
        link = _Link((reader, writer), upstream)
        self._links.add(link)
        if self._resetting():  # a reset began while we connected
            self._close_link(link, rst=True)
            return
        up: asyncio.Queue[_Chunk] = asyncio.Queue()
        down: asyncio.Queue[_Chunk] = asyncio.Queue()
        link.tasks = [
            self._spawn(self._read_side(link, reader, up, from_client=True)),
            self._spawn(self._send_side(link, upstream[1], up)),
            self._spawn(self._read_side(link, upstream[0], down)),
            self._spawn(self._send_side(link, writer, down, to_client=True)),
        ]

    @staticmethod
    def _spawn(coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(coroutine)

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if self.receive_buffer_bytes is not None:
                # Before connect(): the window advertised to the server is sized from it.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer_bytes)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, self.target_port))
            upstream = await asyncio.open_connection(sock=sock, limit=CHUNK_BYTES)
        except BaseException:
            sock.close()
            raise
        self._transports.append(upstream[1].transport)
        return upstream

    async def _read_side(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[_Chunk],
        *,
        from_client: bool = False,
    ) -> None:
        """Read one direction into its queue, stamping each chunk with its delivery time."""
        loop = asyncio.get_running_loop()
        last_s = 0.0
        try:
            while True:
                await self._wait_until(self._flowing)
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    break
                if from_client and len(link.client_sent) < _CLIENT_PREFIX_BYTES:
                    link.client_sent = (link.client_sent + data)[:_CLIENT_PREFIX_BYTES]
                if self._mode is Mode.BLACKHOLE:
                    link.tainted = True
                    self._count(dropped_bytes=len(data))
                    continue
                last_s = max(last_s, loop.time() + self._delay_s())  # never reorder
                queue.put_nowait((last_s, data))
        except OSError:
            pass  # reset by the peer: the sending side ends the link
        finally:
            queue.put_nowait(None)

    async def _send_side(
        self,
        link: _Link,
        writer: asyncio.StreamWriter,
        queue: asyncio.Queue[_Chunk],
        *,
        to_client: bool = False,
    ) -> None:
        """Write one direction's queued chunks when due; end the link after the last."""
        loop = asyncio.get_running_loop()
        try:
            while (item := await queue.get()) is not None:
                deliver_s, data = item
                if (wait_s := deliver_s - loop.time()) > 0:
                    await asyncio.sleep(wait_s)
                await self._wait_until(self._flowing)
                if self._mode is Mode.BLACKHOLE:
                    link.tainted = True
                    self._count(dropped_bytes=len(data))
                    continue
                if to_client and self._trickling(link):
                    offset = 0
                    while offset < len(data) and self._trickling(link):
                        writer.write(data[offset : offset + 1])
                        offset += 1
                        self._count(writes=1, forwarded_bytes=1)
                        await writer.drain()
                        await asyncio.sleep(self._slice_delay_s)
                    if offset < len(data):  # the trickle ended mid-chunk: the rest at once
                        writer.write(data[offset:])
                        self._count(writes=1, forwarded_bytes=len(data) - offset)
                        await writer.drain()
                elif self._mode is Mode.SLICE:
                    for offset in range(len(data)):
                        writer.write(data[offset : offset + 1])
                        self._count(writes=1, forwarded_bytes=1)
                        await writer.drain()
                        await asyncio.sleep(self._slice_delay_s)
                else:
                    writer.write(data)
                    self._count(writes=1, forwarded_bytes=len(data))
                    await writer.drain()
            # The other side closed. Its FIN is a packet too: held while black-holed or stalled.
            await self._wait_until(lambda: self._mode not in (Mode.BLACKHOLE, Mode.STALL))
        except OSError:
            pass  # the receiving side is gone
        finally:
            self._close_link(link, rst=False)

    def _close_link(self, link: _Link, *, rst: bool) -> None:
        if link.closed:
            return
        link.closed = True
        self._links.discard(link)
        self._abort(link.client_writer, rst=rst)
        self._abort(link.server_writer, rst=rst)
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current:
                task.cancel()

    def _abort(self, writer: asyncio.StreamWriter, *, rst: bool) -> None:
        """Close one socket: with RST (SO_LINGER 0, nothing flushed) or a normal FIN."""
        if writer.transport.is_closing():
            return
        if rst:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._count(resets=1)
            writer.transport.abort()
        else:
            writer.close()


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
