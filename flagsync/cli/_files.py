"""`apply` and `export`: a namespace as a flag file, and a flag file into a namespace."""

from __future__ import annotations

import argparse
import sys

from flagsync.cli import _render
from flagsync.cli._registry import EXIT_OK, Command, arg
from flagsync.cli._shared import after_write, emit, note, publisher
from flagsync.loader import load_flags


def apply(args: argparse.Namespace) -> int:
    """Validate the file (before connecting), show the diff, write it as one revision."""
    document = load_flags(args.file)  # an invalid file stops here, before any connection
    with publisher(args) as store:
        changes = store.diff(document, prune=args.prune)
        if args.dry_run or not changes:
            revision = store.revision()[1]
            emit(
                args,
                {"changes": changes, "revision": revision, "written": False},
                lambda: _render.apply_result(
                    changes, revision, written=False, dry_run=args.dry_run
                ),
            )
            return EXIT_OK
        revision = store.apply(
            document, prune=args.prune, reason=args.reason, complete=args.complete
        )
        return after_write(
            args,
            store,
            revision,
            {"changes": changes},
            lambda: _render.apply_result(changes, revision, written=True),
        )


def export(args: argparse.Namespace) -> int:
    """Write the namespace as a flag file (stdout by default)."""
    with publisher(args) as store:
        document = store.definitions().to_builtins()
    text = _render.document(document, args.format)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
        note(f"wrote {len(document.get('flags', {}))} flags to {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


COMMANDS = (
    Command(
        "apply",
        "validate a flag file, show the diff, apply it as one revision",
        apply,
        (
            arg("-f", "--file", required=True, help="YAML or JSON flag file"),
            arg("--dry-run", action="store_true", help="show the diff, write nothing"),
            arg("--prune", action="store_true", help="delete flags not in the file"),
            arg(
                "--complete",
                action="store_true",
                help="into a wiped namespace: the file is all there is, even if live "
                "workers still serve flags it lacks (without it, such an apply is refused)",
            ),
        ),
        writes=True,
    ),
    Command(
        "export",
        "write the namespace as a flag file that apply round-trips",
        export,
        (
            arg("-o", "--output", help="file to write (default: stdout)"),
            arg("--format", choices=("yaml", "json"), default="yaml"),
        ),
    ),
)
