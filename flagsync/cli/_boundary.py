"""Where a command meets the operator: every failure becomes one clear line and an exit code.

Handlers raise; nothing below them prints errors. Here flagsync's errors become their
message and code (2 for bad input, 1 for a failed check, a conflict or an unreachable
store), redis-py's own errors and a server that does not speak Redis become a sentence
naming the URL, a closed stdout (`flagsync history | head -1`) ends the command quietly,
and anything unexpected is one line (the traceback only with `-v`), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

import structlog

from flagsync.cli._registry import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_USAGE, Command
from flagsync.errors import (
    ConflictError,
    FlagNotFoundError,
    FlagsyncError,
    InvalidFlagError,
    StoreError,
    StoreUnavailableError,
)

_STORE_HINT = " (is the server running? set --url or REDIS_URL)"


def run(command: Command, args: argparse.Namespace) -> int:
    """Run `command`'s handler, mapping every error to a message and an exit code."""
    _configure_logging(verbose=args.verbose)
    try:
        try:
            return command.handler(args)
        finally:
            sys.stdout.flush()  # a closed pipe surfaces here, not at interpreter exit
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - the boundary: every error gets a clear line
        return _report(command, args, error)


def _report(command: Command, args: argparse.Namespace, error: Exception) -> int:
    """Print `error` for the operator; returns the exit code it maps to."""
    if isinstance(error, InvalidFlagError):
        code = _fail(args, "invalid", [str(i) for i in error.issues], EXIT_USAGE, prefix=False)
        if command.writes:  # a read-only command has nothing to reassure about
            print("nothing was changed", file=sys.stderr)
        return code
    if isinstance(error, ConflictError):
        return _fail(args, "conflict", [str(error)], EXIT_FAILED)
    if isinstance(error, FlagNotFoundError):
        line = f"{error} of namespace {args.namespace!r} (see: flagsync list)"
        return _fail(args, "not found", [line], EXIT_FAILED)
    if isinstance(error, StoreUnavailableError) and "cannot reach" in str(error):
        return _fail(args, "store", [str(error) + _STORE_HINT], EXIT_FAILED)
    if isinstance(error, StoreError):  # unreachable, refused, not a Redis server: a failed check
        return _fail(args, "store", [str(error)], EXIT_FAILED)
    if isinstance(error, FlagsyncError):
        return _fail(args, "error", [str(error)], EXIT_USAGE)
    redis_error = _redis_error_line(args, error)
    if redis_error is not None:
        return _fail(args, "store", [redis_error], EXIT_FAILED)
    if isinstance(error, RecursionError | OverflowError):
        line = f"an input is too deeply nested or a number too large to handle ({error})"
        return _fail(args, "invalid", [line], EXIT_USAGE, prefix=False)
    if args.verbose:
        traceback.print_exception(error, file=sys.stderr)
    line = f"unexpected {type(error).__name__}: {error} (rerun with -v for the traceback)"
    return _fail(args, "error", [line], EXIT_FAILED)


def _redis_error_line(args: argparse.Namespace, error: Exception) -> str | None:
    """A sentence for an error redis-py raised that flagsync did not map, else None.

    redis-py is looked up in `sys.modules`, not imported: if no command loaded it, the
    error cannot be one of its own.
    """
    redis = sys.modules.get("redis")
    if redis is None or not isinstance(error, redis.RedisError):
        return None
    from flagsync.cli._shared import display_url  # noqa: PLC0415

    where = display_url(args)
    if isinstance(error, redis.exceptions.InvalidResponse | redis.exceptions.DataError):
        return (
            f"{where} did not answer as a Redis or Valkey server ({error}): is this the "
            "server's port? (set --url or REDIS_URL)"
        )
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        return f"cannot reach {where}: {error}{_STORE_HINT}"
    return f"{where}: {type(error).__name__}: {error}"


def _fail(
    args: argparse.Namespace, kind: str, lines: list[str], code: int, *, prefix: bool = True
) -> int:
    if args.json:
        print(json.dumps({"error": kind, "messages": lines}))
    for line in lines:
        print(f"{kind}: {line}" if prefix else line, file=sys.stderr)
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _configure_logging(*, verbose: bool) -> None:
    import logging  # noqa: PLC0415

    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.INFO if verbose else logging.WARNING
        ),
    )
