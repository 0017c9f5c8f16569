"""`flagsync dashboard`: the operator's web page (flags, workers, rollouts), live.

The handler imports the web stack only when it runs, so `flagsync --help` and every
other command start without Starlette, uvicorn or Jinja2 installed.
"""

from __future__ import annotations

import argparse
import os

from flagsync.cli._registry import EXIT_OK, Command, arg
from flagsync.cli._shared import UsageError, check_url, display_url, note

_EXTRA = "the dashboard needs its extra: pip install 'flagsync[dashboard]'"


def dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard until Ctrl-C; an embedded server when no URL is given."""
    from contextlib import ExitStack  # noqa: PLC0415

    from flagsync.dashboard._config import (  # noqa: PLC0415
        SIGNING_KEY_ENV,
        DashboardConfig,
        DashboardConfigError,
        check_config,
        token_from_environment,
    )

    url = args.url or os.environ.get("REDIS_URL")
    if url:
        check_url(url, "--url" if args.url else "REDIS_URL")
    config = DashboardConfig(
        url=url or "redis://127.0.0.1:0",
        namespace=args.namespace,
        host=args.host,
        port=args.port,
        token=token_from_environment(args.token),
        actor=args.actor,
        read_only="started with --read-only" if args.read_only else None,
        signing_key=args.signing_key or os.environ.get(SIGNING_KEY_ENV) or None,
    )
    try:
        check_config(config)  # refuse before starting anything
        from flagsync.dashboard.serve import serve_forever  # noqa: PLC0415
    except DashboardConfigError as error:
        raise UsageError(str(error)) from None
    except ImportError:
        raise UsageError(_EXTRA) from None
    with ExitStack() as stack:
        if not url:
            from dataclasses import replace  # noqa: PLC0415

            from flagsync.server import ServerProcess  # noqa: PLC0415

            server = stack.enter_context(ServerProcess())
            config = replace(config, url=server.url)
            note(
                f"server: embedded Valkey at {server.url} (set REDIS_URL or --url to use your own)"
            )
        else:
            note(f"server: {display_url(args)}")
        access = "token required" if config.token else "no token: this machine only"
        note(f"dashboard: http://{args.host}:{args.port}/ (namespace {args.namespace!r}; {access})")
        serve_forever(config)
    return EXIT_OK


COMMANDS = (
    Command(
        "dashboard",
        "serve the operator's dashboard: flags, workers and rollouts, live in a browser",
        dashboard,
        (
            arg("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"),
            arg("--port", type=int, default=8600, help="port (default 8600)"),
            arg(
                "--token",
                default=None,
                help="required unless --host is loopback: TOKEN or NAME:TOKEN (NAME is "
                "recorded as the operator); default $FLAGSYNC_DASHBOARD_TOKEN",
            ),
            arg("--actor", help="the operator's name in the change log (default: the OS user)"),
            arg("--read-only", action="store_true", help="refuse every write"),
            arg(
                "--signing-key",
                default=None,
                help="the operator's Ed25519 key file: sign every write (signed mode); "
                "default $FLAGSYNC_SIGNING_KEY. Without one a signed store is read-only",
            ),
        ),
        epilog="Without --url or REDIS_URL it starts an embedded server, like `flagsync demo`.",
    ),
)
