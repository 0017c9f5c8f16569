"""Running the dashboard: in the foreground (`flagsync dashboard`) or in a thread
(`flagsync demo --dashboard`, the tests), always after `check_config`."""

from __future__ import annotations

import threading
import time
from types import TracebackType

import uvicorn

from flagsync.dashboard._config import DashboardConfig, DashboardConfigError, check_config
from flagsync.dashboard.app import create_app

__all__ = ["DashboardServer", "serve_forever"]

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - names, not binds


def _server(config: DashboardConfig) -> uvicorn.Server:
    check_config(config)  # before anything binds
    app = create_app(config)
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
    )


def serve_forever(config: DashboardConfig) -> None:
    """Serve until Ctrl-C / SIGTERM (uvicorn's signal handling)."""
    _server(config).run()


class DashboardServer:
    """The dashboard on a background thread; `start()` returns once it accepts requests."""

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self._server = _server(config)
        self._thread = threading.Thread(
            target=self._server.run, name="flagsync-dashboard", daemon=True
        )

    @property
    def url(self) -> str:
        """`http://host:port` of the running dashboard; listening on every address
        (`0.0.0.0`, `::`), it is reached on this machine's loopback."""
        host = _WILDCARDS.get(self.config.host, self.config.host)
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.config.port}"

    def start(self, timeout_s: float = 10.0) -> DashboardServer:
        """Start serving; `DashboardConfigError` when it did not come up in time."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise DashboardConfigError(
                    f"the dashboard did not start on {self.url} (port in use?)"
                )
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving (open event streams are closed) and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
