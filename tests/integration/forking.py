"""Children forked from a process whose client is already connected (FAULTS.md S17),
shared by the fork tests (`tests/integration/test_fork.py`) and the fault suite's S17
(`tests/faults/test_process_faults.py`): each child must reach the final revision on its
own subscriber under its own worker id, and waits to be released so the parent can see
every process at once. Children still running at the end are SIGKILLed and reaped.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from flagsync import FlagClient
from tests.integration.support import wait_until

__all__ = [
    "CHILDREN",
    "REVISIONS",
    "Spawned",
    "follow_in_child",
    "forked_children",
    "multiprocessing_children",
    "reap",
]

CHILDREN: Final = 4
REVISIONS: Final = 20


def follow_in_child(
    client: FlagClient, target: int, parent_worker: str, released: Callable[[float], bool]
) -> int:
    """A forked child's part: reach `target` on its own subscriber, stay until released.
    Exit codes: 0 ok, 3 target not reached, 4 kept the parent's identity, 5 not released."""
    if client.status().worker_id == parent_worker:
        return 4
    reached = wait_until(
        lambda: client.revision == target and client.variation("counter", {}, -1) == REVISIONS,
        10,
    )
    was_released = released(15)
    client.close()
    if not reached:
        return 3
    return 0 if was_released else 5


Spawned = tuple[list[int], Callable[[], list[int]]]
"""(pids, release): `release()` lets the children finish and returns their exit codes."""


@contextmanager
def forked_children(client: FlagClient, target: int, parent_worker: str) -> Iterator[Spawned]:
    """Fork with `os.fork`; yields (pids, release) where `release()` returns exit codes."""
    read_end, write_end = os.pipe()

    def released(timeout_s: float) -> bool:
        return bool(select.select([read_end], [], [], timeout_s)[0])

    pids: list[int] = []
    try:
        for _ in range(CHILDREN):
            pid = os.fork()
            if pid == 0:  # the child: never returns into pytest
                code = 1
                try:
                    os.close(write_end)
                    code = follow_in_child(client, target, parent_worker, released)
                except BaseException:  # noqa: BLE001 - reported through the exit code
                    traceback.print_exc()
                finally:
                    os._exit(code)
            pids.append(pid)
        os.close(read_end)

        def release() -> list[int]:
            os.write(write_end, b"go")
            return [reap(pid, 10) for pid in pids]

        yield pids, release
    finally:
        os.close(write_end)
        for pid in pids:
            reap(pid, 0)


def reap(pid: int, timeout_s: float) -> int:
    """The exit code of child `pid`, SIGKILLing it after `timeout_s`; -9 if killed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return -1  # reaped before
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.01)


@contextmanager
def multiprocessing_children(
    client: FlagClient, target: int, parent_worker: str
) -> Iterator[Spawned]:
    """The same with multiprocessing's "fork" context."""
    context = multiprocessing.get_context("fork")
    go = context.Event()

    def child() -> None:
        raise SystemExit(follow_in_child(client, target, parent_worker, go.wait))

    processes = [context.Process(target=child, daemon=True) for _ in range(CHILDREN)]
    try:
        for process in processes:
            process.start()

        def release() -> list[int]:
            go.set()
            codes = []
            for process in processes:
                process.join(10)
                if process.is_alive():
                    process.kill()
                    process.join(5)
                codes.append(-9 if process.exitcode is None else process.exitcode)
            return codes

        yield [process.pid for process in processes if process.pid is not None], release
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(5)
            process.close()
