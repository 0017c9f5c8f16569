"""The sync package's logger: a log call never stops a client from syncing.

The subscriber thread (and the anyio task) log from inside their loop, which two things
could stop there:

- An exception from the logging: a structlog processor that raises, a handler writing
  to a closed stderr, a full disk. Raised in the loop, it ended the session, was raised
  again while the session's end was being logged, and killed the thread, leaving flags
  frozen without a word. Logging is best effort and syncing is not, so every call
  through `SafeLogger` swallows what the logging raised (there is nowhere left to
  report it).
- A `fork()` while this thread writes a log line: structlog's `PrintLogger` holds a
  lock while it writes, and a child forked then inherits it held by a thread that does
  not exist there, so the child's first log line (its own first load) hangs its
  subscriber for good (seen: a child forked 30 ms after connect, S27). The standard
  library's `logging` takes its locks around a fork for the same reason; here every
  call holds one lock that a fork waits for (`os.register_at_fork`), so no sync log
  line is ever half-written across a fork.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

import structlog

__all__ = ["SafeLogger"]

_fork_guard = threading.RLock()
"""Held by each log call, and by a forking thread from just before the fork to just after."""


def _before_fork() -> None:
    _fork_guard.acquire()


def _after_fork_in_parent() -> None:
    _fork_guard.release()


def _after_fork_in_child() -> None:
    global _fork_guard  # noqa: PLW0603 - a fresh lock: the parent's is not ours to release
    _fork_guard = threading.RLock()


# Registered on import, before the thread driver's hooks (it imports this module first):
# the parent releases the guard before the driver's own after-fork work, which may wait
# for a subscriber thread that is waiting to log.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


class SafeLogger:
    """`structlog.get_logger(name)` whose calls never raise and never span a fork."""

    __slots__ = ("_logger",)

    def __init__(self, name: str) -> None:
        self._logger = structlog.get_logger(name)

    def debug(self, event: str, **fields: Any) -> None:
        """Log `event` at DEBUG; a failure of the logging is ignored."""
        with _fork_guard, contextlib.suppress(Exception):
            self._logger.debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log `event` at INFO; a failure of the logging is ignored."""
        with _fork_guard, contextlib.suppress(Exception):
            self._logger.info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log `event` at WARNING; a failure of the logging is ignored."""
        with _fork_guard, contextlib.suppress(Exception):
            self._logger.warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log `event` at ERROR; a failure of the logging is ignored."""
        with _fork_guard, contextlib.suppress(Exception):
            self._logger.error(event, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Log `event` at ERROR with the exception being handled; failures are ignored."""
        with _fork_guard, contextlib.suppress(Exception):
            self._logger.exception(event, **fields)
