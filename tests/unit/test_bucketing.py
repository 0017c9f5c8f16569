"""Bucketing: the golden vectors, stability across processes and reloads, monotonic ramps,
uniform buckets and rollout shares (DESIGN.md, "Bucketing")."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flagsync
from flagsync import BUCKETS, FlagClient, Reason, bucket_of, load_flags
from tests.unit.builders import DATA_DIR, Document, assignments, client_for, flag, rollout

VECTORS: list[dict[str, Any]] = json.loads(
    (DATA_DIR / "bucketing-vectors.json").read_text(encoding="utf-8")
)["vectors"]

CHI_SQUARE_CRITICAL_DF99_P001 = 148.230
"""The chi-square critical value for 99 degrees of freedom at p = 0.001 (statistical tables;
the Wilson-Hilferty approximation gives 148.29)."""


def _owner_flag(bucket: int, *, salt: str | None = None, by: str | None = None) -> Document:
    """A flag whose `owner` variant holds exactly `bucket`, between `before` and `after`."""
    return flag(
        {"before": "before", "owner": "owner", "after": "after"},
        default=rollout(
            ("before", bucket / 1000),
            ("owner", 0.001),
            ("after", (BUCKETS - bucket - 1) / 1000),
            salt=salt,
            by=by,
        ),
    )


def _vector_id(vector: dict[str, Any]) -> str:
    return f"{vector['salt'][:24]}/{vector['value'][:24]}"


class TestGoldenVectors:
    """The pinned vectors other languages reproduce; the hash can never change unnoticed."""

    def test_every_vector_is_present(self) -> None:
        """The golden file holds all 32 vectors, each with the input the spec describes."""
        assert len(VECTORS) == 32
        for vector in VECTORS:
            assert vector["hash_input"] == f"{vector['salt']}/{vector['value']}"

    @pytest.mark.parametrize("vector", VECTORS, ids=_vector_id)
    def test_unsigned_murmur3_matches(self, vector: dict[str, Any]) -> None:
        """murmur3 x86_32 (seed 0, unsigned) of the UTF-8 input gives the pinned hash."""
        digest = mmh3.hash(vector["hash_input"].encode("utf-8"), 0, False)
        assert digest == vector["mmh3_x86_32_unsigned"]
        assert digest % BUCKETS == vector["bucket"]

    @pytest.mark.parametrize("vector", VECTORS, ids=_vector_id)
    def test_bucket_of_matches(self, vector: dict[str, Any]) -> None:
        """`bucket_of(salt, value)` returns the pinned bucket."""
        assert bucket_of(vector["salt"], vector["value"]) == vector["bucket"]

    @pytest.mark.parametrize("vector", VECTORS, ids=_vector_id)
    def test_rollout_serves_the_variant_owning_the_bucket(self, vector: dict[str, Any]) -> None:
        """Variants own consecutive ranges of weight x 1000 buckets in listed order, so a
        0.001 % slice placed at the pinned bucket catches exactly that value."""
        bucket = vector["bucket"]
        client = client_for({"golden": _owner_flag(bucket, salt=vector["salt"])})
        detail = client.detail("golden", {"key": vector["value"]})
        assert (detail.variant, detail.reason) == ("owner", Reason.SPLIT)

    def test_neighbouring_slices_miss_the_bucket(self) -> None:
        """A slice one bucket before or after the pinned one does not catch the value."""
        vector = VECTORS[0]
        bucket = vector["bucket"]
        for shifted in (bucket - 1, bucket + 1):
            client = client_for({"golden": _owner_flag(shifted, salt=vector["salt"])})
            variant = client.detail("golden", {"key": vector["value"]}).variant
            assert variant == ("after" if shifted < bucket else "before")

    def test_salt_defaults_to_the_flag_key(self) -> None:
        """Without `salt`, the flag key salts the hash (vector `llm-model-version/user-1`)."""
        vector = next(v for v in VECTORS if v["hash_input"] == "llm-model-version/user-1")
        client = client_for({"llm-model-version": _owner_flag(vector["bucket"])})
        assert client.detail("llm-model-version", {"key": "user-1"}).variant == "owner"


class TestBucketingText:
    """The `by` attribute is bucketed by its string form; some values cannot be bucketed."""

    @pytest.mark.parametrize("org_id", [997, 997.0, "997"])
    def test_integral_numbers_bucket_as_decimal_text(self, org_id: object) -> None:
        """997, 997.0 and "997" all land in the pinned bucket of `sampling/997`."""
        vector = next(v for v in VECTORS if v["hash_input"] == "sampling/997")
        client = client_for({"sampling": _owner_flag(vector["bucket"], by="org_id")})
        assert client.detail("sampling", {"org_id": org_id}).variant == "owner"

    def test_fractional_floats_bucket_as_their_shortest_repr(self) -> None:
        """A non-integral float buckets as `repr(value)` (2.5 -> "2.5")."""
        client = client_for({"f": _owner_flag(bucket_of("f", "2.5"), by="score")})
        assert client.detail("f", {"score": 2.5}).variant == "owner"

    @pytest.mark.parametrize(
        "value", [True, False, math.nan, math.inf, ["user-1"], {"id": 1}], ids=repr
    )
    def test_unbucketable_values_report_a_missing_targeting_key(self, value: object) -> None:
        """Booleans, NaN/inf and containers cannot be bucketed: TARGETING_KEY_MISSING."""
        client = client_for({"f": flag(default=rollout(("a", 50), ("b", 50)))})
        detail = client.detail("f", {"key": value}, "fallback")
        assert (detail.value, detail.variant, detail.reason, detail.error_code) == (
            "fallback",
            None,
            Reason.ERROR,
            flagsync.ErrorCode.TARGETING_KEY_MISSING,
        )


class TestUnencodableText:
    """Text that UTF-8 cannot encode (a lone surrogate) is refused without crashing."""

    def test_lone_surrogate_neither_crashes_nor_raises_from_evaluation(self) -> None:
        """`bucket_of` raises UnicodeEncodeError and evaluation serves the default (run in a
        child process: murmur3 given such a str directly crashes the interpreter)."""
        script = (
            "from flagsync import FlagClient, bucket_of\n"
            "try:\n"
            "    bucket_of('f', '\\ud800')\n"
            "except UnicodeEncodeError:\n"
            "    print('refused')\n"
            "client = FlagClient.offline({'flags': {'f': {'variants': {'a': 'x', 'b': 'y'},\n"
            "    'off': 'a', 'default': {'rollout': {'a': 50, 'b': 50}}}}})\n"
            "detail = client.detail('f', {'key': '\\ud800'}, 'd')\n"
            "print(client.variation('f', {'key': '\\ud800'}, 'd'), detail.value, detail.reason)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["refused", "d", "d", "ERROR"]


class TestStability:
    """The same user gets the same variant in every process, every reload and every version."""

    def test_same_variants_in_another_process(self) -> None:
        """A fresh interpreter (with a different str-hash seed) assigns ~200 users exactly as
        this one does."""
        path = DATA_DIR / "rollouts.yaml"
        expected = assignments(FlagClient.offline(path))
        roots = {str(Path(flagsync.__file__).resolve().parents[1]), str(DATA_DIR.parents[1])}
        env = {**os.environ, "PYTHONHASHSEED": "4242", "PYTHONPATH": os.pathsep.join(roots)}
        script = (
            "import json, sys\n"
            "from flagsync import FlagClient\n"
            "from tests.unit.builders import assignments\n"
            "print(json.dumps(assignments(FlagClient.offline(sys.argv[1]))))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script, str(path)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
            timeout=60,
        )
        assert json.loads(result.stdout) == expected

    def test_same_variants_across_reloads(self) -> None:
        """Two clients loading the same file assign every user the same variants."""
        path = DATA_DIR / "rollouts.yaml"
        first = assignments(FlagClient.offline(path))
        second = assignments(FlagClient.offline(path))
        assert first == second
        for variants in first.values():
            assert len(set(variants)) > 1, "each rollout should split these users"

    def test_same_variants_after_unrelated_edits(self) -> None:
        """Editing a flag without touching its rollout (description, off, a rule that does not
        match) keeps every user's default-rollout variant."""
        before = load_flags(DATA_DIR / "rollouts.yaml").to_builtins()
        after = json.loads(json.dumps(before))
        model = after["flags"]["llm-model-version"]
        model["description"] = "edited"
        model["off"] = "candidate"
        model["rules"].insert(
            0,
            {"when": [{"attr": "plan", "op": "in", "values": ["enterprise"]}], "serve": "current"},
        )
        assert assignments(FlagClient.offline(before)) == assignments(FlagClient.offline(after))

    def test_shared_salt_gives_the_same_split_to_two_flags(self) -> None:
        """Two flags with the same `salt` and weights put each user on the same side."""
        split = rollout(("a", 30), ("b", 70), salt="shared")
        client = client_for({"first": flag(default=split), "second": flag(default=split)})
        for index in range(500):
            context = {"key": f"user-{index}"}
            assert client.variation("first", context) == client.variation("second", context)

    def test_different_flag_keys_split_users_independently(self) -> None:
        """Without a shared salt, two flags with the same weights do not split users alike."""
        split = rollout(("a", 50), ("b", 50))
        client = client_for({"first": flag(default=split), "second": flag(default=split)})
        agree = sum(
            client.variation("first", {"key": f"user-{i}"})
            == client.variation("second", {"key": f"user-{i}"})
            for i in range(2_000)
        )
        assert 900 < agree < 1_100


