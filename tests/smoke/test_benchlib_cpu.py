"""The benchmarks' CPU clock for the supervisor's parent: finer than clock ticks."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def threads_cpu() -> Iterator[Callable[[psutil.Process], Callable[[], float]]]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from benchlib.procs import threads_cpu  # noqa: PLC0415

        yield threads_cpu
    finally:
        sys.path.remove(str(BENCHMARKS))


def burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


@pytest.mark.skipif(
    not os.path.exists(f"/proc/self/task/{threading.get_native_id()}/schedstat"),
    reason="the kernel keeps no per-thread schedstat here",
)
def test_a_few_ms_of_cpu_are_counted_where_clock_ticks_read_0(
    threads_cpu: Callable[[psutil.Process], Callable[[], float]],
) -> None:
    # psutil's cpu_times() counts 10 ms ticks: 3 ms of CPU reads 0 most of
    # the time (a tick lands in it about one time in three), and a smoke
    # batch's parent CPU per job then read 0 (a CI failure). Only a floor:
    # other threads of this process (left by earlier tests) may add to it.
    read = threads_cpu(psutil.Process())
    for _ in range(5):
        before = read()
        burn(0.003)
        used = read() - before
        assert used >= 0.0025, used


def test_a_thread_that_ended_keeps_what_it_used(
    threads_cpu: Callable[[psutil.Process], Callable[[], float]],
) -> None:
    read = threads_cpu(psutil.Process())
    burning = threading.Event()
    stop = threading.Event()

    def work() -> None:
        burn(0.05)
        burning.set()
        stop.wait(10)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert burning.wait(10)
        seen = read()
    finally:
        stop.set()
        thread.join(10)
    # The thread is gone; the sum does not go back.
    assert read() >= seen
