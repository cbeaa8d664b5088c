"""Process titles, so ``ps``/``top`` show what each process is doing.

``/proc/PID/comm`` keeps only 15 bytes, so the distinguishing word comes first
("worker-3", "supervisor"). Titles show job ids and types, which come from
the engine: their control characters are escaped, as in the text logs.
"""

from __future__ import annotations

import logging

from workflow_sdk.sanitize import escape_controls

log = logging.getLogger("workflow_sdk.supervisor")

try:
    import setproctitle as _spt

    # Read it once early: setproctitle sets itself up on first use, and doing
    # that after a fork has crashed children on some platforms.
    _spt.getproctitle()
    _AVAILABLE = True
except Exception:  # pragma: no cover - the dependency is declared
    _AVAILABLE = False


def set_title(title: str) -> None:
    if _AVAILABLE:
        _spt.setproctitle(title)


def master_title(source: str, workers: int, busy: int, state: str = "") -> str:
    suffix = f" {state}" if state else ""
    title = f"supervisor [rochallor] {source} workers={workers} busy={busy}{suffix}"
    return escape_controls(title)


def worker_title(slot: int, state: str) -> str:
    return escape_controls(f"worker-{slot} [rochallor] {state}")


__all__ = ["master_title", "set_title", "worker_title"]
