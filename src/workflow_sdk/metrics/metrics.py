"""The Prometheus metrics shared by every SDK of the engine, and this SDK's own.

The first five names, types and labels are fixed by the engine's SDK family
so that one dashboard serves workers written in any language. The others
(stale jobs, reports, lease renewals) are this SDK's, defined here once for
the threaded Runner and the supervisor alike.

Multiprocess mode: in the supervisor every process writes its samples to
prometheus_client's multiprocess directory and the exporter adds them up.
Counters and histograms add up by nature. The two gauges are set by one
process only (the supervisor's parent, which delivers the reports); they are
"live" gauges, so the value of a process that died is dropped instead of
lingering: ``livesum`` for the number of pending reports (were several
processes to report, their pending reports add up) and ``livemax`` for the
age of the oldest one (the oldest over all processes). Outside multiprocess
mode the setting is ignored. They are created at their first
``set_report_backlog``: in multiprocess mode an unlabelled metric gets its
file when it is created, and worker processes, which never report, must not
add two files each to the directory.
"""

from __future__ import annotations

import threading
from typing import Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

Outcome = Literal["success", "failure"]

POLL_LATENCY = "workflow_sdk_poll_latency_seconds"
LOCK_CONFLICTS = "workflow_sdk_lock_conflicts_total"
HANDLER_LATENCY = "workflow_sdk_handler_latency_seconds"
RETRIES = "workflow_sdk_retries_total"
JOBS_COMPLETED = "workflow_sdk_jobs_completed_total"
#: Not one of the five shared names: jobs found stale (instance finished or
#: step interrupted) and therefore not failed, by why.
STALE_JOBS = "workflow_sdk_stale_jobs_total"
#: Reports (completions and fails) handed to delivery and not yet settled.
REPORTS_PENDING = "workflow_sdk_reports_pending"
#: Seconds since the oldest of those reports was handed to delivery (0 when none).
REPORT_OLDEST_AGE = "workflow_sdk_report_oldest_pending_seconds"
#: Resends of a report after a transient error, by job type.
REPORT_RETRIES = "workflow_sdk_report_retries_total"
#: Reports not delivered, by job type and reason (``lost``, ``rejected``, ``withheld``).
REPORTS_GIVEN_UP = "workflow_sdk_reports_given_up_total"
#: Lease renewal attempts, by result (``accepted``, ``retry``, ``lease_lost``, ``unsupported``).
LEASE_RENEWALS = "workflow_sdk_lease_renewals_total"

#: Jobs of poll answers left out because they were malformed (no id, a
#: field of the wrong type): logged, not run, nothing reported.
MALFORMED_JOBS = "workflow_sdk_malformed_jobs_total"

RenewalResult = Literal["accepted", "retry", "lease_lost", "unsupported"]

# Handler latencies run from milliseconds (I/O glue) to the 30 s lease.
_HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)

_lock = threading.Lock()
_by_registry: dict[int, Metrics] = {}


