"""Generate one Python function per flag that maps a context to an outcome index.

On CPython every function call costs as much as a dict lookup and a string test
together, so a flag compiled into a chain of small closures spends most of its time
calling. Instead the rules, clauses and rollouts of a flag are written out as the body
of a single function, with the common case of each clause inlined (a string attribute
tested by `in`, `endswith`, ...) and the rare cases (lists, other types, None) handed
to the general clause matcher.

A rollout whose bucketing attribute is missing raises `TargetingKeyMissing` (carrying
its outcome index) rather than returning it, so the value path never tests for it.

Safety: the generated source contains only identifiers made here and small integers
(outcome indices); every
value that comes from a flag definition (attribute names, operands, salts, variants)
is bound in the function's namespace and referenced by a generated name, never
spliced into the source.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections.abc import Callable, Mapping
from types import CodeType
from typing import TYPE_CHECKING, Any

import mmh3

from flagsync._operators import ClausePlan, plan_clause, value_matcher
from flagsync.bucketing import BUCKETS, bucket_bounds, bucketing_text
from flagsync.evaluation import ErrorCode, Reason
from flagsync.model import Flag, Rollout, Serve

if TYPE_CHECKING:
    from flagsync.compile import CompiledFlag

Selector = Callable[[Mapping[str, Any]], int]


class TargetingKeyMissing(Exception):  # noqa: N818 - a signal inside evaluation, not an error
    """Raised by a selector when a rollout's bucketing attribute is missing or unusable.

    `index` is the outcome that explains it (`TARGETING_KEY_MISSING`). Raising instead of
    returning that index spares every evaluation `variation`'s test for "serve the
    caller's default": the value path catches it for free (3.11's zero-cost `try`), and
    `CompiledFlag.index_for` turns it back into the index for `detail()` and metrics.
    """

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


AddOutcome = Callable[[str | None, Reason, str | None, ErrorCode | None], int]


class _Source:
    """Accumulates the generated function's lines and its namespace of bound values."""

    def __init__(self) -> None:
        # `context.get(...)` at each use, not a bound `_get`: CPython specialises the
        # method call on a dict, and a stored bound method is much slower to call.
        self.lines: list[str] = ["def select(context):"]
        self.namespace: dict[str, Any] = {
            "_hash": mmh3.hash,
            "_bisect": bisect_right,
            "_text": bucketing_text,
            "_missing": TargetingKeyMissing,
        }

    def bind(self, value: Any) -> str:
        name = f"_k{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def build_selector(
    key: str,
    flag: Flag,
    add: AddOutcome,
    segments: Mapping[str, frozenset[str]],
    prerequisites: Mapping[str, CompiledFlag],
) -> tuple[Selector, str]:
    """The selector function for an enabled, non-static flag, and its generated source."""
    source = _Source()
    failed = add(flag.off, Reason.PREREQUISITE_FAILED, None, None)
    for other, wanted in flag.requires.items():
        _emit_prerequisite(source, prerequisites.get(other), wanted, failed)
    for position, rule in enumerate(flag.rules):
        name = rule.name or f"rules[{position}]"
        depth = 1
        for clause in rule.when:
            source.emit(depth, f"if {_clause_expression(source, plan_clause(clause, segments))}:")
            depth += 1
        _emit_serve(source, depth, key, rule.serve, add, Reason.TARGETING_MATCH, name)
    fallthrough = Reason.DEFAULT if flag.rules else Reason.STATIC
    _emit_serve(source, 1, key, flag.default, add, fallthrough, None)

    text = "\n".join(source.lines) + "\n"
    exec(_code_for(text), source.namespace)  # noqa: S102 - generated from our own templates
    selector: Selector = source.namespace["select"]
    return selector, text


@functools.lru_cache(maxsize=4096)
def _code_for(text: str) -> CodeType:
    """Compiled code for a selector's source; flags of the same shape share one entry.

    Compiling is the expensive step of building a selector. The source depends only on
    a flag's shape (values live in the namespace), so fleets of similar flags compile
    each shape once.
    """
    return compile(text, "<flagsync selector>", "exec")


