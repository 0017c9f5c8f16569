"""Metrics in process and on the wire (`flagsync.metrics`): running stats, the log
histogram's percentiles, the bounded pending set, the stream encoding, and the tables a
client counts into. Pure: no server."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flagsync import FlagClient
from flagsync.compile import CompiledFlag
from flagsync.errors import FlagsyncError
from flagsync.metrics import (
    EXPOSURES,
    HISTOGRAM_BASE,
    MetricsTables,
    MetricStat,
    PendingSeries,
    check_metric_name,
    decode_entry,
    encode_series,
    flush_commands,
    merge_window,
    percentile,
)
from flagsync.store import StoreKeys


def stat_of(values: Sequence[float]) -> MetricStat:
    """A stat with `values` added one by one."""
    stat = MetricStat()
    for value in values:
        stat.add(value)
    return stat


Fields = dict[bytes | str, bytes | str]
"""Stream entry fields as `decode_entry` reads them (str, or bytes from redis-py)."""


def wire(fields: Mapping[str, str]) -> Fields:
    """`fields` typed as a stream entry (`decode_entry` takes str or bytes)."""
    return dict(fields.items())


def nearest_rank(values: Sequence[float], percent: float) -> float:
    """The exact `percent` percentile by nearest rank (the value the histogram brackets)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def split_flag() -> CompiledFlag:
    """A compiled flag splitting its fallthrough between variants `a` and `b`."""
    client = FlagClient.offline(
        {
            "flags": {
                "f": {
                    "variants": {"a": "x", "b": "y"},
                    "off": "a",
                    "default": {"rollout": {"a": 50, "b": 50}},
                }
            }
        }
    )
    return client.snapshot.flags["f"]


def index_of(flag: CompiledFlag, variant: str) -> int:
    """The outcome index at which `flag` serves `variant`."""
    return next(i for i, outcome in enumerate(flag.outcomes) if outcome.variant == variant)


class TestMetricStat:
    """Count, sum, sum of squares and histogram, and what they give."""

    def test_add_keeps_count_sum_squares_and_histogram(self) -> None:
        """Each value adds to the count, the sum, the squares and one histogram bucket."""
        stat = stat_of([1.0, 2.0, 3.0])

        assert (stat.count, stat.total, stat.squares) == (3, 6.0, 14.0)
        assert sum(stat.histogram.values()) == 3

    def test_mean_and_variance_match_the_sample_statistics(self) -> None:
        """mean and variance are the sample mean and the (n - 1) sample variance."""
        values = [0.5, 1.5, 2.0, 8.0, 13.25]
        stat = stat_of(values)

        assert stat.mean == pytest.approx(statistics.mean(values))
        assert stat.variance == pytest.approx(statistics.variance(values))

    def test_mean_and_variance_need_enough_values(self) -> None:
        """No value has no mean; fewer than two values have no variance."""
        assert math.isnan(MetricStat().mean)
        assert math.isnan(stat_of([4.0]).variance)
        assert stat_of([4.0]).mean == 4.0

    def test_variance_of_equal_values_is_never_negative(self) -> None:
        """Rounding in sum-of-squares never yields a negative variance."""
        assert stat_of([0.1] * 1000).variance >= 0.0

    def test_merge_equals_adding_every_value(self) -> None:
        """Merging two stats gives what adding all their values to one would."""
        left, right = [1.0, 2.5, 40.0], [0.0, 3.0, 3.0, 900.0]
        merged = stat_of(left)
        merged.merge(stat_of(right))

        assert merged == stat_of(left + right)

    def test_zero_negative_and_non_finite_values_share_bucket_zero(self) -> None:
        """Values with no logarithm go to bucket 0, whose percentile is 0."""
        stat = stat_of([0.0, -3.0, math.inf])

        assert stat.histogram == {0: 3}
        assert percentile(stat, 50) == 0.0


class TestPercentile:
    """Percentiles from the log histogram are exact to one bucket (~19 %)."""

    @given(
        st.lists(
            st.floats(min_value=1e-3, max_value=1e6, allow_nan=False), min_size=1, max_size=300
        ),
        st.sampled_from([1.0, 50.0, 90.0, 95.0, 99.0, 100.0]),
    )
    def test_the_estimate_is_within_one_bucket_above_the_exact_value(
        self, values: list[float], percent: float
    ) -> None:
        """The estimate is the upper edge of the exact percentile's bucket: never below it,
        at most one bucket (x 2**0.25) above."""
        exact = nearest_rank(values, percent)

        estimate = percentile(stat_of(values), percent)

        assert exact * (1 - 1e-9) <= estimate <= exact * HISTOGRAM_BASE * (1 + 1e-9)

    def test_p95_of_a_known_distribution(self) -> None:
        """p95 of 1..1000 ms is 950 ms to within one bucket."""
        estimate = percentile(stat_of([float(v) for v in range(1, 1001)]), 95)

        assert 950 <= estimate <= 950 * HISTOGRAM_BASE

    def test_an_empty_stat_has_no_percentile(self) -> None:
        """Without values the percentile is NaN (a guard then reports insufficient)."""
        assert math.isnan(percentile(MetricStat(), 95))


