"""Counters the supervisor keeps about itself (for logs, tests and metrics)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.reporting import ReportStatus

#: Why a worker was replaced (label values of workflow_supervisor_worker_restarts).
RESTART_REASONS = (
    "crash",
    "timeout",
    "recycle_jobs",
    "recycle_memory",
    "memory_kill",
    "reload",
    "scale",
    "stale",
    "lease_lost",
)


@dataclass
class SupervisorStats:
    jobs_succeeded: int = 0
    jobs_failed: int = 0
    poll_errors: int = 0
    jobs_claimed: int = 0
    skipped_expired: int = 0
    lease_overruns: int = 0
    abandoned: int = 0
    report_retries: int = 0
    #: jobs found to no longer matter while they ran (stopped, nothing reported)
    stale_jobs: int = 0
    #: running jobs whose lease renewal the engine refused (stopped, nothing reported)
    leases_lost: int = 0
    #: claims of a job this supervisor was already running (not started twice)
    redeliveries_coalesced: int = 0
    #: jobs held now (claimed, running, reports in flight) and the most ever
    jobs_held: int = 0
    jobs_held_peak: int = 0
    #: polls not sent (or sent for fewer jobs) because the ledger was full
    claims_held_back: int = 0
    reports: Counter[str] = field(default_factory=Counter)
    #: (reason, job type) -> workers replaced; job type "" when idle
    restarts: Counter[tuple[str, str]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record_poll(self, jobs: int, failed: bool) -> None:
        self.jobs_claimed += jobs
        if failed:
            self.poll_errors += 1

    def record_outcome(self, outcome: Outcome) -> None:
        if outcome.succeeded:
            self.jobs_succeeded += 1
        else:
            self.jobs_failed += 1

    def record_restart(self, reason: str, job_type: str = "") -> None:
        with self._lock:
            self.restarts[(reason, job_type)] += 1

    def restart_counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.restarts)

    def restarts_by_reason(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for (reason, _), count in self.restart_counts().items():
            totals[reason] += count
        return dict(totals)

    def lost(self) -> int:
        with self._lock:
            return self.reports[ReportStatus.LOST.value]

    # Called from reporter threads.
    def record_report(self, status: ReportStatus) -> None:
        with self._lock:
            self.reports[status.value] += 1

    def record_report_retry(self) -> None:
        with self._lock:
            self.report_retries += 1

    def summary(self) -> str:
        with self._lock:
            reports = dict(self.reports)
        restarts = self.restarts_by_reason()
        return (
            f"jobs: {self.jobs_succeeded} succeeded, {self.jobs_failed} failed, "
            f"{self.skipped_expired} skipped (lease passed), {self.abandoned} abandoned, "
            f"{self.stale_jobs} stale, {self.redeliveries_coalesced} redeliveries coalesced, "
            f"{self.jobs_held_peak} held at most; "
            f"reports: {reports}; restarts: {restarts}"
        )


__all__ = ["SupervisorStats"]
