"""Capacity: what N workers cost one Redis node, and how long a change takes to reach them all.

    python -m benchmarks.capacity                  # 1,000 / 2,000 / 5,000; one node, 2 replicas
    python -m benchmarks.capacity --quick --check  # CI: 500 workers, short window, budgets
    python -m benchmarks.capacity --workers 200 --replicas 0 --window-s 10

N simulated workers are real `FlagClient.connect_async` clients (asyncio, each with its
own connections) spread over P processes, against a Valkey started here (or `--url`, on
loopback only: its CPU is read from /proc). With a replica tier, workers follow the
replicas round-robin (subscribe and read there) and write presence and metrics to the
primary. Measured, per run: server CPU (utime + stime) over a window with no writes, as
% of one core; commands per second per worker (INFO commandstats, by command);
connections and server memory per worker; and fan-out: for several changes, the time
from the write (server clock) until every worker applied it (each worker's own clock at
the swap; same host), and what the PUBLISH inside the write cost the server. One more
change is awaited with `Publisher.wait_propagated` (what `kill --wait` does).

On a 2-core machine the simulated workers share the CPU with the server: fan-out times
include their scheduling delays. A process here may hold at most 20,000 open files, so
10,000 workers (two to four connections each) cannot be held by one local server: runs
go to 5,000 and the model extrapolates to 10,000 from a linear fit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from benchmarks._capacity_fleet import WorkerProcesses
from benchmarks._capacity_nodes import (
    Node,
    Sample,
    commands_between,
    cpu_percent_between,
    nodes,
    reads_between,
    usec_per_call,
)
from benchmarks._capacity_report import check, model, print_results, print_run
from benchmarks._capacity_worker import FLAG, raise_open_files_limit
from benchmarks.propagation import _percentile as percentile
from flagsync.publisher import Publisher

__all__ = ["check", "main", "measure", "model", "print_results", "run"]

NOTE = (
    "2 cores: the simulated workers share the CPU with the server, so fan-out times include"
    " their scheduling delays. One process may hold 20,000 open files here, so runs stop at"
    " 5,000 workers and the 10,000-worker figures are extrapolated from a linear fit."
)
FLAG_DEFINITION = {"variants": {"on": "on", "off": "off"}, "off": "off", "default": "on"}
"""The benchmark's one flag: each change kills or enables it."""


