"""What each job type's ``[job_types."x"]`` settings come to, with the pool's as defaults.

A job type's section overrides the pool's settings for the jobs of that type
only: how many of the pool's workers may run it at once (``concurrency``),
the memory limits of a worker while it runs it, the BLAS/OpenMP threads of
that worker meanwhile, and the delay before its retryable failures are
reported. This module resolves them once per configuration (the arbiter
builds a ``TypeLimits`` at start and on SIGHUP's new configuration) and
answers the loop's questions; it decides nothing about a particular job,
and never touches a worker. Time limits stay ``SupervisorConfig.job_timeout``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from workflow_sdk.retry.delay import RetryDelayPolicy
from workflow_sdk.supervisor.config import SupervisorConfig, SupervisorSection

#: Seconds of the lease kept free after a retry delay, for the fail report
#: itself (a reporter thread, the stale check's two GETs, the request): with
#: the released engine's 30 s lease a delay ends at most 27 s after the
#: claim, less the time the handler ran.
RETRY_LEASE_MARGIN = 3.0
#: Growth of the delay per attempt, and its spread (+/- this fraction) so
#: that jobs that failed together are not retried together.
RETRY_FACTOR = 2.0
RETRY_JITTER = 0.2


@dataclass(frozen=True)
class MemoryLimits:
    """The memory limits in force for a worker, in MiB (0 = none)."""

    #: recycle the worker after its job once over this
    soft_mb: float
    #: kill the worker during its job once over this
    hard_mb: float


def pool_threads(section: SupervisorSection) -> int | None:
    """The pool's thread count per worker (``threads_per_worker``; None if it
    were not a positive count, which the configuration refuses)."""
    value = section.threads_per_worker
    return value if value >= 1 else None


class TypeLimits:
    """The per-job-type settings of one configuration, resolved (see the module doc)."""

    def __init__(self, config: SupervisorConfig) -> None:
        pool = config.supervisor
        self._pool_memory = MemoryLimits(pool.max_memory_mb, pool.memory_hard_limit_mb)
        concurrency: dict[str, int] = {}
        threads: dict[str, int] = {}
        memory: dict[str, MemoryLimits] = {}
        retry: dict[str, RetryDelayPolicy] = {}
        for name, section in config.job_types.items():
            if section.concurrency is not None:
                concurrency[name] = section.concurrency
            if section.threads is not None:
                threads[name] = section.threads
            own_soft, own_hard = section.max_memory_mb, section.max_memory_hard_mb
            if own_soft is not None or own_hard:
                soft = pool.max_memory_mb if own_soft is None else own_soft
                if own_hard:
                    hard = own_hard
                elif own_soft is not None:
                    hard = 1.25 * soft  # the pool's rule, on the type's own soft limit
                else:
                    hard = self._pool_memory.hard_mb
                memory[name] = MemoryLimits(soft, hard)
            if section.retry_delay > 0:
                retry[name] = RetryDelayPolicy(
                    section.retry_delay,
                    factor=RETRY_FACTOR,
                    jitter=RETRY_JITTER,
                    lease_margin=RETRY_LEASE_MARGIN,
                )
        #: job type -> the most workers that may run it at once (limited types only)
        self.concurrency: Mapping[str, int] = MappingProxyType(concurrency)
        #: job type -> its threads per worker (types that set ``threads`` only)
        self.threads: Mapping[str, int] = MappingProxyType(threads)
        #: the pool's threads per worker (None: not set)
        self.default_threads = pool_threads(pool)
        self._memory = memory
        self._retry = retry
        #: some type has a memory limit of its own
        self.memory_by_type = bool(memory)

    def memory(self, job_type: str | None) -> MemoryLimits:
        """The limits for a worker running (or last having run) ``job_type``;
        the pool's for None or a type without limits of its own."""
        if job_type is None:
            return self._pool_memory
        return self._memory.get(job_type, self._pool_memory)

    def memory_setting(self, key: str, job_type: str | None) -> str:
        """How a log line names the memory limit ``key`` in force for ``job_type``."""
        if job_type is not None and job_type in self._memory:
            return f'[job_types."{job_type}"] {key}'
        return key

    def hard_limits_bytes(self) -> dict[str, float]:
        """Job type -> its hard memory limit in bytes (types with their own limits)."""
        return {name: limits.hard_mb * 2**20 for name, limits in self._memory.items()}

    def retry_delay(self, job_type: str) -> RetryDelayPolicy | None:
        """The delay rule for ``job_type``'s retryable failures (None: report at once)."""
        return self._retry.get(job_type)


__all__ = [
    "RETRY_FACTOR",
    "RETRY_JITTER",
    "RETRY_LEASE_MARGIN",
    "MemoryLimits",
    "TypeLimits",
    "pool_threads",
]
