"""Compile a validated flag into a small evaluator: the hot path's only code.

A compiled flag enumerates every outcome it can produce up front (variant, reason,
rule) and reduces evaluation to one generated `select(context) -> outcome index`
function (see `_selector`), with thresholds, sets and regexes prepared. The value path
(`variation`) and the explained path (`detail`) share that one function, so they can
never disagree. Flags without rules, prerequisites or rollouts are *static*: they need
no function at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from flagsync._selector import Selector, TargetingKeyMissing, build_selector
from flagsync._validation import json_kind
from flagsync.evaluation import ErrorCode, Reason
from flagsync.model import Flag

__all__ = ["SERVE_DEFAULT", "CompiledFlag", "Outcome", "compile_flag"]

SERVE_DEFAULT: Final[Any] = object()
"""Sentinel in `CompiledFlag.values`: serve the caller's default (e.g. no bucketing key)."""

_NONE_TYPE: Final = type(None)
_ACCEPTED_DEFAULTS: Final[Mapping[str, frozenset[type]]] = {
    "boolean": frozenset({bool, _NONE_TYPE}),
    "number": frozenset({int, float, _NONE_TYPE}),
    "string": frozenset({str, _NONE_TYPE}),
    "object": frozenset({dict, _NONE_TYPE}),
    "array": frozenset({list, _NONE_TYPE}),
}


class Outcome(NamedTuple):
    """One thing a flag can serve, with the explanation `detail()` reports."""

    value: Any
    variant: str | None
    reason: Reason
    rule: str | None = None
    error_code: ErrorCode | None = None


_USUAL_DEFAULT: Final[Mapping[str, type]] = {
    "boolean": bool,
    "string": str,
    "object": dict,
    "array": list,
}
ACCEPTED_BY_USUAL_TYPE: Final[Mapping[type, frozenset[type]]] = {
    bool: _ACCEPTED_DEFAULTS["boolean"],
    int: _ACCEPTED_DEFAULTS["number"],
    float: _ACCEPTED_DEFAULTS["number"],
    str: _ACCEPTED_DEFAULTS["string"],
    dict: _ACCEPTED_DEFAULTS["object"],
    list: _ACCEPTED_DEFAULTS["array"],
}
"""Every default type a flag accepts, from its usual default type (`CompiledFlag.default_type`)."""

TableEntry = tuple[Selector | None, Any, type]
"""What the client's lookup table holds per flag, unpacked in one step on the hot path:
(select, or None for a static flag; the static value, or the value per outcome index;
the usual default type).

Three items because every item costs the hot path (an eight-item entry made a bool
evaluation 10 % slower). The usual default type serves both checks: `variation`
accepts the common call with one identity test (other accepted types are looked up in
`ACCEPTED_BY_USUAL_TYPE` only then), and a typed getter tests it for its kind
(`bool_value`: `usual is bool`). A metered client finds the exposure counts on the
selector itself (`select.counts`, the flag's `counts`), off the unmetered path."""


class CompiledFlag:
    """An immutable evaluator for one flag, built by `compile_flag`."""

    __slots__ = (
        "accepts",
        "counts",
        "default_type",
        "definition",
        "entry",
        "key",
        "kind",
        "outcomes",
        "select",
        "source",
        "static_outcome",
        "values",
    )

    key: str
    definition: Flag
    kind: str
    accepts: frozenset[type]
    default_type: type
    """The type callers usually pass as the default (e.g. `float` for a number flag with
    a fractional variant); any type in `accepts` is fine, this one is only tested first."""
    outcomes: tuple[Outcome, ...]
    values: tuple[Any, ...]
    select: Selector | None
    source: str | None
    """The generated selector's Python source (None for static flags), for debugging."""
    static_outcome: Outcome | None
    entry: TableEntry
    counts: list[int]
    """Exposures per outcome, counted by a `MeteredFlagClient` and drained by its reporter."""

    def outcome_for(self, context: Mapping[str, Any]) -> Outcome:
        """The outcome for `context` (may raise on a non-mapping context; callers guard)."""
        return self.outcomes[self.index_for(context)]

    def index_for(self, context: Mapping[str, Any]) -> int:
        """The index in `outcomes` for `context` (0 for a static flag; may raise likewise)."""
        if self.select is None:
            return 0
        try:
            return self.select(context)
        except TargetingKeyMissing as missing:
            return missing.index

    def __repr__(self) -> str:
        shape = "static" if self.select is None else f"{len(self.outcomes)} outcomes"
        return f"<CompiledFlag {self.key!r} {self.kind} {shape}>"


