"""`history`: the change log, newest first, with field-level differences."""

from __future__ import annotations

import argparse

from flagsync.cli import _render
from flagsync.cli._registry import EXIT_OK, Command, arg
from flagsync.cli._shared import emit, publisher


def history(args: argparse.Namespace) -> int:
    """Who changed what, when and why (one flag, or the whole namespace)."""
    with publisher(args) as store:
        entries = store.history(args.key, limit=args.limit)
    emit(args, {"entries": entries}, lambda: _render.history(entries))
    return EXIT_OK


COMMANDS = (
    Command(
        "history",
        "the change log: who changed what, when",
        history,
        (
            arg("key", nargs="?", help="one flag (default: every change in the namespace)"),
            arg("--limit", type=int, default=20, help="newest N changes (default 20)"),
        ),
    ),
)
