"""Delivers a job's outcome to the engine without losing or doubling it.

The engine's two report calls differ (see the contract file):

- ``complete`` is idempotent between calls that do not overlap, and the
  engine does not check the lease, so a completion is retried with backoff
  on every transient error until it lands or ``deadline`` seconds pass.
- ``fail`` is not idempotent: a second fail burns another retry or fails a
  finished instance. It is resent only when the previous attempt surely never
  reached the engine (the connection was refused). If it is lost, the job's
  lease runs out and the engine delivers it again with the same retry count,
  which is the safe outcome.

A fail is never sent for a job whose completion was sent: the caller hands
one ``Outcome`` per delivery to ``deliver`` and nothing else reports it. Nor
once the job's lease has passed (``lease_end``): the engine may then have
handed the job to another worker, and a fail, which checks neither worker nor
job state, could undo that worker's completion or fail an instance that moved
on. Completions are sent whatever the lease: the engine accepts late ones.

Nor for a job that stopped mattering (``stale_check``, see
``workflow_sdk.staleness``): a fail for a job of a cancelled or finished
instance, or of a step a boundary timer interrupted, would fail the instance.
When the check cannot reach the engine, the rules above decide alone.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.errors import EngineClientError, EngineConnectionError
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.retry.backoff import Backoff
from workflow_sdk.staleness import StaleVerdict

log = logging.getLogger("workflow_sdk.reporting")

#: Default seconds to keep retrying a completion before it is counted lost.
DEFAULT_REPORT_DEADLINE = 600.0


class ReportStatus(enum.Enum):
    DELIVERED = "delivered"
    #: The engine answered with a permanent error (unknown job, bad request).
    REJECTED = "rejected"
    #: Gave up: the deadline passed, or a fail could not be resent safely.
    LOST = "lost"
    #: A fail not sent because the job's lease had passed (the engine redelivers it).
    WITHHELD = "withheld"
    #: A fail not sent because the job no longer matters (instance finished or
    #: cancelled, step interrupted): sending it would fail the instance.
    STALE = "stale"


def _attempt(client: WorkerEngineClient, worker_id: str, outcome: Outcome) -> None:
    if outcome.succeeded:
        client.complete_job(outcome.job_id, worker_id, outcome.variables)
    else:
        client.fail_job(outcome.job_id, worker_id, outcome.error_message, outcome.retryable)


def _may_resend(outcome: Outcome, exc: EngineClientError) -> bool:
    if not exc.retryable:
        return False
    if outcome.succeeded:
        return True
    return isinstance(exc, EngineConnectionError) and not exc.request_sent


def deliver(
    client: WorkerEngineClient,
    worker_id: str,
    outcome: Outcome,
    *,
    deadline: float = DEFAULT_REPORT_DEADLINE,
    give_up: threading.Event | None = None,
    on_retry: Callable[[Outcome, EngineClientError], None] | None = None,
    lease_end: float | None = None,
    stale_check: Callable[[], StaleVerdict] | None = None,
) -> ReportStatus:
    """Report ``outcome``; blocks through the retries.

    ``give_up``, when set, ends the waiting between retries early (the
    outcome is then counted lost). ``on_retry`` is called before each resend.
    ``lease_end`` (``time.monotonic()`` value) stops a failure from being sent
    or resent after the job's lease. ``stale_check`` is asked once before a
    failure is sent; a STALE verdict sends nothing.
    """
    verb = "completion" if outcome.succeeded else "failure"
    backoff = Backoff()
    stop_at = time.monotonic() + deadline
    if not outcome.succeeded and lease_end is not None:
        stop_at = min(stop_at, lease_end)
        if time.monotonic() >= lease_end:
            log.error(
                "job %s (%s) failed after its lease had passed; the failure is not sent "
                "(the job may already run elsewhere; the engine redelivers it): %s",
                outcome.job_id,
                outcome.job_type,
                outcome.error_message,
            )
            return ReportStatus.WITHHELD
    if not outcome.succeeded and stale_check is not None:
        verdict = stale_check()
        if verdict.stale:
            log.info(
                "job %s (%s) no longer matters (%s); its failure is not sent: %s",
                outcome.job_id,
                outcome.job_type,
                verdict.detail,
                outcome.error_message,
            )
            return ReportStatus.STALE
    while True:
        try:
            _attempt(client, worker_id, outcome)
        except EngineClientError as exc:
            if not _may_resend(outcome, exc):
                if exc.retryable:
                    # A fail that may have reached the engine: resending could
                    # fail the job twice. The lease expiry redelivers it.
                    log.error(
                        "job %s (%s): %s report may not have reached the engine and is "
                        "not resent (the engine redelivers the job after its lease): %s",
                        outcome.job_id,
                        outcome.job_type,
                        verb,
                        exc,
                    )
                    return ReportStatus.LOST
                log.error(
                    "job %s (%s): engine refused the %s: %s",
                    outcome.job_id,
                    outcome.job_type,
                    verb,
                    exc,
                )
                return ReportStatus.REJECTED
            wait = backoff.next_delay()
            if time.monotonic() + wait > stop_at:
                log.error(
                    "job %s (%s): %s LOST after %d attempts over %.0f s: %s",
                    outcome.job_id,
                    outcome.job_type,
                    verb,
                    backoff.failures,
                    deadline,
                    exc,
                )
                return ReportStatus.LOST
            log.warning(
                "job %s (%s): %s failed (attempt %d), retrying in %.2f s: %s",
                outcome.job_id,
                outcome.job_type,
                verb,
                backoff.failures,
                wait,
                exc,
            )
            if on_retry is not None:
                on_retry(outcome, exc)
            if give_up is not None:
                if give_up.wait(wait):
                    log.error(
                        "job %s (%s): %s LOST: shutting down before it could be delivered",
                        outcome.job_id,
                        outcome.job_type,
                        verb,
                    )
                    return ReportStatus.LOST
            else:
                time.sleep(wait)
            continue
        return ReportStatus.DELIVERED


__all__ = ["DEFAULT_REPORT_DEADLINE", "ReportStatus", "deliver"]
