"""The Prometheus metrics shared by every SDK of the engine.

Names, types and labels are fixed by the engine's SDK family so that one
dashboard serves workers written in any language.
"""

from __future__ import annotations

import threading
from typing import Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

Outcome = Literal["success", "failure"]

POLL_LATENCY = "workflow_sdk_poll_latency_seconds"
LOCK_CONFLICTS = "workflow_sdk_lock_conflicts_total"
HANDLER_LATENCY = "workflow_sdk_handler_latency_seconds"
RETRIES = "workflow_sdk_retries_total"
JOBS_COMPLETED = "workflow_sdk_jobs_completed_total"
#: Not one of the five shared names: jobs found stale (instance finished or
#: step interrupted) and therefore not failed, by why.
STALE_JOBS = "workflow_sdk_stale_jobs_total"

# Handler latencies run from milliseconds (I/O glue) to the 30 s lease.
_HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)

_lock = threading.Lock()
_by_registry: dict[int, Metrics] = {}


class Metrics:
    """The five shared metrics, registered once per registry.

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


__all__ = [
    "HANDLER_LATENCY",
    "JOBS_COMPLETED",
    "LOCK_CONFLICTS",
    "POLL_LATENCY",
    "RETRIES",
    "STALE_JOBS",
    "Metrics",
]
