"""The publisher's intents as pure edits of a flag: kill, enable, set the default, split
and ramp a serve (of the fallthrough or of a named rule)."""

from __future__ import annotations

import pytest

from flagsync import InvalidFlagError
from flagsync._intents import killed, ramped, served, split, with_enabled
from flagsync._validation import parse_flag
from flagsync.model import Flag, Rollout

RAW = {
    "variants": {"current": "a", "candidate": "b", "shadow": "c"},
    "off": "current",
    "rules": [
        {"when": [{"attr": "plan", "op": "in", "values": ["paid"]}], "serve": "candidate"},
        {
            "name": "ramp",
            "when": [{"attr": "plan", "op": "in", "values": ["free"]}],
            "serve": {"rollout": {"current": 90, "candidate": 10}, "by": "org", "salt": "s1"},
        },
    ],
    "default": "current",
}


@pytest.fixture
def flag() -> Flag:
    """A flag with an unnamed rule, a named ramped rule and a fixed default."""
    return parse_flag("model", RAW)


class TestSwitches:
    """kill, enable and set_default change one field and nothing else."""

    def test_kill_and_enable(self, flag: Flag) -> None:
        """kill clears `enabled`, enable sets it back: the same flag again."""
        assert killed(flag).enabled is False
        assert with_enabled(True)(killed(flag)) == flag

    def test_set_default(self, flag: Flag) -> None:
        """set_default serves one fixed variant as the fallthrough."""
        assert served("shadow")(flag).default == "shadow"
        assert served("shadow")(flag).rules == flag.rules


class TestServes:
    """split and ramp edit the serve of the fallthrough or of the rule they name."""

    def test_split_of_the_default_makes_a_rollout(self, flag: Flag) -> None:
        """A fixed default becomes a rollout with the weights given."""
        assert split("model", None, {"current": 50, "candidate": 50})(flag).default == Rollout(
            rollout={"current": 50, "candidate": 50}
        )

    def test_ramp_of_a_named_rule_keeps_by_and_salt(self, flag: Flag) -> None:
        """Ramping the `ramp` rule keeps its `by` and `salt`, so users keep their buckets."""
        serve = ramped("model", "ramp", "candidate", 25)(flag).rules[1].serve
        assert serve == Rollout(rollout={"current": 75, "candidate": 25}, by="org", salt="s1")

    def test_an_unnamed_rule_is_addressed_by_position(self, flag: Flag) -> None:
        """`rules[0]` names the first rule when it has no name."""
        serve = split("model", "rules[0]", {"candidate": 100})(flag).rules[0].serve
        assert serve == Rollout(rollout={"candidate": 100})

    def test_unknown_rule_names_the_rules(self, flag: Flag) -> None:
        """A rule that does not exist is an InvalidFlagError listing the rules there are."""
        with pytest.raises(InvalidFlagError) as caught:
            ramped("model", "nope", "candidate", 10)(flag)
        assert [str(issue) for issue in caught.value.issues] == [
            "flags.model.rules: no rule 'nope' (rules: rules[0], ramp)"
        ]

    def test_ramp_beyond_100_is_refused(self, flag: Flag) -> None:
        """A percentage outside 0..100 is refused with the serve's path."""
        with pytest.raises(InvalidFlagError, match=r"flags\.model\.default: percent 120"):
            ramped("model", None, "candidate", 120)(flag)
