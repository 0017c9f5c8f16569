"""The per-flag commands: list, get, eval, kill, enable, ramp, set and delete."""

from __future__ import annotations

from typing import Any

import pytest

from flagsync.publisher import Publisher
from tests.cli.support import Cli, example_document, stored_definition

_STAFF = '{"key": "u1", "email": "ana@acme.com"}'


def _thousandths(weights: dict[str, Any]) -> int:
    return sum(round(weight * 1000) for weight in weights.values())


class TestList:
    def test_list_prints_a_table_of_every_flag(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`list` prints one row per flag with state, version, what it serves and rule count."""
        store.kill("fallback-provider")

        lines = cli.ok("list").stdout.splitlines()

        assert lines[0].split() == ["KEY", "STATE", "VERSION", "SERVES", "RULES", "DESCRIPTION"]
        rows = {line.split()[0]: line for line in lines[1:]}
        assert list(rows) == list(example_document()["flags"])
        assert rows["llm-model-version"].split()[1:5] == ["on", "v1", "current", "2"]
        assert "on 5% / off 95%" in rows["prompt-template-v2"]
        assert "hybrid 50% / bm25 50% by org_id" in rows["retrieval-strategy"]
        assert rows["fallback-provider"].split()[1:3] == ["KILLED", "v2"]

    def test_list_json_has_definitions_and_versions(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`list --json` prints every definition as stored and every version."""
        store.ramp("llm-model-version", "candidate", 10)

        document = cli.ok("list", "--json").json()

        assert document["flags"] == store.definitions().to_builtins()["flags"]
        assert document["versions"] == {
            key: 2 if key == "llm-model-version" else 1 for key in example_document()["flags"]
        }

    def test_list_of_an_empty_namespace_says_so(self, cli: Cli) -> None:
        """An empty namespace lists as a sentence, not an empty table."""
        assert cli.ok("list").stdout == "no flags in this namespace\n"

    def test_list_marks_a_cut_description(self, cli: Cli, store: Publisher) -> None:
        """A description longer than the column ends in `…` (what was cut is visible); a
        short one is printed whole."""
        flag = {"variants": {"on": True, "off": False}, "off": "off", "default": "on"}
        long_text = "Routes a share of paid traffic to the candidate model " * 2
        store.apply({"flags": {"long": {**flag, "description": long_text},
                               "short": {**flag, "description": "Short one"}}})  # fmt: skip

        lines = cli.ok("list").stdout.splitlines()

        long_line = next(line for line in lines if line.startswith("long "))
        assert long_line.endswith(long_text[:47] + "…")
        assert next(line for line in lines if line.startswith("short ")).endswith("Short one")


class TestGet:
    def test_get_prints_the_definition_version_and_last_change(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`get` prints the version, the definition as YAML and who changed it last, and why."""
        store.kill("llm-model-version", reason="regression")

        lines = cli.ok("get", "llm-model-version").stdout.splitlines()

        assert lines[0] == "# version 2"
        assert lines[1] == "llm-model-version:"
        assert "  enabled: false" in lines
        assert lines[-1].startswith(f"# last change: r{example + 1} ")
        assert lines[-1].endswith(" by cli-tests: kill (regression)")

    def test_get_json_has_the_exact_definition(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`get --json` prints the definition exactly as the file had it, with the last change."""
        document = cli.ok("get", "context-window", "--json").json()

        assert document["key"] == "context-window"
        assert document["version"] == 1
        assert document["definition"] == example_document()["flags"]["context-window"]
        assert document["last_change"]["revision"] == example
        assert document["last_change"]["actor"] == "cli-tests"
        assert document["last_change"]["op"] == "apply"


class TestEval:
    def test_eval_explains_the_rule_that_matched(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`eval --context` prints the value, variant, reason and matched rule."""
        text = cli.ok("eval", "llm-model-version", "--context", _STAFF)
        document = cli.ok("eval", "llm-model-version", "--context", _STAFF, "--json").json()

        assert text.stdout == (
            'llm-model-version = "gpt-4.1"  variant: candidate  reason: TARGETING_MATCH  '
            "rule: staff-first\n"
        )
        assert document == {
            "key": "llm-model-version",
            "revision": example,
            "value": "gpt-4.1",
            "variant": "candidate",
            "reason": "TARGETING_MATCH",
            "rule": "staff-first",
            "error_code": None,
            "stale": False,
        }

    def test_eval_default_of_the_wrong_type_is_served_with_an_error_code(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`eval --default` is served, with TYPE_MISMATCH, when its type is not the flag's;
        a default of the right type does not change the flag's answer."""
        wrong = cli.ok("eval", "prompt-template-v2", "--default", "42", "--json").json()
        right = cli.ok(
            "eval", "fallback-provider", "--default", '"none"', "--context", "{}", "--json"
        ).json()

        assert (wrong["value"], wrong["reason"], wrong["error_code"]) == (
            42,
            "ERROR",
            "TYPE_MISMATCH",
        )
        assert (right["value"], right["variant"], right["error_code"]) == (
            "azure-openai",
            "secondary",
            None,
        )


class TestKillEnable:
    def test_kill_serves_off_and_enable_restores_rules(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`kill` makes every context get the `off` variant; `enable` restores the definition."""
        killed = cli.ok("kill", "llm-model-version", "--reason", "regression")
        while_killed = cli.ok("eval", "llm-model-version", "--context", _STAFF, "--json").json()
        enabled = cli.ok("enable", "llm-model-version")

        assert killed.stdout == (
            f"killed llm-model-version: revision {example + 1} (v2, serves current, KILLED)\n"
        )
        assert (while_killed["value"], while_killed["reason"]) == ("gpt-4o", "DISABLED")
        assert enabled.stdout == (
            f"enabled llm-model-version: revision {example + 2} (v3, serves current)\n"
        )
        assert (
            stored_definition(store, "llm-model-version")
            == example_document()["flags"]["llm-model-version"]
        )
        assert [entry.op for entry in store.history("llm-model-version")] == [
            "enable",
            "kill",
            "apply",
        ]

    def test_killing_a_killed_flag_writes_nothing(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """A second `kill` is a no-op reported as one (`changed: false`): same revision, same
        version, no change-log entry."""
        first = cli.ok("kill", "sampling-params", "--json").json()
        second = cli.ok("kill", "sampling-params", "--json").json()

        assert first == {
            "action": "kill",
            "key": "sampling-params",
            "changed": True,
            "version": 2,
            "revision": example + 1,
        }
        assert second == {**first, "changed": False}
        assert len(store.history("sampling-params")) == 2

    @pytest.mark.parametrize(
        ("args", "already"),
        [
            (["enable", "llm-model-version"], "enabled"),
            (["set", "llm-model-version", "--default", "current"], "serving current by default"),
        ],
        ids=["enable", "set"],
    )
    def test_a_write_that_changes_nothing_says_so(
        self, cli: Cli, store: Publisher, example: int, args: list[str], already: str
    ) -> None:
        """`enable` of an enabled flag (or `set` to the current default) prints that
        nothing changed, not a new revision, and writes no change-log entry."""
        result = cli.ok(*args)

        assert result.stdout == (
            f"llm-model-version is already {already} (no change; store at revision {example})\n"
        )
        assert store.revision()[1] == example
        assert len(store.history("llm-model-version")) == 1


class TestRamp:
    def test_ramp_turns_a_fixed_default_into_a_rollout(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`ramp KEY VARIANT PCT` gives the variant PCT % of the fallthrough, the rest to the
        variant served before; the rules are untouched."""
        before = stored_definition(store, "llm-model-version")

        result = cli.ok("ramp", "llm-model-version", "candidate", "10")
        after = stored_definition(store, "llm-model-version")

        assert result.stdout.startswith(f"ramped llm-model-version: revision {example + 1} ")
        assert after["default"] == {"rollout": {"current": 90, "candidate": 10}}
        assert after["rules"] == before["rules"]

    def test_ramp_a_rule_keeps_the_default(self, cli: Cli, store: Publisher, example: int) -> None:
        """`ramp --rule NAME` changes only that rule's split, and the other weight follows."""
        before = stored_definition(store, "llm-model-version")

        cli.ok("ramp", "llm-model-version", "candidate", "35", "--rule", "paid-ramp")
        after = stored_definition(store, "llm-model-version")

        assert after["rules"][1]["serve"] == {"rollout": {"candidate": 35, "current": 65}}
        assert after["rules"][0] == before["rules"][0]
        assert after["default"] == "current"

    def test_ramp_keeps_the_other_weights_in_proportion(self, cli: Cli, store: Publisher) -> None:
        """The variants not ramped share the rest in their old proportions, to three
        decimals, and the split always sums to exactly 100."""
        store.put(
            "tiers",
            {
                "variants": {"a": 1, "b": 2, "c": 3},
                "off": "a",
                "default": {"rollout": {"a": 10, "b": 30, "c": 60}, "by": "org_id"},
            },
        )

        cli.ok("ramp", "tiers", "a", "40")
        first = stored_definition(store, "tiers")["default"]
        cli.ok("ramp", "tiers", "a", "33.333")
        second = stored_definition(store, "tiers")["default"]

        assert first == {"rollout": {"a": 40, "b": 20, "c": 40}, "by": "org_id"}
        assert second["rollout"] == {"a": 33.333, "b": 22.222, "c": 44.445}
        assert _thousandths(second["rollout"]) == 100_000
        assert second["by"] == "org_id"

    def test_ramp_of_a_rollout_keeps_its_attribute(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """Ramping a rollout bucketed `by` an attribute keeps that attribute (users keep
        their buckets)."""
        cli.ok("ramp", "retrieval-strategy", "hybrid", "70")

        assert stored_definition(store, "retrieval-strategy")["default"] == {
            "rollout": {"hybrid": 70, "bm25": 30},
            "by": "org_id",
        }

    def test_ramp_to_an_unknown_rule_is_refused(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`ramp --rule` naming no rule exits 2, lists the rules and writes nothing."""
        result = cli("ramp", "llm-model-version", "candidate", "5", "--rule", "nope")

        assert result.code == 2, str(result)
        assert "no rule 'nope' (rules: staff-first, paid-ramp)" in result.stderr
        assert store.revision()[1] == example


class TestSetDelete:
    def test_set_default_serves_one_variant(self, cli: Cli, store: Publisher, example: int) -> None:
        """`set KEY --default VARIANT` makes the fallthrough that variant."""
        store.ramp("prompt-template-v2", "on", 50)

        result = cli.ok("set", "prompt-template-v2", "--default", "on", "--reason", "all in")

        assert result.stdout == (
            f"set prompt-template-v2: revision {example + 2} (v3, serves on)\n"
        )
        assert stored_definition(store, "prompt-template-v2")["default"] == "on"
        assert store.history("prompt-template-v2", limit=1)[0].reason == "all in"

    def test_set_default_to_an_unknown_variant_is_refused(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`set --default` with a variant the flag lacks exits 2 naming it; nothing written."""
        result = cli("set", "prompt-template-v2", "--default", "maybe")

        assert result.code == 2, str(result)
        assert "flags.prompt-template-v2.default: unknown variant 'maybe'" in result.stderr
        assert store.revision()[1] == example

    def test_delete_removes_the_flag(self, cli: Cli, store: Publisher, example: int) -> None:
        """`delete` removes a flag, recording the reason."""
        result = cli.ok("delete", "fallback-provider", "--reason", "retired")

        assert result.stdout == f"deleted fallback-provider: revision {example + 1}\n"
        assert store.get("fallback-provider") is None
        assert "fallback-provider" not in store.versions()
        assert store.history("fallback-provider", limit=1)[0].reason == "retired"

    def test_delete_of_a_required_flag_is_refused(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """Deleting a flag another flag requires exits 2 naming the dependent flag."""
        result = cli("delete", "llm-model-version")

        assert result.code == 2, str(result)
        assert "flags.llm-model-version: required by context-window" in result.stderr
        assert store.revision()[1] == example
