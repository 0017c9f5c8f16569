"""Where a connection goes: `resolve_url` (the client's sync and the publisher share it).

The sync wiring lives in `flagsync._sync.wiring`; this module keeps only the URL rule
until it joins the connection module.
"""

from __future__ import annotations

import os

from flagsync.errors import FlagsyncError

__all__ = ["resolve_url"]


def resolve_url(url: str | None) -> str:
    """`url`, else `REDIS_URL`; a clear error when there is neither."""
    resolved = url or os.environ.get("REDIS_URL")
    if not resolved:
        raise FlagsyncError(
            "no server URL: pass url='redis://host:port' or set REDIS_URL "
            "(flagsync.server can start a local one)"
        )
    return resolved
