"""The supervisor's log lines about one job: one line per event, with fields.

In JSON format ``job_id``, ``job_type``, ``instance_id`` and ``worker`` are
fields of their own (see ``logs.JsonLineFormatter``), so a failure can be
found by job, instance or worker without parsing the message.
"""

from __future__ import annotations

import logging

from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.supervisor.exposition.logs import DETAILS
from workflow_sdk.supervisor.loop.ledger import JobEntry

log = logging.getLogger("workflow_sdk.supervisor")


def job_fields(entry: JobEntry, slot: int) -> dict[str, str]:
    return {
        "job_id": entry.job_id,
        "job_type": entry.job_type,
        "instance_id": entry.instance_id,
        "worker": f"worker-{slot}",
    }


def log_outcome(outcome: Outcome, entry: JobEntry, slot: int, now: float) -> None:
    """The one line for a job's outcome (the worker does not log failures)."""
    if outcome.succeeded:
        if now > entry.lease_end:
            log.warning(
                "job %s (%s) finished %.1f s after its lease ran out; reporting it anyway",
                entry.job_id,
                entry.job_type,
                now - entry.lease_end,
                extra=job_fields(entry, slot),
            )
        elif log.isEnabledFor(logging.DEBUG):
            # DEBUG: at hundreds of jobs a second an INFO line per success
            # floods the journal and costs the parent a few % of a core.
            log.debug(
                "job %s (%s) succeeded in %.3f s",
                entry.job_id,
                entry.job_type,
                outcome.duration,
                extra=job_fields(entry, slot),
            )
        return
    text = (
        f"job {entry.job_id} ({entry.job_type}) of instance {entry.instance_id} failed "
        f"on worker-{slot} after {outcome.duration:.3f} s "
        f"({failure_kind(outcome, entry)}): {outcome.error_message}"
    )
    # The handler's traceback belongs to this line, not to a second event:
    # its block, below the line (in JSON, in the same message).
    extra: dict[str, str] = {**job_fields(entry, slot), DETAILS: outcome.traceback}
    log.warning("%s", text, extra=extra)


def failure_kind(outcome: Outcome, entry: JobEntry) -> str:
    """What the engine does with this fail once it is sent: ``retryable`` (it
    runs the job again), or the instance fails: ``not retryable``, or
    retryable with no retries left (the engine treats both alike: a
    ``(retryable)`` there read as if the job would run again). A job without
    ``retriesRemaining`` (not known) says ``retryable``."""
    if not outcome.retryable:
        return "not retryable"
    retries = entry.context.get("retriesRemaining")
    if isinstance(retries, int) and not isinstance(retries, bool) and retries <= 0:
        return "no retries left: fails the instance"
    return "retryable"


def log_stopped(
    entry: JobEntry, slot: int, stale: bool, detail: str, *, retire: bool = False
) -> None:
    """A running job whose worker is stopped, with no result reported."""
    log.info(
        "job %s (%s) of instance %s %s (%s); stopping worker-%d, %s",
        entry.job_id,
        entry.job_type,
        entry.instance_id,
        "no longer matters" if stale else "is no longer ours",
        detail,
        slot,
        "the job is retired with an empty completion" if retire else "nothing is reported",
        extra=job_fields(entry, slot),
    )


__all__ = ["failure_kind", "job_fields", "log_outcome", "log_stopped"]
