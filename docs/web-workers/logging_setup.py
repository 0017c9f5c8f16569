"""structlog for a web worker: one JSON line per event on stderr, filtered by `LOG_LEVEL`.

flagsync logs through structlog and never configures it; without this, structlog's
default prints every level (INFO included) in colour. Call `configure_logging()` once,
before connecting. Each line carries the process id, so the lines of several workers
sharing one stderr can be told apart (read at each event, so it is right after a fork).
"""

from __future__ import annotations

import logging
import os
import sys

import structlog
from structlog.typing import EventDict, WrappedLogger


def add_pid(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Add the current process id (the worker's, not the master's)."""
    event_dict["pid"] = os.getpid()
    return event_dict


def configure_logging() -> None:
    """JSON lines on stderr at `LOG_LEVEL` (default WARNING: flagsync's INFO lines, one per
    sync, are left out; its warnings say when a worker loses or regains the store)."""
    level = logging.getLevelNamesMapping()[os.environ.get("LOG_LEVEL", "WARNING").upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_pid,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
