"""The local engine's job queue: jobs, claims, leases and heartbeats.

Knows nothing of instances: ``flow.py`` creates a job when an instance
enters a SERVICE_TASK and decides what a job's end does to its instance.
Caller holds ``EngineState.lock`` for every method; this module has no lock
of its own, so that a job and its instance are always seen in step.
"""

from __future__ import annotations

import heapq
import itertools
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from workflow_sdk.testing.definitions import Step
from workflow_sdk.testing.records import EngineError, Instance, Job, now

# Job states in which a job still belongs to a live step execution.
_LIVE_JOB_STATUSES = frozenset({"PENDING", "LOCKED"})


class JobBoard:
    """Every job, a queue per job type, and the leases of claimed jobs."""

    def __init__(self) -> None:
        self._seq = itertools.count()
        self.jobs: dict[str, Job] = {}
        # Per job type, a heap of (seq, job id) of jobs that may be PENDING;
        # entries of jobs that were claimed meanwhile are skipped when popped.
        self._queues: dict[str, list[tuple[int, str]]] = {}
        # Heap of (monotonic deadline, job id, deliveries) of leases to expire.
        self._leases: list[tuple[float, str, int]] = []
        # Kafka dispatch mode (testing/kafka_dispatch.py): called, under the
        # lock, with each job that becomes claimable (created, or put back by
        # a retryable fail).
        self.listener: Callable[[Job], None] | None = None

    def create(self, instance: Instance, step: Step, item: dict[str, Any], at: datetime) -> Job:
        """A PENDING job for the SERVICE_TASK execution ``item`` of ``instance``."""
        seq = next(self._seq)
        job = Job(
            id=str(uuid.uuid4()),
            instance_id=instance.id,
            step_execution_id=item["ID"],
            step_id=step.id,
            job_type=step.job_type or step.id,
            retries_remaining=step.retry_count,
            variables=instance.variables,
            created_at=at,
            seq=seq,
        )
        self.jobs[job.id] = job
        heapq.heappush(self._queues.setdefault(job.job_type, []), (seq, job.id))
        if self.listener is not None:
            self.listener(job)
        return job

    def get(self, job_id: str) -> Job:
        """The job; an unknown id is the real engine's 500."""
        job = self.jobs.get(job_id)
        if job is None:
            raise EngineError(500, f'job "{job_id}" not found')
        return job

    def cancel_step_job(self, step_execution_id: str) -> bool:
        """Cancel the step execution's job if it is still PENDING or LOCKED
        (not claimable any more; a worker that holds it is not told).
        Returns whether a job was cancelled."""
        # A scan: only a firing interrupting timer needs it, rarely.
        job = next(
            (j for j in self.jobs.values() if j.step_execution_id == step_execution_id), None
        )
        if job is None or job.status not in _LIVE_JOB_STATUSES:
            return False
        job.status = "CANCELLED"
        return True

    def claim(
        self, worker_id: str, job_types: Iterable[str], max_jobs: int, length: float
    ) -> list[dict[str, Any]]:
        """Lock up to ``max_jobs`` of the oldest PENDING jobs of ``job_types``
        for ``length`` seconds; returns them as a poll answer carries them."""
        at = now()
        expires = at + timedelta(seconds=length)
        deadline = time.monotonic() + length
        queues = [q for q in (self._queues.get(t) for t in dict.fromkeys(job_types)) if q]
        claimed: list[dict[str, Any]] = []
        while len(claimed) < max_jobs and queues:
            # The oldest job over all the requested types.
            queue = min(queues, key=lambda q: q[0][0])
            _, job_id = heapq.heappop(queue)
            if not queue:
                queues.remove(queue)
            job = self.jobs[job_id]
            if job.status != "PENDING":
                continue  # a stale entry: claimed or finished since it was queued
            job.status = "LOCKED"
            job.worker_id = worker_id
            job.locked_at = at
            job.lock_expires_at = expires
            job.deliveries += 1
            job.lease_deadline = deadline
            heapq.heappush(self._leases, (deadline, job.id, job.deliveries))
            claimed.append(job.wire())
        return claimed

    def requeue(self, job: Job) -> None:
        """Make ``job`` claimable again (a retry, or a lease that passed)."""
        job.status = "PENDING"
        job.worker_id = None
        job.locked_at = None
        job.lock_expires_at = None
        # Same seq (its old createdAt): it is handed out before newer jobs.
        heapq.heappush(self._queues.setdefault(job.job_type, []), (job.seq, job.id))
        if self.listener is not None:
            self.listener(job)

    def extend(self, job_id: str, worker_id: str, length: float) -> datetime | str:
        """Extend the lease ``worker_id`` holds on the job by ``length``
        seconds from now. Returns the lease's new end, or why the lease is
        lost: unknown or finished job, another worker holds it, or its lease
        has passed (swept or not yet)."""
        job = self.jobs.get(job_id)
        current = time.monotonic()
        if job is None:
            return "job not found"
        if job.status != "LOCKED":
            return f"job is {job.status}"
        if job.worker_id != worker_id:
            return "another worker holds the job"
        if current >= job.lease_deadline:
            return "the lease has expired"
        job.heartbeats += 1
        job.lease_deadline = current + length
        job.lock_expires_at = now() + timedelta(seconds=length)
        heapq.heappush(self._leases, (job.lease_deadline, job.id, job.deliveries))
        return job.lock_expires_at

    def expire(self) -> int:
        """Put jobs whose lease has passed back in the queue; returns how many."""
        expired = 0
        current = time.monotonic()
        while self._leases and self._leases[0][0] <= current:
            _, job_id, claim = heapq.heappop(self._leases)
            job = self.jobs.get(job_id)
            if job is None or job.status != "LOCKED" or job.deliveries != claim:
                continue  # finished or claimed again since
            if job.lease_deadline > current:
                continue  # extended by a heartbeat: a later entry stands for it
            self.requeue(job)  # retriesRemaining unchanged
            expired += 1
        return expired

    def inspect(
        self, status: str | None, job_type: str | None, instance_id: str | None
    ) -> list[dict[str, Any]]:
        """The jobs that match every filter given, oldest first (for tests)."""
        jobs = sorted(self.jobs.values(), key=lambda j: j.seq)
        return [
            j.inspect()
            for j in jobs
            if (status is None or j.status == status)
            and (job_type is None or j.job_type == job_type)
            and (instance_id is None or j.instance_id == instance_id)
        ]

    def clear(self) -> None:
        self.jobs.clear()
        self._queues.clear()
        self._leases.clear()
