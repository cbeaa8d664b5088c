"""A worker's BLAS/OpenMP thread count per job type (``[job_types."x"] threads``).

Before each job the worker asks ``JobThreads.before_job``: the count the
job's type wants (its own ``threads``, else the pool's), and when that
differs from the count in force, the thread pools already loaded in the
process are resized (``workflow_sdk.threads_limit.limit_loaded_pools``, with
threadpoolctl). Unchanged, it costs a dict lookup: a worker that runs one
type, or types that agree, resizes nothing after its first job.

Where the pool sets no count (``None``), a job of a type without its own
goes back to the sizes the pools had before this worker first resized them
(read with threadpoolctl at that moment).

This module sets no environment variable (they only count before a library
loads: that is the worker's start-up's business) and never raises for
threadpoolctl's sake: a failure is logged once, and the job runs anyway.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from workflow_sdk.threads_limit import PoolLimitResult, limit_loaded_pools

log = logging.getLogger("workflow_sdk.worker")

#: Resizes every loaded pool to n threads (``limit_loaded_pools``).
Limiter = Callable[[int], PoolLimitResult]


def _pool_sizes() -> dict[str, int] | None:
    """Each loaded pool's thread count, by library prefix (None: threadpoolctl
    is missing or failed)."""
    try:
        threadpoolctl: Any = importlib.import_module("threadpoolctl")
        return {
            str(info["prefix"]): int(info["num_threads"])
            for info in threadpoolctl.threadpool_info()
        }
    except Exception:  # missing, or a third-party failure: nothing to restore
        return None


def _restore_sizes(sizes: Mapping[str, int]) -> str:
    """Give each pool of ``sizes`` its count back; "" or the error."""
    try:
        threadpoolctl: Any = importlib.import_module("threadpoolctl")
        threadpoolctl.threadpool_limits(limits=dict(sizes))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


class JobThreads:
    """The thread count in force in this worker, changed per job type (see the module doc).

    :param by_type: job type -> its ``threads``.
    :param default: the pool's count (None: the libraries' own sizes).
    :param limiter: resizes the loaded pools; ``read_sizes`` and ``restore``
        read and give back their sizes (threadpoolctl's, by default; tests
        pass stand-ins).
    """

    def __init__(
        self,
        by_type: Mapping[str, int],
        default: int | None,
        *,
        limiter: Limiter = limit_loaded_pools,
        read_sizes: Callable[[], dict[str, int] | None] = _pool_sizes,
        restore: Callable[[Mapping[str, int]], str] = _restore_sizes,
    ) -> None:
        self.by_type = dict(by_type)
        self.default = default
        #: The count in force: the pool's (applied at start-up), or None for
        #: the libraries' own sizes.
        self.current = default
        self._limiter = limiter
        self._read_sizes = read_sizes
        self._restore = restore
        #: The pools' sizes before this worker first resized them (default None only).
        self._original: dict[str, int] | None = None
        self._warned = False

    def before_job(self, job_type: str) -> None:
        """Put the count ``job_type`` wants in force, if it is not already."""
        wanted = self.by_type.get(job_type, self.default)
        if wanted == self.current:
            return
        if wanted is None:
            error = self._restore(self._original) if self._original else ""
            self._report(job_type, "back to the libraries' own sizes", error)
        else:
            if self.current is None and self._original is None:
                self._original = self._read_sizes()
            result = self._limiter(wanted)
            if not result.available or result.error:
                self._report(job_type, str(wanted), result.describe())
            else:
                log.debug("%s: %s", job_type, result.describe())
        self.current = wanted

    def _report(self, job_type: str, what: str, error: str) -> None:
        if not error:
            log.debug("%s: thread pools %s", job_type, what)
        elif not self._warned:
            self._warned = True  # once per worker: every job would repeat it
            log.warning("threads for %s (%s): %s", job_type, what, error)


__all__ = ["JobThreads", "Limiter"]
