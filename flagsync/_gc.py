"""Pause the cyclic garbage collector around bulk builds.

Validating or compiling thousands of flags allocates many small objects and no
reference cycles worth collecting; left on, the collector rescans the growing heap
again and again (measured: a third of a 10,000-flag compile). Pausing it is
process-wide but brief, and it is restored even when the build raises.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic GC for the block if it was enabled, then re-enable it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
