"""Guarded rollouts: `rollout plan|run|status|pause|resume|abort` for one flag,
`controller` for all.

The decisions are made in `flagsync.controller` (the loop included); these handlers only
read the options, print the decisions and map the outcome to an exit code.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from flagsync.cli import _render
from flagsync.cli._registry import EXIT_FAILED, EXIT_OK, Command, Group, arg
from flagsync.cli._shared import emit, note, publisher
from flagsync.errors import FlagsyncError, InvalidFlagError

if TYPE_CHECKING:
    from flagsync.controller import Decision, RolloutPlan


def plan(args: argparse.Namespace) -> int:
    """Store a flag's rollout plan (from -f or the options) and start it afresh."""
    from flagsync.controller import RolloutController  # noqa: PLC0415

    rollout_plan = _plan_from_args(args)
    with publisher(args) as store:
        RolloutController(store, args.key).set_plan(rollout_plan)
    emit(
        args, {"key": args.key, "plan": rollout_plan}, lambda: _render.plan(args.key, rollout_plan)
    )
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Drive one flag's rollout until it completes, rolls back, stops or times out."""
    from flagsync.controller import RolloutController  # noqa: PLC0415

    with publisher(args) as store:
        final = RolloutController(store, args.key).run(
            tick_s=args.tick,
            timeout_s=args.timeout,
            on_decision=lambda made: emit(args, {"decision": made}, lambda: _render.decision(made)),
        )
    return EXIT_OK if final.decision in ("complete", "hold", "advance", "start") else EXIT_FAILED


def status(args: argparse.Namespace) -> int:
    """Where a flag's rollout stands, its guards on the current step, its decisions."""
    from flagsync.controller import RolloutController  # noqa: PLC0415

    with publisher(args) as store:
        report = RolloutController(store, args.key).status()
    emit(
        args,
        msgspec.to_builtins(report),
        lambda: _render.rollout_status(report),
    )
    return EXIT_OK


def pause(args: argparse.Namespace) -> int:
    """Hold a running rollout at its step (a running controller honours it at once)."""
    from flagsync.controller import RolloutController  # noqa: PLC0415

    with publisher(args) as store:
        outcome = RolloutController(store, args.key).pause(args.reason or "")
    emit(
        args,
        msgspec.to_builtins(outcome),
        lambda: (
            f"{args.key}: rollout paused by {outcome.actor}; resume with: "
            f"flagsync rollout resume {args.key}"
        ),
    )
    return EXIT_OK


def resume(args: argparse.Namespace) -> int:
    """Resume a paused rollout (by `pause` or a human's change), from the flag as it is."""
    from flagsync.controller import RolloutController  # noqa: PLC0415

    with publisher(args) as store:
        state = RolloutController(store, args.key).resume(args.reason or "")
    emit(
        args,
        {"key": args.key, "state": state},
        lambda: f"{args.key}: rollout resumed from the flag as it is now",
    )
    return EXIT_OK


def abort(args: argparse.Namespace) -> int:
    """Stop a rollout for good and serve its variant to nobody in the plan's rule."""
    from flagsync.controller import RolloutController  # noqa: PLC0415

    with publisher(args) as store:
        outcome = RolloutController(store, args.key).abort(args.reason or "")
    ramp = f"ramped to 0% at revision {outcome.revision}" if outcome.changed else "already at 0%"
    emit(
        args,
        msgspec.to_builtins(outcome),
        lambda: f"{args.key}: rollout aborted by {outcome.actor}; variant {ramp}",
    )
    return EXIT_OK


def controller(args: argparse.Namespace) -> int:
    """Run every flag's rollout plan, printing each decision that changes something."""
    from flagsync.controller import run_all  # noqa: PLC0415

    def decided(key: str, made: Decision) -> None:
        emit(args, {"key": key, "decision": made}, lambda: f"{key}: {_render.decision(made)}")

    def failed(key: str, error: FlagsyncError) -> None:
        note(f"{key}: error: {error}")

    with publisher(args) as store:
        run_all(
            store, tick_s=args.tick, timeout_s=args.timeout, on_decision=decided, on_error=failed
        )
    return EXIT_OK


def _plan_from_args(args: argparse.Namespace) -> RolloutPlan:
    from flagsync.controller import RolloutPlan  # noqa: PLC0415
    from flagsync.loader import read_file  # noqa: PLC0415

    if args.file:
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
        max_source_share=args.max_source_share,
    )


_KEY = arg("key", help="the flag's key")
_TIMEOUT = arg("--timeout", type=float, help="stop after this many seconds")
_PLAN_ARGS: tuple[Any, ...] = (
    _KEY,
    arg("-f", "--file", help="a YAML/JSON plan (fields as the options below)"),
    arg("--variant", help="the variant to ramp, e.g. candidate"),
    arg("--control", help="the variant to compare with, e.g. current"),
    arg("--rule", help="ramp this rule's rollout (default: the fallthrough)"),
    arg("--steps", help="percentages, e.g. 5,20,50,100"),
    arg("--hold", type=float, default=60.0, help="seconds each step must hold"),
    arg("--window", type=float, default=60.0, help="metrics window, seconds"),
    arg("--min-samples", type=int, default=200, help="per variant and guard"),
    arg("--guard", action="append", default=[], help="repeatable"),
    arg("--on-breach", choices=("kill", "revert"), default="kill"),
    arg(
        "--max-source-share",
        type=float,
        default=1.0,
        help="never advance while one worker's metrics supply more than this share (0-1]",
    ),
)

COMMANDS = (
    Group("rollout", "guarded rollouts: plan, run, status, pause, resume, abort"),
    Command(
        "rollout plan",
        "set a flag's rollout plan (steps, hold, window, guards)",
        plan,
        _PLAN_ARGS,
        writes=True,
    ),
    Command(
        "rollout run",
        "drive the rollout until it completes or rolls back",
        run,
        (_KEY, arg("--tick", type=float, default=1.0, help="seconds between decisions"), _TIMEOUT),
        writes=True,
    ),
    Command(
        "rollout status",
        "current step, guard values with samples since the step began, this plan's decisions",
        status,
        (_KEY,),
    ),
    Command(
        "rollout pause",
        "hold a running rollout at its step; recorded in the change log",
        pause,
        (_KEY,),
        writes=True,
    ),
    Command(
        "rollout resume",
        "resume a paused rollout from the flag as it is (a change made by hand stands)",
        resume,
        (_KEY,),
        writes=True,
    ),
    Command(
        "rollout abort",
        "stop a rollout for good and ramp its variant to 0 percent in the plan's rule",
        abort,
        (_KEY,),
        writes=True,
    ),
    Command(
        "controller",
        "run every flag's rollout plan (one lease per flag)",
        controller,
        (arg("--tick", type=float, default=1.0, help="seconds between decisions"), _TIMEOUT),
        writes=True,
    ),
)
