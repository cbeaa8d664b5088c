"""Counters the supervisor keeps about itself (for logs, tests and metrics)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.reporting import ReportStatus

#: Why a worker was replaced (label values of workflow_supervisor_worker_restarts).
RESTART_REASONS = ("crash", "timeout", "recycle_jobs", "recycle_memory", "reload", "scale")


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
    reports: Counter[str] = field(default_factory=Counter)
    restarts: Counter[str] = field(default_factory=Counter)
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

    def record_restart(self, reason: str) -> None:
        with self._lock:
            self.restarts[reason] += 1

    def restart_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.restarts)

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
            restarts = dict(self.restarts)
        return (
            f"jobs: {self.jobs_succeeded} succeeded, {self.jobs_failed} failed, "
            f"{self.skipped_expired} skipped (lease passed), {self.abandoned} abandoned; "
            f"reports: {reports}; restarts: {restarts}"
        )


__all__ = ["SupervisorStats"]
