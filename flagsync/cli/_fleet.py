"""The fleet: `watch` (what a subscriber sees), `workers` (who applied what), `acl`."""

from __future__ import annotations

import argparse
import json
import time

from flagsync.cli import _render
from flagsync.cli._registry import EXIT_OK, Command, arg
from flagsync.cli._shared import emit, publisher, server_url
from flagsync.errors import StoreUnavailableError


def watch(args: argparse.Namespace) -> int:
    """Print a line when the namespace changes, as a connected worker sees it."""
    import threading  # noqa: PLC0415

    from flagsync.client import FlagClient  # noqa: PLC0415
    from flagsync.snapshot import Snapshot  # noqa: PLC0415

    # The first sync may swap before the listener is added, and an empty namespace never
    # swaps at all: the "synced" line is printed once, by whichever comes first (the
    # listener or `wait_ready`), and only the swaps after it count as changes.
    lock = threading.Lock()
    seen: list[int] = []
    previous: list[Snapshot] = []
    with FlagClient.connect(server_url(args), args.namespace) as client:

        def synced(current: Snapshot) -> None:
            previous[:] = [current]
            line = f"r{current.revision}: synced {len(current)} flags"
            payload = {"revision": current.revision, "synced": len(current)}
            print(json.dumps(payload) if args.json else line, flush=True)

        def on_swap(revision: int, keys: frozenset[str]) -> None:
            with lock:
                current = client.snapshot
                if not previous:
                    synced(current)
                    return
                before, previous[:] = previous[-1], [current]
                line = _render.snapshot_change(before, current, keys)
                payload = {"revision": revision, "keys": sorted(keys)}
                print(json.dumps(payload) if args.json else line, flush=True)
                seen.append(revision)

        client.add_listener(on_swap)
        if not client.wait_ready(10):
            raise StoreUnavailableError(f"no sync within 10 s: {client.status().last_error}")
        with lock:
            if not previous:
                synced(client.snapshot)
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        while (args.count is None or len(seen) < args.count) and (
            deadline is None or time.monotonic() < deadline
        ):
            time.sleep(0.05)
    return EXIT_OK


def workers(args: argparse.Namespace) -> int:
    """Live workers, their applied revision and lag."""
    with publisher(args) as store:
        items = store.workers()
        revision = store.revision()[1]
    emit(args, {"revision": revision, "workers": items}, lambda: _render.workers(items, revision))
    return EXIT_OK


def acl(args: argparse.Namespace) -> int:
    """Least-privilege ACL users for the namespace (printed, never applied)."""
    from flagsync.acl import acl_rules, acl_setuser_commands  # noqa: PLC0415

    lines = acl_setuser_commands(
        args.namespace,
        worker_user=args.worker_user,
        operator_user=args.operator_user,
        worker_ids=args.worker_id,
    )
    per_worker = {
        worker_id: acl_rules(args.namespace, worker_id)["worker"] for worker_id in args.worker_id
    }
    emit(
        args,
        {
            "namespace": args.namespace,
            "rules": acl_rules(args.namespace),
            "worker_rules": per_worker,
            "commands": lines,
        },
        lambda: "\n".join(
            [
                f"# least-privilege users for namespace {args.namespace!r} (Redis >= 7, Valkey)",
                "# replace the placeholder passwords, then disable the default user:",
                *lines,
                "ACL SETUSER default off",
            ]
        ),
    )
    return EXIT_OK


COMMANDS = (
    Command(
        "watch",
        "tail changes as a subscriber sees them",
        watch,
        (
            arg("--count", type=int, help="stop after this many changes"),
            arg("--timeout", type=float, help="stop after this many seconds"),
        ),
    ),
    Command("workers", "live workers, their applied revision and lag", workers),
    Command(
        "acl",
        "print least-privilege ACL users for the namespace (worker, operator)",
        acl,
        (
            arg("--worker-user", default="flagsync-worker"),
            arg("--operator-user", default="flagsync-operator"),
            arg(
                "--worker-id",
                action="append",
                default=[],
                metavar="ID",
                help="one worker user per id, writing only that worker's own keys "
                "(connect it with worker_id=ID); repeatable",
            ),
        ),
    ),
)
