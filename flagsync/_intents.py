"""The edits behind `Publisher`'s intents: pure `Flag -> Flag` functions.

An intent (kill, enable, set the default, split or ramp a serve) is re-applied to the
freshly read flag when a write loses a race, so each is a function of the flag alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec

from flagsync.errors import InvalidFlagError
from flagsync.model import Flag, Serve
from flagsync.weights import ramp_serve, with_weights

__all__ = ["Edit", "killed", "ramped", "served", "split", "with_enabled"]

Edit = Callable[[Flag], Flag]
"""One intent, as the change it makes to a flag."""


def with_enabled(enabled: bool) -> Edit:
    """`kill` (False) or `enable` (True)."""
    return lambda flag: msgspec.structs.replace(flag, enabled=enabled)


killed: Edit = with_enabled(False)


def served(variant: str) -> Edit:
    """`set_default`: serve one fixed variant as the fallthrough."""
    return lambda flag: msgspec.structs.replace(flag, default=variant)


def split(key: str, rule: str | None, weights: Mapping[str, float]) -> Edit:
    """`set_rollout`: the default's (or rule's) serve split by `weights`."""
    chosen = dict(weights)
    return lambda flag: _with_serve(key, flag, rule, lambda serve: with_weights(serve, chosen))


def ramped(key: str, rule: str | None, variant: str, percent: float) -> Edit:
    """`ramp`: `variant` at `percent` % of the default's (or rule's) traffic."""
    where = f"flags.{key}.{'default' if rule is None else rule}"
    return lambda flag: _with_serve(
        key, flag, rule, lambda serve: ramp_serve(serve, variant, percent, path=where)
    )


def _with_serve(key: str, flag: Flag, rule: str | None, change: Callable[[Serve], Serve]) -> Flag:
    """`flag` with the default's serve (or the serve of the rule named `rule`) changed."""
    if rule is None:
        return msgspec.structs.replace(flag, default=change(flag.default))
    for position, candidate in enumerate(flag.rules):
        if (candidate.name or f"rules[{position}]") == rule:
            rules = list(flag.rules)
            rules[position] = msgspec.structs.replace(candidate, serve=change(candidate.serve))
            return msgspec.structs.replace(flag, rules=rules)
    names = [candidate.name or f"rules[{i}]" for i, candidate in enumerate(flag.rules)]
    raise InvalidFlagError.single(
        f"flags.{key}.rules", f"no rule {rule!r} (rules: {', '.join(names)})"
    )