def compile_flag(
    key: str,
    flag: Flag,
    segments: Mapping[str, frozenset[str]],
    prerequisites: Mapping[str, CompiledFlag],
) -> CompiledFlag:
    """Compile a validated flag.

    `segments` maps segment names to key sets; `prerequisites` holds the compiled flags
    this one requires (a missing one makes the prerequisite fail, never raise).
    """
    compiled = CompiledFlag()
    compiled.key = key
    compiled.definition = flag
    compiled.kind = json_kind(next(iter(flag.variants.values())))
    compiled.accepts = _ACCEPTED_DEFAULTS[compiled.kind]
    compiled.default_type = _usual_default(compiled.kind, flag)
    if not flag.enabled:
        return _make_static(compiled, Outcome(flag.variants[flag.off], flag.off, Reason.DISABLED))
    if not flag.rules and not flag.requires and isinstance(flag.default, str):
        variant = flag.default
        return _make_static(compiled, Outcome(flag.variants[variant], variant, Reason.STATIC))

    builder = _OutcomeTable(flag)
    select, compiled.source = build_selector(key, flag, builder.add, segments, prerequisites)
    compiled.outcomes = tuple(builder.outcomes)
    compiled.values = tuple(outcome.value for outcome in builder.outcomes)
    compiled.select = select
    compiled.static_outcome = None
    compiled.counts = [0] * len(compiled.outcomes)
    compiled.entry = _entry_of(compiled, select, None)
    return compiled


def _make_static(compiled: CompiledFlag, outcome: Outcome) -> CompiledFlag:
    """Finish a flag whose outcome does not depend on the context."""
    compiled.source = None
    compiled.select = None
    compiled.outcomes = (outcome,)
    compiled.values = (outcome.value,)
    compiled.static_outcome = outcome
    compiled.counts = [0]
    compiled.entry = _entry_of(compiled, None, outcome.value)
    return compiled


def _entry_of(compiled: CompiledFlag, select: Selector | None, value: Any) -> TableEntry:
    if select is None:
        return (None, value, compiled.default_type)
    select.counts = compiled.counts  # type: ignore[attr-defined]  # see TableEntry
    return (select, compiled.values, compiled.default_type)


def _usual_default(kind: str, flag: Flag) -> type:
    if kind != "number":
        return _USUAL_DEFAULT[kind]
    integral = all(value.__class__ is int for value in flag.variants.values())
    return int if integral else float


class _OutcomeTable:
    """Collects the distinct outcomes of one flag and hands out their indices."""

    def __init__(self, flag: Flag) -> None:
        self.variants = flag.variants
        self.outcomes: list[Outcome] = []
        self._index: dict[tuple[str | None, Reason, str | None, ErrorCode | None], int] = {}

    def add(
        self,
        variant: str | None,
        reason: Reason,
        rule: str | None,
        error_code: ErrorCode | None = None,
    ) -> int:
        signature = (variant, reason, rule, error_code)
        index = self._index.get(signature)
        if index is None:
            value = SERVE_DEFAULT if variant is None else self.variants[variant]
            index = self._index[signature] = len(self.outcomes)
            self.outcomes.append(Outcome(value, variant, reason, rule, error_code))
        return index
