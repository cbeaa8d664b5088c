"""workflow_sdk.retry.delay: how long a retryable failure is held before it is reported."""

from __future__ import annotations

import math
import random

import pytest

from workflow_sdk.retry.delay import (
    DEFAULT_MAX_DELAY,
    RetryDelay,
    RetryDelayPolicy,
    attempt_number,
)


class _FixedRng(random.Random):
    """``uniform(a, b)`` always returns ``a + t * (b - a)``."""

    def __init__(self, t: float) -> None:
        super().__init__(0)
        self.t = t

    def uniform(self, a: float, b: float) -> float:
        return a + self.t * (b - a)


MIDDLE = _FixedRng(0.5)  # no spread
LOW, HIGH = _FixedRng(0.0), _FixedRng(1.0)


def test_attempt_number_from_retry_count_or_attempts_seen() -> None:
    # The first attempt of a step with retryCount 3 carries retriesRemaining 3.
    assert attempt_number(3, retry_count=3) == 0
    assert attempt_number(1, retry_count=3) == 2
    assert attempt_number(5, retry_count=3) == 0  # never negative
    assert attempt_number(2, attempts_seen=1) == 0
    assert attempt_number(2, attempts_seen=3) == 2
    assert attempt_number(2, retry_count=4, attempts_seen=1) == 2  # the step's count wins
    assert attempt_number(2) == 0
    assert attempt_number(2, attempts_seen=0) == 0


def test_the_delay_grows_with_the_attempt() -> None:
    policy = RetryDelayPolicy(base=2.0)
    assert [policy.wanted(a, rng=MIDDLE) for a in range(4)] == [2.0, 4.0, 8.0, 16.0]
    assert RetryDelayPolicy(base=1.0, factor=1.0).wanted(10, rng=MIDDLE) == 1.0


def test_jitter_spreads_around_the_delay_and_the_cap_holds() -> None:
    policy = RetryDelayPolicy(base=10.0, jitter=0.2, max_delay=30.0)
    assert policy.wanted(0, rng=LOW) == pytest.approx(8.0)
    assert policy.wanted(0, rng=HIGH) == pytest.approx(12.0)
    # Past the cap: spread below it, never above.
    assert policy.wanted(5, rng=HIGH) == 30.0
    assert policy.wanted(5, rng=LOW) == pytest.approx(24.0)
    assert policy.wanted(10_000, rng=HIGH) == 30.0  # no overflow
    draws = {RetryDelayPolicy(base=1.0).wanted(0) for _ in range(50)}
    assert len(draws) > 1 and all(0.8 <= d <= 1.2 for d in draws)
    assert RetryDelayPolicy(base=1.0, jitter=0.0).wanted(0) == 1.0


def test_the_default_cap() -> None:
    assert RetryDelayPolicy(base=1.0).cap == DEFAULT_MAX_DELAY
    assert RetryDelayPolicy(base=1.0).wanted(64, rng=HIGH) == DEFAULT_MAX_DELAY
    # A base above the default cap is its own cap rather than an error.
    assert RetryDelayPolicy(base=900.0).cap == 900.0


def test_without_a_lease_only_the_cap_limits_it() -> None:
    """Kafka mode: no lease, so a long delay is kept whole."""
    verdict = RetryDelayPolicy(base=60.0, max_delay=600.0).delay(1, lease_left=None, rng=MIDDLE)
    assert verdict == RetryDelay(120.0, 120.0, False, "retry delay 120.0 s (no lease)")


def test_the_lease_cuts_the_delay_so_the_fail_arrives_inside_it() -> None:
    policy = RetryDelayPolicy(base=20.0, lease_margin=5.0)
    # A 30 s lease, 10 s used by the handler: 20 s left, 15 s of room.
    verdict = policy.delay(0, lease_left=20.0, rng=MIDDLE)
    assert verdict.seconds == 15.0
    assert verdict.wanted == 20.0
    assert verdict.cut_by_lease is True
    assert "cut to 15.0 s" in verdict.reason and "lease ends in 20.0 s" in verdict.reason
    # Room enough: the whole delay.
    assert policy.delay(0, lease_left=29.0, rng=MIDDLE).seconds == 20.0
    assert policy.delay(0, lease_left=29.0, rng=MIDDLE).cut_by_lease is False


@pytest.mark.parametrize("lease_left", [5.0, 3.0, 0.0, -4.0])
def test_no_room_in_the_lease_means_no_delay(lease_left: float) -> None:
    verdict = RetryDelayPolicy(base=2.0, lease_margin=5.0).delay(0, lease_left=lease_left)
    assert verdict.seconds == 0.0
    assert verdict.cut_by_lease is True


def test_the_last_attempt_is_reported_at_once() -> None:
    """No retry follows a fail with retriesRemaining 0: holding it only delays the instance."""
    policy = RetryDelayPolicy(base=5.0)
    verdict = policy.delay(3, lease_left=None, retries_remaining=0)
    assert verdict.seconds == 0.0
    assert "no retry follows" in verdict.reason
    assert policy.delay(0, lease_left=None, retries_remaining=1, rng=MIDDLE).seconds == 5.0


def test_a_zero_base_disables_the_delay() -> None:
    verdict = RetryDelayPolicy(base=0.0).delay(4, lease_left=30.0)
    assert verdict == RetryDelay(0.0, 0.0, False, "no retry delay")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"base": -1.0}, "base"),
        ({"base": math.nan}, "base"),
        ({"base": math.inf}, "base"),
        ({"base": True}, "base"),
        ({"base": "1"}, "base"),
        ({"base": 1.0, "factor": 0.5}, "factor"),
        ({"base": 1.0, "jitter": 1.0}, "jitter"),
        ({"base": 1.0, "jitter": -0.1}, "jitter"),
        ({"base": 10.0, "max_delay": 5.0}, "max_delay"),
        ({"base": 1.0, "lease_margin": -1.0}, "lease_margin"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        RetryDelayPolicy(**kwargs)  # type: ignore[arg-type]


def test_a_negative_attempt_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt"):
        RetryDelayPolicy(base=1.0).wanted(-1)
