"""Run the benchmark suite, print a table, optionally write JSON and check budgets.

python -m benchmarks                 # full run
python -m benchmarks --quick --check # what CI runs: fewer repeats, fail over budget
python -m benchmarks --json out.json
python -m benchmarks --only capacity # simulated workers against one node (also alone:
                                     # python -m benchmarks.capacity, more options)
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tomllib
from pathlib import Path
from typing import Any

import structlog

from benchmarks import capacity, engine, integrity, propagation

BUDGETS = Path(__file__).with_name("budgets.toml")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (1 when a budget is exceeded)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer users and repeats (CI)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 if a budget is exceeded")
    parser.add_argument(
        "--only",
        choices=("engine", "sync", "integrity", "capacity"),
        help="run one suite (default: all)",
    )
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    results: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "quick": args.quick,
    }
    if args.only in (None, "engine"):
        results["engine"] = engine.run(quick=args.quick)
        _print_engine(results["engine"])
    if args.only in (None, "sync"):
        results["sync"] = propagation.run(quick=args.quick)
        _print_sync(results["sync"])
    if args.only in (None, "integrity"):
        results["integrity"] = integrity.run(quick=args.quick)
        integrity.print_results(results["integrity"])
    if args.only in (None, "capacity"):
        results["capacity"] = capacity.run(quick=args.quick)
        capacity.print_results(results["capacity"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    if not args.check:
        return 0
    failures = check(results, tomllib.loads(BUDGETS.read_text()))
    for failure in failures:
        print(f"OVER BUDGET: {failure}")
    print("budget check:", "FAILED" if failures else "ok")
    return 1 if failures else 0


def check(results: dict[str, Any], budgets: dict[str, Any]) -> list[str]:
    """Every budget exceeded by `results`, as readable lines (empty when all hold)."""
    failures: list[str] = []
    if "engine" in results:
        engine_results = results["engine"]
        for case, budget in budgets["engine"]["ratio_to_floor"].items():
            ratio = engine_results["cases"][case]["ratio_to_floor"]
            if ratio > budget:
                failures.append(f"engine {case}: {ratio}x the floor > budget {budget}x")
        metered_budget = budgets["engine"]["metered"]["ratio_to_unmetered"]
        failures.extend(
            f"engine {case}: metrics on costs {row['metered_ratio']}x metrics off"
            f" > budget {metered_budget}x"
            for case, row in engine_results["cases"].items()
            if "metered_ratio" in row and row["metered_ratio"] > metered_budget
        )
        hot = engine_results["hot_path"]
        failures.extend(
            f"engine hot path {metric}: {hot[metric]}x > budget {budget}x"
            for metric, budget in budgets["engine"]["hot_path"].items()
            if hot[metric] > budget
        )
        provider = engine_results.get("openfeature")
        if provider is not None:  # None: openfeature-sdk is not installed
            failures.extend(
                f"engine openfeature {metric}: {provider[metric]}x > budget {budget}x"
                for metric, budget in budgets["engine"]["openfeature"].items()
                if provider[metric] > budget
            )
        llm_ratio = engine_results["llm"]["llm_config_ratio_to_json_value"]
        llm_budget = budgets["engine"]["llm"]["llm_config_ratio_to_json_value"]
        if llm_ratio > llm_budget:
            failures.append(f"engine llm_config: {llm_ratio}x json_value > budget {llm_budget}x")
        for metric, budget in budgets["engine"]["cold_10k"].items():
            value = engine_results["cold_10k"][metric]
            if value > budget:
                failures.append(f"engine cold_10k {metric}: {value} > budget {budget}")
    if "sync" in results:
        sync, limits = results["sync"], budgets["sync"]
        propagation_limits = limits["propagation"]
        failures.extend(
            f"propagation {name} {metric}: {row[metric]} > {propagation_limits[metric]}"
            for name, row in sync["propagation"].items()
            for metric in ("p50_ratio", "p99_ratio")
            if row[metric] > propagation_limits[metric]
        )
        for name, row in sync["cold_start"].items():
            budget = limits["cold_start"][name]
            if row["ratio_to_hgetall"] > budget:
                failures.append(
                    f"cold start {name}: {row['ratio_to_hgetall']}x HGETALL > {budget}x"
                )
        ratio = sync["publisher"]["cost_ratio_to_publish"]
        if ratio > limits["publisher"]["cost_ratio_to_publish"]:
            failures.append(f"publisher: {ratio}x a PUBLISH > budget")
    if "capacity" in results:
        failures.extend(capacity.check(results["capacity"], budgets["capacity"]))
    return failures


def _print_sync(results: dict[str, Any]) -> None:
    print("propagation: publish -> applied in every subscriber (ms), beside raw pub/sub")
    for name, row in results["propagation"].items():
        raw, ours = row["raw_pubsub_ms"], row["flagsync_ms"]
        print(
            f"  {name:<16} flagsync p50 {ours['p50']:.3f} p99 {ours['p99']:.3f}"
            f" max {ours['max']:.3f}"
            f" | raw p50 {raw['p50']:.3f} p99 {raw['p99']:.3f} max {raw['max']:.3f}"
            f" | ratio p50 {row['p50_ratio']} p99 {row['p99_ratio']}"
        )
    for name, row in results["cold_start"].items():
        print(
            f"cold start {name}: connect+load {row['connect_load_ms']} ms "
            f"(+compile all: {row['connect_load_compile_all_ms']} ms; "
            f"HGETALL alone {row['hgetall_floor_ms']} ms; {row['ratio_to_hgetall']}x)"
        )
    publisher = results["publisher"]
    print(
        f"publisher: {publisher['changes_per_s']} changes/s "
        f"(raw PUBLISH round trips: {publisher['raw_publish_per_s']}/s)"
    )


def _print_engine(results: dict[str, Any]) -> None:
    print(f"evaluation (floor: call returning a dict lookup = {results['floor_ns']} ns)")
    for case, row in results["cases"].items():
        metered = (
            f"  metrics on: {row['metered_ns']:.1f} ns ({row['metered_ratio']}x)"
            if "metered_ns" in row
            else ""
        )
        print(
            f"  {case:<26} {row['median_ns']:>8.1f} ns  {row['ratio_to_floor']:>5.2f}x floor"
            + metered
        )
    hot = results["hot_path"]
    ns = hot["median_ns"]
    print(
        f"hot path ({hot['users']:,} users x {hot['rounds']} rounds, median ratio over slices timed"
        " back to back):\n"
        f"  bool flag        minimal evaluator {ns['minimal_bool']:>6.1f} ns"
        f" | variation {ns['variation_bool']:>6.1f} ns ({hot['bool_ratio_to_minimal']}x)"
        f" | bool_value {ns['bool_value']:>6.1f} ns"
        f" ({hot['bool_value_ratio_to_variation']}x variation)\n"
        f"  rule + 50/50     minimal evaluator {ns['minimal_rollout']:>6.1f} ns"
        f" | variation {ns['variation_rollout']:>6.1f} ns ({hot['rollout_ratio_to_minimal']}x)"
        f" | string_value {ns['string_value']:>6.1f} ns"
        f" ({hot['string_value_ratio_to_variation']}x variation)"
    )
    provider = results.get("openfeature")
    if provider is not None:
        ns = provider["median_ns"]
        print(
            f"openfeature (rule + 50/50): variation {ns['variation']:.1f} ns | detail"
            f" {ns['detail']:.1f} ns | provider resolve {ns['provider_resolve']:.1f} ns"
            f" ({provider['provider_ratio_to_variation']}x variation,"
            f" {provider['provider_ratio_to_detail']}x detail) | SDK get_string_details"
            f" {ns['sdk_get_details']:.1f} ns ({provider['sdk_ratio_to_variation']}x variation)"
        )
    llm = results["llm"]
    print(
        f"llm configs (rule + 50/50): json_value {llm['median_ns']['json_value']:.1f} ns"
        f" | llm_config {llm['median_ns']['llm_config']:.1f} ns"
        f" ({llm['llm_config_ratio_to_json_value']}x json_value)"
        f" | with variables {llm['median_ns']['llm_config_rendered']:.1f} ns"
        f" (rendering: +{llm['render_ns']:.1f} ns)"
    )
    cold = results["cold_10k"]
    print(
        f"10,000 flags: validate {cold['validate_ms']} ms + compile all "
        f"{cold['compile_all_ms']} ms ({cold['ratio_to_json_roundtrip']}x a JSON round trip "
        f"of {cold['json_roundtrip_floor_ms']} ms); retained {cold['retained_mb']} MB compiled"
    )


if __name__ == "__main__":
    sys.exit(main())
