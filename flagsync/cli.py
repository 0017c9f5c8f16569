"""The `flagsync` command: the operator's tool for applying, ramping, killing and auditing.

Safe by default (every write validated, `--dry-run` to preview, conflicts refused),
scriptable (`--json`, exit codes 0 ok / 1 failed check or conflict / 2 bad input), and
quick to start: this module imports only argparse; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_WRITE_HELP = "wait until every live worker applied the change (default 5 s)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    from flagsync._commands import run  # noqa: PLC0415 - keeps `--help` fast

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every command, with its help)."""
    common = _common_options(argparse.ArgumentParser(add_help=False), suppress=True)
    writes = argparse.ArgumentParser(add_help=False)
    writes.add_argument("--actor", help="who is changing flags (default: the OS user)")
    writes.add_argument("--reason", default="", help="why, recorded in the change log")
    writes.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=5.0,
        default=None,
        metavar="SECONDS",
        help=_WRITE_HELP,
    )

    parser = argparse.ArgumentParser(
        prog="flagsync",
        description="Feature flags for LLM inference fleets, synced over Redis.",
        epilog="Exit codes: 0 ok, 1 failed check or conflict, 2 usage or validation error.",
    )
    _common_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(
        name: str, help_text: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=help_text, description=help_text, parents=[common, *parents]
        )

    _add_file_commands(command, writes)
    _add_flag_commands(command, writes)
    _add_fleet_commands(command)
    _add_rollout_commands(commands, common, writes)
    return parser


def _add_rollout_commands(
    commands: Any, common: argparse.ArgumentParser, writes: argparse.ArgumentParser
) -> None:
    rollout = commands.add_parser(
        "rollout", help="guarded rollouts: plan, run, status", description="guarded rollouts"
    )
    steps = rollout.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)
    plan = steps.add_parser(
        "plan", help="set a flag's rollout plan (steps, hold, window, guards)",
        parents=[common, writes],
    )  # fmt: skip
    plan.add_argument("key")
    plan.add_argument("-f", "--file", help="a YAML/JSON plan (fields as the options below)")
    plan.add_argument("--variant", help="the variant to ramp, e.g. candidate")
    plan.add_argument("--control", help="the variant to compare with, e.g. current")
    plan.add_argument("--rule", help="ramp this rule's rollout (default: the fallthrough)")
    plan.add_argument("--steps", help="percentages, e.g. 5,20,50,100")
    plan.add_argument("--hold", type=float, default=60.0, help="seconds each step must hold")
    plan.add_argument("--window", type=float, default=60.0, help="metrics window, seconds")
    plan.add_argument("--min-samples", type=int, default=200, help="per variant and guard")
    plan.add_argument("--guard", action="append", default=[], help="repeatable")
    plan.add_argument("--on-breach", choices=("kill", "revert"), default="kill")
    run = steps.add_parser(
        "run", help="drive the rollout until it completes or rolls back", parents=[common, writes]
    )
    run.add_argument("key")
    run.add_argument("--tick", type=float, default=1.0, help="seconds between decisions")
    run.add_argument("--timeout", type=float, help="stop after this many seconds")
    status = steps.add_parser(
        "status", help="current step, guard values with samples, decisions", parents=[common]
    )
    status.add_argument("key")
    controller = commands.add_parser(
        "controller",
        help="run every flag's rollout plan (one lease per flag)",
        description="run every flag's rollout plan (one lease per flag)",
        parents=[common, writes],
    )
    controller.add_argument("--tick", type=float, default=1.0)
    controller.add_argument("--timeout", type=float, help="stop after this many seconds")


_Command = Callable[..., argparse.ArgumentParser]


def _common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (`flagsync --json list` and
    `flagsync list --json`): the copies on subcommands only set what is given."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--url",
        default=default(os.environ.get("REDIS_URL")),
        help="server URL, e.g. redis://user:pass@host:6379/0 (default: $REDIS_URL)",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default=default(os.environ.get("FLAGSYNC_NAMESPACE", "default")),
        help="flag namespace (default: $FLAGSYNC_NAMESPACE or 'default')",
    )
    parser.add_argument("--json", action="store_true", default=default(False), help="print JSON")
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="log INFO to stderr"
    )
    return parser


def _add_file_commands(command: _Command, writes: argparse.ArgumentParser) -> None:
    apply = command(
        "apply", "validate a flag file, show the diff, apply it as one revision", writes
    )
    apply.add_argument("-f", "--file", required=True, help="YAML or JSON flag file")
    apply.add_argument("--dry-run", action="store_true", help="show the diff, write nothing")
    apply.add_argument("--prune", action="store_true", help="delete flags not in the file")
    export = command("export", "write the namespace as a flag file that apply round-trips")
    export.add_argument("-o", "--output", help="file to write (default: stdout)")
    export.add_argument("--format", choices=("yaml", "json"), default="yaml")


def _add_flag_commands(command: _Command, writes: argparse.ArgumentParser) -> None:
    command("list", "list the flags in the namespace")
    command("get", "show a flag's definition, version and last change").add_argument("key")
    evaluate = command("eval", "evaluate a flag for a context with the workers' engine")
    evaluate.add_argument("key")
    evaluate.add_argument(
        "--context", default="{}", help='context as JSON, e.g. \'{"key":"u1","plan":"paid"}\''
    )
    evaluate.add_argument("--default", default=None, help="default value as JSON")
    command(
        "kill", "the kill switch: serve every context the flag's `off` variant", writes
    ).add_argument("key")
    command("enable", "undo kill: evaluate rules and default again", writes).add_argument("key")
    ramp = command("ramp", "set a variant's percentage; the others keep their proportions", writes)
    ramp.add_argument("key")
    ramp.add_argument("variant")
    ramp.add_argument("percent", type=float)
    ramp.add_argument("--rule", help="ramp the rollout of this rule (default: the fallthrough)")
    set_default = command("set", "set the fallthrough to one variant", writes)
    set_default.add_argument("key")
    set_default.add_argument("--default", required=True, metavar="VARIANT")
    command("delete", "delete a flag", writes).add_argument("key")
    history = command("history", "the change log: who changed what, when")
    history.add_argument("key", nargs="?")
    history.add_argument("--limit", type=int, default=20)
    rollback = command("rollback", "restore an earlier definition as a new revision", writes)
    rollback.add_argument("key")
    target = rollback.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", type=int, metavar="VERSION", help="the version to restore")
    target.add_argument("--steps", type=int, help="go back this many changes")


def _add_fleet_commands(command: _Command) -> None:
    watch = command("watch", "tail changes as a subscriber sees them")
    watch.add_argument("--count", type=int, help="stop after this many changes")
    watch.add_argument("--timeout", type=float, help="stop after this many seconds")
    command("workers", "live workers, their applied revision and lag")
    acl = command("acl", "print least-privilege ACL users for the namespace (worker, operator)")
    acl.add_argument("--worker-user", default="flagsync-worker")
    acl.add_argument("--operator-user", default="flagsync-operator")
    demo = command("demo", "the whole story: workers, a ramp, a regression, the kill switch")
    demo.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    demo.add_argument("--duration", type=float, default=24.0, help="seconds of traffic")
    demo.add_argument("--rps", type=float, default=300.0, help="requests/s per worker")
    demo.add_argument("--quick", action="store_true", help="a short run (about 10 s)")
    server = command("server", "run a local server for development and print its URL")
    server.add_argument("--port", type=int, help="port (default: a free one)")
    server.add_argument("--kind", choices=("valkey", "redis"), default="valkey")


if __name__ == "__main__":
    sys.exit(main())
