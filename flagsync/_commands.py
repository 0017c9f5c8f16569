"""What each `flagsync` command does; `cli.py` only parses arguments.

Every command returns an exit code and prints either readable text or, with `--json`,
one JSON document. Errors are turned into one clear line on stderr that says what to do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from flagsync import _render
from flagsync.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from flagsync.errors import (
    ConflictError,
    FlagNotFoundError,
    FlagsyncError,
    InvalidFlagError,
    PermissionDeniedError,
    StoreUnavailableError,
)

Handler = Callable[[argparse.Namespace], int]


def run(args: argparse.Namespace) -> int:
    """Run the parsed command, mapping errors to messages and exit codes."""
    _configure_logging(verbose=args.verbose)
    handler = _HANDLERS[args.command]
    try:
        return handler(args)
    except InvalidFlagError as error:
        _fail(args, "invalid", [str(issue) for issue in error.issues])
        return EXIT_USAGE
    except ConflictError as error:
        _fail(args, "conflict", [str(error)])
        return EXIT_FAILED
    except FlagNotFoundError as error:
        _fail(args, "not found", [f"{error} of namespace {args.namespace!r} (see: flagsync list)"])
        return EXIT_FAILED
    except (StoreUnavailableError, PermissionDeniedError) as error:
        hint = " (is the server running? set --url or REDIS_URL)"
        _fail(
            args, "store", [str(error) + (hint if isinstance(error, StoreUnavailableError) else "")]
        )
        return EXIT_FAILED
    except FlagsyncError as error:
        _fail(args, "error", [str(error)])
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _publisher(args: argparse.Namespace) -> Any:
    from flagsync.publisher import Publisher  # noqa: PLC0415 - only commands that talk to Redis

    return Publisher(args.url, args.namespace, actor=getattr(args, "actor", None))


def _apply(args: argparse.Namespace) -> int:
    from flagsync.loader import load_flags  # noqa: PLC0415

    document = load_flags(args.file)  # an invalid file stops here, before any connection
    with _publisher(args) as publisher:
        changes = publisher.diff(document, prune=args.prune)
        if args.dry_run or not changes:
            revision = publisher.revision()[1]
            _emit(
                args,
                {"changes": changes, "revision": revision, "written": False},
                lambda: _render.apply_result(
                    changes, revision, written=False, dry_run=args.dry_run
                ),
            )
            return EXIT_OK
        revision = publisher.apply(document, prune=args.prune, reason=args.reason)
        return _after_write(
            args,
            publisher,
            revision,
            {"changes": changes},
            lambda: _render.apply_result(changes, revision, written=True),
        )


def _list(args: argparse.Namespace) -> int:
    with _publisher(args) as publisher:
        definitions = publisher.definitions()
        versions = publisher.versions()
    _emit(
        args,
        {"flags": definitions.to_builtins().get("flags", {}), "versions": versions},
        lambda: _render.flag_table(definitions, versions),
    )
    return EXIT_OK


def _get(args: argparse.Namespace) -> int:
    with _publisher(args) as publisher:
        stored = publisher.get(args.key)
        if stored is None:
            raise FlagNotFoundError("flag", args.key)
        last = publisher.history(args.key, limit=1)
    definition = msgspec.to_builtins(stored.flag)
    _emit(
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


def _eval(args: argparse.Namespace) -> int:
    from flagsync.client import FlagClient  # noqa: PLC0415

    context = _parse_json(args.context, "--context")
    if not isinstance(context, dict):
        raise InvalidFlagError.single("--context", "expected a JSON object")
    default = None if args.default is None else _parse_json(args.default, "--default")
    with _publisher(args) as publisher:
        definitions = publisher.definitions()
        epoch, revision = publisher.revision()
    from flagsync.snapshot import Snapshot  # noqa: PLC0415

    client = FlagClient(Snapshot.build(definitions, revision=revision, epoch=epoch or ""))
    if args.key not in client.snapshot:
        raise FlagNotFoundError("flag", args.key)
    detail = client.detail(args.key, context, default)
    _emit(
        args,
        {"key": args.key, "revision": revision, **msgspec.to_builtins(detail)},
        lambda: _render.evaluation(args.key, detail),
    )
    return EXIT_OK


def _write(action: str) -> Handler:
    """A handler for one single-flag write (kill, enable, ramp, set, delete, rollback)."""

    def handler(args: argparse.Namespace) -> int:
        with _publisher(args) as publisher:
            reason = args.reason
            if action == "kill":
                revision = publisher.kill(args.key, reason=reason)
            elif action == "enable":
                revision = publisher.enable(args.key, reason=reason)
            elif action == "ramp":
                revision = publisher.ramp(
                    args.key, args.variant, args.percent, args.rule, reason=reason
                )
            elif action == "set":
                revision = publisher.set_default(args.key, args.default, reason=reason)
            elif action == "delete":
                revision = publisher.delete(args.key, reason=reason)
            else:
                revision = publisher.rollback(
                    args.key, to_version=args.to, steps=args.steps, reason=reason
                )
            stored = publisher.get(args.key)
            summary = {
                "action": action,
                "key": args.key,
                "version": None if stored is None else stored.version,
            }
            return _after_write(
                args,
                publisher,
                revision,
                summary,
                lambda: _render.write_result(
                    action, args.key, revision, stored, getattr(args, "rule", None)
                ),
            )

    return handler


def _after_write(
    args: argparse.Namespace,
    publisher: Any,
    revision: int,
    summary: dict[str, Any],
    text: Callable[[], str],
) -> int:
    """Print a write's result; with --wait, prove it reached every live worker."""
    if args.wait is None:
        _emit(args, {**summary, "revision": revision}, text)
        return EXIT_OK
    report = publisher.wait_propagated(revision, timeout=args.wait)
    _emit(
        args,
        {**summary, "revision": revision, "propagation": report},
        lambda: text() + "\n" + _render.propagation(report),
    )
    return EXIT_OK if report.complete else EXIT_FAILED


