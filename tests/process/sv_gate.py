"""Handlers for the pause and status process tests (imported by worker processes).

``gate`` writes its pid to ``<piddir>/<instanceId>.pid``, then waits until
the test creates ``<piddir>/<instanceId>.go`` (60 s at most) and returns:
a job that runs exactly as long as the test wants. ``quick`` returns at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()


@registry.register("gate")
def gate(job: dict[str, Any]) -> dict[str, Any]:
    piddir = Path(job["variables"]["piddir"])
    instance = job["instanceId"]
    tmp = piddir / f"{instance}.tmp"
    tmp.write_text(str(os.getpid()))
    tmp.rename(piddir / f"{instance}.pid")  # atomic: the test never reads half a pid
    deadline = time.monotonic() + 60
    while not (piddir / f"{instance}.go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"pid": os.getpid()}


@registry.register("quick")
def quick(job: dict[str, Any]) -> dict[str, Any]:
    return {"pid": os.getpid()}
