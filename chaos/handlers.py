"""The handlers the supervisors under test run in a chaos run.

Every run appends two short lines to a run log, one file per process
(appends of one short line need no lock between processes):
``S <job> <retriesRemaining> <pid> <supervisor> <time> <jobType> <instance>
<stepExecution>`` when it starts and
``E <job> <retriesRemaining> <pid> <supervisor> <time> <outcome>`` when the
handler returns or raises (a run killed on its way has no E line). The
job's variables say how it behaves (``mode``); only the first attempt
misbehaves, so the outcome of every instance is known in advance
(``workload.expected_status``).

Imported by the workers of the supervisor under test, which may be an older
checkout of the SDK: only the handler registry and ``NonRetryableError`` are
used, both stable.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from workflow_sdk import HandlerRegistry, NonRetryableError

#: retryCount of every service task of the chaos workflows.
RETRIES = 3

registry = HandlerRegistry()
#: The same handlers without ``chaos.slow``: a SIGHUP that switches between
#: the two changes the supervisor's job types.
registry_ab = HandlerRegistry()

_RUNLOG = Path(os.environ.get("CHAOS_RUNLOG_DIR", "."))
_SUPERVISOR = os.environ.get("CHAOS_SUPERVISOR", "?")
_leak: list[bytearray] = []


def _log(line: str) -> None:
    with (_RUNLOG / f"{os.getpid()}.log").open("a") as out:
        out.write(line + "\n")


def _first_attempt(job: dict[str, Any]) -> bool:
    return int(job.get("retriesRemaining", 0)) >= RETRIES


def _misbehave(job: dict[str, Any], mode: str) -> dict[str, Any]:
    """What the first attempt of a marked job does (see workload.MODES)."""
    if mode == "flaky":
        raise RuntimeError("chaos: flaky first attempt")
    if mode == "fail":
        raise NonRetryableError("chaos: this job fails for good")
    if mode == "unser":
        return {"value": float("nan")}  # not JSON: failed for good by the supervisor
    if mode == "crash":
        os._exit(13)
    if mode == "hang":
        job["cancelEvent"].wait(120.0)  # past the job type's timeout: killed there
        raise RuntimeError("chaos: the hang was interrupted")
    if mode == "leak":
        # Past max_memory_hard_mb: the supervisor kills the worker mid-job.
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            _leak.append(bytearray(16 * 1024 * 1024))
            time.sleep(0.05)
        raise RuntimeError("chaos: the leak was not stopped")
    if mode == "thread":
        # A non-daemon thread outlives the job: the worker must still end
        # when it is told to (recycled, reloaded, stopped).
        threading.Thread(target=time.sleep, args=(600.0,), daemon=False).start()
    return {}


def _work(job: dict[str, Any]) -> dict[str, Any]:
    job_id = job["id"]
    retries = job.get("retriesRemaining", 0)
    pid = os.getpid()
    job_type = job.get("jobType", "?")
    step = job.get("stepExecutionId", "?")
    instance = job.get("instanceId", "?")
    _log(f"S {job_id} {retries} {pid} {_SUPERVISOR} {time.time():.3f} {job_type} {instance} {step}")
    outcome = "error"
    try:
        variables = job.get("variables") or {}
        result: dict[str, Any] = {}
        mode = str(variables.get("mode", "ok"))
        if job.get("jobType") == "chaos.slow":
            # Either done long before the boundary timer, or interrupted by it.
            job["cancelEvent"].wait(float(variables.get("slow_seconds", 0.05)))
        else:
            time.sleep(float(variables.get("seconds", 0.02)))
        if variables.get("cancel_me"):
            job["cancelEvent"].wait(float(variables.get("seconds_cancel", 3.0)))
        if mode != "ok" and _first_attempt(job) and job.get("jobType") == variables.get("marked"):
            result = _misbehave(job, mode)
            if mode == "unser":
                outcome = "unser"  # the supervisor fails it: not a success
                return result
        result[f"done_{job.get('jobType', '?').replace('.', '_')}"] = True
        outcome = "ok"
        return result
    finally:
        _log(f"E {job_id} {retries} {pid} {_SUPERVISOR} {time.time():.3f} {outcome}")


for _type in ("chaos.a", "chaos.b", "chaos.slow"):
    registry.register(_type, _work)
for _type in ("chaos.a", "chaos.b"):
    registry_ab.register(_type, _work)
