"""What a key, a variant value and a clause operand may be: the checks on single values
that validation (`flagsync._validation`) and the bulk loader (`flagsync._bulk_load`)
share, each returning why a value is refused (None when it is fine).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Mapping

from flagsync._regex import pattern_problem
from flagsync._semver import parse_semver
from flagsync.model import KEY_PATTERN, MAX_PATTERN_CHARS, MAX_TEXT_CHARS, MAX_VALUE_DEPTH

__all__ = [
    "INT_RANGE",
    "int_problem",
    "is_key",
    "json_kind",
    "key_message",
    "operand_problem",
    "type_name",
    "value_problem",
]

_EQUALITY_OPS = frozenset({"in", "not_in", "eq", "neq"})
_STRING_OPS = frozenset({"starts_with", "ends_with", "contains", "matches"})
_NUMBER_OPS = frozenset({"lt", "lte", "gt", "gte"})
_SEMVER_OPS = frozenset({"semver_lt", "semver_eq", "semver_gt"})
_PLAIN_SCALARS = frozenset({str, bool, int})
_SCALAR_KINDS = {bool: "boolean", int: "number", float: "number", str: "string"}
# msgpack (the stored form) holds integers in -2**63 .. 2**64-1; beyond, encoding fails.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
INT_RANGE = "-2**63..2**64-1"


@functools.lru_cache(maxsize=65_536)
def is_key(name: str) -> bool:
    """Whether `name` is a valid key; memoised, as the same variant and rule names recur."""
    return KEY_PATTERN.match(name) is not None


def key_message(key: object) -> str:
    """Why `key` is not a valid key, with the rule."""
    return f"invalid key {key!r}: use 1-128 of a-z 0-9 . _ - starting with a letter or digit"


def json_kind(value: object) -> str:
    """The JSON type name of a variant value: boolean, number, string, object or array."""
    kind = _SCALAR_KINDS.get(value.__class__)
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    return "array"


def value_problem(value: object) -> str | None:
    """Why a variant value is not allowed (None if it is fine): JSON types, finite, bounded."""
    if value.__class__ in _PLAIN_SCALARS:
        return int_problem(value) if value.__class__ is int else None
    if value.__class__ is float:
        return None if math.isfinite(value) else f"{value!r} is not a JSON number"
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_VALUE_DEPTH:
            return f"nested deeper than {MAX_VALUE_DEPTH} levels"
        if item is None:
            if depth == 0:
                return "null is not a variant value"
            continue
        if isinstance(item, bool | str):
            continue
        if isinstance(item, int):
            problem = int_problem(item)
            if problem is not None:
                return problem
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"{item!r} is not a JSON number"
            continue
        if isinstance(item, Mapping):
            for name, child in item.items():
                if not isinstance(name, str):
                    return f"object keys must be strings, got {type_name(name)}"
                stack.append((child, depth + 1))
            continue
        if isinstance(item, list | tuple):
            stack.extend((child, depth + 1) for child in item)
            continue
        return f"{type_name(item)} is not a JSON value"
    return None


def int_problem(value: object) -> str | None:
    """Why an integer cannot be stored (None if it can), showing at most 30 digits."""
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_MIN <= value <= _INT_MAX:
        text = str(value) if abs(value) < 10**30 else f"of {len(str(abs(value)))} digits"
        return f"integer {text} is outside {INT_RANGE}"
    return None


def operand_problem(op: str, value: object, segment_names: Collection[str]) -> str | None:
    """Why `value` cannot be an operand of `op` (None if it can)."""
    problem = int_problem(value)
    if problem is not None:
        return problem
    if op in _EQUALITY_OPS:
        if isinstance(value, float) and not math.isfinite(value):
            return f"{value!r} is not a JSON number"
        if not isinstance(value, str | int | float):
            return f"{op} compares strings, numbers and booleans, got {type_name(value)}"
        return None
    if op in _NUMBER_OPS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{op} needs a number, got {type_name(value)}"
        if not math.isfinite(value):
            return f"{value!r} is not a JSON number"
        return None
    if not isinstance(value, str):
        return f"{op} needs a string, got {type_name(value)}"
    if op == "matches":
        if len(value) > MAX_PATTERN_CHARS:
            return f"pattern longer than {MAX_PATTERN_CHARS} chars"
        return pattern_problem(value)
    if op in _SEMVER_OPS:
        if parse_semver(value) is None:
            return f"invalid semantic version {value!r}"
    elif op == "in_segment":
        if value not in segment_names:
            return f"unknown segment {value!r}"
    elif op in _STRING_OPS and len(value) > MAX_TEXT_CHARS:
        return f"operand longer than {MAX_TEXT_CHARS} chars"
    return None


def type_name(value: object) -> str:
    """The name of `value`'s type as an error message says it (`null` for None)."""
    return "null" if value is None else type(value).__name__
