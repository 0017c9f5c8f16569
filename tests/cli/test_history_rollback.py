"""`flagsync history` (the audit trail) and `flagsync rollback` (restoring a definition)."""

from __future__ import annotations

import getpass

from flagsync.publisher import Publisher
from tests.cli.support import Cli, stored_definition


class TestHistory:
    def test_history_of_a_flag_shows_who_why_and_which_fields(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`history KEY` lists the flag's changes newest first, each with its actor, reason
        and field-level difference."""
        cli.ok(
            "ramp", "llm-model-version", "candidate", "35", "--rule", "paid-ramp",
            "--actor", "bob", "--reason", "thumbs-down flat",
        )  # fmt: skip
        cli.ok("kill", "llm-model-version", "--actor", "carol", "--reason", "regression")

        lines = cli.ok("history", "llm-model-version").stdout.splitlines()

        assert len(lines) == 7
        assert lines[0].startswith(f"r{example + 2} ")
        assert lines[0].split()[3:] == [
            "carol", "kill", "flag", "llm-model-version", "v3", "(regression)",
        ]  # fmt: skip
        assert lines[1] == "    enabled: true -> false"
        assert lines[2].split()[3:] == [
            "bob", "ramp", "flag", "llm-model-version", "v2", "(thumbs-down", "flat)",
        ]  # fmt: skip
        assert lines[3:5] == [
            "    rules[1].serve.rollout.candidate: 20 -> 35",
            "    rules[1].serve.rollout.current: 80 -> 65",
        ]
        assert lines[5].split()[3:] == [
            "cli-tests", "apply", "flag", "llm-model-version", "v1", "(fixture)",
        ]  # fmt: skip
        assert lines[6] == "    created"

    def test_history_json_and_limit(self, cli: Cli, store: Publisher, example: int) -> None:
        """`history --json` without a key covers every flag and segment, newest first, and
        `--limit` keeps the newest N."""
        store.delete("fallback-provider", reason="retired")

        everything = cli.ok("history", "--json").json()["entries"]
        newest = cli.ok("history", "--limit", "2", "--json").json()["entries"]

        assert len(everything) == 8
        assert {entry["key"] for entry in everything} >= {"beta-testers", "fallback-provider"}
        first = everything[0]
        assert (first["op"], first["key"], first["reason"], first["after"]) == (
            "delete",
            "fallback-provider",
            "retired",
            None,
        )
        assert first["before"]["default"] == "secondary"
        assert [entry["revision"] for entry in everything] == sorted(
            (entry["revision"] for entry in everything), reverse=True
        )
        assert newest == everything[:2]

    def test_actor_defaults_to_the_os_user(self, cli: Cli, store: Publisher, example: int) -> None:
        """A write without --actor is recorded under the OS user's name."""
        cli.ok("kill", "sampling-params")

        [entry] = store.history("sampling-params", limit=1)

        assert (entry.actor, entry.op) == (getpass.getuser(), "kill")


class TestRollback:
    def test_rollback_one_step_restores_the_exact_definition(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`rollback --steps 1` undoes the last change: the definition is exactly the one
        before it, as a new version, and the log keeps both."""
        before = cli.ok("get", "retrieval-strategy", "--json").json()
        cli.ok("ramp", "retrieval-strategy", "hybrid", "80")

        result = cli.ok("rollback", "retrieval-strategy", "--steps", "1")
        after = cli.ok("get", "retrieval-strategy", "--json").json()

        assert result.stdout.startswith(
            f"rolled back retrieval-strategy: revision {example + 2} (v3, "
        )
        assert after["definition"] == before["definition"]
        assert (before["version"], after["version"]) == (1, 3)
        assert after["last_change"]["reason"] == "rollback to v1"

    def test_rollback_to_a_version_restores_that_definition(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`rollback --to V` restores version V exactly, past several later changes."""
        original = stored_definition(store, "llm-model-version")
        store.kill("llm-model-version")
        killed = stored_definition(store, "llm-model-version")
        store.ramp("llm-model-version", "candidate", 50, "paid-ramp")
        store.set_default("llm-model-version", "candidate")

        cli.ok("rollback", "llm-model-version", "--to", "2", "--reason", "keep it off")
        restored = cli.ok("get", "llm-model-version", "--json").json()

        assert restored["definition"] == killed != original
        assert restored["version"] == 5
        assert restored["last_change"]["reason"] == "keep it off"
        store.rollback("llm-model-version", to_version=1)
        assert stored_definition(store, "llm-model-version") == original

    def test_rollback_brings_back_a_deleted_flag(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`rollback --steps 1` after `delete` restores the flag as it was."""
        original = stored_definition(store, "fallback-provider")
        cli.ok("delete", "fallback-provider")

        cli.ok("rollback", "fallback-provider", "--steps", "1")

        assert stored_definition(store, "fallback-provider") == original
        assert store.versions()["fallback-provider"] == 3

    def test_rollback_ignores_a_segment_with_the_same_key(self, cli: Cli, store: Publisher) -> None:
        """A flag rolls back to its own earlier version even when a segment of the same
        name has a newer change with that version number."""
        flag = {"variants": {"on": True, "off": False}, "off": "off", "default": "off"}
        store.apply({"flags": {"beta": flag}, "segments": {"beta": {"keys": ["u1"]}}})
        store.kill("beta")
        killed = stored_definition(store, "beta")
        store.apply({"segments": {"beta": {"keys": ["u1", "u2"]}}})  # segment beta is now v2
        store.enable("beta")

        result = cli("rollback", "beta", "--to", "2")

        assert result.code == 0, str(result)
        assert stored_definition(store, "beta") == killed

    def test_rollback_to_a_missing_version_is_refused(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`rollback --to` a version the flag never had exits 2 and writes nothing."""
        result = cli("rollback", "llm-model-version", "--to", "9")

        assert result.code == 2, str(result)
        assert "flags.llm-model-version: no version 9 (current is v1)" in result.stderr
        assert "nothing was changed" in result.stderr
        assert store.revision()[1] == example

    def test_rollback_needs_exactly_one_target(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`rollback` without --to/--steps, or with both, is a usage error (exit 2)."""
        neither = cli("rollback", "llm-model-version")
        both = cli("rollback", "llm-model-version", "--to", "1", "--steps", "1")

        assert neither.code == 2, str(neither)
        assert "one of the arguments --to --steps is required" in neither.stderr
        assert both.code == 2, str(both)
        assert "not allowed with argument" in both.stderr
        assert store.revision()[1] == example