def _emit_prerequisite(
    source: _Source, prerequisite: CompiledFlag | None, wanted: str, failed: int
) -> None:
    # Prerequisites are compiled first and dependents recompiled when they change, so a
    # static prerequisite's verdict is a constant here.
    if prerequisite is None:
        source.emit(1, f"return {failed}")
    elif prerequisite.select is None:
        outcome = prerequisite.static_outcome
        if outcome is None or outcome.variant != wanted:
            source.emit(1, f"return {failed}")
    else:
        variants = source.bind(tuple(outcome.variant for outcome in prerequisite.outcomes))
        select = source.bind(prerequisite.select)
        source.emit(1, "try:")
        source.emit(2, f"_p = {variants}[{select}(context)]")
        source.emit(1, "except _missing:")  # the prerequisite served no variant
        source.emit(2, "_p = None")
        source.emit(1, f"if _p != {source.bind(wanted)}:")
        source.emit(2, f"return {failed}")


def _clause_expression(source: _Source, plan: ClausePlan) -> str:
    attr = source.bind(plan.attr)
    general = source.bind(value_matcher(plan))
    if plan.fast_class is None or plan.fast_expr is None:
        return f"{general}(context.get({attr}))"
    fast = plan.fast_expr.format(v="_v", c=source.bind(plan.constant))
    if plan.negate:
        fast = f"not ({fast})"
    kind = source.bind(plan.fast_class)
    return f"(({fast}) if (_v := context.get({attr})).__class__ is {kind} else {general}(_v))"


def _emit_serve(  # noqa: PLR0917 - a private emitter; every argument is positional context
    source: _Source,
    depth: int,
    key: str,
    serve: Serve,
    add: AddOutcome,
    fixed_reason: Reason,
    rule: str | None,
) -> None:
    if isinstance(serve, str):
        source.emit(depth, f"return {add(serve, fixed_reason, rule, None)}")
        return
    _emit_rollout(source, depth, key, serve, add, rule)


def _emit_rollout(  # noqa: PLR0917 - see _emit_serve
    source: _Source, depth: int, key: str, serve: Rollout, add: AddOutcome, rule: str | None
) -> None:
    indices = [add(variant, Reason.SPLIT, rule, None) for variant in serve.rollout]
    missing = add(None, Reason.ERROR, rule, ErrorCode.TARGETING_KEY_MISSING)
    bounds = bucket_bounds(serve.rollout)
    prefix = source.bind(f"{serve.salt or key}/")
    source.emit(depth, f"_v = context.get({source.bind(serve.by)})")
    source.emit(depth, "if _v.__class__ is not str:")
    source.emit(depth + 1, "_v = _text(_v)")
    source.emit(depth + 1, "if _v is None:")
    source.emit(depth + 2, f"raise _missing({missing})")
    # The spec hashes UTF-8 bytes, and mmh3 hashes a str as its UTF-8 bytes, except that
    # a str with a lone surrogate crashes the process. An ASCII value (the usual user id)
    # has none and goes as it is; any other is encoded first, which raises on a lone
    # surrogate, and evaluation catches that. (Validated prefixes hold no surrogates.)
    # Skipping the encode of an ASCII value saves a bytes object per evaluation.
    text = f"({prefix} + _v if _v.isascii() else ({prefix} + _v).encode())"
    source.emit(depth, f"_b = _hash({text}, 0, False) % {BUCKETS}")
    if len(indices) == 1:
        source.emit(depth, f"return {indices[0]}")
    elif len(indices) == 2:
        cut = source.bind(bounds[0])
        source.emit(depth, f"return {indices[0]} if _b < {cut} else {indices[1]}")
    else:
        table, cuts = source.bind(tuple(indices)), source.bind(bounds)
        source.emit(depth, f"return {table}[_bisect({cuts}, _b)]")
