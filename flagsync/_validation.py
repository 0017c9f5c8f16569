"""Turn plain data into a validated `FlagSet`, collecting every problem before failing.

Shape errors come from msgspec (one per flag or segment, since msgspec stops at the
first); relations between fields are checked here so all of them are reported together.
Paths read like the file: `flags.llm-model-version.rules[1].serve`. What a single key,
value or operand may be is `flagsync._values`; relations between flags (prerequisites,
cycles) are `flagsync._prerequisites`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any, TypeVar

import msgspec

from flagsync._gc import gc_paused
from flagsync._prerequisites import cycle_issues, find_cycles, prerequisite_issues
from flagsync._values import (
    INT_RANGE,
    int_problem,
    is_key,
    json_kind,
    key_message,
    operand_problem,
    type_name,
    value_problem,
)
from flagsync.errors import InvalidFlagError, ValidationIssue
from flagsync.llm.validate import check_llm_flag, parse_llm_section
from flagsync.model import (
    MAX_CLAUSE_VALUES,
    MAX_CLAUSES,
    MAX_FLAG_BYTES,
    MAX_FLAGS,
    MAX_RULES,
    MAX_SEGMENT_KEYS,
    MAX_SEGMENTS,
    MAX_TEXT_CHARS,
    MAX_VARIANTS,
    OPERATORS,
    ROLLOUT_DECIMALS,
    Clause,
    Flag,
    FlagSet,
    Rollout,
    Segment,
    Serve,
)

__all__ = [
    "check_flag",
    "check_references",
    "check_segment",
    "cycle_issues",  # from flagsync._prerequisites, importable here as before the split
    "find_cycles",
    "int_problem",  # from flagsync._values, likewise
    "json_kind",
    "parse_flag",
    "parse_flagset",
    "parse_segment",
]

_TOP_LEVEL_FIELDS = ("flags", "segments", "llm")
_MSGSPEC_PATH = re.compile(r"^(?P<message>.*) - at `\$(?P<path>.*)`$", re.DOTALL)
_encoder = msgspec.msgpack.Encoder()
_T = TypeVar("_T")


def parse_flagset(data: object) -> FlagSet:
    """Validate a whole document (`{"flags": ..., "segments": ...}`) or raise `InvalidFlagError`."""
    with gc_paused():
        return _parse_flagset(data)


def _parse_flagset(data: object) -> FlagSet:
    issues: list[ValidationIssue] = []
    if isinstance(data, FlagSet):
        data = data.to_builtins()
    if not isinstance(data, Mapping):
        raise InvalidFlagError(
            [ValidationIssue("$", f"expected a mapping with 'flags', got {type_name(data)}")]
        )
    issues.extend(
        ValidationIssue(str(field), "unknown top-level field")
        for field in data
        if field not in _TOP_LEVEL_FIELDS
    )
    raw_segments = _section(data, "segments", MAX_SEGMENTS, issues)
    raw_flags = _section(data, "flags", MAX_FLAGS, issues)

    segments: dict[str, Segment] = {}
    for key, raw in raw_segments.items():
        segment = _convert(raw, Segment, f"segments.{key}", issues)
        if _check_key(key, f"segments.{key}", issues) and segment is not None:
            issues.extend(check_segment(key, segment))
            segments[key] = segment

    flags: dict[str, Flag] = {}
    for key, raw in raw_flags.items():
        flag = _convert(raw, Flag, f"flags.{key}", issues)
        if _check_key(key, f"flags.{key}", issues) and flag is not None:
            issues.extend(check_flag(key, flag, raw_segments.keys()))
            flags[key] = flag

    issues.extend(prerequisite_issues(flags, raw_flags.keys()))
    llm = parse_llm_section(data.get("llm"), flags, issues)  # see flagsync.llm.validate
    if issues:
        raise InvalidFlagError(issues)
    return FlagSet(flags=flags, segments=segments, llm=llm)


def parse_flag(key: str, data: object, segment_names: Collection[str] = ()) -> Flag:
    """Validate one flag on its own (prerequisites and segments are checked by the caller)."""
    issues: list[ValidationIssue] = []
    if isinstance(data, Flag):
        data = msgspec.to_builtins(data)
    flag = _convert(data, Flag, f"flags.{key}", issues)
    if _check_key(key, f"flags.{key}", issues) and flag is not None:
        issues.extend(check_flag(key, flag, segment_names))
    if issues or flag is None:
        raise InvalidFlagError(issues)
    return flag


def check_flag(key: str, flag: Flag, segment_names: Collection[str]) -> list[ValidationIssue]:
    """Every relational problem in one flag (its variants, rules, serves and size)."""
    at = f"flags.{key}"
    issues: list[ValidationIssue] = []
    if len(flag.description) > MAX_TEXT_CHARS:
        issues.append(ValidationIssue(f"{at}.description", f"longer than {MAX_TEXT_CHARS} chars"))
    issues.extend(_check_variants(at, flag.variants))
    if flag.kind is not None:
        issues.extend(check_llm_flag(at, flag))
    variants = flag.variants.keys()
    if flag.off not in variants:
        issues.append(ValidationIssue(f"{at}.off", f"unknown variant {flag.off!r}"))
    issues.extend(_check_serve(f"{at}.default", flag.default, variants))
    if len(flag.rules) > MAX_RULES:
        issues.append(ValidationIssue(f"{at}.rules", f"more than {MAX_RULES} rules"))
    names: set[str] = set()
    for index, rule in enumerate(flag.rules):
        rule_at = f"{at}.rules[{index}]"
        if rule.name is not None:
            if not is_key(rule.name):
                issues.append(ValidationIssue(f"{rule_at}.name", key_message(rule.name)))
            elif rule.name in names:
                issues.append(
                    ValidationIssue(f"{rule_at}.name", f"duplicate rule name {rule.name!r}")
                )
            names.add(rule.name)
        if len(rule.when) > MAX_CLAUSES:
            issues.append(ValidationIssue(f"{rule_at}.when", f"more than {MAX_CLAUSES} clauses"))
        for position, clause in enumerate(rule.when):
            issues.extend(_check_clause(f"{rule_at}.when[{position}]", clause, segment_names))
        issues.extend(_check_serve(f"{rule_at}.serve", rule.serve, variants))
    for other, variant in flag.requires.items():
        if not is_key(other):
            issues.append(ValidationIssue(f"{at}.requires", key_message(other)))
        elif other == key:
            issues.append(ValidationIssue(f"{at}.requires.{other}", "a flag cannot require itself"))
        elif not isinstance(variant, str) or not variant:
            issues.append(ValidationIssue(f"{at}.requires.{other}", "expected a variant name"))
    if not issues:
        try:
            size = len(_encoder.encode(flag))
        except UnicodeEncodeError as error:  # a lone surrogate, e.g. from JSON's "\ud800"
            issues.append(
                ValidationIssue(at, f"contains text that is not valid Unicode: {error.reason}")
            )
        except OverflowError:  # an integer the checks above do not look at
            issues.append(ValidationIssue(at, f"contains an integer outside {INT_RANGE}"))
        except RecursionError:
            issues.append(ValidationIssue(at, "nested too deeply to store"))
        else:
            if size > MAX_FLAG_BYTES:
                issues.append(
                    ValidationIssue(at, f"definition is {size} bytes, over {MAX_FLAG_BYTES}")
                )
    return issues


def _section(
    data: Mapping[Any, Any], name: str, limit: int, issues: list[ValidationIssue]
) -> Mapping[str, Any]:
    raw = data.get(name)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        issues.append(ValidationIssue(name, f"expected a mapping, got {type_name(raw)}"))
        return {}
    if len(raw) > limit:
        issues.append(ValidationIssue(name, f"{len(raw)} entries, over the limit of {limit}"))
        return {}
    return raw


def _convert(raw: object, kind: type[_T], at: str, issues: list[ValidationIssue]) -> _T | None:
    try:
        return msgspec.convert(raw, kind)
    except RecursionError:
        issues.append(ValidationIssue(at, "nested too deeply to read"))
        return None
    except msgspec.ValidationError as error:
        text = str(error)
        match = _MSGSPEC_PATH.match(text)
        if match is None:
            issues.append(ValidationIssue(at, _lower_first(text)))
        else:
            path = match["path"].replace("['", ".").replace("']", "")
            issues.append(ValidationIssue(at + path, _lower_first(match["message"])))
        return None


def _check_key(key: object, at: str, issues: list[ValidationIssue]) -> bool:
    if isinstance(key, str) and is_key(key):
        return True
    issues.append(ValidationIssue(at, key_message(key)))
    return False


def _check_variants(at: str, variants: Mapping[str, Any]) -> Iterator[ValidationIssue]:
    if not variants:
        yield ValidationIssue(f"{at}.variants", "at least one variant is required")
        return
    if len(variants) > MAX_VARIANTS:
        yield ValidationIssue(f"{at}.variants", f"more than {MAX_VARIANTS} variants")
    kinds: dict[str, str] = {}
    for name, value in variants.items():
        if not is_key(name):
            yield ValidationIssue(f"{at}.variants", key_message(name))
            continue
        problem = value_problem(value)
        if problem is not None:
            yield ValidationIssue(f"{at}.variants.{name}", problem)
            continue
        kinds[name] = json_kind(value)
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{name}={kind}" for name, kind in kinds.items())
        yield ValidationIssue(f"{at}.variants", f"all variants must share one type, got {listing}")


def _check_serve(at: str, serve: Serve, variants: Collection[str]) -> Iterator[ValidationIssue]:
    if isinstance(serve, str):
        if serve not in variants:
            yield ValidationIssue(at, f"unknown variant {serve!r}")
        return
    yield from _check_rollout(at, serve, variants)


def _check_rollout(at: str, serve: Rollout, variants: Collection[str]) -> Iterator[ValidationIssue]:
    if not serve.rollout:
        yield ValidationIssue(f"{at}.rollout", "a rollout needs at least one variant")
        return
    if not serve.by:
        yield ValidationIssue(f"{at}.by", "the bucketing attribute must not be empty")
    if serve.salt is not None and not serve.salt:
        yield ValidationIssue(f"{at}.salt", "the salt must not be empty")
    total = 0
    for name, weight in serve.rollout.items():
        if name not in variants:
            yield ValidationIssue(f"{at}.rollout.{name}", f"unknown variant {name!r}")
        if not math.isfinite(weight) or weight < 0 or weight > 100:
            yield ValidationIssue(f"{at}.rollout.{name}", f"weight {weight!r} is not in 0..100")
            return
        scaled = weight * 10**ROLLOUT_DECIMALS
        if abs(scaled - round(scaled)) > 1e-6:
            yield ValidationIssue(
                f"{at}.rollout.{name}",
                f"weight {weight!r} has more than {ROLLOUT_DECIMALS} decimals",
            )
            return
        total += round(scaled)
    if total != 100 * 10**ROLLOUT_DECIMALS:
        yield ValidationIssue(
            f"{at}.rollout", f"weights sum to {total / 10**ROLLOUT_DECIMALS:g}, not 100"
        )


def _check_clause(
    at: str, clause: Clause, segment_names: Collection[str]
) -> Iterator[ValidationIssue]:
    op, values = clause.op, clause.values
    if not clause.attr:
        yield ValidationIssue(f"{at}.attr", "the attribute name must not be empty")
    if op not in OPERATORS:
        yield ValidationIssue(
            f"{at}.op", f"unknown operator {op!r} (known: {', '.join(sorted(OPERATORS))})"
        )
        return
    if not values:
        yield ValidationIssue(f"{at}.values", f"{op} needs at least one value")
        return
    if len(values) > MAX_CLAUSE_VALUES:
        yield ValidationIssue(f"{at}.values", f"more than {MAX_CLAUSE_VALUES} values")
        return
    for index, value in enumerate(values):
        problem = operand_problem(op, value, segment_names)
        if problem is not None:
            yield ValidationIssue(f"{at}.values[{index}]", problem)


def check_segment(key: str, segment: Segment) -> Iterator[ValidationIssue]:
    if len(segment.keys) > MAX_SEGMENT_KEYS:
        yield ValidationIssue(f"segments.{key}.keys", f"more than {MAX_SEGMENT_KEYS} keys")
    if len(segment.description) > MAX_TEXT_CHARS:
        yield ValidationIssue(f"segments.{key}.description", f"longer than {MAX_TEXT_CHARS} chars")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def parse_segment(key: str, data: object) -> Segment:
    """Validate one segment on its own."""
    issues: list[ValidationIssue] = []
    segment = _convert(data, Segment, f"segments.{key}", issues)
    if _check_key(key, f"segments.{key}", issues) and segment is not None:
        issues.extend(check_segment(key, segment))
    if issues or segment is None:
        raise InvalidFlagError(issues)
    return segment


def check_references(
    key: str, flag: Flag, flags: Mapping[str, Mapping[str, Any]], segments: Collection[str]
) -> None:
    """A flag written on its own: its prerequisites must exist in `flags` (the store's
    definitions with this flag in place) with the variant named, and form no cycle."""
    issues: list[ValidationIssue] = []
    for other, variant in flag.requires.items():
        at = f"flags.{key}.requires.{other}"
        if other not in flags:
            issues.append(ValidationIssue(at, f"unknown flag {other!r}"))
        elif variant not in (flags[other].get("variants") or {}):
            issues.append(ValidationIssue(at, f"flag {other!r} has no variant {variant!r}"))
    if not issues and flag.requires:
        graph = {
            name: parse_flag(name, definition, segments)
            for name, definition in flags.items()
            if definition.get("requires")
        }
        issues.extend(cycle_issues(graph))
    if issues:
        raise InvalidFlagError(issues)