class TestPendingSeries:
    """Series waiting for the store, bounded."""

    def test_new_series_beyond_the_bound_are_dropped_and_counted(self) -> None:
        """Beyond max_series a new series is dropped and its count added to dropped."""
        pending = PendingSeries(max_series=2)

        pending.add({("f", "a", "m"): stat_of([1.0]), ("f", "b", "m"): stat_of([2.0])})
        pending.add({("f", "c", "m"): stat_of([1.0, 2.0, 3.0]), ("g", "a", "m"): stat_of([5.0])})

        assert sorted(pending.series) == [("f", "a", "m"), ("f", "b", "m")]
        assert pending.dropped == 4

    def test_series_already_pending_keep_growing_at_the_bound(self) -> None:
        """A series already pending merges new counts even when the set is full."""
        pending = PendingSeries(max_series=1)
        pending.add({("f", "a", "m"): stat_of([1.0])})

        pending.add({("f", "a", "m"): stat_of([2.0, 3.0])})

        assert pending.series[("f", "a", "m")] == stat_of([1.0, 2.0, 3.0])
        assert pending.dropped == 0

    def test_by_flag_groups_the_encoded_series_per_flag(self) -> None:
        """One stream entry per flag, holding the fields of each of its series."""
        pending = PendingSeries()
        pending.add(
            {
                ("f", "a", "cost"): stat_of([1.0]),
                ("f", "b", EXPOSURES): MetricStat(count=3, total=3.0, squares=3.0),
                ("g", "on", "cost"): stat_of([2.0]),
            }
        )

        entries = pending.by_flag()

        assert sorted(entries) == ["f", "g"]
        assert sorted(entries["f"]) == [
            "a|cost|c", "a|cost|h", "a|cost|q", "a|cost|s", "b|exposures|c", "b|exposures|s",
        ]  # fmt: skip


class TestEncoding:
    """The stream fields of a series, and reading them back."""

    def test_a_series_round_trips(self) -> None:
        """decode_entry(encode_series(...)) gives back the same stat."""
        stat = stat_of([0.004, 0.0041, 0.0123, 0.0])

        into: dict[tuple[str, str], MetricStat] = {}
        decode_entry(wire(encode_series("candidate", "cost", stat)), into)

        assert into == {("candidate", "cost"): stat}

    def test_fields_as_redis_returns_them_decode_too(self) -> None:
        """Bytes names and values (a redis-py reply) decode like strings."""
        stat = stat_of([120.0, 480.5])
        fields: Fields = {
            name.encode(): value.encode()
            for name, value in encode_series("current", "latency_ms", stat).items()
        }

        into: dict[tuple[str, str], MetricStat] = {}
        decode_entry(fields, into)

        assert into == {("current", "latency_ms"): stat}

    def test_exposures_carry_count_and_sum_only(self) -> None:
        """An exposure series is a count: no squares or histogram on the wire."""
        fields = encode_series("a", EXPOSURES, MetricStat(count=7, total=7.0, squares=7.0))

        assert fields == {"a|exposures|c": "7", "a|exposures|s": "7.0"}

    def test_malformed_fields_are_ignored(self) -> None:
        """Unknown, unparsable or nameless fields are skipped and counted, each series whole
        or not at all; a good series beside them still counts."""
        fields: Fields = {
            "good|m|c": "2",
            "good|m|s": "3.5",
            "a|m|c": "2",
            "a|m|s": "3.5",
            "a|m|c2": "100",  # unknown part: the whole a|m series is skipped
            "b|m|c": "1.5",  # a count must be an integer
            "d|m|q": "not-a-number",
            "|m|c": "9",  # no variant
            "a|c": "9",  # no metric
            "junk": "9",
        }

        into: dict[tuple[str, str], MetricStat] = {}
        malformed = decode_entry(fields, into)

        assert malformed == 8
        assert into == {("good", "m"): MetricStat(count=2, total=3.5)}

    @pytest.mark.parametrize(
        "series",
        [
            {"c": "-300", "s": "-60"},  # negative count (would cancel honest samples)
            {"c": "0", "s": "-60"},  # a sum without samples
            {"c": "2", "s": "inf"},
            {"c": "2", "s": "1", "q": "-1"},
            {"c": "2", "s": "1", "q": "1", "h": "10001:5"},  # histogram != count
            {"c": "2", "s": "1", "q": "1", "h": "10001:3,10002:-1"},
            {"c": "2", "s": "1", "q": "1", "h": "10001:2,oops"},
        ],
    )
    def test_a_series_a_reporter_cannot_write_is_skipped_whole(
        self, series: dict[str, str]
    ) -> None:
        """Negative counts, non-finite or impossible sums and histograms that do not add up
        to the count skip the series, so crafted fields cannot subtract from real ones."""
        into = {("v", "m"): MetricStat(count=10, total=5.0)}
        fields: Fields = {f"v|m|{part}": value for part, value in series.items()}

        malformed = decode_entry(fields, into)

        assert malformed == len(series)
        assert into == {("v", "m"): MetricStat(count=10, total=5.0)}

    def test_merge_window_sums_entries(self) -> None:
        """A window is the sum of its entries, series by series."""
        first, second = stat_of([1.0, 2.0]), stat_of([4.0])
        expected = stat_of([1.0, 2.0, 4.0])

        entries = [wire(encode_series("a", "m", stat)) for stat in (first, second)]

        window = merge_window([*entries, {}])

        assert window == {("a", "m"): expected}

    def test_flush_commands_append_one_trimmed_entry_per_flag(self) -> None:
        """One XADD per flag, trimming entries older than the retention (MINID ~)."""
        commands = flush_commands(
            StoreKeys("ns"), {"f": {"a|m|c": "1"}, "g": {"b|m|c": "2"}}, 60_000, 1_000_000
        )

        assert commands == [
            ("XADD", "{fs:ns}:metrics:f", "MINID", "~", "940000", "*", "a|m|c", "1"),
            ("XADD", "{fs:ns}:metrics:g", "MINID", "~", "940000", "*", "b|m|c", "2"),
        ]


