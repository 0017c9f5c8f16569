"""`plan_changes`: what an `apply` adds, changes and deletes, in order, with versions."""

from __future__ import annotations

from typing import Any

from flagsync.diff import DefinitionChange, FieldChange, plan_changes

ON = {"variants": {"on": True, "off": False}, "off": "off", "default": "on"}
OFF = {**ON, "default": "off"}


class TestPlanChanges:
    """Segments come first; unchanged definitions are left out; deletes carry None."""

    def test_add_change_delete(self) -> None:
        """Each kind of change is listed with its base version and the definition to store."""
        current: dict[str, dict[str, Any]] = {
            "flags": {"same": ON, "edit": ON, "gone": ON},
            "segments": {},
        }
        wanted: dict[str, dict[str, Any]] = {
            "flags": {"same": ON, "edit": OFF, "new": ON},
            "segments": {"s": {"keys": ["u"]}},
        }
        versions = {"flag:same": 1, "flag:edit": 4, "flag:gone": 2}

        plan = plan_changes(current, wanted, versions)

        assert [(change.kind, change.key, change.op, change.version) for change, _ in plan] == [
            ("segment", "s", "add", 0),
            ("flag", "edit", "change", 4),
            ("flag", "new", "add", 0),
            ("flag", "gone", "delete", 2),
        ]
        assert [after for _, after in plan] == [{"keys": ["u"]}, OFF, ON, None]

    def test_field_level_difference(self) -> None:
        """A change lists the fields that differ, as an operator wrote them."""
        [(change, _)] = plan_changes({"flags": {"f": ON}}, {"flags": {"f": OFF}}, {"flag:f": 1})
        assert change == DefinitionChange(
            "flag", "f", "change", 1, [FieldChange("default", "on", "off")]
        )

    def test_nothing_to_do(self) -> None:
        """Equal definitions plan nothing."""
        assert plan_changes({"flags": {"f": ON}}, {"flags": {"f": dict(ON)}}, {}) == []
