"""Capture every structlog event a test causes, whatever logging an earlier test configured."""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

LogEvent = MutableMapping[str, Any]


@contextmanager
def captured_logs() -> Iterator[list[LogEvent]]:
    """`structlog.testing.capture_logs()` at every level.

    The CLI configures a WARNING filter when a test runs it in-process; that would hide
    INFO events here, so the level filter is lifted for the block and the whole
    configuration restored after it.
    """
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


def events(logs: list[LogEvent], name: str) -> list[LogEvent]:
    """The captured events called `name`, in order."""
    return [entry for entry in list(logs) if entry.get("event") == name]
