"""Rollout guards and plans (`flagsync.guards`, `RolloutPlan.validate`): parsing every
form, refusing malformed guards with the path named, and deciding insufficient / pass /
breach with counts and a one-sided 95 % margin. Pure: no server."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from flagsync.controller import RolloutPlan
from flagsync.errors import InvalidFlagError
from flagsync.guards import Guard, GuardResult, evaluate_guard, parse_guard
from flagsync.guards import Side as GuardSide
from flagsync.metrics import HISTOGRAM_BASE, MetricStat

Window = dict[tuple[str, str], MetricStat]

RATE = "thumbs_down_rate(candidate) <= thumbs_down_rate(current) * 1.1"


def stat_of(values: Sequence[float]) -> MetricStat:
    """A stat with `values` added one by one."""
    stat = MetricStat()
    for value in values:
        stat.add(value)
    return stat


def rates(count: int, bad: int) -> list[float]:
    """`count` values of a 0/1 signal, `bad` of them 1.0."""
    return [1.0] * bad + [0.0] * (count - bad)


def thumbs_down(candidate: tuple[int, int], current: tuple[int, int]) -> Window:
    """A window of thumbs-down signals: (samples, rated down) per variant."""
    return {
        ("candidate", "thumbs_down"): stat_of(rates(*candidate)),
        ("current", "thumbs_down"): stat_of(rates(*current)),
    }


def decide(text: str, window: Window, min_samples: int = 100) -> GuardResult:
    """Parse `text` and decide it on `window`."""
    return evaluate_guard(parse_guard(text), window, min_samples)


def issues_of(error: pytest.ExceptionInfo[InvalidFlagError]) -> list[tuple[str, str]]:
    """(path, message) of every issue an InvalidFlagError carries."""
    return [(issue.path, issue.message) for issue in error.value.issues]


class TestParse:
    """Every function form, factors, numbers and operators."""

    @pytest.mark.parametrize(
        ("function", "metric", "percent"),
        [
            ("thumbs_down_rate", "thumbs_down", None),
            ("cost_per_request", "cost", None),
            ("mean_latency_ms", "latency_ms", None),
            ("p95_latency_ms", "latency_ms", 95.0),
            ("p99_ttft_ms", "ttft_ms", 99.0),
            ("p5_tokens", "tokens", 5.0),
        ],
    )
    def test_each_function_form_names_its_metric(
        self, function: str, metric: str, percent: float | None
    ) -> None:
        """`<m>_rate`, `<m>_per_request`, `mean_<m>` and `p<NN>_<m>` name metric `<m>`."""
        guard = parse_guard(f"{function}(candidate) <= 1")

        assert guard.left == GuardSide(function, metric, "candidate", 1.0, None, percent)

    def test_a_comparison_with_the_control_times_a_factor(self) -> None:
        """The right side may be another variant's metric times a factor."""
        guard = parse_guard("  thumbs_down_rate(candidate)<=thumbs_down_rate(current)*1.1  ")

        assert guard == Guard(
            text="thumbs_down_rate(candidate)<=thumbs_down_rate(current)*1.1",
            left=GuardSide("thumbs_down_rate", "thumbs_down", "candidate"),
            op="<=",
            right=GuardSide("thumbs_down_rate", "thumbs_down", "current", 1.1),
        )
        assert str(guard.right) == "thumbs_down_rate(current) * 1.1"

    @pytest.mark.parametrize(
        ("number", "value"),
        [("0.0045", 0.0045), ("1500", 1500.0), ("-2", -2.0), ("1e3", 1000.0), ("5e-3", 0.005)],
    )
    def test_numbers(self, number: str, value: float) -> None:
        """Decimals, integers, negatives and exponents are numbers on the right."""
        guard = parse_guard(f"cost_per_request(candidate) <= {number}")

        assert guard.right == GuardSide(number=value)

    @pytest.mark.parametrize("op", ["<=", ">=", "<", ">"])
    def test_every_operator(self, op: str) -> None:
        """The four comparisons parse."""
        assert parse_guard(f"success_rate(v2) {op} success_rate(v1) * 0.95").op == op

    def test_a_factor_on_the_left(self) -> None:
        """The left side may carry a factor too."""
        guard = parse_guard("cost_per_request(candidate) * 0.5 <= cost_per_request(current)")

        assert guard.left.factor == 0.5


