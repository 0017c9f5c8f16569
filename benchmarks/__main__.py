"""Run the benchmark suite, print a table, optionally write JSON and check budgets.

python -m benchmarks                 # full run
python -m benchmarks --quick --check # what CI runs: fewer repeats, fail over budget
python -m benchmarks --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tomllib
from pathlib import Path
from typing import Any

from benchmarks import engine

BUDGETS = Path(__file__).with_name("budgets.toml")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (1 when a budget is exceeded)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer users and repeats (CI)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 if a budget is exceeded")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "quick": args.quick,
        "engine": engine.run(quick=args.quick),
    }
    _print_engine(results["engine"])
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
    engine_results = results["engine"]
    for case, budget in budgets["engine"]["ratio_to_floor"].items():
        ratio = engine_results["cases"][case]["ratio_to_floor"]
        if ratio > budget:
            failures.append(f"engine {case}: {ratio}x the floor > budget {budget}x")
    for metric, budget in budgets["engine"]["cold_10k"].items():
        value = engine_results["cold_10k"][metric]
        if value > budget:
            failures.append(f"engine cold_10k {metric}: {value} > budget {budget}")
    return failures


def _print_engine(results: dict[str, Any]) -> None:
    print(f"evaluation (floor: call returning a dict lookup = {results['floor_ns']} ns)")
    for case, row in results["cases"].items():
        print(f"  {case:<26} {row['median_ns']:>8.1f} ns  {row['ratio_to_floor']:>5.2f}x floor")
    cold = results["cold_10k"]
    print(
        f"10,000 flags: validate+compile {cold['load_and_compile_ms']} ms "
        f"(compile alone {cold['compile_only_ms']} ms, "
        f"{cold['ratio_to_json_roundtrip']}x a JSON round trip), "
        f"retained {cold['retained_mb']} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
