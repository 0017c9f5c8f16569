"""Evaluation hot-path benchmark: ns per evaluation against a floor from the same run.

Cases (issue #2): (a) a boolean flag with no rules, (b) a string flag with two targeting
rules and a percentage rollout, (c) a flag with a segment and a prerequisite, (d) 10,000
flags: cold validate+compile time, retained memory, and evaluation in that big snapshot.
The floor is a plain function call returning a dict lookup, timed the same way, so the
ratios hold on a slow or noisy machine. Every case also checks its answers.

The hot-path rows (issue #10) compare `variation` with the *minimal evaluator*
(benchmarks/minimal.py) on a bool flag and on a rule + 50/50 rollout, and the typed
getters with `variation`, interleaved round by round in the same process.
"""

from __future__ import annotations

import tracemalloc
from collections import Counter
from collections.abc import Mapping
from typing import Any

import msgspec

from benchmarks import llm, openfeature
from benchmarks._timing import Evaluate, median, ns_per_call, seconds
from benchmarks.minimal import Table, minimal_evaluator
from flagsync import FlagClient, Snapshot, load_flags
from flagsync.client import MeteredFlagClient

SEGMENT_SIZE = 1_000


def engine_flags() -> dict[str, Any]:
    """The flags of cases (a)-(c), in the file format."""
    return {
        "flags": {
            "bool-static": {
                "variants": {"on": True, "off": False},
                "off": "off",
                "default": "on",
            },
            "model-routing": {
                "variants": {"current": "gpt-4o", "candidate": "gpt-4.1"},
                "off": "current",
                "rules": [
                    {
                        "name": "staff",
                        "when": [{"attr": "email", "op": "ends_with", "values": ["@acme.com"]}],
                        "serve": "candidate",
                    },
                    {
                        "name": "paid-ramp",
                        "when": [{"attr": "plan", "op": "in", "values": ["paid", "enterprise"]}],
                        "serve": {"rollout": {"candidate": 20, "current": 80}},
                    },
                ],
                "default": "current",
            },
            "llm-enabled": {
                "variants": {"on": True, "off": False},
                "off": "off",
                "default": "on",
            },
            "beta-sampling": {
                "variants": {"creative": "creative", "conservative": "conservative"},
                "off": "conservative",
                "requires": {"llm-enabled": "on"},
                "rules": [
                    {
                        "name": "beta",
                        "when": [{"attr": "key", "op": "in_segment", "values": ["beta-testers"]}],
                        "serve": "creative",
                    }
                ],
                "default": "conservative",
            },
        },
        "segments": {
            "beta-testers": {"keys": [f"user-{i}" for i in range(0, SEGMENT_SIZE * 10, 10)]}
        },
    }


def contexts(count: int) -> list[dict[str, Any]]:
    """Distinct users: half on a paid plan, 2 % staff, so every branch of (b) is walked."""
    plans = ("free", "paid")
    return [
        {
            "key": f"user-{i}",
            "plan": plans[i % 2],
            "email": f"u{i}@acme.com" if i % 50 == 0 else f"u{i}@example.com",
        }
        for i in range(count)
    ]


def many_flags(count: int) -> dict[str, Any]:
    """`count` flags in four shapes (static, kill-switched, rules + rollout, JSON params)."""
    flags: dict[str, Any] = {}
    for i in range(count):
        shape = i % 4
        key = f"flag-{i:05d}"
        if shape == 0:
            flags[key] = {"variants": {"on": True, "off": False}, "off": "off", "default": "on"}
        elif shape == 1:
            flags[key] = {
                "variants": {"a": "a", "b": "b"},
                "off": "a",
                "enabled": False,
                "default": "b",
            }
        elif shape == 2:
            flags[key] = {
                "description": "model routing for one product surface",
                "variants": {"current": "gpt-4o", "candidate": "gpt-4.1"},
                "off": "current",
                "rules": [
                    {
                        "name": "staff",
                        "when": [{"attr": "email", "op": "ends_with", "values": ["@acme.com"]}],
                        "serve": "candidate",
                    },
                    {
                        "name": "paid",
                        "when": [{"attr": "plan", "op": "in", "values": ["paid", "team"]}],
                        "serve": {"rollout": {"candidate": 10, "current": 90}},
                    },
                ],
                "default": "current",
            }
        else:
            flags[key] = {
                "variants": {
                    "low": {"temperature": 0.2, "top_p": 0.9},
                    "high": {"temperature": 0.8, "top_p": 0.95},
                },
                "off": "low",
                "default": {"rollout": {"high": 50, "low": 50}, "by": "org_id"},
            }
    return {"flags": flags}


