"""Thread limits for the native thread pools of numerical libraries (BLAS, OpenMP).

numpy's and scipy's OpenBLAS, MKL, libgomp (scikit-learn, OpenMP code) and
numexpr each start one thread per CPU by default. A pool of N worker
processes on N CPUs then runs N x N busy threads that fight for the same
CPUs, and every job gets slower (measured on 2 CPUs: two processes running
examples/ml's matrix job did 5.8 jobs/s together with the defaults, 25 with
one thread each). One thread per worker process, with one worker per CPU,
uses every CPU without oversubscription.

Two tools, because a pool is sized once, when its library loads:

- ``thread_env(n)``: the environment variables that each library reads when
  it loads. They must be in ``os.environ`` before the first import of numpy
  (or anything that loads a BLAS or OpenMP runtime) in the process; setting
  them later changes nothing for a library already loaded.
- ``limit_loaded_pools(n)``: for libraries already loaded (a handler module
  imported before the variables were set, a model preloaded in a fork
  server), ``threadpoolctl``'s ``threadpool_limits`` resizes their pools in
  place. threadpoolctl is optional: it is imported inside the function, and
  without it the function says so and does nothing.

Neither touches ``OPENBLAS_CORETYPE`` (it picks OpenBLAS's CPU kernels, not
a thread count) nor any variable it does not list. This module sets nothing
by itself: ``thread_env`` returns a dict for the caller to apply.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The variables, each read by one family of libraries when it loads.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",  # OpenMP runtimes: libgomp, libomp, Intel's
    "OPENBLAS_NUM_THREADS",  # OpenBLAS (numpy's and scipy's wheels)
    "MKL_NUM_THREADS",  # Intel MKL (conda's numpy)
    "VECLIB_MAXIMUM_THREADS",  # Apple Accelerate
    "NUMEXPR_NUM_THREADS",  # numexpr (pandas' eval)
)


def _check(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"thread count must be an integer >= 1, got {n!r}")
    return n


def thread_env(n: int) -> dict[str, str]:
    """The variables that limit every listed library to ``n`` threads per process."""
    value = str(_check(n))
    return dict.fromkeys(THREAD_ENV_VARS, value)


def env_conflicts(n: int, environ: Mapping[str, str]) -> dict[str, str]:
    """The listed variables that ``environ`` already sets to something else than ``n``.

    For a log line when an operator's environment and the configured limit
    disagree (which wins is the caller's rule).
    """
    wanted = str(_check(n))
    return {name: environ[name] for name in THREAD_ENV_VARS if environ.get(name, wanted) != wanted}


@dataclass(frozen=True)
class PoolChange:
    """One loaded thread pool that ``limit_loaded_pools`` looked at."""

    #: threadpoolctl's ``internal_api``: ``"openblas"``, ``"mkl"``, ``"openmp"``...
    api: str
    #: The shared library, e.g. ``libscipy_openblas``, ``libgomp``.
    prefix: str
    before: int
    after: int


@dataclass(frozen=True)
class PoolLimitResult:
    """What ``limit_loaded_pools`` did, for one log line."""

    limit: int
    #: False when threadpoolctl is not installed (nothing was done).
    available: bool
    pools: tuple[PoolChange, ...] = field(default_factory=tuple)
    #: Set when threadpoolctl was there but failed (its message).
    error: str = ""

    def describe(self) -> str:
        if not self.available:
            return (
                "threadpoolctl is not installed: thread pools already loaded keep their "
                "size (the environment variables limit those loaded later)"
            )
        if self.error:
            return f"threadpoolctl failed to limit the loaded thread pools: {self.error}"
        if not self.pools:
            return "no native thread pool loaded yet"
        parts = [f"{p.api} ({p.prefix}) {p.before}->{p.after}" for p in self.pools]
        return f"thread pools limited to {self.limit}: " + ", ".join(parts)


def limit_loaded_pools(n: int) -> PoolLimitResult:
    """Limit every thread pool already loaded in this process to ``n`` threads.

    Uses threadpoolctl when it is installed; the limit stays in force (it is
    not a context manager here). Never raises for threadpoolctl's sake: a
    failure inside it is returned in ``error``.
    """
    _check(n)
    try:
        threadpoolctl: Any = importlib.import_module("threadpoolctl")
    except ImportError:
        return PoolLimitResult(n, available=False)
    try:
        before = {info["filepath"]: info for info in threadpoolctl.threadpool_info()}
        threadpoolctl.threadpool_limits(limits=n)
        after = threadpoolctl.threadpool_info()
    except Exception as exc:  # a third-party failure must not stop a worker's start
        return PoolLimitResult(n, available=True, error=f"{type(exc).__name__}: {exc}")
    pools = tuple(
        PoolChange(
            api=str(info.get("internal_api", "?")),
            prefix=str(info.get("prefix", "?")),
            before=int(before.get(info["filepath"], info)["num_threads"]),
            after=int(info["num_threads"]),
        )
        for info in after
    )
    return PoolLimitResult(n, available=True, pools=pools)


__all__ = [
    "THREAD_ENV_VARS",
    "PoolChange",
    "PoolLimitResult",
    "env_conflicts",
    "limit_loaded_pools",
    "thread_env",
]
