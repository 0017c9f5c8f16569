"""Rollout weight arithmetic: ramp one variant and keep the others in proportion.

Weights are percentages with three decimals (the bucketing contract's 100,000
buckets), so the arithmetic is done in whole thousandths and the remainder of the
proportional split goes to the largest fractional parts: the result always sums to
exactly 100.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from flagsync.errors import InvalidFlagError, ValidationIssue
from flagsync.model import Rollout

__all__ = ["ramp_serve", "ramp_weights", "with_weights"]

_SCALE = 1000
_TOTAL = 100 * _SCALE


def ramp_weights(
    weights: Mapping[str, float], variant: str, percent: float, *, path: str = "weights"
) -> dict[str, float]:
    """`weights` with `variant` at `percent` and the other variants sharing the rest in
    proportion to their current weights (equally, if they all stood at 0).

    The listed order is kept (a new variant goes last), so users keep their buckets as
    far as the new split allows.
    """
    if not math.isfinite(percent) or not 0 <= percent <= 100:
        raise InvalidFlagError([ValidationIssue(path, f"percent {percent!r} is not in 0..100")])
    target = round(percent * _SCALE)
    if abs(percent * _SCALE - target) > 1e-6:
        raise InvalidFlagError([ValidationIssue(path, f"percent {percent!r} has over 3 decimals")])
    others = [name for name in weights if name != variant]
    if not others and target != _TOTAL:
        raise InvalidFlagError(
            [ValidationIssue(path, f"{variant!r} is the only variant: it must get 100 %")]
        )
    current = {name: round(weights[name] * _SCALE) for name in others}
    rest = _TOTAL - target
    basis = sum(current.values())
    shares = (
        {name: rest * current[name] / basis for name in others}
        if basis
        else {name: rest / len(others) for name in others}
    )
    units = {name: math.floor(share) for name, share in shares.items()}
    leftover = rest - sum(units.values())
    for name in sorted(others, key=lambda n: shares[n] - units[n], reverse=True)[:leftover]:
        units[name] += 1
    order = list(weights) if variant in weights else [*weights, variant]
    result = {name: (target if name == variant else units[name]) / _SCALE for name in order}
    return {name: int(value) if value.is_integer() else value for name, value in result.items()}


def with_weights(serve: Any, weights: Mapping[str, float]) -> Rollout:
    """`serve` split by `weights`: a rollout keeps its `by` and `salt` (users keep their
    buckets); a fixed variant becomes a rollout."""
    if isinstance(serve, Rollout):
        return msgspec.structs.replace(serve, rollout=dict(weights))
    return Rollout(rollout=dict(weights))


def ramp_serve(serve: Any, variant: str, percent: float, *, path: str = "weights") -> Rollout:
    """`serve` with `variant` at `percent` % and the others in proportion (`ramp_weights`);
    a fixed variant counts as 100 %."""
    current = serve.rollout if isinstance(serve, Rollout) else {serve: 100}
    return with_weights(serve, ramp_weights(current, variant, percent, path=path))