HOT_PATH_FLAGS: dict[str, Any] = {
    "flags": {
        "plain-bool": {"variants": {"on": True, "off": False}, "off": "off", "default": "on"},
        "paid-split": {
            "variants": {"current": "gpt-4o", "candidate": "gpt-4.1"},
            "off": "current",
            "rules": [
                {
                    "name": "paid",
                    "when": [{"attr": "plan", "op": "in", "values": ["paid"]}],
                    "serve": {"rollout": {"candidate": 50, "current": 50}},
                }
            ],
            "default": "current",
        },
    }
}
"""The issue's two columns: a bool flag with no rule, and one rule serving a 50/50 rollout."""

MINIMAL_TABLE: Table = {
    "plain-bool": (True, None),
    "paid-split": ("gpt-4o", ("plan", "paid", ("gpt-4.1", "gpt-4o"), (50_000, 100_000))),
}
"""The same two flags for the minimal evaluator."""


def hot_path(users: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    """`variation` against the minimal evaluator, and the typed getters against `variation`.

    Ratios are medians over slices of users timed back to back (see `_SLICE`).
    """
    client = FlagClient.offline(HOT_PATH_FLAGS)
    minimal = minimal_evaluator(MINIMAL_TABLE)
    _check_hot_path_answers(client, minimal, users)
    rows: dict[str, tuple[Evaluate, str, Any]] = {
        "minimal_bool": (minimal, "plain-bool", False),
        "variation_bool": (client.variation, "plain-bool", False),
        "bool_value": (client.bool_value, "plain-bool", False),
        "minimal_rollout": (minimal, "paid-split", "fallback"),
        "variation_rollout": (client.variation, "paid-split", "fallback"),
        "string_value": (client.string_value, "paid-split", "fallback"),
    }
    samples: dict[str, list[float]] = {name: [] for name in rows}
    ratios: dict[str, list[float]] = {name: [] for name in _RATIOS}
    names = list(rows)
    slices = [users[start : start + _SLICE] for start in range(0, len(users), _SLICE)]
    for round_number in range(repeats):
        for part in slices:
            # Every function on the same slice back to back, in alternating order: a
            # machine that gets busier or quieter moves all of them alike, and each
            # ratio compares times taken a few microseconds apart.
            timed: dict[str, float] = {}
            for name in names if round_number % 2 else reversed(names):
                evaluate, key, default = rows[name]
                timed[name] = ns_per_call(evaluate, key, part, default, 1)[0]
                samples[name].append(timed[name])
            for ratio, (numerator, denominator) in _RATIOS.items():
                ratios[ratio].append(timed[numerator] / timed[denominator])
    return {
        "users": len(users),
        "rounds": repeats,
        "median_ns": {name: round(median(values), 1) for name, values in samples.items()},
        **{ratio: round(median(values), 2) for ratio, values in ratios.items()},
    }


_SLICE = 1_000
"""Users per timed slice (~50-250 us per function): short enough to pair fairly."""
_RATIOS = {
    "bool_ratio_to_minimal": ("variation_bool", "minimal_bool"),
    "rollout_ratio_to_minimal": ("variation_rollout", "minimal_rollout"),
    "bool_value_ratio_to_variation": ("bool_value", "variation_bool"),
    "string_value_ratio_to_variation": ("string_value", "variation_rollout"),
}
"""Each reported ratio: the median over slices of numerator / denominator."""


def _check_hot_path_answers(client: FlagClient, minimal: Any, users: list[dict[str, Any]]) -> None:
    """Every timed function must give the minimal evaluator's answer for every user."""
    split: Counter[str] = Counter()
    for user in users:
        expected = minimal("paid-split", user, "fallback")
        found = (
            client.variation("paid-split", user, "fallback"),
            client.string_value("paid-split", user, "fallback"),
            client.detail("paid-split", user, "fallback").value,
        )
        if found != (expected, expected, expected):
            raise AssertionError(f"hot path: {found} for {user['key']}, minimal gives {expected}")
        if user["plan"] == "paid":
            split[expected] += 1
        bools = (
            client.variation("plain-bool", user, False),
            client.bool_value("plain-bool", user, False),
        )
        if bools != (True, True) or minimal("plain-bool", user, False) is not True:
            raise AssertionError(f"hot path: the bool flag served {bools} to {user['key']}")
    share = split["gpt-4.1"] / max(1, sum(split.values()))
    if not 0.47 <= share <= 0.53:
        raise AssertionError(f"hot path: the 50/50 rollout gave the candidate {share:.3f}")


def _floor(table: Mapping[str, int]) -> Any:
    def floor(key: str, context: Mapping[str, Any], default: Any) -> Any:
        return table[key]

    return floor


def run(*, quick: bool) -> dict[str, Any]:
    """Measure every case; returns the results (medians, ratios, checks)."""
    users = contexts(20_000 if quick else 100_000)
    repeats = 7 if quick else 15
    client = FlagClient.offline(engine_flags())
    floor_samples = ns_per_call(_floor({"bool-static": 1}), "bool-static", users, False, repeats)
    floor_ns = median(floor_samples)

    results: dict[str, Any] = {"floor_ns": round(floor_ns, 1), "cases": {}}
    results["hot_path"] = hot_path(users[:10_000], 15 if quick else 41)
    results["openfeature"] = openfeature.run(users[:10_000], 7 if quick else 21)
    results["llm"] = llm.run(users[:10_000], 9 if quick else 25)
    cases = {
        "a_bool_no_rules": ("bool-static", False),
        "b_two_rules_rollout": ("model-routing", "fallback"),
        "c_segment_prerequisite": ("beta-sampling", "fallback"),
    }
    for name, (key, default) in cases.items():
        samples = ns_per_call(client.variation, key, users, default, repeats)
        results["cases"][name] = {
            "median_ns": round(median(samples), 1),
            "ratio_to_floor": round(median(samples) / floor_ns, 2),
        }
    _check_engine_answers(client, users)

    # Metrics on: the same cases through a client that counts every exposure.
    metered = MeteredFlagClient(client.snapshot)
    for name, (key, default) in cases.items():
        samples = ns_per_call(metered.variation, key, users, default, repeats)
        plain = results["cases"][name]["median_ns"]
        results["cases"][name]["metered_ns"] = round(median(samples), 1)
        results["cases"][name]["metered_ratio"] = round(median(samples) / plain, 2)
    exposures = sum(sum(flag.counts) for flag in metered.snapshot.compiled_flags())
    if exposures != len(users) * repeats * (len(cases) - 1):  # static (a) is not counted
        raise AssertionError(f"metered client counted {exposures} exposures")

    big = many_flags(10_000)
    rounds = 3 if quick else 5
    validate_s = median(seconds(lambda: load_flags(big), rounds))
    definitions = load_flags(big)
    compile_s = median(seconds(lambda: Snapshot.build(definitions, compile_all=True), rounds))
    parse_floor_s = median(seconds(lambda: msgspec.json.decode(msgspec.json.encode(big)), 5))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    retained = Snapshot.build(load_flags(big), compile_all=True)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    big_client = FlagClient(retained)
    big_samples = ns_per_call(big_client.variation, "flag-05002", users, "fallback", repeats)
    results["cases"]["d_eval_in_10k_flags"] = {
        "median_ns": round(median(big_samples), 1),
        "ratio_to_floor": round(median(big_samples) / floor_ns, 2),
    }
    results["cold_10k"] = {
        "validate_ms": round(validate_s * 1000, 1),
        "compile_all_ms": round(compile_s * 1000, 1),
        "json_roundtrip_floor_ms": round(parse_floor_s * 1000, 1),
        "ratio_to_json_roundtrip": round((validate_s + compile_s) / parse_floor_s, 1),
        "retained_mb": round((after - before) / 1e6, 1),
    }
    if len(retained) != 10_000 or big_client.variation("flag-00001", {}, "x") != "a":
        raise AssertionError("the 10,000-flag snapshot evaluates wrongly")
    return results


def _check_engine_answers(client: FlagClient, users: list[dict[str, Any]]) -> None:
    """A fast wrong answer must fail the benchmark: verify every case's results."""
    if not all(client.variation("bool-static", user, False) is True for user in users):
        raise AssertionError("(a) served something other than True")
    shares: Counter[str] = Counter()
    for user in users:
        value = client.variation("model-routing", user, "fallback")
        detail = client.detail("model-routing", user, "fallback")
        if value != detail.value:
            raise AssertionError(f"(b) variation and detail disagree for {user}")
        if user["email"].endswith("@acme.com") and value != "gpt-4.1":
            raise AssertionError(f"(b) staff user {user['key']} missed the staff rule")
        if detail.rule == "paid-ramp":
            shares[value] += 1
    candidate_share = shares["gpt-4.1"] / max(1, sum(shares.values()))
    if not 0.18 <= candidate_share <= 0.22:
        raise AssertionError(f"(b) candidate share {candidate_share:.3f} is not ~20 %")
    members = sum(client.variation("beta-sampling", user, "x") == "creative" for user in users)
    expected = sum(
        1
        for user in users
        if int(user["key"][5:]) % 10 == 0 and int(user["key"][5:]) < SEGMENT_SIZE * 10
    )
    if members != expected:
        raise AssertionError(f"(c) {members} segment matches, expected {expected}")
