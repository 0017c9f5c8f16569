"""The `flagsync` command: the operator's tool for applying, ramping, killing and auditing.

Safe by default (every write validated, `--dry-run` to preview, conflicts refused),
scriptable (`--json`, exit codes 0 ok / 1 failed check or conflict / 2 bad input), and
quick to start. Each command is declared once, in the topic module that handles it
(`_files`, `_flags`, `_history`, `_fleet`, `_rollout`, `_local`, `_keys`); this module builds the
parser from those declarations and runs the chosen handler inside `_boundary`, which
turns every failure into one clear line and an exit code.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence
from typing import Any

from flagsync.cli import _dashboard, _files, _flags, _fleet, _history, _keys, _local, _rollout
from flagsync.cli._registry import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Arg,
    Command,
    Entry,
    Group,
    OneOf,
)

__all__ = ["COMMANDS", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

COMMANDS: tuple[Entry, ...] = (
    *_files.COMMANDS,
    *_flags.COMMANDS,
    *_history.COMMANDS,
    *_fleet.COMMANDS,
    *_rollout.COMMANDS,
    *_local.COMMANDS,
    *_dashboard.COMMANDS,
    *_keys.COMMANDS,
)
"""Every command and command group, in the order `flagsync --help` lists them."""

_WAIT_HELP = (
    "wait until every live worker applied the change (default 5 s); exit 1 when one did "
    "not, or when no live worker reported at all (nobody confirmed it)"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "_command", None)
    if command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.namespace is None:
        args.namespace = command.namespace_default or os.environ.get(
            "FLAGSYNC_NAMESPACE", "default"
        )
    from flagsync.cli._boundary import run  # noqa: PLC0415 - keeps `--help` fast

    return run(command, args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, built from every topic's `COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="flagsync",
        description="Feature flags for LLM inference fleets, synced over Redis.",
        epilog="Exit codes: 0 ok, 1 failed check or conflict, 2 usage or validation error.",
    )
    _common_options(parser, suppress=False, namespace_help=_NAMESPACE_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, Any] = {}
    for entry in COMMANDS:
        if isinstance(entry, Group):
            group = subparsers.add_parser(entry.name, help=entry.help, description=entry.help)
            groups[entry.name] = group.add_subparsers(
                dest=f"{entry.name}_command", metavar="ACTION", required=True
            )
            continue
        *group_name, name = entry.name.split(" ")
        where = groups[group_name[0]] if group_name else subparsers
        _add_command(where, name, entry)
    return parser


_NAMESPACE_HELP = "flag namespace (default: $FLAGSYNC_NAMESPACE or 'default')"


def _add_command(subparsers: Any, name: str, command: Command) -> None:
    sub: argparse.ArgumentParser = subparsers.add_parser(
        name, help=command.help, description=command.help, epilog=command.epilog
    )
    namespace_help = (
        _NAMESPACE_HELP
        if command.namespace_default is None
        else f"namespace (default: {command.namespace_default!r}; $FLAGSYNC_NAMESPACE is "
        "not used here)"
    )
    _common_options(sub, suppress=True, namespace_help=namespace_help)
    if command.writes:
        sub.add_argument("--actor", help="who is changing flags (default: the OS user)")
        sub.add_argument("--reason", default="", help="why, recorded in the change log")
        sub.add_argument(
            "--wait", nargs="?", type=float, const=5.0, default=None, metavar="SECONDS",
            help=_WAIT_HELP,
        )  # fmt: skip
        sub.add_argument(
            "--min-replicas", type=_count, default=0, metavar="N",
            help="replicas that must acknowledge the write (WAIT); fewer within "
            "--replication-timeout exits 1, 'not confirmed' (default 0: report only)",
        )  # fmt: skip
        sub.add_argument(
            "--replication-timeout", type=_seconds, default=1.0, metavar="SECONDS",
            help="how long a write waits for its replicas to acknowledge it (default 1 s)",
        )  # fmt: skip
        sub.add_argument(
            "--failover-timeout", type=_retry_seconds, default=5.0, metavar="SECONDS",
            help="while no primary answers (a failover), retry with backoff this long "
            "before failing (default 5 s; 0: no retry)",
        )  # fmt: skip
    _add_args(sub, command.args)
    sub.set_defaults(_command=command)


def _count(text: str) -> int:
    """An integer >= 0 (argparse reports a ValueError as a usage error naming the option)."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _seconds(text: str) -> float:
    """A number of seconds in (0, 3600]."""
    value = float(text)
    if not 0 < value <= 3600:  # also refuses nan
        raise ValueError(text)
    return value


def _retry_seconds(text: str) -> float:
    """A number of seconds in [0, 3600]."""
    value = float(text)
    if not 0 <= value <= 3600:  # also refuses nan
        raise ValueError(text)
    return value


_count.__name__ = "replica count"  # argparse: "invalid replica count value: '-1'"
_seconds.__name__ = "number of seconds"
_retry_seconds.__name__ = "number of seconds"


def _add_args(parser: argparse.ArgumentParser, args: Iterable[Arg | OneOf]) -> None:
    for item in args:
        if isinstance(item, OneOf):
            group = parser.add_mutually_exclusive_group(required=item.required)
            for choice in item.args:
                group.add_argument(*choice.names, **choice.options)
        else:
            parser.add_argument(*item.names, **item.options)


def _common_options(
    parser: argparse.ArgumentParser, *, suppress: bool, namespace_help: str
) -> None:
    """Options every command takes, before or after its name (`flagsync --json list` and
    `flagsync list --json`): the copies on subcommands only set what is given."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--url",
        default=default(None),
        help=(
            "server URL, e.g. redis://user:pass@host:6379/0, "
            "redis+sentinel://host:26379[,host:port...]/SERVICE or "
            "redis+cluster://host:port[,host:port...] (default: $REDIS_URL)"
        ),
    )
    parser.add_argument("-n", "--namespace", default=default(None), help=namespace_help)
    parser.add_argument("--json", action="store_true", default=default(False), help="print JSON")
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False),
        help="log INFO to stderr (and print the traceback of an unexpected error)",
    )  # fmt: skip
