"""Reference integrity inside the write: `delete(y)` racing `put(x requires y)` must never
both succeed (issue #11 item 6, FAULTS.md S25).

Both sides read, then write through the one script, so each guards what the other
changes. A write that leaves a flag referencing `y` (a prerequisite, or a segment its
rules target) guards `y`'s version (a delete bumps it) and *touches* `y`'s dependents
version, the versions-hash field `deps:<kind>:<y>`. A delete of `y` guards that
dependents version at the value it read when it found no dependents. Whichever lands
second is refused with `ConflictError`: the store never holds a dangling reference, and
the caller retries on the new state (where the put or the delete is then refused with its
reason).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flagsync._write_script import GUARD_OP, TOUCH_OP
from flagsync.store import ScriptWrite

__all__ = ["delete_guards", "reference_writes", "references"]


def references(definition: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(kind, key) of every flag a definition requires and every segment it targets."""
    found = {("flag", str(other)) for other in definition.get("requires") or {}}
    for rule in definition.get("rules") or ():
        for clause in rule.get("when") or ():
            if clause.get("op") == "in_segment":
                found.update(("segment", str(name)) for name in clause.get("values") or ())
    return found


def reference_writes(
    definitions: Iterable[Mapping[str, Any]],
    versions: Mapping[str, int],
    *,
    skip: Iterable[tuple[str, str]] = (),
) -> list[ScriptWrite]:
    """Guards and dependents touches for flags about to be written (`skip`: targets the
    same write puts or deletes itself, already version-checked there)."""
    targets = set().union(*(references(definition) for definition in definitions))
    targets -= set(skip)
    writes: list[ScriptWrite] = []
    for kind, key in sorted(targets):
        writes.append(ScriptWrite(kind, key, versions.get(f"{kind}:{key}", 0), GUARD_OP))
        field = dependents_field(kind, key)
        # Any version: puts referencing the same target must not conflict with each other.
        writes.append(ScriptWrite("deps", field, -1, TOUCH_OP))
    return writes


def delete_guards(
    deleted: Iterable[tuple[str, str]], versions: Mapping[str, int]
) -> list[ScriptWrite]:
    """Guards that nothing started to reference a flag or segment being deleted."""
    return [
        ScriptWrite(
            "deps",
            dependents_field(kind, key),
            versions.get(f"deps:{dependents_field(kind, key)}", 0),
            GUARD_OP,
        )
        for kind, key in deleted
    ]


def dependents_field(kind: str, key: str) -> str:
    """The key part of the dependents version of `kind` `key` (`deps:<kind>:<key>`)."""
    return f"{kind}:{key}"
