"""Where a job's lease ends, on this machine's monotonic clock.

The engine stamps ``lockedAt`` and ``lockExpiresAt`` with its own clock,
which need not agree with ours. Their difference is the lease length; the
claim happened after we sent the poll, so the lease surely ends no later than
``poll_sent + (lockExpiresAt - lockedAt)`` on our monotonic clock. Using the
send time (not the receive time) errs on the safe side.

The length is worked out once per job, by ``models.parse_job`` while it
checks the job (``ParsedJob.lease_length``); plain dicts are parsed here.
"""

from __future__ import annotations

from typing import Any

from workflow_sdk.client.models import lease_length_of

#: The released engine's fixed lease, used when a job lacks its time stamps.
DEFAULT_LEASE_SECONDS = 30.0


def lease_seconds(job: dict[str, Any]) -> float:
    """The lease length the engine granted for ``job``."""
    length = lease_length_of(job)
    if length is None:
        return DEFAULT_LEASE_SECONDS
    return length if length > 0 else DEFAULT_LEASE_SECONDS


def lease_deadline(job: dict[str, Any], poll_sent_at: float) -> float:
    """``time.monotonic()`` value after which the engine may hand the job to another worker."""
    return poll_sent_at + lease_seconds(job)


__all__ = ["DEFAULT_LEASE_SECONDS", "lease_deadline", "lease_seconds"]
