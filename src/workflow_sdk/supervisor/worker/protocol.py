"""Messages on the channel between the supervisor and one worker process.

One ``Pipe`` per worker: a worker that dies, even holding the channel, costs
only its own job (a shared queue's lock would wedge every other worker).
The parent closing its end is the worker's signal to exit when idle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workflow_sdk.handler.outcome import Outcome


@dataclass(frozen=True)
class RunJob:
    """Parent → worker: run this job (the handler context)."""

    context: dict[str, Any]


@dataclass(frozen=True)
class Ready:
    """Worker → parent: handlers imported; these are the job types served."""

    pid: int
    job_types: tuple[str, ...]


@dataclass(frozen=True)
class BootFailed:
    """Worker → parent: the handlers could not be loaded (the worker then exits)."""

    pid: int
    error: str


@dataclass(frozen=True)
class JobDone:
    """Worker → parent: the job's outcome and the worker's RSS right after it."""

    outcome: Outcome
    rss_bytes: int
    #: false when the worker had no handler for the job's type
    handler_ran: bool = True


WorkerMessage = Ready | BootFailed | JobDone

__all__ = ["BootFailed", "JobDone", "Ready", "RunJob", "WorkerMessage"]
