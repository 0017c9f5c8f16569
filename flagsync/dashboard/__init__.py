"""The operator's dashboard (`flagsync dashboard`): flags, workers and rollouts, live.

Needs the `dashboard` extra (Starlette, uvicorn, Jinja2, sse-starlette); nothing else
in flagsync imports this package, so the library and the CLI start without them.
`create_app` is in `flagsync.dashboard.app`, the server in `flagsync.dashboard.serve`.
"""

from __future__ import annotations

from flagsync.dashboard._config import (
    DashboardConfig,
    DashboardConfigError,
    check_config,
    is_loopback,
)

__all__ = ["DashboardConfig", "DashboardConfigError", "check_config", "is_loopback"]
