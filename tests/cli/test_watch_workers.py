"""The fleet commands: `watch`, `workers`, and `--wait` proving a change reached them."""

from __future__ import annotations

import json
import re
import time

from flagsync import FlagClient
from flagsync.publisher import Publisher
from tests.cli.conftest import WORKER_ID
from tests.cli.support import EXAMPLE, Cli, write_presence

_REACHED = re.compile(r"^reached (\d+)/(\d+) workers in \d+\.\d ms$")


class TestWatch:
    def test_watch_prints_a_change_as_it_arrives(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`watch --count 1` prints the synced state, then the next change with its fields,
        and exits."""
        watch = cli.start("watch", "--count", "1", "--timeout", "10")
        try:
            synced = watch.read_line()
            store.kill("llm-model-version")
            result = watch.wait()
        finally:
            watch.kill()

        assert synced == f"r{example}: synced 6 flags\n"
        assert result.code == 0, str(result)
        assert result.stdout.splitlines()[1:] == [
            f"r{example + 1}: context-window, llm-model-version",
            "    llm-model-version.enabled: true -> false",
        ]

    def test_watch_an_empty_namespace_counts_its_first_change(
        self, cli: Cli, store: Publisher
    ) -> None:
        """On a namespace nobody wrote to yet, `watch --count 1 --json` reports revision 0,
        then the first apply as a change, and stops there (well before its timeout)."""
        watch = cli.start("watch", "--count", "1", "--timeout", "10", "--json")
        try:
            synced = json.loads(watch.read_line())
            started = time.monotonic()
            store.apply(EXAMPLE)
            result = watch.wait()
            elapsed_s = time.monotonic() - started
        finally:
            watch.kill()

        assert synced == {"revision": 0, "synced": 0}
        assert result.code == 0, str(result)
        change = json.loads(result.stdout.splitlines()[1])
        assert change["revision"] == 1
        assert "llm-model-version" in change["keys"]
        assert elapsed_s < 5


class TestWorkers:
    def test_workers_lists_a_live_worker_with_its_revision(
        self, cli: Cli, store: Publisher, worker: FlagClient, example: int
    ) -> None:
        """`workers` lists a connected client by id with its applied revision and no lag."""
        document = cli.ok("workers", "--json").json()
        lines = cli.ok("workers").stdout.splitlines()

        assert document["revision"] == example
        [listed] = document["workers"]
        assert (listed["id"], listed["revision"], listed["state"]) == (WORKER_ID, example, "ready")
        assert lines[0].split() == [
            "WORKER", "HOST", "PID", "REVISION", "LAG", "STATE", "HEARTBEAT",
        ]  # fmt: skip
        assert lines[1].split()[3:6] == [f"r{example}", "0", "ready"]
        assert lines[1].startswith(WORKER_ID)

    def test_workers_without_any_says_so(self, cli: Cli, store: Publisher, example: int) -> None:
        """With no live worker, `workers` says so and names the store's revision."""
        assert cli.ok("workers").stdout == f"no live workers (store at revision {example})\n"


class TestWait:
    def test_wait_reports_how_fast_the_change_reached_the_worker(
        self, cli: Cli, worker: FlagClient, example: int
    ) -> None:
        """`kill --wait` exits 0 once the live worker applied the change, saying how fast."""
        result = cli.ok("kill", "llm-model-version", "--wait", "5")

        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"killed llm-model-version: revision {example + 1} ")
        match = _REACHED.match(lines[1])
        assert match is not None, str(result)
        assert match.groups() == ("1", "1")
        assert worker.snapshot.revision == example + 1

    def test_wait_json_has_the_propagation_report(
        self, cli: Cli, worker: FlagClient, example: int
    ) -> None:
        """`ramp --wait --json` includes which workers were reached, at which revision."""
        document = cli.ok("ramp", "llm-model-version", "candidate", "5", "--wait", "--json").json()

        report = document["propagation"]
        assert report["revision"] == document["revision"] == example + 1
        assert [ack["worker"]["id"] for ack in report["reached"]] == [WORKER_ID]
        assert report["reached"][0]["worker"]["revision"] == example + 1
        assert report["missing"] == []

    def test_wait_names_a_worker_that_did_not_apply(
        self, cli: Cli, store: Publisher, worker: FlagClient, example: int
    ) -> None:
        """`--wait` exits 1 when a live worker is stuck at an older revision, naming it
        (and only it) with its revision; the write itself happened."""
        epoch = store.revision()[0]
        assert epoch is not None
        write_presence(cli.url, cli.namespace, "stuck-worker", epoch=epoch, revision=example)

        result = cli("kill", "llm-model-version", "--wait", "0.5")

        assert result.code == 1, str(result)
        lines = result.stdout.splitlines()
        assert re.fullmatch(r"reached 1/2 workers in \d+\.\d ms", lines[1]), str(result)
        assert lines[2] == f"not reached after 0.5 s: stuck-worker (at r{example})"
        assert store.revision()[1] == example + 1

    def test_wait_without_workers_says_so_and_fails(
        self, cli: Cli, store: Publisher, example: int
    ) -> None:
        """`kill --wait` with no live worker writes the kill, says nobody confirmed it and
        exits 1 at once (the operator asked for a confirmation nobody could give)."""
        started = time.monotonic()
        result = cli("kill", "llm-model-version", "--wait", "5")

        assert result.code == 1, str(result)
        assert time.monotonic() - started < 4.0
        assert result.stdout.splitlines() == [
            f"killed llm-model-version: revision {example + 1} (v2, serves current, KILLED)",
            "no live workers reported: nobody confirmed the change",
        ]
        assert store.revision()[1] == example + 1