class TestParseErrors:
    """A malformed guard is refused, naming the path it came from."""

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "thumbs_down_rate(candidate)",
            "thumbs_down_rate(candidate) == 0.1",
            "thumbs_down_rate(Candidate) <= 0.1",
            "thumbs_down_rate(candidate) <= 0.1 and cost_per_request(candidate) <= 1",
        ],
    )
    def test_malformed_guards_name_the_path(self, text: str) -> None:
        """What does not match the grammar is an InvalidFlagError at the given path."""
        with pytest.raises(InvalidFlagError) as error:
            parse_guard(text, path="plans.model.guards[2]")

        [(path, message)] = issues_of(error)
        assert path == "plans.model.guards[2]"
        assert message.startswith(f"cannot parse guard {text!r}")

    @pytest.mark.parametrize(
        "text",
        [
            "thumbs_down_rate(candidate) <= 1.2.3",
            "thumbs_down_rate(candidate) <= thumbs_down_rate(current) * .",
            "thumbs_down_rate(candidate) <= 1e999",
        ],
    )
    def test_numbers_the_pattern_admits_but_are_not_finite_numbers(self, text: str) -> None:
        """`1.2.3`, a lone `.` or an overflow are refused as guard errors, not ValueErrors."""
        with pytest.raises(InvalidFlagError) as error:
            parse_guard(text, path="plans.model.guards[0]")

        [(path, message)] = issues_of(error)
        assert path == "plans.model.guards[0]"
        assert "is not a finite number" in message

    @pytest.mark.parametrize("function", ["thumbs_down", "rate", "p95", "mean_", "latency_p95"])
    def test_unknown_functions_are_named(self, function: str) -> None:
        """A function that names no metric form is refused, quoting it."""
        with pytest.raises(InvalidFlagError) as error:
            parse_guard(f"{function}(candidate) <= 1", path="plans.model.guards[0]")

        [(path, message)] = issues_of(error)
        assert path == "plans.model.guards[0]"
        assert message.startswith(f"unknown function {function!r}")

    def test_a_number_on_the_left_is_refused(self) -> None:
        """The left side must be a metric: `0.1 >= thumbs_down_rate(c)` is refused."""
        with pytest.raises(InvalidFlagError) as error:
            parse_guard("0.1 >= thumbs_down_rate(candidate)", path="plans.model.guards[1]")

        assert issues_of(error) == [
            (
                "plans.model.guards[1]",
                "the left side of '0.1 >= thumbs_down_rate(candidate)' must be a metric",
            )
        ]


