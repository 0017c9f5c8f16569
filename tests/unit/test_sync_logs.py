"""The sync package's logger: a call never raises, and a fork never lands inside one (a
child would inherit the log writer's lock held by a thread it does not have)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import pytest
import structlog

from flagsync._sync.logs import SafeLogger
from tests.integration.forking import reap as exit_code
from tests.logs import captured_logs, events

pytestmark = pytest.mark.filterwarnings(
    # Python >= 3.12 warns on fork() in a process with threads; forking one is the point here.
    r"ignore:This process .* is multi-threaded, use of fork\(\) may lead to deadlocks"
    ":DeprecationWarning"
)


class SlowWriter:
    """A structlog processor that writes like `PrintLogger`: under a lock, slowly."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.writing = threading.Event()

    def __call__(self, _logger: object, _method: str, event: MutableMapping[str, Any]) -> str:
        with self.lock:
            self.writing.set()
            time.sleep(0.3)
        return str(event.get("event"))


@contextmanager
def configured(*processors: Any) -> Iterator[None]:
    """structlog with exactly `processors`, restored after."""
    saved = structlog.get_config()
    structlog.configure(
        processors=list(processors),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


class TestSafeLogger:
    """Logging is best effort; syncing is not."""

    def test_events_reach_structlog(self) -> None:
        """Each level's call is logged as it would be without the wrapper."""
        log = SafeLogger("flagsync.subscriber")
        with captured_logs() as logs:
            log.debug("a", n=1)
            log.info("b", n=2)
            log.warning("c", n=3)
            log.error("d", n=4)
            try:
                raise ValueError("boom")  # noqa: TRY301 - the handler below is the point
            except ValueError:
                log.exception("e", n=5)
        assert [(entry["event"], entry["log_level"], entry["n"]) for entry in logs] == [
            ("a", "debug", 1),
            ("b", "info", 2),
            ("c", "warning", 3),
            ("d", "error", 4),
            ("e", "error", 5),
        ]
        assert events(logs, "e")[0]["exc_info"] is True

    def test_a_raising_processor_is_swallowed(self) -> None:
        """A processor that raises (a closed stderr) costs the line, never the caller."""

        def closed(_logger: object, _method: str, _event: MutableMapping[str, Any]) -> str:
            raise OSError(9, "Bad file descriptor")

        log = SafeLogger("flagsync.subscriber")
        with configured(closed):
            log.info("lost")
            log.exception("lost too")

    def test_a_fork_waits_for_a_line_being_written(self) -> None:
        """A thread is writing a line under the writer's lock when another thread forks:
        the fork waits for the line, so the child can log (without the guard its first
        line would wait forever for a lock held by a thread it does not have)."""
        writer = SlowWriter()
        log = SafeLogger("flagsync.subscriber")
        with configured(writer):
            thread = threading.Thread(target=log.info, args=("parent_line",))
            thread.start()
            assert writer.writing.wait(5)
            pid = os.fork()
            if pid == 0:  # the child: never return into pytest
                code = 1
                try:
                    log.info("child_line")
                    code = 0
                finally:
                    os._exit(code)
            thread.join(5)
            assert exit_code(pid, 5) == 0
