"""What the handlers share: the server URL, the publisher, printing results, JSON options.

Only the standard library and msgspec are imported here at import time; the publisher
(and with it redis-py) is imported by the handlers that talk to the store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec

from flagsync.cli._registry import EXIT_FAILED, EXIT_OK
from flagsync.errors import FlagsyncError, InvalidFlagError, StoreURLError

if TYPE_CHECKING:
    from flagsync.publisher import Publisher

_NO_URL: Final = (
    "no server URL: pass --url redis://HOST:PORT or set REDIS_URL "
    "(`flagsync server` starts a local server and prints its URL)"
)


class UsageError(FlagsyncError):
    """The command line itself is wrong (exit 2): a missing or malformed URL, ..."""


def server_url(args: argparse.Namespace) -> str:
    """The URL from --url or REDIS_URL, checked by the library's URL rule: a clear usage
    error when it is missing or is not a Redis URL (an http:// URL, a bare host:port, a
    non-numeric port)."""
    url: str | None = args.url or os.environ.get("REDIS_URL")
    if not url:
        raise UsageError(_NO_URL)
    check_url(url, "--url" if args.url else "REDIS_URL")
    return url


def check_url(url: str, source: str) -> None:
    """`flagsync._connection.check_url`, its message prefixed with where the URL came from."""
    from flagsync._connection import check_url as check_store_url  # noqa: PLC0415 - loads redis

    try:
        check_store_url(url)
    except StoreURLError as error:
        raise UsageError(f"{source} {error}") from None


def display_url(args: argparse.Namespace) -> str:
    """The URL in use, with any password replaced by `***`, for messages."""
    return _redacted(args.url or os.environ.get("REDIS_URL") or "")


def _redacted(url: str) -> str:
    from flagsync._connection import redact_url  # noqa: PLC0415

    try:
        return redact_url(url)
    except ValueError:  # a URL too broken to parse: show only what cannot hold a secret
        return url.rsplit("@", 1)[-1]


def publisher(args: argparse.Namespace) -> Publisher:
    """A publisher on the command's URL and namespace, as `--actor` (or the OS user)."""
    url = server_url(args)
    from flagsync.publisher import Publisher  # noqa: PLC0415 - only commands that talk to Redis

    try:
        return Publisher(
            url,
            args.namespace,
            actor=getattr(args, "actor", None),
            min_replicas=getattr(args, "min_replicas", 0),
            replication_timeout_s=getattr(args, "replication_timeout", 1.0),
            failover_timeout_s=getattr(args, "failover_timeout", 5.0),
        )
    except ValueError as error:  # redis-py's URL parsing (e.g. a database that is not a number)
        raise UsageError(
            f"{'--url' if args.url else 'REDIS_URL'} {display_url(args)!r}: {error}"
        ) from None


def emit(args: argparse.Namespace, payload: dict[str, Any], text: Callable[[], str]) -> None:
    """Print one JSON document with --json, else the readable text."""
    if args.json:
        print(msgspec.json.encode(payload).decode())
    else:
        print(text())


def after_write(
    args: argparse.Namespace,
    publisher: Publisher,
    revision: int,
    summary: dict[str, Any],
    text: Callable[[], str],
) -> int:
    """Print a write's result; with --wait, prove it reached every live worker.

    `--wait` with no live worker at all exits 1 with a line saying so: the operator asked
    for a confirmation and nobody could give one. A write on a primary with replicas says
    how many acknowledged it (`replicated to 2/2 replicas`); without replicas, nothing.
    """
    written = publisher.last_write
    replication = None if written is None else written.replication
    if replication is not None and replication.replicas == 0 and replication.acked == 0:
        replication = None  # no replicas: nothing to report
    if replication is not None:
        summary = {**summary, "replication": replication}
    if args.wait is None:
        shown = text if replication is None else lambda: f"{text()}\n{replication}"
        emit(args, {**summary, "revision": revision}, shown)
        return EXIT_OK
    from flagsync.cli import _render  # noqa: PLC0415

    report = publisher.wait_propagated(revision, timeout=args.wait)
    replicated = "" if replication is None else f"{replication}, "
    emit(
        args,
        {**summary, "revision": revision, "propagation": report},
        lambda: text() + "\n" + replicated + _render.propagation(report),
    )
    confirmed = report.complete and bool(report.reached)
    return EXIT_OK if confirmed else EXIT_FAILED


MAX_OPTION_DEPTH: Final = 32
"""Nesting limit of a JSON option (--context, --default), as for flag values."""


def parse_json_option(text: str, option: str) -> Any:
    """A JSON option's value; `InvalidFlagError` naming the option when it is not JSON,
    nested too deeply or holds a number out of range."""
    from flagsync.loader import check_shape  # noqa: PLC0415

    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidFlagError.single(option, "JSON nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, or an integer of more than 4300 digits
        raise InvalidFlagError.single(option, f"invalid JSON: {error}") from None
    check_shape(value, option, max_depth=MAX_OPTION_DEPTH)
    return value


def note(line: str) -> None:
    """A line for the operator on stderr (progress, warnings), never mixed into --json."""
    print(line, file=sys.stderr, flush=True)