class TestEvaluate:
    """insufficient, pass or breach, with the numbers behind the verdict."""

    @pytest.mark.parametrize(
        ("candidate", "current"), [(99, 1000), (1000, 99)], ids=["candidate", "control"]
    )
    def test_too_few_samples_on_either_side_are_insufficient(
        self, candidate: int, current: int
    ) -> None:
        """Below min_samples on either side, even a huge difference decides nothing."""
        result = decide(RATE, thumbs_down((candidate, candidate), (current, 0)), min_samples=100)

        assert (result.verdict, result.left_samples, result.right_samples) == (
            "insufficient",
            candidate,
            current,
        )

    def test_a_missing_series_is_insufficient(self) -> None:
        """A metric never tracked for a variant has no value and zero samples."""
        result = decide(RATE, {("candidate", "thumbs_down"): stat_of(rates(500, 5))})

        assert (result.verdict, result.right, result.right_samples) == ("insufficient", None, 0)

    def test_equal_rates_pass(self) -> None:
        """Equal rates pass a `<=` guard."""
        result = decide(RATE, thumbs_down((1000, 50), (1000, 50)))

        assert (result.guard, result.verdict, result.left_samples, result.right_samples) == (
            RATE,
            "pass",
            1000,
            1000,
        )
        assert result.left == pytest.approx(0.05)
        assert result.right == pytest.approx(0.055)

    def test_a_clear_regression_breaches(self) -> None:
        """A candidate rated down three times as often breaches, with the numbers."""
        result = decide(RATE, thumbs_down((400, 60), (400, 20)))

        assert result.verdict == "breach"
        assert result.left == pytest.approx(0.15)
        assert result.right == pytest.approx(0.055)
        assert str(result) == f"breach: {RATE}  (0.15 [n=400] vs 0.055 [n=400])"

    def test_a_small_difference_within_noise_passes(self) -> None:
        """11 % vs 10 % (x1.0) on 200 samples each is within the 95 % margin: no breach."""
        guard = "thumbs_down_rate(candidate) <= thumbs_down_rate(current)"

        result = decide(guard, thumbs_down((200, 22), (200, 20)))

        assert result.verdict == "pass"
        assert result.left is not None
        assert result.right is not None
        assert result.left > result.right

    def test_the_same_difference_on_many_samples_breaches(self) -> None:
        """The margin shrinks with the samples: 11 % vs 10 % on 100,000 each breaches."""
        guard = "thumbs_down_rate(candidate) <= thumbs_down_rate(current)"

        result = decide(guard, thumbs_down((100_000, 11_000), (100_000, 10_000)))

        assert result.verdict == "breach"

    def test_a_constant_guard_uses_the_left_side_only(self) -> None:
        """Against a constant only the left side needs samples; no right sample count."""
        window = {("candidate", "cost"): stat_of([0.004] * 150)}

        passing = decide("cost_per_request(candidate) <= 0.0045", window)
        breached = decide("cost_per_request(candidate) <= 0.0035", window)

        assert (passing.verdict, passing.right_samples) == ("pass", None)
        assert breached.verdict == "breach"

    def test_a_constant_guard_allows_noise_within_the_margin(self) -> None:
        """A mean slightly over a constant, within its standard error, does not breach."""
        window = {("candidate", "cost"): stat_of([0.002, 0.0062] * 100)}  # mean 0.0041

        result = decide("cost_per_request(candidate) <= 0.004", window)

        assert result.verdict == "pass"
        assert result.left == pytest.approx(0.0041)

    def test_a_percentile_guard(self) -> None:
        """p95 from the histogram passes under the limit and breaches over it."""
        window = {("candidate", "latency_ms"): stat_of([float(v) for v in range(1, 1001)])}

        under = decide("p95_latency_ms(candidate) <= 1200", window)
        over = decide("p95_latency_ms(candidate) <= 900", window)

        assert under.verdict == "pass"
        assert under.left is not None
        assert 950 <= under.left <= 950 * HISTOGRAM_BASE
        assert over.verdict == "breach"

    def test_a_percentile_against_the_controls_percentile(self) -> None:
        """A percentile may be compared with the control's percentile times a factor."""
        window = {
            ("candidate", "latency_ms"): stat_of([1000.0] * 200),
            ("current", "latency_ms"): stat_of([500.0] * 200),
        }

        result = decide("p95_latency_ms(candidate) <= p95_latency_ms(current) * 1.5", window)

        assert (result.verdict, result.right_samples) == ("breach", 200)

    def test_greater_or_equal_guards(self) -> None:
        """`>=` passes when the left is at least the right, breaches when clearly below."""
        guard = "success_rate(candidate) >= success_rate(current) * 0.95"
        good = {
            ("candidate", "success"): stat_of(rates(1000, 930)),
            ("current", "success"): stat_of(rates(1000, 950)),
        }
        bad = {
            ("candidate", "success"): stat_of(rates(1000, 700)),
            ("current", "success"): stat_of(rates(1000, 950)),
        }

        assert decide(guard, good).verdict == "pass"
        assert decide(guard, bad).verdict == "breach"

    def test_strict_comparisons_breach_on_equality(self) -> None:
        """`<` and `>` breach when a constant side is exactly met (no noise to allow)."""
        window = {("candidate", "tokens"): stat_of([4.0] * 150)}  # exact in binary

        assert decide("tokens_per_request(candidate) < 4", window).verdict == "breach"
        assert decide("tokens_per_request(candidate) > 4", window).verdict == "breach"
        assert decide("tokens_per_request(candidate) <= 4", window).verdict == "pass"
        assert decide("tokens_per_request(candidate) >= 4", window).verdict == "pass"

    def test_a_factor_on_the_left_is_applied_and_reported_once(self) -> None:
        """`m(c) * 2 <= 10` on a mean of 4 compares (and reports) 8 with 10."""
        window = {("candidate", "cost"): stat_of([4.0] * 10)}

        result = decide("cost_per_request(candidate) * 2 <= 10", window, min_samples=5)
        breached = decide("cost_per_request(candidate) * 3 <= 10", window, min_samples=5)

        assert (result.verdict, result.left, result.right) == ("pass", 8.0, 10.0)
        assert (breached.verdict, breached.left) == ("breach", 12.0)

    def test_an_insufficient_result_shows_what_is_known(self) -> None:
        """An insufficient result still reports values and counts; unknowns print n/a."""
        result = decide(RATE, thumbs_down((10, 1), (0, 0)))

        assert str(result) == f"insufficient: {RATE}  (0.1 [n=10] vs n/a [n=0])"
        assert result.right is None
        assert math.isclose(result.left or 0.0, 0.1)


