"""Deterministic bucketing: the contract other languages reproduce bit for bit.

    bucket = murmur3_x86_32(f"{salt}/{value}" as UTF-8, seed 0, unsigned) % 100_000

`salt` defaults to the flag key; `value` is the string form of the bucketing attribute
(`key` unless a rollout says `by:`). A rollout gives each variant, in listed order, a
consecutive range of `weight * 1000` buckets, so raising the first variant's weight only
ever adds users to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import mmh3

__all__ = ["BUCKETS", "bucket_bounds", "bucket_of", "bucketing_text"]

BUCKETS: Final = 100_000
"""Number of buckets; one bucket is 0.001 % of traffic."""

_hash = mmh3.hash


def bucket_of(salt: str, value: str) -> int:
    """The bucket (0 … 99,999) that `value` falls in for a rollout salted with `salt`."""
    # Encoded here, not by mmh3: mmh3 5.x crashes the process on a str with a lone surrogate.
    return _hash(f"{salt}/{value}".encode(), 0, False) % BUCKETS


def bucketing_text(value: object) -> str | None:
    """The string form of a bucketing attribute, or None when it cannot be bucketed.

    Strings are used as they are and integers in decimal. A float with an integral value
    is written as an integer (`997.0` -> `"997"`) so JSON numbers bucket the same in every
    language; other finite floats use the shortest round-trip form. Booleans, None,
    NaN/inf and containers cannot be bucketed.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else repr(float(value))
    return None


def bucket_bounds(weights: Mapping[str, int | float]) -> tuple[int, ...]:
    """Cumulative upper bounds (exclusive) of each variant's bucket range, in listed order.

    Weights are percentages with up to three decimals; validation guarantees they sum to
    100, so the last bound is exactly `BUCKETS`.
    """
    bounds: list[int] = []
    total = 0
    for weight in weights.values():
        total += round(weight * 1000)
        bounds.append(total)
    return tuple(bounds)