def _history(args: argparse.Namespace) -> int:
    with _publisher(args) as publisher:
        entries = publisher.history(args.key, limit=args.limit)
    _emit(args, {"entries": entries}, lambda: _render.history(entries))
    return EXIT_OK


def _workers(args: argparse.Namespace) -> int:
    with _publisher(args) as publisher:
        workers = publisher.workers()
        revision = publisher.revision()[1]
    _emit(
        args, {"revision": revision, "workers": workers}, lambda: _render.workers(workers, revision)
    )
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    with _publisher(args) as publisher:
        document = publisher.definitions().to_builtins()
    text = _render.document(document, args.format)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
        print(f"wrote {len(document.get('flags', {}))} flags to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    import threading  # noqa: PLC0415

    from flagsync._connect import resolve_url  # noqa: PLC0415
    from flagsync.client import FlagClient  # noqa: PLC0415
    from flagsync.snapshot import Snapshot  # noqa: PLC0415

    # The first sync may swap before the listener is added, and an empty namespace never
    # swaps at all: the "synced" line is printed once, by whichever comes first (the
    # listener or `wait_ready`), and only the swaps after it count as changes.
    lock = threading.Lock()
    seen: list[int] = []
    previous: list[Snapshot] = []
    with FlagClient.connect(resolve_url(args.url), args.namespace) as client:

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


def _acl(args: argparse.Namespace) -> int:
    from flagsync.acl import acl_rules, acl_setuser_commands  # noqa: PLC0415

    lines = acl_setuser_commands(
        args.namespace, worker_user=args.worker_user, operator_user=args.operator_user
    )
    _emit(
        args,
        {"namespace": args.namespace, "rules": acl_rules(args.namespace), "commands": lines},
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


def _demo(args: argparse.Namespace) -> int:
    import logging  # noqa: PLC0415

    from flagsync.demo import DemoOptions, run_demo  # noqa: PLC0415

    if not args.verbose:  # the demo narrates its own steps; logs would interleave
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    options = DemoOptions(
        workers=args.workers,
        duration_s=6.0 if args.quick else args.duration,
        rps=args.rps,
        url=args.url,
    )
    summary = run_demo(options, out=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(summary))
    return EXIT_OK if summary["ok"] else EXIT_FAILED


def _server(args: argparse.Namespace) -> int:
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
    with ServerProcess(kind=args.kind, port=args.port) as server:
        print(f"{args.kind} running at {server.url}", flush=True)
        print(f"  export REDIS_URL={server.url}", flush=True)
        print("press Ctrl-C to stop", file=sys.stderr, flush=True)
        while not stopping.wait(1.0):
            pass
        print("stopped", file=sys.stderr)
    return EXIT_OK


def _parse_json(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidFlagError.single(option, f"invalid JSON: {error}") from None


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: Callable[[], str]) -> None:
    if args.json:
        print(msgspec.json.encode(payload).decode())
    else:
        print(text())


def _fail(args: argparse.Namespace, kind: str, lines: list[str]) -> None:
    if args.json:
        print(json.dumps({"error": kind, "messages": lines}))
    for line in lines:
        print(f"{kind}: {line}" if kind not in ("invalid",) else line, file=sys.stderr)
    if kind == "invalid":
        print("nothing was changed", file=sys.stderr)


def _configure_logging(*, verbose: bool) -> None:
    import logging  # noqa: PLC0415

    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.INFO if verbose else logging.WARNING
        ),
    )


