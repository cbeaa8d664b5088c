"""The benchmark's handlers (imported by worker processes and by the Runner host).

Both record, on their first line, ``time.monotonic()`` and ``time.time()``
and return them with the monotonic time of their last line, their pid, the
job's ``lockExpiresAt`` and, when the benchmark's stamping client put it
there, the monotonic time the poll answer reached the supervisor
(``POLLED_AT``). On Linux ``time.monotonic()`` is
CLOCK_MONOTONIC, one clock for every process of the machine, so stamps taken
in two processes can be subtracted.
"""

from __future__ import annotations

import os
import time
from typing import Any

from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()

CPU_JOB = "bench-cpu"
NOOP_JOB = "bench-noop"
#: Job variable set by ``sv_host``'s client: monotonic time the poll answer arrived.
POLLED_AT = "_benchPolledAt"


def burn(milliseconds: float) -> int:
    """Pure-Python arithmetic until this *thread* has used ``milliseconds`` of CPU.

    ``time.thread_time()``, not ``process_time()``: in a threaded runner the
    process clock advances with every thread, and sixteen threads would each
    stop after a sixteenth of the work.
    """
    end = time.thread_time() + milliseconds / 1000.0
    total = 0
    while time.thread_time() < end:
        for i in range(400):
            total += i * i
    return total


def _stamps(job: dict[str, Any], mono: float, wall: float) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "startedMono": mono,
        "endedMono": time.monotonic(),
        "startedWall": wall,
        "polledMono": job["variables"].get(POLLED_AT),
        "lockExpiresAt": job.get("lockExpiresAt"),
    }


@registry.register(CPU_JOB)
def cpu_job(job: dict[str, Any]) -> dict[str, Any]:
    mono, wall = time.monotonic(), time.time()
    burn(float(job["variables"].get("ms", 20.0)))
    return _stamps(job, mono, wall)


@registry.register(NOOP_JOB)
def noop_job(job: dict[str, Any]) -> dict[str, Any]:
    mono, wall = time.monotonic(), time.time()
    return _stamps(job, mono, wall)
