"""Builders for the unit tests: flag documents as plain dicts (the file format) and clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flagsync import FlagClient, InvalidFlagError, load_flags

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
"""`tests/data`: golden vectors and fixture files, inside the repository (CI clones it alone)."""

KEY_HINT = "use 1-128 of a-z 0-9 . _ - starting with a letter or digit"
"""The tail of every invalid-key message."""

Document = dict[str, Any]


def flag(
    variants: dict[str, Any] | None = None,
    *,
    off: str | None = None,
    default: Any = None,
    **fields: Any,
) -> Document:
    """A flag definition: string variants `a`/`b` unless given; `off`/`default` the first one."""
    chosen = {"a": "x", "b": "y"} if variants is None else variants
    first = next(iter(chosen), "a")
    return {
        "variants": chosen,
        "off": first if off is None else off,
        "default": first if default is None else default,
        **fields,
    }


def document(flags: Document, segments: Document | None = None) -> Document:
    """A whole definition document with `flags` and, when given, `segments`."""
    result: Document = {"flags": flags}
    if segments is not None:
        result["segments"] = segments
    return result


def client_for(flags: Document, segments: Document | None = None) -> FlagClient:
    """An offline client over `flags` (and `segments`), validated like a file."""
    return FlagClient.offline(document(flags, segments))


def issues_of(doc: Document) -> list[str]:
    """Every issue (`path: message`) that validating `doc` reports; fails if it is valid."""
    with pytest.raises(InvalidFlagError) as caught:
        load_flags(doc)
    return [str(issue) for issue in caught.value.issues]


def rollout(
    *weights: tuple[str, float], by: str | None = None, salt: str | None = None
) -> Document:
    """A rollout serve: `rollout(("a", 20), ("b", 80), by="org_id")`."""
    result: Document = {"rollout": dict(weights)}
    if by is not None:
        result["by"] = by
    if salt is not None:
        result["salt"] = salt
    return result


def assignments(client: FlagClient, count: int = 200) -> dict[str, list[str | None]]:
    """The variant each of `count` synthetic users gets for every flag of `client`.

    Used in-process and in a child process (`python -c`), so it must stay importable
    from `tests.unit.builders` with nothing but flagsync and pytest installed.
    """
    contexts = [
        {"key": f"user-{index}", "plan": "paid" if index % 2 else "free", "org_id": index % 17}
        for index in range(count)
    ]
    keys = list(client.keys())
    return {key: [client.detail(key, context).variant for context in contexts] for key in keys}
