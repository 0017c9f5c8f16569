"""The flag definition format: typed structs that mirror the files and the stored form.

The structs give the shape (types, required fields, no unknown fields); the rules that
relate fields to each other (known variants, weights summing to 100, ...) live in
`flagsync._validation`, so every problem in a document can be reported at once.
Instances are frozen: a loaded definition is a value, never edited in place.
"""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

__all__ = [
    "OPERATORS",
    "Clause",
    "Flag",
    "FlagSet",
    "LLMSettings",
    "ModelPrice",
    "Rollout",
    "Rule",
    "Segment",
    "Serve",
]

# `\Z`, not `$`: `$` also matches before a trailing newline, so "flag\n" would pass.
KEY_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}\Z")
"""Flag, segment and variant keys: lower-case, URL- and Redis-safe, at most 128 characters."""

OPERATORS: Final = frozenset(
    {
        "in",
        "not_in",
        "eq",
        "neq",
        "starts_with",
        "ends_with",
        "contains",
        "matches",
        "lt",
        "lte",
        "gt",
        "gte",
        "semver_lt",
        "semver_eq",
        "semver_gt",
        "in_segment",
    }
)

# Size limits: a definition past these is refused, so one bad file cannot make every
# worker compile (and hold) something enormous.
MAX_FLAGS: Final = 100_000
MAX_SEGMENTS: Final = 10_000
MAX_VARIANTS: Final = 100
MAX_RULES: Final = 500
MAX_CLAUSES: Final = 50
MAX_CLAUSE_VALUES: Final = 10_000
MAX_SEGMENT_KEYS: Final = 100_000
MAX_PATTERN_CHARS: Final = 1_000
MAX_TEXT_CHARS: Final = 1_000
MAX_VALUE_DEPTH: Final = 32
MAX_FLAG_BYTES: Final = 256 * 1024
ROLLOUT_DECIMALS: Final = 3


class Clause(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One test on one context attribute; `negate` flips it, except on a missing attribute."""

    attr: str
    op: str
    values: list[Any] = msgspec.field(default_factory=list)
    negate: bool = False


class Rollout(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A percentage split: each variant, in listed order, gets a range of 100,000 buckets."""

    rollout: dict[str, int | float]
    by: str = "key"
    salt: str | None = None


Serve = str | Rollout
"""What a rule or the fallthrough serves: a variant name or a percentage rollout."""


class Rule(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """Clauses that must all hold, and what to serve when they do."""

    name: str | None = None
    when: list[Clause] = msgspec.field(default_factory=list)
    serve: Serve


class Flag(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """One flag: its variants, kill switch, targeting rules and fallthrough.

    Fields are in the order a flag file reads best (and `export` writes).
    """

    description: str = ""
    kind: str | None = None
    """Absent: variants are plain values. `llm`: variants are LLM configs (`flagsync.llm`)."""
    variants: dict[str, Any]
    enabled: bool = True
    off: str
    requires: dict[str, str] = msgspec.field(default_factory=dict)
    rules: list[Rule] = msgspec.field(default_factory=list)
    default: Serve


class Segment(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A named set of context keys that `in_segment` clauses test against."""

    keys: list[str] = msgspec.field(default_factory=list)
    description: str = ""


class ModelPrice(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a model costs, in dollars per million tokens (for `flagsync.llm`'s tracker)."""

    input_per_mtok: float
    output_per_mtok: float


class LLMSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A flag file's `llm:` section: the models each provider may serve (stored with the
    namespace, so every later write is checked too) and a price table per model."""

    models: dict[str, list[str]] = msgspec.field(default_factory=dict)
    prices: dict[str, ModelPrice] = msgspec.field(default_factory=dict)


class FlagSet(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A whole definition document: the unit that is validated, compiled and applied."""

    flags: dict[str, Flag] = msgspec.field(default_factory=dict)
    segments: dict[str, Segment] = msgspec.field(default_factory=dict)
    llm: LLMSettings | None = None

    def to_builtins(self) -> dict[str, Any]:
        """Plain dicts and lists in the file format (what `export` writes, `load_flags` reads)."""
        result: dict[str, Any] = msgspec.to_builtins(self)
        return result
