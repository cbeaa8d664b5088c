"""How long to hold a retryable failure before reporting it (per-job-type ``retry_delay``).

The engine requeues a retryable fail at once, so without a delay every retry
of a job runs within milliseconds of the last (issue 18: all 3 attempts in
35 ms), and a downstream outage of a few seconds uses up every retry. Holding
the fail report for a while before sending it spaces the attempts out.

The rule, pure (no clock, no sleeping, no I/O):

- the wanted delay is ``base * factor ** attempt`` (attempt 0 is the job's
  first run), spread by +/- ``jitter`` so that jobs that failed together do
  not come back together, capped at ``max_delay``;
- no delay when no retry follows (``retries_remaining == 0``): that fail ends
  the instance, and holding it only keeps the instance waiting;
- in REST mode the job's lease bounds it: the fail must reach the engine
  before the lease ends, or the engine's sweeper may hand the job to another
  worker first, and the late fail would then requeue (or fail) a job that is
  running elsewhere. So the delay is at most ``lease_left - margin``, where
  the margin covers sending the report; 0 when the lease leaves no room.
  With the released engine's 30 s lease, a job that ran 10 s and a 5 s margin
  allow at most 15 s;
- in Kafka mode there is no lease (``lease_left=None``): only ``max_delay``
  caps it.

Which attempt this is: ``attempt_number`` from the job's ``retriesRemaining``
and the step's ``retryCount`` when known (the first attempt carries
``retriesRemaining == retryCount``), else from a count of the attempts of the
job seen so far, else 0. Holding the report, and what happens to a held
report on shutdown, is the caller's business.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

#: Seconds kept between the end of a delay and the end of the lease, for the report itself.
DEFAULT_LEASE_MARGIN = 5.0
#: The longest delay, jitter included, unless ``max_delay`` or a larger base says otherwise.
DEFAULT_MAX_DELAY = 300.0


def attempt_number(
    retries_remaining: int, retry_count: int | None = None, attempts_seen: int | None = None
) -> int:
    """The 0-based attempt of the run that just failed.

    ``retry_count - retries_remaining`` when the step's ``retryCount`` is known;
    else ``attempts_seen - 1`` (``attempts_seen`` counts this run); else 0.
    Never negative.
    """
    if retry_count is not None:
        return max(0, retry_count - retries_remaining)
    if attempts_seen is not None:
        return max(0, attempts_seen - 1)
    return 0


@dataclass(frozen=True)
class RetryDelay:
    """The verdict: hold the fail report ``seconds``, and why."""

    seconds: float
    #: The delay the backoff asked for, before the lease cut it (jitter included).
    wanted: float
    #: True when the lease made the delay shorter than wanted.
    cut_by_lease: bool
    reason: str


@dataclass(frozen=True)
class RetryDelayPolicy:
    """A job type's delay before a retryable failure is reported.

    ``base``: the delay after the first attempt (seconds, >= 0; 0 disables).
    ``factor``: growth per attempt (>= 1). ``jitter``: the spread as a
    fraction (0 <= jitter < 1). ``max_delay``: the cap (>= base; default the
    larger of ``base`` and ``DEFAULT_MAX_DELAY``).
    ``lease_margin``: seconds kept before the lease's end (>= 0).
    """

    base: float
    factor: float = 2.0
    jitter: float = 0.2
    max_delay: float | None = None
    lease_margin: float = DEFAULT_LEASE_MARGIN

    def __post_init__(self) -> None:
        for name in ("base", "factor", "jitter", "max_delay", "lease_margin"):
            value = getattr(self, name)
            if value is None and name == "max_delay":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.factor < 1:
            raise ValueError(f"factor must be >= 1, got {self.factor!r}")
        if self.jitter >= 1:
            raise ValueError(f"jitter must be below 1, got {self.jitter!r}")
        if self.max_delay is not None and self.max_delay < self.base:
            raise ValueError(f"max_delay ({self.max_delay!r}) must be >= base ({self.base!r})")

    @property
    def cap(self) -> float:
        """The longest delay, jitter included."""
        return max(self.base, DEFAULT_MAX_DELAY) if self.max_delay is None else self.max_delay

    def wanted(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """The backoff's delay for ``attempt`` (0-based), jitter and ``max_delay`` applied."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        if self.base == 0:
            return 0.0
        # Past this exponent every factor > 1 is beyond any cap (and 2.0 ** 2000 overflows).
        exponent = min(attempt, 64)
        plain = min(self.cap, self.base * self.factor**exponent)
        spread = (rng or random).uniform(-self.jitter, self.jitter) if self.jitter else 0.0
        return min(self.cap, plain * (1.0 + spread))

    def delay(
        self,
        attempt: int,
        *,
        lease_left: float | None,
        retries_remaining: int | None = None,
        rng: random.Random | None = None,
    ) -> RetryDelay:
        """How long to hold the fail of ``attempt``.

        ``lease_left``: seconds until the job's lease ends (``deadline -
        now``), None where there is no lease (Kafka). ``retries_remaining``:
        the job's, when known; 0 means no retry follows, so no delay.
        """
        if retries_remaining is not None and retries_remaining <= 0:
            return RetryDelay(0.0, 0.0, False, "no retry follows: reported at once")
        wanted = self.wanted(attempt, rng=rng)
        if wanted == 0:
            return RetryDelay(0.0, 0.0, False, "no retry delay")
        if lease_left is None:
            return RetryDelay(wanted, wanted, False, f"retry delay {wanted:.1f} s (no lease)")
        room = max(0.0, lease_left - self.lease_margin)
        if wanted <= room:
            return RetryDelay(wanted, wanted, False, f"retry delay {wanted:.1f} s")
        return RetryDelay(
            room,
            wanted,
            True,
            f"retry delay {wanted:.1f} s cut to {room:.1f} s: the lease ends in "
            f"{max(0.0, lease_left):.1f} s and the report needs {self.lease_margin:.1f} s of it",
        )


__all__ = [
    "DEFAULT_LEASE_MARGIN",
    "DEFAULT_MAX_DELAY",
    "RetryDelay",
    "RetryDelayPolicy",
    "attempt_number",
]
