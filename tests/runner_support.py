"""Helpers for tests of the threaded runners (``Runner``, ``KafkaRunner``).

Imported as ``runner_support`` by tests/unit, tests/e2e and tests/kafka:
pytest puts ``tests/`` on ``sys.path`` for their packages (it has no
``__init__.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class ThreadedRunner(Protocol):
    def run(self, stop_event: threading.Event | None = None) -> None: ...

    def stop(self) -> None: ...

    def join_workers(self, timeout: float | None = None) -> bool: ...


def wait_until(predicate: Callable[[], bool], timeout: float, pause: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` passes (False).

    For the runners' counters and metrics, which have no condition to wait on.
    """
    deadline = time.monotonic() + timeout
    waiter = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        waiter.wait(pause)
    return True


@contextmanager
def run_in_thread(
    runner: ThreadedRunner,
    timeout: float,
    *,
    name: str = "runner-under-test",
    stop_event: threading.Event | None = None,
) -> Iterator[threading.Thread]:
    """Run ``runner.run(stop_event)`` in a thread; on exit stop it and check that
    ``run()`` returned, raised nothing, and every worker thread ended, each
    within ``timeout`` seconds."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            runner.run(stop_event)
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name=name)
    thread.start()
    try:
        yield thread
    finally:
        runner.stop()
        thread.join(timeout)
        assert not thread.is_alive(), "run() did not return"
        assert runner.join_workers(timeout), "worker threads did not end"
    assert not errors, errors


def gil_bound_exponent(seconds: float) -> int:
    """An exponent ``e`` for which ``pow(3, e)`` holds the GIL about ``seconds``.

    Big-integer multiplication is Karatsuba here, about n ** 1.585, and
    ``pow`` is dominated by its last squarings. Scaling from a small sample
    (1/60 of the time) came out short by a third on this machine (a 5 s aim
    gave 3.3 s, close to the lease the test must overrun): the sample is
    doubled until it takes 1/16 of ``seconds``, and the fastest of two runs
    is kept, so that the step left to extrapolate is small and a busy moment
    during calibration does not shorten the call by much.
    """
    exponent = 250_000
    while True:
        took = min(_pow_seconds(exponent) for _ in range(2))
        if took >= seconds / 16:
            return int(exponent * (seconds / took) ** (1 / 1.585))
        exponent *= 2


def _pow_seconds(exponent: int) -> float:
    began = time.perf_counter()
    pow(3, exponent)
    return time.perf_counter() - began