def plan(**fields: Any) -> RolloutPlan:
    """A valid plan, with `fields` overriding."""
    settings: dict[str, Any] = {
        "variant": "candidate",
        "control": "current",
        "steps": [5.0, 25.0, 100.0],
        "guards": [RATE],
    }
    settings.update(fields)
    return RolloutPlan(**settings)


RANGE = "steps must be percentages in (0, 100]"


class TestPlanValidation:
    """RolloutPlan.validate refuses a plan that cannot run, naming the field."""

    def test_a_valid_plan_passes(self) -> None:
        """The default fields with steps, variants and a guard make a runnable plan."""
        plan().validate("model")

    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            ({"steps": [5.0, 5.0, 50.0]}, ("plans.model.steps", "steps must increase")),
            ({"steps": [50.0, 20.0]}, ("plans.model.steps", "steps must increase")),
            ({"steps": [0.0, 50.0]}, ("plans.model.steps", RANGE)),
            ({"steps": [50.0, 101.0]}, ("plans.model.steps", RANGE)),
            ({"steps": []}, ("plans.model.steps", RANGE)),
            ({"on_breach": "pause"}, ("plans.model.on_breach", "use 'kill' or 'revert'")),
            ({"guards": []}, ("plans.model.guards", "a guarded rollout needs a guard")),
            ({"variant": "Candidate"}, ("plans.model.variant", "not a variant name")),
            ({"min_samples": 0}, ("plans.model", "hold_s >= 0, window_s > 0, min_samples >= 1")),
            ({"window_s": 0.0}, ("plans.model", "hold_s >= 0, window_s > 0, min_samples >= 1")),
        ],
        ids=[
            "steps-repeat", "steps-decrease", "step-zero", "step-over-100", "no-steps",
            "on-breach", "no-guards", "variant", "min-samples", "window",
        ],
    )  # fmt: skip
    def test_an_unrunnable_field_is_named(
        self, fields: dict[str, Any], expected: tuple[str, str]
    ) -> None:
        """Each unrunnable field is one issue at its path."""
        with pytest.raises(InvalidFlagError) as error:
            plan(**fields).validate("model")

        assert issues_of(error) == [expected]

    def test_a_bad_guard_is_named_by_its_index(self) -> None:
        """A guard that does not parse is reported at plans.<key>.guards[<i>]."""
        with pytest.raises(InvalidFlagError) as error:
            plan(guards=[RATE, "thumbs_down(candidate) <= 0.1"]).validate("model")

        [(path, message)] = issues_of(error)
        assert path == "plans.model.guards[1]"
        assert message.startswith("unknown function 'thumbs_down'")

    def test_every_problem_is_listed_at_once(self) -> None:
        """Several bad fields give one error listing all of them."""
        with pytest.raises(InvalidFlagError) as error:
            plan(steps=[50.0, 10.0], on_breach="x", guards=["nonsense"]).validate("model")

        assert [path for path, _ in issues_of(error)] == [
            "plans.model.steps",
            "plans.model.on_breach",
            "plans.model.guards[0]",
        ]


class TestResultText:
    def test_summary_leaves_the_verdict_to_the_line_that_states_it(self) -> None:
        """`str(result)` starts with the verdict; `summary` is the guard and its numbers
        only, so "guard breached: " + summary never reads "breached: breach: ..."."""
        result = GuardResult(
            "p95_latency_ms(candidate) <= 1500", "breach", 1700.0, 1500.0, 80, None
        )

        assert str(result) == "breach: p95_latency_ms(candidate) <= 1500  (1700 [n=80] vs 1500)"
        assert result.summary == "p95_latency_ms(candidate) <= 1500  (1700 [n=80] vs 1500)"