def run(
    *,
    quick: bool,
    sizes: Sequence[int] | None = None,
    replicas: int | None = None,
    processes: int = 4,
    window_s: float | None = None,
    changes: int | None = None,
    url: str | None = None,
    metrics: bool | None = None,
    after_each: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every configured run, and the capacity model fitted to the one-node runs.

    The full run adds one run at the smallest size with outcomes tracked (`metrics`
    None); `metrics` True tracks them in every run, False in none. `after_each` gets
    the results so far after every run (an interrupted long run keeps what it measured)."""
    raise_open_files_limit()
    sizes = sizes or ((500,) if quick else (1_000, 2_000, 5_000))
    if replicas is None:
        replicas = 0 if quick or url is not None else 2
    if url is not None and replicas:
        raise ValueError("--replicas: only with servers started by the benchmark (no --url)")
    window_s = window_s or (10.0 if quick else 60.0)
    changes = changes or (3 if quick else 10)
    plan = [(workers, 0, bool(metrics)) for workers in sizes]
    if replicas:
        plan += [(workers, replicas, bool(metrics)) for workers in sizes]
    if metrics is None and not quick:
        plan.append((min(sizes), 0, True))
    runs: dict[str, Any] = {}
    results = {"note": NOTE, "measured": _provenance(), "window_s": window_s, "runs": runs}
    for workers, tier, tracked in plan:
        name = f"workers_{workers}" + (f"_replicas_{tier}" if tier else "")
        name += "_metrics" if tracked else ""
        runs[name] = measure(
            workers,
            replicas=tier,
            processes=processes,
            window_s=window_s,
            settle_s=3.0 if quick else 10.0,
            changes=changes,
            url=url,
            track_outcomes=tracked,
        )
        print_run(name, runs[name])
        results["model"] = model(runs)
        if after_each is not None:
            after_each(results)
    return results


def _provenance() -> dict[str, Any]:
    """When, on what and from which commit the figures were taken."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH, read-only
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def measure(
    workers: int,
    *,
    replicas: int,
    processes: int,
    window_s: float,
    settle_s: float,
    changes: int,
    url: str | None = None,
    track_outcomes: bool = False,
) -> dict[str, Any]:
    """One run: start `workers` workers, measure the quiet window, then the fan-out."""
    raise_open_files_limit()  # inherited by the servers started here
    namespace = f"capacity-{uuid.uuid4().hex[:8]}"
    with nodes(url, replicas, workers) as servers:
        primary = servers[0]
        followed = [node.url for node in servers[1:]] or [primary.url]
        with Publisher(primary.url, namespace, actor="capacity-benchmark") as publisher:
            publisher.apply({"flags": {FLAG: FLAG_DEFINITION}})
            baseline = [node.sample() for node in servers]
            version = primary.version()
            fleet = WorkerProcesses(
                workers,
                min(processes, workers),
                urls=followed,
                namespace=namespace,
                presence_url=primary.url if replicas else None,
                track_outcomes=track_outcomes,
            )
            with fleet:
                ramp = fleet.wait_ready(timeout_s=120.0 + workers * 0.1)
                time.sleep(settle_s)
                quiet = _quiet_window(servers, fleet, window_s)
                fan_out = _fan_out(servers, fleet, publisher, changes)
                # The flag ends killed after an odd number of changes: change it again.
                waited = _wait_propagated(primary, fleet, publisher, quiet, kill=changes % 2 == 0)
                health = fleet.status()
                logged = fleet.stop()
    figures = _summary(
        workers=workers,
        replicas=replicas,
        servers=servers,
        baseline=baseline,
        ramp=ramp,
        quiet=quiet,
        fan_out=fan_out,
        waited=waited,
    )
    return figures | {
        "server": version,
        "metrics": track_outcomes,
        "processes": min(processes, workers),
        "client_health": health,
        "logged": logged,
    }


def _quiet_window(servers: list[Node], fleet: WorkerProcesses, window_s: float) -> dict[str, Any]:
    """Every node's samples around `window_s` seconds without writes, the workers' CPU,
    and their reconnects and full reloads meanwhile (non-zero: starved simulated workers
    missed a liveness deadline, and the window's figures are disturbed)."""
    health = fleet.status()
    load_before = os.getloadavg()[0]
    before = [node.sample() for node in servers]
    clients_before = fleet.cpu_seconds()
    time.sleep(window_s)
    clients_s = fleet.cpu_seconds() - clients_before
    threads = fleet.threads()
    after = [node.sample() for node in servers]
    health_after = fleet.status()
    elapsed = after[0].at_s - before[0].at_s
    return {
        "before": before,
        "after": after,
        "clients_cpu_percent": 100 * clients_s / elapsed,
        "threads": threads,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "reconnects": health_after.get("reconnects", 0) - health.get("reconnects", 0),
        "resyncs": health_after.get("resyncs", 0) - health.get("resyncs", 0),
    }


def _fan_out(
    servers: list[Node], fleet: WorkerProcesses, publisher: Publisher, changes: int
) -> dict[str, Any]:
    """`changes` kill/enable writes, one at a time, each awaited in every worker.

    The PUBLISH cost is summed over the nodes: with a replica tier the primary's
    subscribers are few and each replica runs the replicated PUBLISH for its own."""
    before = [node.sample() for node in servers]
    all_applied_ms: list[float] = []
    per_worker_ms: list[float] = []
    missing = 0
    for number in range(changes):
        write = publisher.kill if number % 2 == 0 else publisher.enable
        revision = write(FLAG, reason="capacity benchmark")
        replies = fleet.ask({"op": "wait", "revision": revision, "timeout_s": 20.0}, 60.0)
        published_us = _published_us(publisher, revision)
        times = [at for reply in replies for at in reply["times_ns"]]
        missing += sum(at is None for at in times)
        latencies = [(at / 1000 - published_us) / 1000 for at in times if at is not None]
        per_worker_ms.extend(latencies)
        if latencies:
            all_applied_ms.append(max(latencies))
        time.sleep(0.3)
    after = [node.sample() for node in servers]
    publish_us = [
        usec_per_call(start, end, "publish") for start, end in zip(before, after, strict=True)
    ]
    script_us = usec_per_call(before[0], after[0], "evalsha") or usec_per_call(
        before[0], after[0], "eval"
    )
    return {
        "changes": changes,
        "workers_missing": missing,
        "all_applied_ms": _distribution(all_applied_ms),
        "per_worker_ms": _distribution(per_worker_ms),
        "publish_us_per_change": _rounded(sum(us for us in publish_us if us is not None)),
        "publish_us_per_change_by_node": [_rounded(us) for us in publish_us],
        "write_script_us_per_change": _rounded(script_us),
    }


def _wait_propagated(
    primary: Node,
    fleet: WorkerProcesses,
    publisher: Publisher,
    quiet: dict[str, Any],
    *,
    kill: bool,
) -> dict[str, Any]:
    """One more change, awaited as `kill --wait` does: its wall time, and the server CPU
    and MGETs beyond the quiet window's rates (the workers' own checks are MGETs too)."""
    write = publisher.kill if kill else publisher.enable
    revision = write(FLAG, reason="capacity benchmark: --wait")
    before = primary.sample()
    report = publisher.wait_propagated(revision, timeout=30.0)
    after = primary.sample()
    fleet.ask({"op": "wait", "revision": revision, "timeout_s": 20.0}, 60.0)
    steady_before, steady_after = quiet["before"][0], quiet["after"][0]
    steady_s = steady_after.at_s - steady_before.at_s
    waited_s = after.at_s - before.at_s
    cpu_rate = (steady_after.cpu_s - steady_before.cpu_s) / steady_s
    mget_rate = (steady_after.calls.get("mget", 0) - steady_before.calls.get("mget", 0)) / steady_s
    mgets = after.calls.get("mget", 0) - before.calls.get("mget", 0)
    return {
        "reached": len(report.reached),
        "missing": len(report.missing) + len(report.unconfirmed),
        "waited_ms": round(report.waited_ms, 1),
        "server_cpu_ms": round(1000 * (after.cpu_s - before.cpu_s - cpu_rate * waited_s), 1),
        # Approximate: the workers' own MGETs slow down when their processes are starved.
        "mget_calls_beyond_steady": round(mgets - mget_rate * waited_s),
    }


def _published_us(publisher: Publisher, revision: int) -> int:
    for entry in publisher.history(limit=20):
        if entry.revision == revision:
            return entry.time_us
    raise AssertionError(f"revision {revision} is not in the change log")


def _summary(
    *,
    workers: int,
    replicas: int,
    servers: list[Node],
    baseline: list[Sample],
    ramp: dict[str, Any],
    quiet: dict[str, Any],
    fan_out: dict[str, Any],
    waited: dict[str, Any],
) -> dict[str, Any]:
    """The figures of one run, per worker where that is what the model needs."""
    window = quiet["after"][0].at_s - quiet["before"][0].at_s
    per_node = []
    total_commands: dict[str, int] = {}
    for node, start, before, after in zip(
        servers, baseline, quiet["before"], quiet["after"], strict=True
    ):
        counts = commands_between(before, after)
        for name, calls in counts.items():
            total_commands[name] = total_commands.get(name, 0) + calls
        per_node.append(
            {
                "role": node.role,
                "cpu_percent": round(cpu_percent_between(before, after), 2),
                "commands_per_s": round(sum(counts.values()) / window, 1),
                "round_trips_per_s": round(reads_between(before, after) / window, 1),
                "connections": after.connected_clients - start.connected_clients,
                "memory_bytes": after.used_memory - start.used_memory,
            }
        )
    by_command = {
        name: round(calls / window / workers, 3)
        for name, calls in sorted(total_commands.items(), key=lambda item: -item[1])
    }
    replica_cpu = [row["cpu_percent"] for row in per_node if row["role"] == "replica"]
    return {
        "workers": workers,
        "replicas": replicas,
        "ready": ramp["ready"],
        "ramp_s": ramp["ramp_s"],
        "ramp_errors": ramp["errors"],
        "connections_per_worker": round(sum(r["connections"] for r in per_node) / workers, 2),
        # Per node: every node holds the same keys, so this is what each one needs.
        "memory_bytes_per_worker": round(per_node[0]["memory_bytes"] / workers),
        "commands_per_s_per_worker": round(sum(by_command.values()), 2),
        "round_trips_per_s_per_worker": round(
            sum(r["round_trips_per_s"] for r in per_node) / workers, 2
        ),
        "primary_commands_per_s_per_worker": round(per_node[0]["commands_per_s"] / workers, 2),
        "commands_by_name_per_s_per_worker": by_command,
        "server_cpu_percent": per_node[0]["cpu_percent"],
        "replica_cpu_percent": round(max(replica_cpu), 2) if replica_cpu else None,
        "clients_cpu_percent": round(quiet["clients_cpu_percent"], 1),
        "worker_threads_per_worker": round(quiet["threads"] / workers, 2),
        "window_load_average": quiet["load_average"],
        "window_reconnects": quiet["reconnects"],
        "window_resyncs": quiet["resyncs"],
        "nodes": per_node,
        "fan_out": fan_out,
        "wait_propagated": waited,
    }


def _distribution(samples: list[float]) -> dict[str, float | int | None]:
    if not samples:
        return {"p50": None, "p99": None, "max": None, "samples": 0}
    return {
        "p50": round(percentile(samples, 50), 1),
        "p99": round(percentile(samples, 99), 1),
        "max": round(max(samples), 1),
        "samples": len(samples),
    }


def _rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _write_json(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 1 when `--check` finds a budget exceeded."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="500 workers, 10 s window (CI)")
    parser.add_argument("--workers", help="comma-separated sizes (default: 1000,2000,5000)")
    parser.add_argument("--replicas", type=int, help="also run with this many replicas")
    parser.add_argument("--processes", type=int, default=4, help="worker processes (4)")
    parser.add_argument("--window-s", type=float, help="quiet window (60 s; quick: 10 s)")
    parser.add_argument("--changes", type=int, help="changes timed for fan-out (10; quick: 3)")
    tracking = parser.add_mutually_exclusive_group()
    tracking.add_argument(
        "--metrics",
        action="store_true",
        default=None,
        help="every worker tracks an outcome a second (default: one extra run, full only)",
    )
    tracking.add_argument(
        "--no-metrics", dest="metrics", action="store_false", help="no run tracks outcomes"
    )
    parser.add_argument("--url", help="an existing server on 127.0.0.1 (default: start one)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 over budget")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        sizes = [int(size) for size in args.workers.split(",")] if args.workers else None
    except ValueError:
        parser.error(f"--workers: {args.workers!r} is not a comma-separated list of integers")
    if sizes is not None and any(size < 1 for size in sizes):
        parser.error("--workers: every size must be a positive integer")
    for option, value, least in (
        ("--replicas", args.replicas, 0),
        ("--processes", args.processes, 1),
        ("--window-s", args.window_s, 1),
        ("--changes", args.changes, 1),
    ):
        if value is not None and value < least:
            parser.error(f"{option}: must be at least {least} (got {value})")
    results = run(
        quick=args.quick,
        sizes=sizes,
        replicas=args.replicas,
        processes=args.processes,
        window_s=args.window_s,
        changes=args.changes,
        url=args.url,
        metrics=args.metrics,
        after_each=None if args.json is None else partial(_write_json, args.json),
    )
    print_results(results)
    if args.json:
        print(f"wrote {args.json}")
    if not args.check:
        return 0
    budgets = tomllib.loads(Path(__file__).with_name("budgets.toml").read_text())
    failures = check(results, budgets["capacity"])
    for failure in failures:
        print(f"OVER BUDGET: {failure}")
    print("budget check:", "FAILED" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
