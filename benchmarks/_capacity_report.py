"""The capacity benchmark's figures turned into its model, its printed tables and its
budget check (`benchmarks.capacity` measures; this reads what it measured).

The tables are the README's "Capacity model" tables, column for column, so a re-run's
output can be pasted there.
"""

from __future__ import annotations

import math
import os
from typing import Any

TARGET_WORKERS = 10_000
"""The fleet size the model extrapolates to (issue #12)."""


def model(runs: dict[str, Any]) -> dict[str, Any]:
    """The one-node runs fitted (least squares) and extrapolated to 10,000 workers.

    Server CPU is fitted against the round trips the node served, not the worker count:
    on 2 cores a large simulated fleet is starved of CPU and sends fewer requests than
    its timers ask for, which a per-worker fit would read as a cheaper worker. A worker's
    rate is the highest any one-node run saw (its least starved run); the PUBLISH cost
    is fitted per subscriber."""
    candidates = [row for row in runs.values() if not row["replicas"] and not row["metrics"]]
    # A run whose workers reconnected during the window measured connection churn, not
    # steady state: left out while any undisturbed run remains.
    one_node = [row for row in candidates if not row["window_reconnects"]] or candidates
    if not one_node:
        return {}
    trips = [row["round_trips_per_s_per_worker"] * row["workers"] for row in one_node]
    slope, intercept = _fit(trips, [row["server_cpu_percent"] for row in one_node])
    nominal = max(one_node, key=lambda row: row["round_trips_per_s_per_worker"])
    per_worker = slope * nominal["round_trips_per_s_per_worker"]  # % of a core
    sizes = [float(row["workers"]) for row in one_node]
    publish = [row["fan_out"]["publish_us_per_change"] or 0.0 for row in one_node]
    publish_slope, publish_intercept = _fit(sizes, publish)
    largest = max(one_node, key=lambda row: row["workers"])
    return {
        "wait_propagated": {"workers": largest["workers"], **largest["wait_propagated"]},
        "fitted_from_workers": [row["workers"] for row in one_node],
        "left_out_disturbed": [row["workers"] for row in candidates if row not in one_node],
        "server_us_per_round_trip": round(slope * 10_000, 2),  # % of a core per 1/s
        "cpu_percent_intercept": round(intercept, 2),
        "round_trips_per_s_per_worker": nominal["round_trips_per_s_per_worker"],
        "commands_per_s_per_worker": nominal["commands_per_s_per_worker"],
        "cpu_percent_per_1000_workers": round(1000 * per_worker, 2),
        "workers_at_one_core": round((100 - intercept) / per_worker) if per_worker > 0 else None,
        "cpu_percent_at_10000": round(intercept + per_worker * TARGET_WORKERS, 1),
        "round_trips_per_s_at_10000": round(
            nominal["round_trips_per_s_per_worker"] * TARGET_WORKERS
        ),
        "commands_per_s_at_10000": round(nominal["commands_per_s_per_worker"] * TARGET_WORKERS),
        "connections_at_10000": round(largest["connections_per_worker"] * TARGET_WORKERS),
        "memory_mb_at_10000": round(largest["memory_bytes_per_worker"] * TARGET_WORKERS / 1e6),
        "publish_us_per_subscriber": round(publish_slope, 3),
        "publish_ms_per_change_at_10000": round(
            (publish_intercept + publish_slope * TARGET_WORKERS) / 1000, 2
        ),
    }


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (slope, intercept); through the origin when there is one point."""
    if len(xs) == 1 or math.isclose(min(xs), max(xs)):
        return (sum(ys) / sum(xs), 0.0) if sum(xs) else (0.0, 0.0)
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    return slope, mean_y - slope * mean_x


TABLE_HEADER = (
    "| topology | workers | connections / worker | memory / worker (per node)"
    " | commands / s / worker | round trips / s / worker | primary CPU (% of a core)"
    " | each replica's CPU | all applied, p50 / p99 | PUBLISH per change |"
    "\n|---|---|---|---|---|---|---|---|---|---|"
)


def table_row(row: dict[str, Any]) -> str:
    """One README table row for one run (same columns as `TABLE_HEADER`)."""
    topology = f"1 primary + {row['replicas']} replicas" if row["replicas"] else "one node"
    topology += ", outcomes tracked" if row["metrics"] else ""
    if row["window_reconnects"]:
        topology += f" (disturbed: {row['window_reconnects']:,} reconnects in the window)"
    replica = f"{row['replica_cpu_percent']:.1f} %" if row["replica_cpu_percent"] else "—"
    applied = row["fan_out"]["all_applied_ms"]
    publish = row["fan_out"]["publish_us_per_change"]
    return (
        f"| {topology} | {row['workers']:,} | {row['connections_per_worker']}"
        f" | {row['memory_bytes_per_worker'] / 1000:.1f} KB"
        f" | {row['commands_per_s_per_worker']} | {row['round_trips_per_s_per_worker']}"
        f" | {row['server_cpu_percent']:.1f} %"
        f" | {replica} | {applied['p50']} / {applied['p99']} ms"
        f" | {'—' if publish is None else f'{publish / 1000:.2f} ms'} |"
    )


def print_run(name: str, row: dict[str, Any]) -> None:
    """A run's figures as they come in (a long run shows progress)."""
    health = row["client_health"]
    if row["window_reconnects"] or row["window_resyncs"]:
        print(
            f"capacity {name}: DISTURBED: {row['window_reconnects']} reconnects and"
            f" {row['window_resyncs']} full reloads during the quiet window (simulated"
            " workers starved of CPU); its rates are not steady state (1-minute load"
            f" average {row['window_load_average']} on {os.cpu_count()} CPUs)",
            flush=True,
        )
    print(
        f"capacity {name}: {row['ready']}/{row['workers']} ready in {row['ramp_s']} s"
        f" ({row['processes']} processes); server CPU {row['server_cpu_percent']} %,"
        f" workers' processes {row['clients_cpu_percent']} %"
        f" ({row['worker_threads_per_worker']} threads per worker);"
        f" {row['commands_per_s_per_worker']} commands/s/worker"
        f" ({row['round_trips_per_s_per_worker']} round trips)"
        f" {row['commands_by_name_per_s_per_worker']}; reconnects {health.get('reconnects', 0)},"
        f" resyncs after the first load {health.get('resyncs', 0) - row['ready']};"
        f" --wait {row['wait_propagated']};"
        f" logged {row['logged']}",
        flush=True,
    )