def _rollout(args: argparse.Namespace) -> int:
    from flagsync.controller import RolloutController  # noqa: PLC0415

    with _publisher(args) as publisher:
        controller = RolloutController(publisher, args.key)
        if args.rollout_command == "plan":
            plan = _plan_from_args(args)
            controller.set_plan(plan)
            _emit(args, {"key": args.key, "plan": plan}, lambda: _render.plan(args.key, plan))
            return EXIT_OK
        if args.rollout_command == "run":
            final = controller.run(
                tick_s=args.tick,
                timeout_s=args.timeout,
                on_decision=lambda decision: _emit(
                    args, {"decision": decision}, lambda: _render.decision(decision)
                ),
            )
            return (
                EXIT_OK
                if final.decision in ("complete", "hold", "advance", "start")
                else EXIT_FAILED
            )
        plan, state = controller.plan(), controller.state()
        window_start = max(state.step_started_ms, int(time.time() * 1000 - plan.window_s * 1000))
        from flagsync.guards import evaluate_guard, parse_guard  # noqa: PLC0415

        window = controller.window(window_start)
        guards = [evaluate_guard(parse_guard(g), window, plan.min_samples) for g in plan.guards]
        decisions = controller.decisions(10)
        _emit(
            args,
            {
                "key": args.key,
                "plan": plan,
                "state": state,
                "guards": guards,
                "decisions": decisions,
            },
            lambda: _render.rollout_status(args.key, plan, state, guards, decisions),
        )
        return EXIT_OK


def _controller(args: argparse.Namespace) -> int:
    from flagsync.controller import RolloutController  # noqa: PLC0415

    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with _publisher(args) as publisher:
        finished: set[str] = set()
        # One controller (one lease owner) per flag for the whole run: a new owner every
        # tick would find the lease its predecessor took and wait out its TTL each time.
        controllers: dict[str, RolloutController] = {}
        while deadline is None or time.monotonic() < deadline:
            keys = [
                key.decode() for key in publisher.client.hkeys(f"{publisher.keys.prefix}:plans")
            ]
            for key in keys:
                controller = controllers.get(key)
                if controller is None:
                    controller = controllers[key] = RolloutController(publisher, key)
                try:
                    decision = controller.tick()
                except FlagsyncError as error:  # one broken plan must not stop the others
                    print(f"{key}: error: {error}", file=sys.stderr, flush=True)
                    continue
                if decision.decision not in ("hold", "not_leader", "stopped") or (
                    decision.decision == "stopped" and key not in finished
                ):
                    print(f"{key}: {_render.decision(decision)}", flush=True)
                if decision.decision == "stopped":
                    finished.add(key)
            time.sleep(args.tick)
    return EXIT_OK


def _plan_from_args(args: argparse.Namespace) -> Any:
    from flagsync.controller import RolloutPlan  # noqa: PLC0415
    from flagsync.loader import read_file  # noqa: PLC0415

    if args.file:
        from pathlib import Path  # noqa: PLC0415

        raw = read_file(Path(args.file))
        try:
            return msgspec.convert(raw, RolloutPlan)
        except msgspec.ValidationError as error:
            raise InvalidFlagError.single(f"plans.{args.key}", str(error)) from None
    missing = [name for name in ("variant", "control", "steps") if not getattr(args, name)]
    if missing or not args.guard:
        raise InvalidFlagError.single(
            f"plans.{args.key}",
            "give -f PLAN or --variant, --control, --steps and at least one --guard",
        )
    try:
        steps = [float(step) for step in args.steps.split(",")]
    except ValueError:
        raise InvalidFlagError.single("--steps", "comma-separated percentages") from None
    return RolloutPlan(
        variant=args.variant,
        control=args.control,
        rule=args.rule,
        steps=steps,
        hold_s=args.hold,
        window_s=args.window,
        min_samples=args.min_samples,
        guards=args.guard,
        on_breach=args.on_breach,
    )


_HANDLERS: dict[str, Handler] = {
    "apply": _apply,
    "list": _list,
    "get": _get,
    "eval": _eval,
    "kill": _write("kill"),
    "enable": _write("enable"),
    "ramp": _write("ramp"),
    "set": _write("set"),
    "delete": _write("delete"),
    "rollback": _write("rollback"),
    "history": _history,
    "workers": _workers,
    "export": _export,
    "watch": _watch,
    "server": _server,
    "demo": _demo,
    "acl": _acl,
    "rollout": _rollout,
    "controller": _controller,
}
