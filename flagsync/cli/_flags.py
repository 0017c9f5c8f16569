"""Single-flag commands: read (`list`, `get`, `eval`) and write (`kill`, `enable`, `ramp`,
`set`, `delete`, `rollback`). A write that would change nothing says so and writes nothing."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import msgspec

from flagsync.cli import _render
from flagsync.cli._registry import EXIT_OK, Command, Handler, OneOf, arg
from flagsync.cli._shared import after_write, emit, parse_json_option, publisher
from flagsync.errors import FlagNotFoundError, InvalidFlagError

if TYPE_CHECKING:
    from flagsync.publisher import Publisher, StoredFlag


def list_flags(args: argparse.Namespace) -> int:
    """One line per flag."""
    with publisher(args) as store:
        definitions = store.definitions()
        versions = store.versions()
    emit(
        args,
        {"flags": definitions.to_builtins().get("flags", {}), "versions": versions},
        lambda: _render.flag_table(definitions, versions),
    )
    return EXIT_OK


def get(args: argparse.Namespace) -> int:
    """A flag's definition, version and last change."""
    with publisher(args) as store:
        stored = _stored(store, args.key)
        last = store.history(args.key, limit=1)
    definition = msgspec.to_builtins(stored.flag)
    emit(
        args,
        {
            "key": args.key,
            "version": stored.version,
            "definition": definition,
            "last_change": last[0] if last else None,
        },
        lambda: _render.flag_detail(
            args.key, stored.version, definition, last[0] if last else None
        ),
    )
    return EXIT_OK


def evaluate(args: argparse.Namespace) -> int:
    """Evaluate a flag for a context with the workers' engine, on the store's definitions."""
    from flagsync.client import FlagClient  # noqa: PLC0415
    from flagsync.snapshot import Snapshot  # noqa: PLC0415

    context = parse_json_option(args.context, "--context")
    if not isinstance(context, dict):
        raise InvalidFlagError.single("--context", "expected a JSON object")
    default = None if args.default is None else parse_json_option(args.default, "--default")
    with publisher(args) as store:
        definitions = store.definitions()
        epoch, revision = store.revision()
    client = FlagClient(Snapshot.build(definitions, revision=revision, epoch=epoch or ""))
    if args.key not in client.snapshot:
        raise FlagNotFoundError("flag", args.key)
    detail = client.detail(args.key, context, default)
    emit(
        args,
        {"key": args.key, "revision": revision, **msgspec.to_builtins(detail)},
        lambda: _render.evaluation(args.key, detail),
    )
    return EXIT_OK


def _stored(store: Publisher, key: str) -> StoredFlag:
    stored = store.get(key)
    if stored is None:
        raise FlagNotFoundError("flag", key)
    return stored


def _state(action: str, args: argparse.Namespace) -> str:
    """What the flag already is when a write of `action` changed nothing."""
    if action == "kill":
        return "killed"
    if action == "enable":
        return "enabled"
    if action == "set":
        return f"serving {args.default} by default"
    if action == "ramp":
        return f"serving {args.variant} at {args.percent:g}%"
    return "as asked"


def _write(store: Publisher, action: str, args: argparse.Namespace) -> int:
    reason = args.reason
    if action == "kill":
        return store.kill(args.key, reason=reason)
    if action == "enable":
        return store.enable(args.key, reason=reason)
    if action == "ramp":
        return store.ramp(args.key, args.variant, args.percent, args.rule, reason=reason)
    if action == "set":
        return store.set_default(args.key, args.default, reason=reason)
    if action == "delete":
        return store.delete(args.key, reason=reason)
    return store.rollback(args.key, to_version=args.to, steps=args.steps, reason=reason)


def _writer(action: str) -> Handler:
    """The handler of one single-flag write."""

    def handler(args: argparse.Namespace) -> int:
        with publisher(args) as store:
            revision = _write(store, action, args)
            changed = store.last_write is None or store.last_write.changed
            stored = store.get(args.key)
            summary: dict[str, Any] = {
                "action": action, "key": args.key, "changed": changed,
                "version": None if stored is None else stored.version,
            }  # fmt: skip
            if not changed:  # the publisher wrote nothing and issued no revision
                state = _state(action, args)
                return after_write(
                    args, store, revision, summary,
                    lambda: _render.no_change(args.key, state, revision),
                )  # fmt: skip
            return after_write(
                args, store, revision, summary,
                lambda: _render.write_result(
                    action, args.key, revision, stored, getattr(args, "rule", None)
                ),
            )  # fmt: skip

    return handler


_KEY = arg("key", help="the flag's key")

COMMANDS = (
    Command("list", "list the flags in the namespace", list_flags),
    Command("get", "show a flag's definition, version and last change", get, (_KEY,)),
    Command(
        "eval",
        "evaluate a flag for a context with the workers' engine (reads only)",
        evaluate,
        (
            _KEY,
            arg(
                "--context",
                default="{}",
                help='context as JSON, e.g. \'{"key":"u1","plan":"paid"}\'',
            ),
            arg("--default", default=None, help="default value as JSON"),
        ),
    ),
    Command(
        "kill",
        "the kill switch: serve every context the flag's `off` variant",
        _writer("kill"),
        (_KEY,),
        writes=True,
    ),
    Command(
        "enable",
        "undo kill: evaluate rules and default again",
        _writer("enable"),
        (_KEY,),
        writes=True,
    ),
    Command(
        "ramp",
        "set a variant's percentage; the others keep their proportions",
        _writer("ramp"),
        (
            _KEY,
            arg("variant"),
            arg("percent", type=float),
            arg("--rule", help="ramp the rollout of this rule (default: the fallthrough)"),
        ),
        writes=True,
    ),
    Command(
        "set",
        "set the fallthrough to one variant",
        _writer("set"),
        (_KEY, arg("--default", required=True, metavar="VARIANT")),
        writes=True,
    ),
    Command("delete", "delete a flag", _writer("delete"), (_KEY,), writes=True),
    Command(
        "rollback",
        "restore an earlier definition as a new revision",
        _writer("rollback"),
        (
            _KEY,
            OneOf(
                (
                    arg("--to", type=int, metavar="VERSION", help="the version to restore"),
                    arg("--steps", type=int, help="go back this many changes"),
                ),
                required=True,
            ),
        ),
        writes=True,
    ),
)
