"""The capacity benchmark's harness measures real workers against real servers, and its
model and budget check read those figures correctly (issue #12)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import capacity
from benchmarks._capacity_report import TABLE_HEADER, table_row
from flagsync.server import ServerProcess

pytestmark = pytest.mark.slow

WORKERS = 20
CHANGES = 2


def _run(url: str | None, replicas: int) -> dict[str, Any]:
    return capacity.measure(
        WORKERS,
        replicas=replicas,
        processes=2,
        window_s=2.0,
        settle_s=1.0,
        changes=CHANGES,
        url=url,
    )


def _check_plausible(row: dict[str, Any]) -> None:
    """What every run must show: all ready, every change applied everywhere, sane rates."""
    assert row["ready"] == WORKERS
    assert row["processes"] == 2
    fan_out = row["fan_out"]
    assert fan_out["workers_missing"] == 0
    assert fan_out["all_applied_ms"]["samples"] == CHANGES
    assert fan_out["per_worker_ms"]["samples"] == WORKERS * CHANGES
    assert 0 < fan_out["per_worker_ms"]["p50"] <= fan_out["all_applied_ms"]["max"] < 20_000
    assert fan_out["publish_us_per_change"] > 0
    assert fan_out["write_script_us_per_change"] > 0
    # A worker checks, pings and heartbeats at least once a second, and far less than
    # 100 times: whatever the timers, the window sees it.
    assert 1 <= row["commands_per_s_per_worker"] < 100
    assert 0.5 <= row["round_trips_per_s_per_worker"] <= row["commands_per_s_per_worker"]
    total = sum(row["commands_by_name_per_s_per_worker"].values())
    assert total == pytest.approx(row["commands_per_s_per_worker"], abs=0.05)
    assert 1 <= row["connections_per_worker"] <= 4
    assert 0 < row["memory_bytes_per_worker"] < 100_000
    assert 0 <= row["server_cpu_percent"] < 100
    assert row["clients_cpu_percent"] > 0
    assert row["worker_threads_per_worker"] > 0
    assert row["wait_propagated"]["reached"] == WORKERS
    assert row["wait_propagated"]["missing"] == 0
    assert row["client_health"]["states"] == {"ready": WORKERS}
    assert row["window_reconnects"] >= 0
    assert row["window_resyncs"] >= 0


class TestMeasure:
    """One run of the harness with a handful of workers."""

    def test_one_node_given_by_url(self, dedicated_server: ServerProcess) -> None:
        """Against a server given by URL, every figure is there and plausible; the server's
        CPU is read from its own process (found through INFO)."""
        row = _run(dedicated_server.url, replicas=0)
        _check_plausible(row)
        assert [node["role"] for node in row["nodes"]] == ["primary"]
        assert row["replica_cpu_percent"] is None
        assert row["connections_per_worker"] == 2  # a subscriber and a command connection

    def test_replica_tier(self) -> None:
        """With replicas started by the benchmark, workers follow them and report presence
        to the primary: every worker is counted by `--wait`, and each node is measured."""
        row = _run(None, replicas=1)
        _check_plausible(row)
        roles = [node["role"] for node in row["nodes"]]
        assert roles == ["primary", "replica"]
        replica = row["nodes"][1]
        assert replica["connections"] >= 2 * WORKERS  # subscribe and read on the replica
        assert row["fan_out"]["publish_us_per_change_by_node"][1] > 0  # fan-out runs there

    def test_remote_url_is_refused(self) -> None:
        """A non-loopback --url is refused before anything starts: CPU is read from /proc."""
        with pytest.raises(ValueError, match="not loopback"):
            _run("redis://192.0.2.1:6379", replicas=0)


def _row(
    workers: int, cpu: float, *, publish_us: float = 100.0, round_trips: float = 3.0
) -> dict[str, Any]:
    return {
        "workers": workers,
        "replicas": 0,
        "metrics": False,
        "ready": workers,
        "server_cpu_percent": cpu,
        "commands_per_s_per_worker": 7.0,
        "round_trips_per_s_per_worker": round_trips,
        "connections_per_worker": 2.0,
        "memory_bytes_per_worker": 4000,
        "window_reconnects": 0,
        "fan_out": {"workers_missing": 0, "publish_us_per_change": publish_us},
        "wait_propagated": {"waited_ms": 50.0, "server_cpu_ms": 10.0},
    }


class TestModel:
    """The fit and the budget check over given rows."""

    def test_linear_fit_and_extrapolation(self) -> None:
        """CPU growing 1 % per 100 workers (300 round trips/s) from 2 % fits exactly: one
        core is reached where the line crosses 100 %, 10,000 workers are read off it."""
        runs = {
            "a": _row(1_000, 12.0, publish_us=500.0),
            "b": _row(2_000, 22.0, publish_us=1_000.0),
            "c": _row(5_000, 52.0, publish_us=2_500.0),
        }
        fitted = capacity.model(runs)
        assert fitted["server_us_per_round_trip"] == pytest.approx(33.33)
        assert fitted["cpu_percent_per_1000_workers"] == pytest.approx(10.0)
        assert fitted["cpu_percent_intercept"] == pytest.approx(2.0)
        assert fitted["workers_at_one_core"] == 9_800
        assert fitted["cpu_percent_at_10000"] == pytest.approx(102.0)
        assert fitted["publish_ms_per_change_at_10000"] == pytest.approx(5.0)
        assert fitted["publish_us_per_subscriber"] == pytest.approx(0.5)
        assert fitted["connections_at_10000"] == 20_000
        assert fitted["wait_propagated"]["workers"] == 5_000  # the largest run's

    def test_starved_workers_do_not_look_cheaper(self) -> None:
        """A large run whose starved workers sent half their round trips costs the server
        what those round trips cost: the model still charges each worker its full rate."""
        runs = {
            "a": _row(1_000, 12.0),  # 3,000 round trips/s
            "b": _row(5_000, 27.0, round_trips=1.5),  # 7,500 round trips/s
        }
        fitted = capacity.model(runs)
        assert fitted["round_trips_per_s_per_worker"] == 3.0
        assert fitted["cpu_percent_per_1000_workers"] == pytest.approx(10.0)
        assert fitted["round_trips_per_s_at_10000"] == 30_000

    def test_disturbed_runs_are_left_out(self) -> None:
        """A run whose workers reconnected during the window is not fitted while an
        undisturbed one remains, and the model says which were left out."""
        stormy = _row(5_000, 5.0, round_trips=0.2) | {"window_reconnects": 10_000}
        fitted = capacity.model({"a": _row(1_000, 12.0), "b": stormy})
        assert fitted["fitted_from_workers"] == [1_000]
        assert fitted["left_out_disturbed"] == [5_000]

    def test_replica_runs_are_not_fitted(self) -> None:
        """Only one-node runs feed the model (a replica tier spreads the load)."""
        replica_row = _row(5_000, 1.0) | {"replicas": 2}
        fitted = capacity.model({"a": _row(1_000, 10.0), "r": replica_row})
        assert fitted["fitted_from_workers"] == [1_000]

    def test_check_names_each_exceeded_budget(self) -> None:
        """Over-budget figures and changes some worker never applied are failures."""
        row = _row(500, 20.0)
        row["fan_out"]["workers_missing"] = 3
        budgets = {
            "commands_per_s_per_worker": 8.0,
            "round_trips_per_s_per_worker": 2.0,
            "connections_per_worker": 2.5,
            "server_cpu_percent_per_1000_workers": 30.0,
        }
        failures = capacity.check({"runs": {"w": row}}, budgets)
        assert len(failures) == 3
        assert any("never applied" in failure for failure in failures)
        assert any("round_trips_per_s_per_worker: 3.0 > budget 2.0" in f for f in failures)
        assert any("server_cpu_percent_per_1000_workers: 40.0" in f for f in failures)


class TestTable:
    """The printed table is the README's, column for column."""

    def test_row_has_one_cell_per_column_and_marks_a_disturbed_run(self) -> None:
        """Every row has the header's columns; reconnects in the window are shown in it."""
        row = _row(1_000, 12.0) | {"replica_cpu_percent": None, "window_reconnects": 7}
        row["fan_out"]["all_applied_ms"] = {"p50": 3.0, "p99": 9.0}
        line = table_row(row)
        assert line.count("|") == TABLE_HEADER.splitlines()[0].count("|")
        assert "disturbed: 7 reconnects" in line
