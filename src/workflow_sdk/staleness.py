"""Is a claimed job still worth reporting? Ask the engine.

The engine never tells a worker that its job stopped mattering (see "When a
job goes stale" in the contract): a cancelled instance leaves its jobs
LOCKED, an interrupting boundary timer marks the step execution FAILED and
the job CANCELLED. A completion for such a job is harmless, but a fail is
not: it fails the instance even after the instance COMPLETED. So before any
fail, and now and then while a long job runs, both runtimes ask:

1. ``GET /v1/instances/{instanceId}``: COMPLETED, FAILED or CANCELLED (or
   the engine's own JSON not-found) means stale;
2. only while the instance is still active, ``GET .../history``: the item
   whose ``id`` is the job's ``stepExecutionId`` must still be RUNNING.

If the engine cannot be asked (down, garbage), the verdict is ``UNKNOWN``
and the caller falls back to its usual rules: the check never turns an
outage into a lost report. Only the engine's own not-found envelope
(``{"error": "not-found", ...}``) proves an instance gone: a 404 without it
(a gateway's or proxy's plain-text ``404 page not found``, a wrong base
path) says nothing about the instance and is ``UNKNOWN`` too, or every
long job behind such a gateway would be cancelled and its failure dropped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from workflow_sdk.errors import EngineClientError, WorkflowSDKError

#: Instance states in which no job of the instance matters any more.
FINISHED_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


#: Stale reasons after which the job is retired with an empty completion
#: (``Outcome.retirement``): its instance is over, so the completion changes
#: nothing there, and the job would otherwise be handed out again after each
#: lease. Not after a step interrupted by a timer: that job is CANCELLED and
#: is not handed out again; not for an instance gone (404).
RETIRE_REASONS = frozenset({"instance_cancelled", "instance_completed", "instance_failed"})


class JobLiveness(enum.Enum):
    LIVE = "live"
    STALE = "stale"
    #: The engine could not be asked; apply the rules that hold without the check.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class StaleVerdict:
    liveness: JobLiveness
    #: Metric label (``instance_cancelled``, ``step_failed``...); "" when live.
    reason: str = ""
    #: One line for the log: what the engine said.
    detail: str = ""

    @property
    def stale(self) -> bool:
        return self.liveness is JobLiveness.STALE


LIVE = StaleVerdict(JobLiveness.LIVE)


class InstanceReader(Protocol):
    """The two reads the check needs (``RestEngineClient`` has them)."""

    def get_instance(self, instance_id: str) -> dict[str, Any]: ...

    def get_instance_history(self, instance_id: str) -> list[dict[str, Any]]: ...


def verdict_from_instance(instance: dict[str, Any]) -> StaleVerdict | None:
    """STALE when the instance finished; None when the history must decide."""
    status = str(instance.get("status") or "")
    if status in FINISHED_STATUSES:
        why = instance.get("failureReason") or ""
        detail = f"instance {status}" + (f" ({why})" if why else "")
        return StaleVerdict(JobLiveness.STALE, f"instance_{status.lower()}", detail)
    return None


def verdict_from_history(history: list[dict[str, Any]], step_execution_id: str) -> StaleVerdict:
    """STALE when the job's step execution is no longer RUNNING."""
    for item in history:
        if item.get("id") != step_execution_id:
            continue
        status = str(item.get("status") or "")
        if status == "RUNNING":
            return LIVE
        why = item.get("failureReason") or ""
        detail = f"step execution {status}" + (f" ({why})" if why else "")
        return StaleVerdict(JobLiveness.STALE, f"step_{status.lower() or 'unknown'}", detail)
    # Not in the history: an engine that does not write it yet, or another
    # id scheme. Not proof of staleness; treat as live.
    return LIVE


def instance_gone(error: EngineClientError) -> bool:
    """The engine itself said the instance does not exist: a 404 carrying its
    JSON error envelope with code ``not-found``. Any other 404 came from
    something else on the way (a route the engine does not have, a gateway)."""
    return error.status_code == 404 and error.error_code == "not-found"


def check_job(client: InstanceReader, job: dict[str, Any]) -> StaleVerdict:
    """Ask the engine whether ``job`` (a job or handler context dict) still matters."""
    instance_id = str(job.get("instanceId") or "")
    if not instance_id:
        return StaleVerdict(JobLiveness.UNKNOWN, "", "job has no instanceId")
    try:
        instance = client.get_instance(instance_id)
    except EngineClientError as exc:
        if instance_gone(exc):
            return StaleVerdict(JobLiveness.STALE, "instance_gone", "instance not found")
        return StaleVerdict(JobLiveness.UNKNOWN, "", f"instance check failed: {exc}")
    except WorkflowSDKError as exc:
        return StaleVerdict(JobLiveness.UNKNOWN, "", f"instance check failed: {exc}")
    finished = verdict_from_instance(instance)
    if finished is not None:
        return finished
    step_execution_id = str(job.get("stepExecutionId") or "")
    if not step_execution_id:
        return LIVE
    try:
        history = client.get_instance_history(instance_id)
    except WorkflowSDKError as exc:
        return StaleVerdict(JobLiveness.UNKNOWN, "", f"history check failed: {exc}")
    return verdict_from_history(history, step_execution_id)


__all__ = [
    "FINISHED_STATUSES",
    "LIVE",
    "RETIRE_REASONS",
    "InstanceReader",
    "JobLiveness",
    "StaleVerdict",
    "check_job",
    "instance_gone",
    "verdict_from_history",
    "verdict_from_instance",
]
