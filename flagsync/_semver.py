"""Semantic version parsing for the `semver_*` operators (semver.org 2.0.0 precedence).

Versions are parsed into tuples that compare with Python's `<`/`==`, so a flag's
operand is parsed once at compile time and evaluation compares tuples.
"""

from __future__ import annotations

import re
from typing import Final

_SEMVER: Final = re.compile(
    r"^v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?\Z",
    re.ASCII,  # `\d` means 0-9 only (not other scripts' digits); `\Z` refuses a trailing newline
)

MAX_SEMVER_CHARS: Final = 256
"""Longer text is not a version (node-semver's limit too). Without a limit a crafted
attribute of more than 4,300 digits made `int()` raise (CPython's digit limit), and the
evaluation served the caller's default with ERROR instead of the clause being false."""

SemverKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]


def parse_semver(text: str) -> SemverKey | None:
    """A precedence key for `text`, or None when it is not a version.

    Missing minor/patch parts count as 0 (`"2"` == `"2.0.0"`) and a leading `v` is
    allowed, as users write versions that way; build metadata is ignored, as the
    spec says. A release sorts after its own pre-releases. Text longer than
    `MAX_SEMVER_CHARS` is not a version, so no numeric part ever reaches `int()`'s limit.
    """
    if len(text) > MAX_SEMVER_CHARS:
        return None
    match = _SEMVER.match(text)
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    if pre is None:
        return (int(major), int(minor or 0), int(patch or 0), 1, ())
    identifiers = tuple((0, int(part)) if part.isdigit() else (1, part) for part in pre.split("."))
    return (int(major), int(minor or 0), int(patch or 0), 0, identifiers)
