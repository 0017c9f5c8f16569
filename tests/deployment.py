"""The lifecycle every multi-part test fixture shares: replica sets, Sentinels, clusters,
the loop-thread servers of the fault suite.

`start()` runs the subclass's `_start`; when that fails, `close()` runs before the error
propagates, so a half-started deployment never leaks a process or a thread. `close()`
must be safe to call twice (also on a deployment that never started). Each is a context
manager, so a failing test still stops everything it started, by PID.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import ClassVar, Protocol, Self

__all__ = ["Deployment", "close_each"]


class _Closable(Protocol):
    def close(self) -> None: ...


def close_each(parts: Iterable[_Closable]) -> None:
    """Close every part in order; one failing does not leave the rest running (the first
    error is raised once all were tried)."""
    first: Exception | None = None
    for part in parts:
        try:
            part.close()
        except Exception as error:  # noqa: BLE001 - re-raised below, after the others
            first = first or error
    if first is not None:
        raise first


class Deployment:
    """Subclasses implement `_start` (start each part, raise when one is not ready in
    `timeout_s`) and `close` (stop each part started so far)."""

    start_timeout_s: ClassVar[float] = 10.0
    """How long `start()` waits when no timeout is given."""

    def start(self, timeout_s: float | None = None) -> Self:
        """Start every part; on any failure close what was started, then re-raise."""
        try:
            self._start(self.start_timeout_s if timeout_s is None else timeout_s)
        except BaseException:
            self.close()
            raise
        return self

    def _start(self, timeout_s: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop every part started; safe to call twice."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
