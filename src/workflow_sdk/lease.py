"""Lease rules: where a job's lease ends, when to renew it, and when a job is let go.

One module for the supervisor, the threaded Runner and the KafkaRunner, so
that the three runtimes agree on every rule below.

**Where a lease ends.** The engine stamps ``lockedAt`` and ``lockExpiresAt``
with its own clock, which need not agree with ours. Their difference is the
lease length; the claim happened after we sent the poll, so the lease surely
ends no later than ``poll_sent + (lockExpiresAt - lockedAt)`` on our monotonic
clock. Using the send time (not the receive time) errs on the safe side. The
length is worked out once per job, by ``models.parse_job`` while it checks
the job (``ParsedJob.lease_length``); plain dicts are parsed here.

**When to renew** (engines with lease extension): every ``interval``
(by default a third of the lease), and never later than a tenth of the lease
before it ends, so that a renewal has time to get through. A renewal that
failed is tried again after its backoff, but while there is lease left never
later than halfway to its end. An accepted renewal grants the length asked
for (or the job's own), counted from the moment the renewal was sent; it
never shortens what is already known of the lease.

**When a job is let go** (``is_settled``): once its report ended delivered,
stale or rejected, the job is finished for good (a Kafka record's offset may
be committed). A report lost or withheld leaves it to be delivered again
(after its lease; an uncommitted record).

What this module does not do: ask the engine anything, or keep any state.
"""

from __future__ import annotations

from typing import Any

from workflow_sdk.client.models import lease_length_of
from workflow_sdk.reporting import ReportStatus

#: The released engine's fixed lease, used when a job lacks its time stamps.
DEFAULT_LEASE_SECONDS = 30.0
#: A lease is renewed this far into it unless an interval is configured.
RENEWAL_SHARE = 1 / 3
#: ... and at the latest this share of its length before it ends.
RENEWAL_MARGIN_SHARE = 0.1
#: Report endings after which a job is finished for good.
SETTLED_STATUSES = frozenset({ReportStatus.DELIVERED, ReportStatus.STALE, ReportStatus.REJECTED})


def lease_seconds(job: dict[str, Any]) -> float:
    """The lease length the engine granted for ``job``."""
    length = lease_length_of(job)
    if length is None:
        return DEFAULT_LEASE_SECONDS
    return length if length > 0 else DEFAULT_LEASE_SECONDS


def lease_deadline(job: dict[str, Any], poll_sent_at: float) -> float:
    """``time.monotonic()`` value after which the engine may hand the job to another worker."""
    return poll_sent_at + lease_seconds(job)


def renewal_interval(configured: float | None, lease_length: float) -> float:
    """Seconds between renewals: ``configured``, or (None or 0) a third of the lease."""
    return configured or lease_length * RENEWAL_SHARE


def next_renewal(since: float, interval: float, lease_end: float, lease_length: float) -> float:
    """When to renew a lease of ``lease_length`` seconds ending at ``lease_end``,
    ``interval`` after ``since`` (the claim, or the last renewal's send time),
    but never later than ``RENEWAL_MARGIN_SHARE`` of its length before its end."""
    return min(since + interval, lease_end - lease_length * RENEWAL_MARGIN_SHARE)


def renewal_retry_at(now: float, wait: float, lease_end: float) -> float:
    """When to try a failed renewal again: after ``wait`` (its backoff), but
    while there is lease left never later than halfway to its end."""
    retry_at = now + wait
    if lease_end > now:
        retry_at = min(retry_at, now + (lease_end - now) / 2)
    return retry_at


def renewed_length(asked_seconds: float | None, current_length: float) -> float:
    """The lease length an accepted renewal grants: what it asked for, or
    (nothing asked: the engine's default) the length the job had."""
    return float(asked_seconds) if asked_seconds else current_length


def renewed_lease_end(current_end: float, sent_at: float, length: float) -> float:
    """Where a lease renewed at ``sent_at`` for ``length`` seconds ends: the
    engine extended from its own "now", after we sent; a renewal never moves
    the end earlier than what is already known (a re-delivery's lease)."""
    return max(current_end, sent_at + length)


def is_settled(status: ReportStatus) -> bool:
    """Whether a job whose report ended with ``status`` is finished for good
    (see the module's doc); otherwise it is left to be delivered again."""
    return status in SETTLED_STATUSES


__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "RENEWAL_MARGIN_SHARE",
    "RENEWAL_SHARE",
    "SETTLED_STATUSES",
    "is_settled",
    "lease_deadline",
    "lease_seconds",
    "next_renewal",
    "renewal_interval",
    "renewal_retry_at",
    "renewed_lease_end",
    "renewed_length",
]