class Metrics:
    """The five shared metrics and this SDK's own, registered once per registry.

    ``Metrics(registry)`` twice on the same registry returns collectors
    already registered there instead of failing with "Duplicated timeseries".
    ``registry=None`` means prometheus_client's default ``REGISTRY``.
    """

    _registry: CollectorRegistry
    poll_latency: Histogram
    lock_conflicts: Counter
    handler_latency: Histogram
    retries: Counter
    jobs_completed: Counter
    stale_jobs: Counter
    _backlog: tuple[Gauge, Gauge] | None
    report_retries: Counter
    reports_given_up: Counter
    lease_renewals: Counter
    malformed_jobs: Counter

    def __new__(cls, registry: CollectorRegistry | None = None) -> Metrics:
        target = REGISTRY if registry is None else registry
        with _lock:
            existing = _by_registry.get(id(target))
            if existing is not None and existing._registry is target:
                return existing
            self = super().__new__(cls)
            self._registry = target
            self._create(target)
            _by_registry[id(target)] = self
            return self

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # All work happens in __new__ so that a second call reuses the first.
        pass

    def _create(self, registry: CollectorRegistry) -> None:
        self.poll_latency = Histogram(
            POLL_LATENCY, "Time taken by one job poll request", registry=registry
        )
        self.lock_conflicts = Counter(
            LOCK_CONFLICTS, "Polls that returned no job", registry=registry
        )
        self.handler_latency = Histogram(
            HANDLER_LATENCY,
            "Time spent in the handler for one job",
            ["job_type"],
            buckets=_HANDLER_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            RETRIES,
            "Jobs failed retryable with retries left (the engine will deliver them again)",
            ["job_type"],
            registry=registry,
        )
        self.jobs_completed = Counter(
            JOBS_COMPLETED,
            "Jobs finished by a handler, by outcome (success or failure)",
            ["job_type", "outcome"],
            registry=registry,
        )
        self.stale_jobs = Counter(
            STALE_JOBS,
            "Jobs that stopped mattering while they ran (instance finished or cancelled, "
            "step interrupted); nothing was reported for them",
            ["job_type", "reason"],
            registry=registry,
        )
        self._backlog = None  # see backlog_gauges()
        self.report_retries = Counter(
            REPORT_RETRIES,
            "Reports resent after a transient error",
            ["job_type"],
            registry=registry,
        )
        self.reports_given_up = Counter(
            REPORTS_GIVEN_UP,
            "Reports not delivered: lost (deadline, shutdown, unsafe to resend), rejected "
            "by the engine, or withheld (a fail after the job's lease)",
            ["job_type", "reason"],
            registry=registry,
        )
        self.lease_renewals = Counter(
            LEASE_RENEWALS,
            "Lease renewal attempts by result (accepted, retry, lease_lost, unsupported)",
            ["result"],
            registry=registry,
        )

        self.malformed_jobs = Counter(
            MALFORMED_JOBS,
            "Jobs of poll answers left out as malformed (logged; the engine hands them out "
            "again after their lease)",
            registry=registry,
        )

    def observe_poll(self, seconds: float, jobs: int) -> None:
        self.poll_latency.observe(seconds)
        if jobs == 0:
            self.lock_conflicts.inc()

    def observe_handler(self, job_type: str, seconds: float) -> None:
        self.handler_latency.labels(job_type=job_type).observe(seconds)

    def job_finished(self, job_type: str, outcome: Outcome) -> None:
        self.jobs_completed.labels(job_type=job_type, outcome=outcome).inc()

    def retry(self, job_type: str) -> None:
        self.retries.labels(job_type=job_type).inc()

    def stale_job(self, job_type: str, reason: str) -> None:
        self.stale_jobs.labels(job_type=job_type, reason=reason).inc()

    def backlog_gauges(self) -> tuple[Gauge, Gauge]:
        """The reports-pending and oldest-report-age gauges, created on first use."""
        with _lock:
            if self._backlog is None:
                pending = Gauge(
                    REPORTS_PENDING,
                    "Reports (completions and fails) waiting to be acknowledged by the engine",
                    registry=self._registry,
                    multiprocess_mode="livesum",
                )
                oldest = Gauge(
                    REPORT_OLDEST_AGE,
                    "Seconds the oldest report not yet acknowledged by the engine has waited",
                    registry=self._registry,
                    multiprocess_mode="livemax",
                )
                self._backlog = (pending, oldest)
            return self._backlog

    def set_report_backlog(self, pending: int, oldest_age: float) -> None:
        """Reports not yet settled, and how long the oldest has waited (seconds)."""
        pending_gauge, oldest_gauge = self.backlog_gauges()
        pending_gauge.set(pending)
        oldest_gauge.set(oldest_age if pending else 0.0)

    def report_retry(self, job_type: str) -> None:
        self.report_retries.labels(job_type=job_type).inc()

    def report_given_up(self, job_type: str, reason: str) -> None:
        self.reports_given_up.labels(job_type=job_type, reason=reason).inc()

    def lease_renewal(self, result: RenewalResult) -> None:
        self.lease_renewals.labels(result=result).inc()


__all__ = [
    "HANDLER_LATENCY",
    "JOBS_COMPLETED",
    "LEASE_RENEWALS",
    "LOCK_CONFLICTS",
    "MALFORMED_JOBS",
    "POLL_LATENCY",
    "REPORTS_GIVEN_UP",
    "REPORTS_PENDING",
    "REPORT_OLDEST_AGE",
    "REPORT_RETRIES",
    "RETRIES",
    "STALE_JOBS",
    "Metrics",
    "RenewalResult",
]
