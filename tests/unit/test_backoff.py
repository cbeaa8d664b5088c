"""Exponential backoff with jitter."""

from __future__ import annotations

import itertools
import random
import sys

import pytest

from workflow_sdk.retry import backoff
from workflow_sdk.retry.backoff import Backoff, delay


class _FixedRng(random.Random):
    """An rng whose ``uniform(a, b)`` always returns the point ``a + t * (b - a)``."""

    def __init__(self, t: float) -> None:
        super().__init__(0)
        self.t = t

    def uniform(self, a: float, b: float) -> float:
        return a + self.t * (b - a)


def _base(attempt: int) -> float:
    return min(backoff.MAX_DELAY, backoff.BASE_DELAY * backoff.FACTOR ** min(attempt, 64))


def test_constants() -> None:
    assert backoff.BASE_DELAY == 0.1
    assert backoff.FACTOR == 2.0
    assert backoff.JITTER_FRAC == 0.20
    assert backoff.MAX_DELAY == 30.0


@pytest.mark.parametrize("attempt", [0, 1, 2, 3, 5, 8, 9, 10, 20])
def test_draws_stay_within_the_jitter_band(attempt: int) -> None:
    rng = random.Random(attempt)
    base = _base(attempt)
    low, high = base * 0.8, min(base * 1.2, backoff.MAX_DELAY)
    draws = [delay(attempt, rng=rng) for _ in range(2000)]
    assert all(low - 1e-12 <= d <= high + 1e-12 for d in draws)
    assert all(d <= backoff.MAX_DELAY for d in draws)
    # The jitter really spreads: both sides of the base are used, widely
    # (at the cap, only below it).
    assert min(draws) < base * 0.85
    if base * 1.15 < backoff.MAX_DELAY:
        assert max(draws) > base * 1.15


def test_draws_with_the_module_rng_stay_within_bounds() -> None:
    for attempt in range(12):
        base = _base(attempt)
        for _ in range(200):
            high = min(base * 1.2, backoff.MAX_DELAY)
            assert base * 0.8 - 1e-12 <= delay(attempt) <= high + 1e-12


def test_midpoint_is_the_base_which_grows_then_caps() -> None:
    mid = _FixedRng(0.5)
    bases = [delay(n, rng=mid) for n in range(15)]
    assert bases[0] == pytest.approx(0.1)
    assert bases[1] == pytest.approx(0.2)
    assert bases[3] == pytest.approx(0.8)
    assert bases[8] == pytest.approx(25.6)
    assert all(b == pytest.approx(30.0) for b in bases[9:])
    assert all(later > earlier for earlier, later in itertools.pairwise(bases[:10]))
    assert all(later >= earlier for earlier, later in itertools.pairwise(bases))


def test_jitter_edges() -> None:
    assert delay(0, rng=_FixedRng(0.0)) == pytest.approx(0.08)
    assert delay(0, rng=_FixedRng(1.0)) == pytest.approx(0.12)
    assert delay(50, rng=_FixedRng(0.0)) == pytest.approx(24.0)


@pytest.mark.parametrize("attempt", [8, 9, 10, 50])
def test_jitter_is_applied_before_the_cap(attempt: int) -> None:
    # MAX_DELAY is the longest wait, jitter included (25.6 s * 1.2 would be
    # 30.72 s at attempt 8, 30 s * 1.2 = 36 s past it).
    assert delay(attempt, rng=_FixedRng(1.0)) == backoff.MAX_DELAY
    draws = [delay(attempt, rng=random.Random(seed)) for seed in range(500)]
    assert max(draws) <= backoff.MAX_DELAY
    assert min(draws) < backoff.MAX_DELAY * 0.85  # still spread below the cap


@pytest.mark.parametrize("attempt", [64, 65, 1024, 10_000, sys.maxsize, 2**200])
def test_huge_attempts_do_not_overflow(attempt: int) -> None:
    d = delay(attempt, rng=random.Random(1))
    assert 30.0 * 0.8 <= d <= 30.0


@pytest.mark.parametrize("attempt", [-1, -100])
def test_negative_attempt_is_value_error(attempt: int) -> None:
    with pytest.raises(ValueError):
        delay(attempt)


def test_backoff_counts_failures_and_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    # Backoff draws from the module's rng: pin it to the middle of the band.
    monkeypatch.setattr(backoff, "random", _FixedRng(0.5))
    b = Backoff()
    assert b.failures == 0
    assert [b.next_delay() for _ in range(4)] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert b.failures == 4
    b.reset()
    assert b.failures == 0
    assert b.next_delay() == pytest.approx(0.1)
    assert b.failures == 1


def test_backoff_never_exceeds_the_capped_band() -> None:
    b = Backoff()
    draws = [b.next_delay() for _ in range(200)]
    assert b.failures == 200
    assert max(draws) <= backoff.MAX_DELAY
    assert min(draws[20:]) >= backoff.MAX_DELAY * (1 - backoff.JITTER_FRAC)
