"""Which jobs the Runner holds, so that it never runs one twice at once.

A job is held from its claim until its report has ended. When a poll hands
out again a job that is held (its lease passed and the engine put it back
in the queue, often because the run outlived the lease), the job is not
started again: the verdict is "coalesced", the claim's later lease end is
kept for the run in progress, and that run sends the one result.

Two exceptions, both decided here:

- a claim with one retry less than the held attempt, once that attempt's
  handler has returned, is the engine's retry after this Runner's own fail:
  a new attempt, started (its predecessor only waits for the fail's answer);
- when nothing will be reported for the run in progress (its lease was
  declared lost), the latest re-delivery is kept and handed back when that
  run ends, to run then (never beside it).

Not thread-safe: the Runner calls it under its own lock. It starts nothing
and calls nobody; it returns verdicts (and logs them).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from workflow_sdk.runner.watch import CANCEL_LEASE_LOST, WatchedJob

log = logging.getLogger("workflow_sdk.runner")


@dataclass(eq=False)
class Held:
    """One job held by the Runner."""

    job_id: str
    #: ``retriesRemaining`` of the attempt held (a retry has one less).
    retries: object
    #: The latest lease end a coalesced re-delivery brought (monotonic).
    lease_end: float = -math.inf
    #: Its watch entry, once the handler started.
    entry: WatchedJob | None = None
    #: The handler has returned (its report may still be in flight).
    handler_done: bool = False
    #: Re-deliveries coalesced with this run.
    redeliveries: int = 0
    #: The latest re-delivery (job, poll send time), in case this run reports nothing.
    deferred: tuple[dict[str, Any], float] | None = None


def _is_retry(held: Held, retries: object) -> bool:
    return (
        held.handler_done
        and isinstance(retries, int)
        and isinstance(held.retries, int)
        and retries < held.retries
    )


class JobHolds:
    def __init__(self) -> None:
        self._held: dict[str, Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    def claim(
        self, job: dict[str, Any], poll_sent_at: float, lease_end: float
    ) -> tuple[Held, bool]:
        """The hold of a claimed job, and whether to start it (False: coalesced
        with the run of the hold returned, whose ``lease_end`` now counts
        this claim's)."""
        job_id = str(job["id"])
        retries = job.get("retriesRemaining")
        held = self._held.get(job_id)
        if held is None or _is_retry(held, retries):
            fresh = self._held[job_id] = Held(job_id, retries)
            return fresh, True
        held.redeliveries += 1
        held.lease_end = max(held.lease_end, lease_end)
        if held.deferred is None or held.deferred[1] < poll_sent_at:
            held.deferred = (job, poll_sent_at)
        if held.redeliveries == 1:
            log.info(
                "job %s (%s) handed out again by the engine while this runner still holds "
                "it (its lease passed); not started twice, one result will be sent",
                job_id,
                job.get("jobType"),
            )
        return held, False

    def release(self, held: Held, *, stopping: bool) -> tuple[dict[str, Any], float, Held] | None:
        """The run of ``held`` has ended (reported, or never started). Returns
        the re-delivery to run now (job, poll send time, its new hold) when
        one came and this run reported nothing because its lease was lost."""
        deferred, held.deferred = held.deferred, None
        if self._held.get(held.job_id) is held:
            del self._held[held.job_id]
        entry = held.entry
        if deferred is None or entry is None or entry.cancel_reason != CANCEL_LEASE_LOST:
            return None
        if stopping or held.job_id in self._held:
            return None
        job, poll_sent_at = deferred
        fresh = self._held[held.job_id] = Held(held.job_id, job.get("retriesRemaining"))
        log.info(
            "job %s (%s): its run here ended with the lease lost; the engine's later "
            "hand-out of it runs now",
            held.job_id,
            job.get("jobType"),
        )
        return job, poll_sent_at, fresh


__all__ = ["Held", "JobHolds"]
