"""Rules about one job that the threaded runners and the supervisor share.

Free of threads and processes on purpose: each runtime calls these from
wherever it handles a job, and both then behave and count the same way.

- ``job_problem``: is a polled job usable at all (an id and a job type)?
- ``default_worker_id``: the worker id when none is configured.
- ``PollOutageLog``: how a run of failed polls is logged.
- ``no_handler_outcome``: the failure of a job whose type has no handler.
- ``record_outcome``: the shared metrics of one job, counted once it is
  known what became of its report.

Counting rule (``record_outcome``): the handler's latency and
``jobs_completed_total{outcome}`` describe what the handler did and are
counted for every job whose handler ran, whatever became of the report. A
job with no handler counts as a ``failure`` in ``jobs_completed_total`` and
adds no latency (no handler ran). ``retries_total`` counts only a retryable
failure with retries left whose fail the engine **acknowledged**: only then
does the engine deliver the job again. Reports not delivered are counted in
``reports_given_up_total{reason}``, and fails not sent because the job
went stale in ``stale_jobs_total{reason}``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from workflow_sdk.errors import EngineClientError
from workflow_sdk.handler.outcome import Outcome, describe_exception
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.reporting import ReportStatus

#: While polls keep failing, repeat the warning at most this often (seconds).
OUTAGE_LOG_EVERY = 60.0


def default_worker_id() -> str:
    """``<host name>-<pid>``: unique per process on a host."""
    return f"{socket.gethostname()}-{os.getpid()}"


def job_problem(job: object) -> str | None:
    """``None`` when a polled job can be run; otherwise why not, in one line.

    A job needs a non-empty string ``id`` (to report it) and a string
    ``jobType`` (to find its handler); anything else is the engine's to
    fill in and is read leniently.
    """
    if not isinstance(job, dict):
        return f"not a JSON object: {_short(job)}"
    job_id = job.get("id")
    if not isinstance(job_id, str) or not job_id:
        return f"no id: {_short(job)}"
    if not isinstance(job.get("jobType"), str):
        return f"job {job_id} has no jobType: {_short(job)}"
    return None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."


def no_handler_outcome(job_id: str, job_type: str, worker_id: str) -> Outcome:
    """The retryable failure of a job whose type has no handler in this worker."""
    return Outcome.failure(
        job_id,
        job_type,
        f"no handler registered for job type {job_type!r} in worker {worker_id}",
        retryable=True,
    )


def record_outcome(
    metrics: Metrics,
    outcome: Outcome,
    retries_remaining: object,
    status: ReportStatus | None,
    *,
    handler_ran: bool = True,
    stale_reason: str = "unknown",
) -> None:
    """Count one finished job in the shared metrics (see the module's rule).

    :param retries_remaining: the job's ``retriesRemaining`` as polled.
    :param status: what ``deliver`` returned, or ``None`` when nothing was
        sent on purpose (lease lost, job found stale while it ran: those are
        counted where they are found).
    :param handler_ran: false for a job with no handler.
    :param stale_reason: the stale verdict's reason when ``status`` is STALE.
    """
    job_type = outcome.job_type
    if handler_ran:
        metrics.observe_handler(job_type, outcome.duration)
    metrics.job_finished(job_type, "success" if outcome.succeeded else "failure")
    if status is ReportStatus.DELIVERED:
        if (
            not outcome.succeeded
            and outcome.retryable
            and isinstance(retries_remaining, int)
            and not isinstance(retries_remaining, bool)
            and retries_remaining > 0
        ):
            metrics.retry(job_type)
    elif status is ReportStatus.STALE:
        metrics.stale_job(job_type, stale_reason or "unknown")
    elif status is not None:
        metrics.report_given_up(job_type, status.value)


class PollOutageLog:
    """Logs a run of failed polls without flooding the log.

    The first failure is a WARNING; while polls keep failing, one more
    WARNING at most every ``every`` seconds (the rest at DEBUG); the first
    success after failures is an INFO "reachable again after N failed polls".
    """

    def __init__(
        self,
        logger: logging.Logger,
        every: float = OUTAGE_LOG_EVERY,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._every = every
        self._clock = clock
        self.failures = 0
        self._started = 0.0
        self._logged = 0.0

    def failed(self, exc: BaseException, next_delay: float) -> None:
        """One poll failed; the next is tried in ``next_delay`` seconds."""
        now = self._clock()
        self.failures += 1
        if self.failures == 1:
            self._started = self._logged = now
            self._log.warning(
                "poll failed, retrying with backoff (further failures are logged every %.0f s): %s",
                self._every,
                describe_exception(exc),
                # An engine error explains itself; anything else may be a bug.
                exc_info=None if isinstance(exc, EngineClientError) else exc,
            )
        elif now - self._logged >= self._every:
            self._logged = now
            self._log.warning(
                "polls still failing for %.0f s (%d attempts), next in %.1f s: %s",
                now - self._started,
                self.failures,
                next_delay,
                describe_exception(exc),
            )
        else:
            self._log.debug("poll failed (attempt %d): %s", self.failures, exc)

    def succeeded(self) -> None:
        """One poll worked; ends the outage, if any."""
        if self.failures:
            self._log.info(
                "engine reachable again after %d failed polls over %.1f s",
                self.failures,
                self._clock() - self._started,
            )
            self.failures = 0


def usable_jobs(
    jobs: list[Any], logger: logging.Logger, metrics: Metrics | None = None
) -> list[dict[str, Any]]:
    """The jobs of a poll answer that can be run; each other one is logged at ERROR.

    With ``metrics``, every job left out of the answer is counted in
    ``workflow_sdk_malformed_jobs_total``: those left out here (a client of
    one's own may pass anything on) and those the SDK's clients already left
    out and logged (``PolledJobs.malformed``).
    """
    usable: list[dict[str, Any]] = []
    for job in jobs:
        problem = job_problem(job)
        if problem is None:
            usable.append(job)
        else:
            logger.error("ignoring a malformed job from the engine: %s", problem)
    left_out = len(jobs) - len(usable) + len(getattr(jobs, "malformed", ()))
    if metrics is not None and left_out:
        metrics.malformed_jobs.inc(left_out)
    return usable


__all__ = [
    "OUTAGE_LOG_EVERY",
    "PollOutageLog",
    "default_worker_id",
    "job_problem",
    "no_handler_outcome",
    "record_outcome",
    "usable_jobs",
]
