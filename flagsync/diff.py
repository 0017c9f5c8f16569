"""Field-level differences between two definitions, for dry runs, history and audit.

Definitions are compared in their file form (plain dicts and lists), so a diff reads
like the YAML an operator wrote: `rules[1].serve.rollout.candidate: 5 -> 20`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = [
    "DefinitionChange",
    "FieldChange",
    "definition_changes",
    "field_changes",
    "plan_changes",
    "with_defaults",
]

_MISSING: Any = object()


class FieldChange(msgspec.Struct, frozen=True):
    """One field that differs; `before`/`after` are None where the field is absent."""

    path: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.path}: {_show(self.before)} -> {_show(self.after)}"


def field_changes(before: Any, after: Any, path: str = "") -> list[FieldChange]:
    """Every leaf that differs between two plain-data definitions, in document order."""
    changes: list[FieldChange] = []
    _walk(before, after, path, changes)
    return changes


def definition_changes(
    kind: str, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> list[FieldChange]:
    """The fields that differ between two versions of a flag or segment (defaults filled)."""
    return field_changes(with_defaults(kind, before) or {}, with_defaults(kind, after) or {})


def with_defaults(kind: str, definition: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored definition with omitted defaults spelled out (`enabled: true`, ...), so a
    diff says `enabled: true -> false` rather than `enabled: (absent) -> false`."""
    if definition is None:
        return None
    from flagsync.model import Flag, Segment  # noqa: PLC0415 - keeps this module leaf-light

    struct = Flag if kind == "flag" else Segment
    try:
        parsed = msgspec.convert(definition, struct)
    except msgspec.ValidationError:
        return definition  # show what is there; validation reports the problem elsewhere
    return {
        field: msgspec.to_builtins(getattr(parsed, field)) for field in struct.__struct_fields__
    }


def _walk(before: Any, after: Any, path: str, changes: list[FieldChange]) -> None:
    if isinstance(before, dict) and isinstance(after, dict):
        for key in [*before, *(k for k in after if k not in before)]:
            child = f"{path}.{key}" if path else str(key)
            _walk(before.get(key, _MISSING), after.get(key, _MISSING), child, changes)
        return
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for index, (old, new) in enumerate(zip(before, after, strict=True)):
            _walk(old, new, f"{path}[{index}]", changes)
        return
    if type(before) is not type(after) or before != after:
        changes.append(
            FieldChange(
                path or "$",
                None if before is _MISSING else before,
                None if after is _MISSING else after,
            )
        )


def _show(value: Any) -> str:
    if value is None:
        return "(absent)"
    return msgspec.json.encode(value).decode()


class DefinitionChange(msgspec.Struct, frozen=True):
    """One flag or segment an `apply` would add, change or delete (a dry-run line)."""

    kind: str
    key: str
    op: str
    """`add`, `change` or `delete`."""
    version: int
    """The version the change is based on (0 for a new key)."""
    fields: list[FieldChange]


Definitions = Mapping[str, Mapping[str, dict[str, Any]]]
"""{"flags": {key: definition}, "segments": {name: definition}} in file form."""


def plan_changes(
    current: Definitions, wanted: Definitions, versions: Mapping[str, int]
) -> list[tuple[DefinitionChange, dict[str, Any] | None]]:
    """What turns `current` into `wanted`: segments first, each change with the definition
    to store (None to delete). `versions` maps "flag:<key>" / "segment:<name>" to versions.
    """
    plan: list[tuple[DefinitionChange, dict[str, Any] | None]] = []
    for kind, section in (("segment", "segments"), ("flag", "flags")):
        old, new = current.get(section, {}), wanted.get(section, {})
        for key in [*new, *(k for k in old if k not in new)]:
            before, after = old.get(key), new.get(key)
            if before == after:
                continue
            op = "add" if before is None else "delete" if after is None else "change"
            version = versions.get(f"{kind}:{key}", 0)
            fields = definition_changes(kind, before, after)
            plan.append((DefinitionChange(kind, key, op, version, fields), after))
    return plan
