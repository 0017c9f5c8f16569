"""The live feed's arithmetic, free of I/O: convergence of a revision and late workers."""

from __future__ import annotations

from flagsync._codec import WorkerInfo
from flagsync.dashboard._live import LiveState, convergence, worker_row

NOW_MS = 1_800_000_000_000
EPOCH = "e1"


def worker(
    name: str, revision: int, *, applied_ms: int = NOW_MS, published_ms: int = 0
) -> WorkerInfo:
    """A presence record at `revision` (applied and published at the given times)."""
    return WorkerInfo(
        id=name, host="h", pid=1, namespace="ns", epoch=EPOCH, revision=revision,
        applied_us=applied_ms * 1000, published_us=published_ms * 1000,
        started_ms=NOW_MS, heartbeat_ms=NOW_MS - 300, state="ready",
    )  # fmt: skip


class TestConvergence:
    """How many workers applied a revision, how fast, and who is late."""

    def test_all_applied_reports_the_slowest_publish_to_apply_time(self) -> None:
        """Three workers at r7 (published at t, applied t+1..t+3 ms): 3/3 in 3.0 ms."""
        published = NOW_MS - 50
        workers = [worker(f"w{i}", 7, applied_ms=published + i, published_ms=published)
                   for i in (1, 2, 3)]  # fmt: skip
        report = convergence(workers, EPOCH, 7, published, NOW_MS)
        assert report["text"] == "3/3 workers applied r7 in 3.0 ms"
        assert (report["complete"], report["late"]) == (True, [])

    def test_a_worker_behind_for_more_than_one_second_is_late(self) -> None:
        """A worker still at r6 1.5 s after r7 was written is late; before 1 s it is not."""
        published = NOW_MS - 1500
        workers = [worker("fast", 7, published_ms=published), worker("slow", 6)]
        late = convergence(workers, EPOCH, 7, published, NOW_MS)
        assert late["late"] == ["slow"]
        assert late["text"] == "1/2 workers applied r7 (1 not yet; 1 late > 1 s)"
        recent = convergence(workers, EPOCH, 7, published, published + 900)
        assert recent["late"] == []

    def test_a_worker_of_another_epoch_has_not_applied(self) -> None:
        """A worker on an older history (epoch) counts as not applied, lag unknown."""
        stale = worker("old", 9)
        stale = WorkerInfo(**{**{f: getattr(stale, f) for f in stale.__struct_fields__},
                              "epoch": "e0"})  # fmt: skip
        assert convergence([stale], EPOCH, 3, NOW_MS, NOW_MS)["reached"] == 0
        row = worker_row(stale, EPOCH, 3, NOW_MS)
        assert (row["lag"], row["applied"], row["heartbeat_age_s"]) == (None, False, 0.3)


class TestSignature:
    """Only what a page shows wakes the event streams."""

    def test_heartbeat_age_alone_is_no_news(self) -> None:
        """Two states differing only in heartbeat ages have one signature."""
        rows = [worker_row(worker("w", 1), EPOCH, 1, NOW_MS)]
        older = [dict(rows[0], heartbeat_age_s=5.0)]
        first = LiveState(ok=True, epoch=EPOCH, revision=1, workers=rows)
        second = LiveState(ok=True, epoch=EPOCH, revision=1, workers=older)
        assert first.signature() == second.signature()
        moved = LiveState(ok=True, epoch=EPOCH, revision=2, workers=rows)
        assert moved.signature() != first.signature()
