"""The process-wide GC pause around bulk builds (`flagsync._gc`, issue #11 item 8): pauses
that overlap across threads restore the collector once, to its state before the first,
and a child forked during a pause gets its collector back at once."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator

import pytest

from flagsync._gc import gc_paused

pytestmark = pytest.mark.filterwarnings(
    r"ignore:This process .* is multi-threaded, use of fork\(\) may lead to deadlocks"
    ":DeprecationWarning"
)


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    """Each test starts with the collector on and leaves it on."""
    assert gc.isenabled()
    yield
    if not gc.isenabled():
        gc.enable()
        pytest.fail("the test left the cyclic GC disabled")


def child_gc_enabled(in_child: bool) -> int:
    """Fork; the child exits 0 when its collector is on (after `in_child` more work)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            enabled = gc.isenabled()
            if in_child:
                with gc_paused():  # the child's own pause must still work
                    pass
                enabled = enabled and gc.isenabled()
            code = 0 if enabled else 6
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -9


class TestOverlappingPauses:
    """The first pause disables the collector, the last one restores it."""

    def test_pauses_ending_out_of_order_in_two_threads(self) -> None:
        """A pause that ends while another is running keeps the collector off until the
        last ends, then it is back on."""
        inside = threading.Event()
        leave = threading.Event()

        def other_pause() -> None:
            with gc_paused():
                inside.set()
                leave.wait(5)

        with gc_paused():
            thread = threading.Thread(target=other_pause)
            thread.start()
            assert inside.wait(5)
        assert not gc.isenabled()  # the other thread's pause is still running
        leave.set()
        thread.join(5)
        assert gc.isenabled()

    def test_collector_disabled_before_stays_disabled(self) -> None:
        """A collector the application turned off is left off after a pause."""
        gc.disable()
        try:
            with gc_paused():
                pass
            assert not gc.isenabled()
        finally:
            gc.enable()

    def test_restored_when_the_block_raises(self) -> None:
        """An exception in the block still restores the collector."""
        with pytest.raises(ValueError, match="boom"), gc_paused():
            raise ValueError("boom")
        assert gc.isenabled()


class TestForkDuringPause:
    """A child forked inside a pause has its collector on, whoever was pausing."""

    def test_fork_while_another_thread_pauses(self) -> None:
        """Forked while another thread (absent in the child) holds a pause: GC on in the child."""
        inside = threading.Event()
        leave = threading.Event()

        def pausing() -> None:
            with gc_paused():
                inside.set()
                leave.wait(5)

        thread = threading.Thread(target=pausing)
        thread.start()
        try:
            assert inside.wait(5)
            assert not gc.isenabled()
            assert child_gc_enabled(in_child=True) == 0
        finally:
            leave.set()
            thread.join(5)
        assert gc.isenabled()

    def test_fork_from_inside_the_pause(self) -> None:
        """Forked by the pausing thread itself: on in the child, and still paused here."""
        with gc_paused():
            assert child_gc_enabled(in_child=False) == 0
            assert not gc.isenabled()
        assert gc.isenabled()
