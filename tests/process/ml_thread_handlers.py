"""Handlers that report the BLAS thread count in force (worker processes only;
needs numpy and threadpoolctl: the ``ml`` extra).

``blas-wide`` and ``blas-plain`` do the same: a small matrix product, then
the number of threads of the OpenBLAS pool (threadpoolctl's view), so a test
can see the count a job of each type ran with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import threadpoolctl

from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()


def _blas_threads() -> int:
    pools = [p for p in threadpoolctl.threadpool_info() if p["internal_api"] == "openblas"]
    return int(pools[0]["num_threads"]) if pools else -1


@registry.register("blas-wide")
@registry.register("blas-plain")
def blas(job: dict[str, Any]) -> dict[str, Any]:
    a = np.ones((64, 64))
    key = job["jobType"].replace("-", "_")
    return {f"{key}Threads": _blas_threads(), f"{key}Sum": float((a @ a).sum())}
