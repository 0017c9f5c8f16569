"""A TCP server on 127.0.0.1 that answers like an HTTP server: "a port where something other
than Redis answers", for the library's and the CLI's store-error tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class NotRedis:
    """Answers every connection with an HTTP 400, until `close()`."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="not-redis", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(1.0)
                try:
                    connection.recv(4096)
                    connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        """Stop answering and close the port."""
        self.stop.set()
        self.thread.join(5.0)
        self.listener.close()


@contextmanager
def not_redis_server() -> Iterator[NotRedis]:
    """A `NotRedis` for the duration of the block."""
    server = NotRedis()
    try:
        yield server
    finally:
        server.close()