class TestMonotonicRamps:
    """Raising the first-listed variant's weight never moves a user out of it."""

    @staticmethod
    def _served_first(weights: tuple[int, int, int], salt: str, keys: list[str]) -> set[str]:
        """The keys served `a` by a rollout of `weights` (in thousandths of a percent)."""
        serve = rollout(*zip("abc", (w / 1000 for w in weights), strict=True), salt=salt)
        client = client_for({"ramp": flag({"a": 1, "b": 2, "c": 3}, default=serve)})
        return {key for key in keys if client.detail("ramp", {"key": key}).variant == "a"}

    def test_ramp_from_5_to_20_to_50_percent(self) -> None:
        """Ramping `candidate` 5 % -> 20 % -> 50 % keeps everyone already on it, and each step
        serves about the intended share."""
        keys = [f"user-{index}" for index in range(20_000)]
        previous: set[str] = set()
        for percent in (5, 20, 50):
            client = client_for(
                {
                    "llm-model-version": flag(
                        {"candidate": "gpt-4.1", "current": "gpt-4o"},
                        default=rollout(("candidate", percent), ("current", 100 - percent)),
                    )
                }
            )
            served = {
                key
                for key in keys
                if client.detail("llm-model-version", {"key": key}).variant == "candidate"
            }
            assert previous <= served
            assert abs(len(served) / len(keys) - percent / 100) < 0.01
            previous = served

    @settings(max_examples=100, deadline=None)
    @given(
        ramp=st.lists(st.integers(0, BUCKETS), min_size=2, max_size=5).map(sorted),
        share_of_b=st.integers(0, 100),
        salt=st.text(min_size=1, max_size=16),
        extra_keys=st.lists(st.text(max_size=16), max_size=20),
    )
    def test_increasing_weights_only_add_users(
        self, ramp: list[int], share_of_b: int, salt: str, extra_keys: list[str]
    ) -> None:
        """For any increasing sequence of first-variant weights (and any split of the rest),
        each step's users of the first variant include the previous step's."""
        keys = [f"user-{index}" for index in range(300)] + extra_keys
        previous: set[str] = set()
        for first in ramp:
            second = (BUCKETS - first) * share_of_b // 100
            served = self._served_first((first, second, BUCKETS - first - second), salt, keys)
            assert previous <= served
            previous = served


