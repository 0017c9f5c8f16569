"""S26: a partial re-seed after a wipe never drops what live workers serve, silently.

After FLUSHALL two workers keep their 50 last-known-good flags (snapshot missing) and
list them in their presence records. A teammate's `apply` of a file holding 1 of the 50
(or a `put` of it) is refused, naming the 49 it would take from them, and nothing is
written; the same apply with `--complete` (the operator saying the file is all there
is) is accepted and every worker converges on it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Final

import pytest

from flagsync import FlagClient
from flagsync.errors import PartialReseedError
from flagsync.server import ServerProcess
from flagsync.store import StoreKeys
from tests.cli.support import Cli
from tests.faults.figures import record
from tests.faults.status_worker import OPTIONS as FAST
from tests.integration.conftest import ClientFactory, PublisherFactory, RawFactory
from tests.integration.support import counter_flag, wait_until

FLAGS: Final = 50
KEYS: Final = [f"flag-{index:02d}" for index in range(FLAGS)]
KEPT_KEY: Final = KEYS[7]


def values(client: FlagClient) -> dict[str, Any]:
    """What `client` serves for every key of the 50 (-1: the caller's default)."""
    return {key: client.variation(key, {}, -1) for key in KEYS}


class TestPartialReseed:
    """S26: the operator is told what live workers still serve and must confirm."""

    def test_partial_apply_refused_until_complete(
        self,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: ClientFactory,
        make_raw: RawFactory,
        tmp_path: Path,
    ) -> None:
        """`apply` (and `put`) of 1 flag is refused naming the 49 both workers hold,
        nothing written, LKG still served; `apply --complete` is accepted and both
        workers converge on the 1 flag."""
        url = dedicated_server.url
        publisher = make_publisher(url)
        raw = make_raw(url)
        namespace = publisher.keys.namespace
        publisher.apply({"flags": {key: counter_flag(index) for index, key in enumerate(KEYS)}})
        workers = [make_client(url, worker_id=f"w{index}", **FAST) for index in range(2)]
        assert all(worker.wait_ready(5) for worker in workers)
        before = {key: index for index, key in enumerate(KEYS)}
        assert all(values(worker) == before for worker in workers)

        raw.flushall()
        others = sorted(set(KEYS) - {KEPT_KEY})
        assert wait_until(lambda: len(publisher.dropped_by_reseed({KEPT_KEY})) == FLAGS - 1, 3)
        assert wait_until(
            lambda: all(
                holders == ["w0", "w1"]
                for holders in publisher.dropped_by_reseed({KEPT_KEY}).values()
            ),
            3,
        ), publisher.workers()
        one_flag = {"flags": {KEPT_KEY: counter_flag(100)}}
        with pytest.raises(PartialReseedError) as refused:
            publisher.apply(one_flag)
        assert sorted(refused.value.dropped) == others
        assert all(holders == ("w0", "w1") for holders in refused.value.dropped.values())
        message = str(refused.value)
        assert "2 live worker(s) still serve 49 flag(s)" in message, message
        assert others[0] in message
        assert "complete=True" in message
        with pytest.raises(PartialReseedError) as refused_put:
            publisher.put(KEPT_KEY, counter_flag(100))
        assert sorted(refused_put.value.dropped) == others
        assert raw.get(StoreKeys(namespace).epoch) is None  # nothing was written
        assert all(values(worker) == before for worker in workers)
        assert all(worker.status().snapshot_missing for worker in workers)

        flag_file = tmp_path / "one.json"
        flag_file.write_text(json.dumps(one_flag))
        cli = Cli(url, namespace)
        result = cli("apply", "-f", str(flag_file))
        assert result.code == 2, result
        assert "49 flag(s)" in result.stderr, result.stderr
        assert "--complete" in result.stderr, result.stderr
        assert raw.get(StoreKeys(namespace).epoch) is None
        started = time.monotonic()
        cli.ok("apply", "-f", str(flag_file), "--complete")
        epoch, revision = publisher.revision()
        after = dict.fromkeys(KEYS, -1) | {KEPT_KEY: 100}

        def converged(worker: FlagClient) -> bool:
            status = worker.status()
            return (status.epoch, status.revision, status.snapshot_missing) == (
                epoch,
                revision,
                False,
            )

        assert wait_until(lambda: all(converged(worker) for worker in workers), 3), [
            worker.status() for worker in workers
        ]
        recovery_s = time.monotonic() - started
        assert all(values(worker) == after for worker in workers)
        assert wait_until(lambda: not publisher.dropped_by_reseed(()), 2), publisher.workers()
        record("S26", dedicated_server.kind, recovery_s=recovery_s, held=FLAGS, applied=1)

    def test_complete_content_needs_no_confirmation(
        self,
        dedicated_server: ServerProcess,
        make_publisher: PublisherFactory,
        make_client: ClientFactory,
        make_raw: RawFactory,
    ) -> None:
        """Re-seeding with every flag the workers hold (and more) is accepted as it is."""
        url = dedicated_server.url
        publisher = make_publisher(url)
        document = {"flags": {key: counter_flag(index) for index, key in enumerate(KEYS)}}
        publisher.apply(document)
        worker = make_client(url, worker_id="w0", **FAST)
        assert worker.wait_ready(5)
        make_raw(url).flushall()
        assert wait_until(lambda: bool(publisher.dropped_by_reseed(())), 3)
        document["flags"]["new-flag"] = counter_flag(7)
        revision = publisher.apply(document)
        assert wait_until(lambda: worker.revision == revision, 3), worker.status()
        assert worker.variation("new-flag", {}, -1) == 7
