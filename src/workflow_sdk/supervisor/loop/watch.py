"""The parent's watch over running jobs: stale checks and lease renewals.

Every tick the main loop calls ``ask_due`` (which jobs to check or renew
now, as the ledger says) and ``take`` (what the engine answered). The calls
themselves run on two call threads (``io.call_thread``), so the loop never
waits for HTTP.
``take`` updates the ledger and returns verdicts: the jobs whose workers
must be stopped, because the job no longer matters (stale) or because the
engine gave its lease to someone else (lease lost). Nothing is reported for
those; the arbiter stops the worker and refills the slot.

Each request is made for one claim of a job (``ClaimKey``), and its answer
acts on that claim only: the engine's next attempt of the same job may run
here by the time an answer asked for the attempt before comes back, and a
"lease lost" or "stale" meant for that one must not stop it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from workflow_sdk.lease import renewed_length
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.retry.backoff import delay as backoff_delay
from workflow_sdk.staleness import InstanceReader, JobLiveness, StaleVerdict, check_job
from workflow_sdk.supervisor.io.call_thread import CallThread
from workflow_sdk.supervisor.io.renewal import (
    LeaseRenewer,
    RenewalAnswer,
    RenewalResult,
    renew,
)
from workflow_sdk.supervisor.loop.ledger import ClaimKey, JobEntry, JobLedger, JobState

log = logging.getLogger("workflow_sdk.supervisor")


@dataclass(frozen=True)
class StopJob:
    """Verdict: stop the worker running ``job_id``; report nothing for it."""

    job_id: str
    #: restart reason of the slot: "stale" or "lease_lost"
    reason: str
    #: what the engine said, for the log
    detail: str
    #: metric label of a stale job ("instance_cancelled"...), "" otherwise
    stale_reason: str = ""
    #: the claim the verdict is for (``JobEntry.claim_no``): act only on it
    claim_no: int = 0


class RunningJobWatch:
    """The parent's stale checks and lease renewals of running jobs (see the
    module doc). Without a reader and a renewer it asks nothing."""

    def __init__(
        self,
        ledger: JobLedger,
        *,
        wake: Any,
        reader: InstanceReader | None,
        renewer: LeaseRenewer | None,
        worker_id: str,
        lease_seconds: int = 0,
        metrics: Metrics | None = None,
        join_timeout: float = 30.0,
    ) -> None:
        self._ledger = ledger
        self._metrics = metrics
        self._lease_seconds = lease_seconds
        self._checks: CallThread[ClaimKey, dict[str, Any], StaleVerdict] | None = None
        self._renewals: CallThread[ClaimKey, str, RenewalAnswer] | None = None
        if reader is not None:
            self._checks = CallThread(
                "stale-watch",
                lambda context: check_job(reader, context),
                lambda exc: StaleVerdict(JobLiveness.UNKNOWN, "", repr(exc)),
                wake,
                join_timeout,
            )
        if renewer is not None:
            self._renewals = CallThread(
                "lease-renewal",
                lambda job_id: renew(renewer, worker_id, job_id, lease_seconds),
                lambda exc: RenewalAnswer(RenewalResult.RETRY, 0.0, repr(exc)),
                wake,
                join_timeout,
            )

    @property
    def checks_stale(self) -> bool:
        return self._checks is not None

    def ask_due(self, now: float) -> None:
        if self._checks is not None:
            for entry in self._ledger.stale_checks_due(now):
                self._checks.ask(entry.key, entry.context)
        if self._renewals is not None:
            for entry in self._ledger.renewals_due(now):
                self._renewals.ask(entry.key, entry.job_id)

    def take(self, now: float) -> list[StopJob]:
        stops: list[StopJob] = []
        if self._checks is not None:
            for key, verdict in self._checks.take():
                stop = self._on_verdict(key, verdict, now)
                if stop is not None:
                    stops.append(stop)
        if self._renewals is not None:
            for key, answer in self._renewals.take():
                stop = self._on_renewal(key, answer, now)
                if stop is not None:
                    stops.append(stop)
        return stops

    def close(self) -> None:
        for calls in (self._checks, self._renewals):
            if calls is not None:
                calls.close()

    def _running(self, key: ClaimKey) -> JobEntry | None:
        """The claim that asked, if it still runs (not a later attempt)."""
        entry = self._ledger.holds(key)
        return entry if entry is not None and entry.state is JobState.RUNNING else None

    def _on_verdict(self, key: ClaimKey, verdict: StaleVerdict, now: float) -> StopJob | None:
        if self._running(key) is None:
            return None
        job_id = key.job_id
        if verdict.stale:
            return StopJob(job_id, "stale", verdict.detail, verdict.reason, key.claim_no)
        if verdict.liveness is JobLiveness.UNKNOWN:
            log.debug("job %s: stale check inconclusive: %s", job_id, verdict.detail)
        self._ledger.stale_check_done(key, now)
        return None

    def _on_renewal(self, key: ClaimKey, answer: RenewalAnswer, now: float) -> StopJob | None:
        if self._metrics is not None:
            self._metrics.lease_renewal(answer.result.value)
        entry = self._running(key)
        if entry is None:
            return None
        job_id = key.job_id
        if answer.result is RenewalResult.ACCEPTED:
            length = renewed_length(self._lease_seconds, entry.lease_length)
            self._ledger.renewed(key, answer.sent_at, length)
        elif answer.result is RenewalResult.LEASE_LOST:
            detail = f"lease lost: {answer.detail}"
            return StopJob(job_id, "lease_lost", detail, claim_no=key.claim_no)
        elif answer.result is RenewalResult.UNSUPPORTED:
            log.warning(
                "the engine stopped accepting lease renewals (no heartbeat route); "
                "jobs now keep the lease they were claimed with"
            )
            self._ledger.stop_renewals()
        else:
            wait = backoff_delay(entry.renewal_failures)
            level = logging.WARNING if entry.renewal_failures == 0 else logging.DEBUG
            log.log(
                level,
                "job %s (%s): lease renewal failed, retrying within the lease: %s",
                job_id,
                entry.job_type,
                answer.detail,
            )
            self._ledger.renewal_failed(key, now, wait)
        return None


__all__ = ["RunningJobWatch", "StopJob"]
