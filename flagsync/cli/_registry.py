"""The command registry: each command is declared once, by the module that handles it.

A topic module (`_flags`, `_rollout`, ...) lists its `Command`s: the name, the help, the
arguments and the handler. `flagsync.cli` builds the parser from these lists and calls
the handler of the command given. Topic modules import only this module and the
standard library at import time, so building the parser (and `flagsync --help`) never
loads redis; each handler imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what a Unix tool's shell status is when its reader went away."""

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Arg:
    """One `add_argument` call: its names and keyword options."""

    names: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def arg(*names: str, **options: Any) -> Arg:
    """`arg("--limit", type=int, default=20)`: an argument, as `add_argument` takes it."""
    return Arg(names, options)


@dataclass(frozen=True)
class OneOf:
    """Mutually exclusive arguments (e.g. `rollback --to V` or `--steps N`)."""

    args: tuple[Arg, ...]
    required: bool = False


@dataclass(frozen=True)
class Group:
    """A command group (`rollout`) whose actions are commands named `rollout plan`, ..."""

    name: str
    help: str


@dataclass(frozen=True)
class Command:
    """A command: its name (`list`, or `rollout plan` inside a group), help and handler."""

    name: str
    help: str
    handler: Handler
    args: tuple[Arg | OneOf, ...] = ()
    writes: bool = False
    """Takes --actor/--reason/--wait, and a refused input says "nothing was changed"."""
    namespace_default: str | None = None
    """The namespace when `-n` is not given; None: $FLAGSYNC_NAMESPACE, else `default`."""
    epilog: str | None = None


Entry = Command | Group
