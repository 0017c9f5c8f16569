"""Commands for a machine with nothing set up: `server` (a local server) and `demo`."""

from __future__ import annotations

import argparse
import json
import sys

from flagsync.cli._registry import EXIT_FAILED, EXIT_OK, Command, arg
from flagsync.cli._shared import check_url, note


def server(args: argparse.Namespace) -> int:
    """Run a local server until Ctrl-C / SIGTERM / SIGHUP; print its URL."""
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from flagsync.server import ServerProcess  # noqa: PLC0415

    stopping = threading.Event()
    # Ctrl-C, `kill`, a closed terminal or a supervisor all stop the server cleanly (the
    # child server stopped, its directory removed, exit 0). SIGINT is set explicitly: a
    # shell that starts us in the background makes it "ignored", and Python then never
    # raises KeyboardInterrupt. A flag, not an exception: a signal that lands while the
    # server starts must not escape the `with` that stops it.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stopping.set())
    with ServerProcess(kind=args.kind, port=args.port) as running:
        print(f"{args.kind} running at {running.url}", flush=True)
        print(f"  export REDIS_URL={running.url}", flush=True)
        note("press Ctrl-C to stop")
        while not stopping.wait(1.0):
            pass
        note("stopped")
    return EXIT_OK


def demo(args: argparse.Namespace) -> int:
    """The whole story on this machine; exit 1 when the kill did not stop the candidate."""
    import logging  # noqa: PLC0415
    import os  # noqa: PLC0415

    import structlog  # noqa: PLC0415

    from flagsync.demo import DemoOptions, run_demo  # noqa: PLC0415

    if not args.verbose:  # the demo narrates its own steps; logs would interleave
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    url = args.url or os.environ.get("REDIS_URL")
    if url:
        check_url(url, "--url" if args.url else "REDIS_URL")
    options = DemoOptions(
        workers=args.workers,
        duration_s=6.0 if args.quick else args.duration,
        rps=args.rps,
        url=url,
        namespace=args.namespace,
        dashboard_port=args.dashboard,
    )
    summary = run_demo(options, out=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(summary))
    return EXIT_OK if summary["ok"] else EXIT_FAILED


COMMANDS = (
    Command(
        "server",
        "run a local server for development and print its URL",
        server,
        (
            arg(
                "--port",
                type=int,
                help="port (default: a free one; e.g. --port 6379 for redis://127.0.0.1:6379)",
            ),
            arg("--kind", choices=("valkey", "redis"), default="valkey"),
        ),
    ),
    Command(
        "demo",
        "the whole story: workers, a ramp, a regression, the kill switch",
        demo,
        (
            arg("--workers", type=int, default=4, help="worker processes (default 4)"),
            arg("--duration", type=float, default=24.0, help="seconds of traffic"),
            arg("--rps", type=float, default=300.0, help="requests/s per worker"),
            arg("--quick", action="store_true", help="a short run (about 10 s)"),
            arg(
                "--dashboard",
                nargs="?",
                type=int,
                const=8600,
                default=None,
                metavar="PORT",
                help="serve the dashboard on 127.0.0.1:PORT (default 8600) during the demo",
            ),
        ),
        namespace_default="demo",
        epilog="The demo replaces the flags of its namespace with its own (default: demo).",
    ),
)