class TestUniformity:
    """Buckets are uniform, so rollouts serve the shares they promise."""

    @pytest.mark.parametrize(
        ("salt", "key_format"),
        [("llm-model-version", "user-{}"), ("retrieval-strategy", "{}")],
    )
    def test_chi_square_over_100_bins(self, salt: str, key_format: str) -> None:
        """100,000 keys spread over 100 equal bins pass a chi-square test at p = 0.001."""
        bins = [0] * 100
        for index in range(100_000):
            bins[bucket_of(salt, key_format.format(index)) * 100 // BUCKETS] += 1
        expected = 100_000 / 100
        chi_square = sum((observed - expected) ** 2 / expected for observed in bins)
        assert chi_square < CHI_SQUARE_CRITICAL_DF99_P001

    def test_buckets_cover_the_whole_range(self) -> None:
        """Buckets fall in 0 ... 99,999 and reach both ends of the range."""
        buckets = [bucket_of("coverage", f"user-{index}") for index in range(100_000)]
        assert min(buckets) >= 0
        assert max(buckets) < BUCKETS
        assert min(buckets) < 100
        assert max(buckets) > BUCKETS - 100

    def test_twenty_eighty_split_within_one_percent(self) -> None:
        """100,000 distinct users on a 20/80 rollout land within +-1 % of 20 % and 80 %."""
        client = client_for(
            {
                "llm-model-version": flag(
                    {"candidate": "gpt-4.1", "current": "gpt-4o"},
                    default=rollout(("candidate", 20), ("current", 80)),
                )
            }
        )
        total = 100_000
        candidates = sum(
            client.variation("llm-model-version", {"key": f"user-{index}"}) == "gpt-4.1"
            for index in range(total)
        )
        assert abs(candidates / total - 0.20) <= 0.01
        assert abs((total - candidates) / total - 0.80) <= 0.01