class TestMetricNames:
    """Metric names become stream field parts."""

    @pytest.mark.parametrize("name", ["thumbs_down", "latency_ms", "cost", "p.95", "a-b", "0"])
    def test_storable_names_pass(self, name: str) -> None:
        """Lower-case names of letters, digits, `.`, `_` and `-` are accepted."""
        check_metric_name(name)

    @pytest.mark.parametrize("name", ["", "Latency", "a|b", "_x", "x" * 65, "a b"])
    def test_other_names_are_refused(self, name: str) -> None:
        """Names that could not be stored as a field part are refused, quoted."""
        with pytest.raises(FlagsyncError, match="invalid metric name"):
            check_metric_name(name)


class TestMetricsTables:
    """What a client counts in process, drained as (flag, variant, metric) series."""

    def test_exposures_are_drained_per_variant(self) -> None:
        """Exposure counts per outcome index come out named by variant."""
        flag = split_flag()
        tables = MetricsTables(lambda: [flag])
        for _ in range(3):
            tables.count_exposure(flag, index_of(flag, "a"))
        tables.count_exposure(flag, index_of(flag, "b"))

        series = tables.drain()

        assert {key: stat.count for key, stat in series.items()} == {
            ("f", "a", EXPOSURES): 3,
            ("f", "b", EXPOSURES): 1,
        }

    def test_tracked_outcomes_are_drained_per_variant(self) -> None:
        """record() by outcome index comes out as the variant's stat of that metric."""
        flag = split_flag()
        tables = MetricsTables(lambda: [flag])
        tables.record(flag, index_of(flag, "b"), "latency_ms", 100.0)
        tables.record(flag, index_of(flag, "b"), "latency_ms", 300.0)
        tables.record(flag, index_of(flag, "a"), "thumbs_down", 1.0)

        series = tables.drain()

        assert series == {
            ("f", "b", "latency_ms"): stat_of([100.0, 300.0]),
            ("f", "a", "thumbs_down"): stat_of([1.0]),
        }

    def test_a_drain_takes_the_counts_away(self) -> None:
        """What one drain returned is not returned again; new counts start from zero."""
        flag = split_flag()
        tables = MetricsTables(lambda: [flag])
        tables.count_exposure(flag, index_of(flag, "a"))
        tables.record(flag, index_of(flag, "a"), "cost", 0.5)
        tables.drain()

        assert tables.drain() == {}
        tables.count_exposure(flag, index_of(flag, "a"))
        assert {key: stat.count for key, stat in tables.drain().items()} == {
            ("f", "a", EXPOSURES): 1
        }

    def test_retired_flags_are_drained_once_more(self) -> None:
        """Counts on a flag replaced by a new snapshot are still drained, once."""
        old, new = split_flag(), split_flag()
        tables = MetricsTables(lambda: [new])
        tables.count_exposure(old, index_of(old, "a"))
        tables.count_exposure(new, index_of(new, "a"))
        tables.retire([old])

        first, second = tables.drain(), tables.drain()

        assert first[("f", "a", EXPOSURES)].count == 2
        assert second == {}
