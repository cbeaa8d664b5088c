"""Exponential backoff with jitter, shared by the Runner and the supervisor.

``delay(attempt)`` is ``BASE_DELAY * FACTOR ** attempt`` spread by +/-
``JITTER_FRAC`` (so that many workers that lost the engine at the same moment
do not come back in lock-step), then capped at ``MAX_DELAY``: the cap is the
longest wait there is, jitter included.
"""

from __future__ import annotations

import random

BASE_DELAY = 0.1
FACTOR = 2.0
JITTER_FRAC = 0.20
MAX_DELAY = 30.0


def delay(attempt: int, *, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based).

    The result is ``min(MAX_DELAY, d * (1 + u))`` where
    ``d = min(MAX_DELAY, BASE_DELAY * FACTOR ** attempt)`` and ``u`` is drawn
    uniformly from ``[-JITTER_FRAC, JITTER_FRAC]``: it never exceeds
    ``MAX_DELAY``, and past the cap the draws still spread over
    ``[MAX_DELAY * (1 - JITTER_FRAC), MAX_DELAY]``.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    # Cap the exponent first: FACTOR ** 10_000 would overflow a float.
    exponent = min(attempt, 64)
    # Cap the base too (before the jitter), so that past the cap the draws
    # keep spreading below it instead of all landing on MAX_DELAY.
    base = min(MAX_DELAY, BASE_DELAY * FACTOR**exponent)
    spread = (rng or random).uniform(-JITTER_FRAC, JITTER_FRAC)
    return min(MAX_DELAY, base * (1.0 + spread))


class Backoff:
    """Tracks consecutive failures of one activity (polling, one report)."""

    def __init__(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        """Record a failure and return how long to wait before trying again."""
        d = delay(self.failures)
        self.failures += 1
        return d

    def reset(self) -> None:
        self.failures = 0


__all__ = ["BASE_DELAY", "FACTOR", "JITTER_FRAC", "MAX_DELAY", "Backoff", "delay"]
