"""Handlers the supervisor's process tests run (imported by worker processes).

``script`` does what the instance's variables say, on the first attempt
(``first``) and on later ones (``then``): ``ok``, ``block`` (write the pid to
``<piddir>/<instanceId>.pid`` and sleep), ``sleep`` (``seconds``),
``unserialisable``, ``nonretryable``, ``raise``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from workflow_sdk import HandlerRegistry, NonRetryableError

registry = HandlerRegistry()

#: A metric the handler module defines itself: the supervisor must aggregate
#: it across workers (and across recycled workers) like its own.
HANDLED = Counter("sv_handled_total", "Jobs seen by the test handlers", ["handler"])
#: Memory kept alive across jobs by the ``leak`` action.
_LEAKED: list[bytes] = []


def burn_cpu(milliseconds: float) -> int:
    """Spin in pure Python for ``milliseconds`` of this thread's CPU time."""
    end = time.thread_time() + milliseconds / 1000.0
    n = 0
    while time.thread_time() < end:
        for i in range(1000):
            n += i * i
    return n


@registry.register("cpu")
def cpu(job: dict[str, Any]) -> dict[str, Any]:
    HANDLED.labels(handler="cpu").inc()
    burn_cpu(float(job["variables"].get("ms", 20)))
    return {"pid": os.getpid()}


@registry.register("script")
def script(job: dict[str, Any]) -> dict[str, Any] | None:
    variables = job["variables"]
    first = job["retriesRemaining"] == variables.get("retries", 0)
    action = variables.get("first" if first else "then", "ok")
    if action in ("block", "sleep"):
        piddir = variables.get("piddir")
        if piddir:
            path = Path(piddir) / f"{job['instanceId']}.pid"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(str(os.getpid()))
            tmp.rename(path)  # atomic: the test never reads half a pid
        time.sleep(60 if action == "block" else float(variables.get("seconds", 1)))
    elif action == "leak":
        # Filled bytes, so the pages are really resident.
        _LEAKED.append(b"\x01" * (int(variables["mb"]) << 20))
    elif action == "grow":
        held = []
        for _ in range(int(variables["mb"]) // 10):
            held.append(b"\x01" * (10 << 20))
            time.sleep(0.02)
        time.sleep(60)
    elif action == "unserialisable":
        return {"when": object()}
    elif action == "nonretryable":
        raise NonRetryableError("card declined")
    elif action == "raise":
        raise ValueError("boom")
    return {"handledBy": os.getpid(), "attempt": "first" if first else "later"}


@registry.register("lifecycle")
def lifecycle(job: dict[str, Any]) -> dict[str, Any] | None:
    """Count the run (a line in ``<piddir>/<instanceId>.runs``), write the pid,
    wait ``seconds`` (or until the job is cancelled), then do ``then``: ``ok``,
    ``raise`` or ``nonretryable``. On the way out, write whether the cancel
    event was set to ``<piddir>/<instanceId>.cancelled``."""
    variables = job["variables"]
    piddir = Path(variables["piddir"])
    cancel = job["cancelEvent"]
    with (piddir / f"{job['instanceId']}.runs").open("a") as runs:
        runs.write(f"{os.getpid()}\n")
    (piddir / f"{job['instanceId']}.tmp").write_text(str(os.getpid()))
    (piddir / f"{job['instanceId']}.tmp").rename(piddir / f"{job['instanceId']}.pid")
    try:
        cancel.wait(float(variables.get("seconds", 60)))
    finally:
        marker = piddir / f"{job['instanceId']}.cancelled"
        marker.write_text("set" if cancel.is_set() else "clear")
    then = variables.get("then", "ok")
    if then == "nonretryable":
        raise NonRetryableError("gave up late")
    if then == "raise":
        raise ValueError("late failure")
    return {"lifecycle": "done"}


@registry.register("noop")
def noop(job: dict[str, Any]) -> None:
    return None


@registry.register("span")
@registry.register("span-other")
def span(job: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``seconds``; return when it ran (``time.monotonic()``, one clock
    for every process of the machine), keyed by job type, and the pid."""
    started = time.monotonic()
    time.sleep(float(job["variables"].get("seconds", 0.2)))
    key = job["jobType"].replace("-", "_")
    return {f"{key}Start": started, f"{key}End": time.monotonic(), f"{key}Pid": os.getpid()}


@registry.register("attempts")
def attempts(job: dict[str, Any]) -> dict[str, Any]:
    """Append ``start end`` (monotonic) to ``<piddir>/<instanceId>.attempts``;
    fail retryable while fewer than ``fail`` attempts are written."""
    started = time.monotonic()
    path = Path(job["variables"]["piddir"]) / f"{job['instanceId']}.attempts"
    done = path.read_text().count("\n") if path.exists() else 0
    with path.open("a") as out:
        out.write(f"{started} {time.monotonic()}\n")
    if done < int(job["variables"].get("fail", 1)):
        raise ValueError(f"attempt {done + 1} fails")
    return {"attempts": done + 1}


@registry.register("gil")
def gil(job: dict[str, Any]) -> dict[str, Any]:
    """Hold the GIL in one long C call (a big-integer power), ``exponent`` given."""
    variables = job["variables"]
    piddir = Path(variables["piddir"])
    with (piddir / f"{job['instanceId']}.runs").open("a") as runs:
        runs.write(f"{os.getpid()}\n")
    digits = pow(3, int(variables["exponent"])).bit_length()
    return {"bits": digits}