def print_results(results: dict[str, Any]) -> None:
    """The README's capacity table and model, ready to paste."""
    print("capacity (README 'Capacity model'; " + results["note"] + ")")
    print(TABLE_HEADER)
    for row in results["runs"].values():
        print(table_row(row))
    fitted = results["model"]
    if not fitted:
        return
    sizes = " / ".join(f"{workers:,}" for workers in fitted["fitted_from_workers"])
    waited = fitted["wait_propagated"]
    disturbed = " / ".join(f"{workers:,}" for workers in fitted["left_out_disturbed"])
    left_out = f"; left out, disturbed: {disturbed}" if disturbed else ""
    rows = [
        (f"model (one node, fitted to {sizes} workers{left_out})", "measured"),
        ("---", "---"),
        (
            "server CPU per round trip",
            f"{fitted['server_us_per_round_trip']} µs"
            f" (intercept {fitted['cpu_percent_intercept']:+.2f} % of a core)",
        ),
        (
            "a worker's requests",
            f"{fitted['round_trips_per_s_per_worker']} round trips/s"
            f" ({fitted['commands_per_s_per_worker']} commands/s)",
        ),
        ("server CPU per 1,000 workers", f"{fitted['cpu_percent_per_1000_workers']} % of a core"),
        ("one core saturates at", f"~{_count(fitted['workers_at_one_core'])} workers"),
        ("10,000 workers: server CPU", f"{fitted['cpu_percent_at_10000']} % of a core"),
        (
            "10,000 workers: requests",
            f"{fitted['round_trips_per_s_at_10000']:,} round trips/s"
            f" ({fitted['commands_per_s_at_10000']:,} commands/s)",
        ),
        ("10,000 workers: connections", f"{fitted['connections_at_10000']:,}"),
        ("10,000 workers: server memory", f"{fitted['memory_mb_at_10000']} MB"),
        (
            "PUBLISH per change",
            f"{fitted['publish_us_per_subscriber']} µs per subscriber;"
            f" {fitted['publish_ms_per_change_at_10000']} ms at 10,000",
        ),
        (
            f"`wait_propagated` (`kill --wait`) at {waited['workers']:,}",
            f"{waited['waited_ms']} ms; {waited['server_cpu_ms']} ms of server CPU"
            " beyond the steady load",
        ),
    ]
    for label, value in rows:
        print(f"| {label} | {value} |")


def _count(value: int | None) -> str:
    """`12,345`, or `—` when there is no figure (no measurable CPU to fit)."""
    return "—" if value is None else f"{value:,}"


def check(results: dict[str, Any], budgets: dict[str, Any]) -> list[str]:
    """Every capacity budget a run exceeds (and any change some worker never applied)."""
    failures: list[str] = []
    for name, row in results["runs"].items():
        if row["ready"] != row["workers"]:
            failures.append(f"capacity {name}: only {row['ready']}/{row['workers']} ready")
        if row["fan_out"]["workers_missing"]:
            failures.append(
                f"capacity {name}: {row['fan_out']['workers_missing']} worker-changes never applied"
            )
        per_1000 = 1000 * row["server_cpu_percent"] / row["workers"]
        measured = {
            "commands_per_s_per_worker": row["commands_per_s_per_worker"],
            "round_trips_per_s_per_worker": row["round_trips_per_s_per_worker"],
            "connections_per_worker": row["connections_per_worker"],
            "server_cpu_percent_per_1000_workers": round(per_1000, 2),
        }
        failures.extend(
            f"capacity {name} {metric}: {measured[metric]} > budget {budget}"
            for metric, budget in budgets.items()
            if measured[metric] > budget
        )
    return failures
