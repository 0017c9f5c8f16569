"""Measured figures of the fault suite, collected for the README's reliability table.

Each scenario test calls `record(...)` with what it measured; at the end of the session
the figures are written as JSON to `$FLAGSYNC_FAULT_FIGURES` (when set), so the numbers
in the README come from a real run, not from memory.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

_lock = threading.Lock()
_figures: list[dict[str, Any]] = []


def record(scenario: str, server_kind: str, *, recovery_s: float | None, **details: Any) -> None:
    """Note one scenario's outcome: seconds from the end of the fault to recovery, and more."""
    with _lock:
        _figures.append(
            {
                "scenario": scenario,
                "server": server_kind,
                "recovery_s": None if recovery_s is None else round(recovery_s, 4),
                **details,
            }
        )


def write() -> None:
    """Write the collected figures to `$FLAGSYNC_FAULT_FIGURES`, if that is set."""
    target = os.environ.get("FLAGSYNC_FAULT_FIGURES")
    if not target or not _figures:
        return
    with _lock:
        Path(target).write_text(json.dumps(sorted(_figures, key=_order), indent=2) + "\n")


def _order(figure: dict[str, Any]) -> tuple[int, str]:
    scenario = figure["scenario"]
    number = int(scenario[1:]) if scenario[1:].isdigit() else 999
    return number, figure["server"]
