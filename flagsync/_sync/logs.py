"""The sync package's logger: a log call that fails never stops a client from syncing.

The subscriber thread (and the anyio task) log from inside their loop. A structlog
processor that raises, a handler writing to a closed stderr, a full disk: raised there,
the exception ended the session, was raised again while the session's end was being
logged, and killed the thread, leaving flags frozen without a word. Logging is best
effort and syncing is not, so every call through `SafeLogger` swallows what the logging
raised (there is nowhere left to report it).
"""

from __future__ import annotations

import contextlib
from typing import Any

import structlog

__all__ = ["SafeLogger"]


class SafeLogger:
    """`structlog.get_logger(name)` whose calls never raise."""

    __slots__ = ("_logger",)

    def __init__(self, name: str) -> None:
        self._logger = structlog.get_logger(name)

    def debug(self, event: str, **fields: Any) -> None:
        """Log `event` at DEBUG; a failure of the logging is ignored."""
        with contextlib.suppress(Exception):
            self._logger.debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log `event` at INFO; a failure of the logging is ignored."""
        with contextlib.suppress(Exception):
            self._logger.info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log `event` at WARNING; a failure of the logging is ignored."""
        with contextlib.suppress(Exception):
            self._logger.warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log `event` at ERROR; a failure of the logging is ignored."""
        with contextlib.suppress(Exception):
            self._logger.error(event, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Log `event` at ERROR with the exception being handled; failures are ignored."""
        with contextlib.suppress(Exception):
            self._logger.exception(event, **fields)
