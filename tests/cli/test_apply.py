"""`flagsync apply` and `flagsync export`: files in, files out, one revision per apply."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from flagsync.publisher import Publisher
from tests.cli.support import EXAMPLE, Cli, example_document

_EXAMPLE_KEYS = [
    "llm-model-version",
    "prompt-template-v2",
    "sampling-params",
    "context-window",
    "retrieval-strategy",
    "fallback-provider",
]


def _write_yaml(path: Path, document: dict[str, object]) -> str:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


class TestApply:
    def test_dry_run_shows_the_diff_and_writes_nothing(self, cli: Cli, store: Publisher) -> None:
        """`apply --dry-run` prints every addition and a summary, and leaves the store empty."""
        result = cli.ok("apply", "-f", str(EXAMPLE), "--dry-run")

        lines = result.stdout.splitlines()
        assert lines[0] == "+ segment beta-testers"
        assert [line for line in lines if line.startswith("+ flag ")] == [
            f"+ flag {key}" for key in _EXAMPLE_KEYS
        ]
        assert lines[-1] == "dry run: 7 changes, nothing written (store at revision 0)"
        assert store.revision() == (None, 0)
        assert store.versions() == {}

    def test_apply_writes_one_revision_with_actor_and_reason(
        self, cli: Cli, store: Publisher
    ) -> None:
        """`apply` writes the whole file as revision 1, logging the actor and reason per key."""
        result = cli.ok("apply", "-f", str(EXAMPLE), "--actor", "alice", "--reason", "initial")

        assert result.stdout.splitlines()[-1] == "applied 7 changes as revision 1"
        assert store.revision()[1] == 1
        assert store.versions() == dict.fromkeys(_EXAMPLE_KEYS, 1)
        entries = store.history()
        assert len(entries) == 7
        assert {(e.revision, e.actor, e.reason, e.op) for e in entries} == {
            (1, "alice", "initial", "apply")
        }

    def test_second_apply_of_the_same_file_changes_nothing(
        self, cli: Cli, store: Publisher
    ) -> None:
        """Applying the same file again prints no changes and keeps the revision (text and
        JSON)."""
        store.apply(EXAMPLE)

        text = cli.ok("apply", "-f", str(EXAMPLE))
        document = cli.ok("apply", "-f", str(EXAMPLE), "--json").json()

        assert text.stdout == "no changes: the store already matches (revision 1)\n"
        assert document == {"changes": [], "revision": 1, "written": False}
        assert store.revision()[1] == 1
        assert len(store.history()) == 7

    def test_changed_file_shows_field_level_diff(
        self, cli: Cli, store: Publisher, example: int, tmp_path: Path
    ) -> None:
        """A changed flag is listed with its version and one line per changed field."""
        document = example_document()
        flag = document["flags"]["llm-model-version"]
        flag["default"] = "candidate"
        flag["rules"][1]["serve"]["rollout"] = {"candidate": 30, "current": 70}
        path = _write_yaml(tmp_path / "flags.yaml", document)

        result = cli.ok("apply", "-f", path)

        assert result.stdout.splitlines() == [
            "~ flag llm-model-version (v1)",
            "    rules[1].serve.rollout.candidate: 20 -> 30",
            "    rules[1].serve.rollout.current: 80 -> 70",
            '    default: "current" -> "candidate"',
            f"applied 1 change as revision {example + 1}",
        ]
        assert store.versions()["llm-model-version"] == 2

    def test_apply_json_describes_each_change(
        self, cli: Cli, store: Publisher, tmp_path: Path
    ) -> None:
        """`apply --json` prints the changes with kind, key, op and fields, and the revision."""
        path = _write_yaml(
            tmp_path / "one.yaml",
            {"flags": {"fallback-provider": example_document()["flags"]["fallback-provider"]}},
        )

        document = cli.ok("--json", "apply", "-f", path).json()

        assert document["revision"] == 1
        [change] = document["changes"]
        assert (change["kind"], change["key"], change["op"], change["version"]) == (
            "flag",
            "fallback-provider",
            "add",
            0,
        )
        assert {"path": "default", "before": None, "after": "secondary"} in change["fields"]

    def test_prune_deletes_what_the_file_does_not_list(
        self, cli: Cli, store: Publisher, example: int, tmp_path: Path
    ) -> None:
        """Without --prune a partial file deletes nothing; with it, everything else goes."""
        path = _write_yaml(
            tmp_path / "one.yaml",
            {"flags": {"fallback-provider": example_document()["flags"]["fallback-provider"]}},
        )

        kept = cli.ok("apply", "-f", path)
        pruned = cli.ok("apply", "-f", path, "--prune", "--reason", "cleanup")

        assert kept.stdout.startswith("no changes")
        lines = pruned.stdout.splitlines()
        assert "- segment beta-testers (v1)" in lines
        assert "- flag llm-model-version (v1)" in lines
        assert "- flag fallback-provider (v1)" not in lines
        assert lines[-1] == f"applied 6 changes as revision {example + 1}"
        assert list(store.versions()) == ["fallback-provider"]
        assert store.history("context-window", limit=1)[0].op == "delete"


class TestExport:
    def test_export_to_a_file_then_apply_is_a_no_op(
        self, cli: Cli, store: Publisher, example: int, tmp_path: Path
    ) -> None:
        """An exported namespace (after kills and ramps) applies back with no changes, and
        recreates identical definitions in an empty namespace."""
        store.kill("prompt-template-v2")
        store.ramp("llm-model-version", "candidate", 12.5, "paid-ramp")
        revision = store.revision()[1]
        path = tmp_path / "export.yaml"

        exported = cli.ok("export", "-o", str(path))
        again = cli.ok("apply", "-f", str(path))
        copy = f"{cli.namespace}-copy"
        cli.ok("apply", "-f", str(path), "-n", copy)

        assert exported.stdout == ""
        assert exported.stderr == f"wrote 6 flags to {path}\n"
        assert again.stdout == f"no changes: the store already matches (revision {revision})\n"
        assert store.revision()[1] == revision
        original = store.definitions()
        with Publisher(cli.url, copy) as copied:
            assert copied.definitions() == original
        assert not original.flags["prompt-template-v2"].enabled

    def test_export_json_is_the_same_document_as_yaml(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`export --format json` prints the namespace (flags and segments) as JSON, equal to
        the YAML export."""
        as_json = json.loads(cli.ok("export", "--format", "json").stdout)
        as_yaml = yaml.safe_load(cli.ok("export").stdout)

        assert as_json == as_yaml
        assert list(as_json["flags"]) == _EXAMPLE_KEYS
        assert as_json["segments"]["beta-testers"]["keys"] == ["user-1", "user-2"]
        assert as_json["flags"]["retrieval-strategy"]["default"] == {
            "rollout": {"hybrid": 50, "bm25": 50},
            "by": "org_id",
        }
