"""`python -m flagsync.cli`: the same command as the `flagsync` console script."""

from __future__ import annotations

import sys

from flagsync.cli import main

sys.exit(main())
