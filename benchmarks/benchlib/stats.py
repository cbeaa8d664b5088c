"""Small statistics helpers: spreads of repeated runs, percentiles, steady rates."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

#: Share of completions cut at each end when computing a steady-state rate.
TRIM = 0.10


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repeated measurements (and the values)."""
    clean = [float(v) for v in values]
    if not clean:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": statistics.median(clean),
        "min": min(clean),
        "max": max(clean),
        "runs": clean,
    }


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def steady_window(times: Sequence[float]) -> tuple[float, float, int]:
    """``(start, end, completions)`` between the 10th and 90th percentile completion.

    Cutting both ends leaves out worker start-up and the ragged tail where
    fewer jobs than workers remain.
    """
    ordered = sorted(times)
    n = len(ordered)
    if n < 2:
        raise ValueError("need at least two completions")
    lo = int(n * TRIM)
    hi = max(lo + 1, min(n - 1, n - 1 - int(n * TRIM)))
    return ordered[lo], ordered[hi], hi - lo


def steady_rate(times: Sequence[float]) -> float:
    """Completions per second in the steady window of ``times`` (seconds)."""
    start, end, count = steady_window(times)
    return count / (end - start) if end > start else float("inf")
