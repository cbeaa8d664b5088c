"""Results: each job's outcome, from the worker's answer to the engine's.

The arbiter hands every decided outcome here (``report``): it is counted,
logged (the one line per job event) and queued on the report desk. At the
end of each tick ``flush`` passes the queue to the reporter threads, unless
the reports should wait a moment for the poll in flight (``REPORT_HOLD``).
The reporter threads answer through ``on_status``; ``take`` releases the
answered jobs from the ledger, settles them with their source and counts
them in the metrics. The desk (``reports.ReportDesk``) holds the queues;
this class holds the rules.
"""

from __future__ import annotations

import time

from workflow_sdk.errors import EngineClientError
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.jobcore import record_outcome
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.reporting import ReportStatus
from workflow_sdk.supervisor.intake import Intake
from workflow_sdk.supervisor.joblog import log_outcome
from workflow_sdk.supervisor.jobs import JobEntry, JobLedger
from workflow_sdk.supervisor.pool import Phase, WorkerPool
from workflow_sdk.supervisor.reporter import Reporter
from workflow_sdk.supervisor.reports import ReportDesk
from workflow_sdk.supervisor.stats import SupervisorStats


class Results:
    def __init__(
        self,
        pool: WorkerPool,
        ledger: JobLedger,
        intake: Intake,
        stats: SupervisorStats,
        desk: ReportDesk,
    ) -> None:
        self.pool = pool
        self.ledger = ledger
        self.intake = intake
        self.stats = stats
        self.desk = desk
        #: The reporter threads (set up with the engine client).
        self.reporter: Reporter | None = None
        self.metrics: Metrics | None = None

    # -- main loop ---------------------------------------------------------------

    def report(self, outcome: Outcome, entry: JobEntry, slot_no: int) -> None:
        """Log the outcome (the one line per job event) and queue its report."""
        self.stats.record_outcome(outcome)
        log_outcome(outcome, entry, slot_no, time.monotonic())
        self.desk.queue(outcome, entry)

    def flush(self, phase: Phase) -> None:
        """Hand the queued reports to the reporter threads (end of a tick)."""
        # Reports leave after the poll for the workers they freed: the poll is
        # what an idle worker waits for, and a completion sent at the same
        # moment doubles the poll's round trip (both compete in the engine and
        # in this process). A report waits for that poll REPORT_HOLD at most,
        # and only while a worker is idle: when none is, the poll claims
        # ahead, and no worker waits for it.
        assert self.reporter is not None
        if not self.desk.queued:
            return
        if (
            self.intake.holds_reports(time.monotonic())
            and phase is not Phase.DRAINING
            and self.pool.idle()
        ):
            return
        self.desk.flush(self.reporter)

    def take(self) -> None:
        """Release the jobs whose reports the engine answered."""
        answers = self.desk.take()
        now = time.monotonic() if answers else 0.0
        for answer in answers:
            # A retry that came while this fail was reported is claimed now.
            entry = self.ledger.release(answer.outcome.job_id, now)
            if entry is None:
                continue
            source = self.intake.source
            if source is not None and entry.origin is not None:
                source.settle(entry.origin, answer.settled)
            if answer.outcome.retire:
                continue  # counted as stale when it was stopped
            if answer.status is ReportStatus.STALE:
                self.stats.stale_jobs += 1
            if self.metrics is not None:
                # The Runner's rule, counted once the report's fate is known.
                record_outcome(
                    self.metrics,
                    answer.outcome,
                    entry.retries_remaining,
                    answer.status,
                    handler_ran=entry.handler_ran,
                    stale_reason=answer.stale_reason,
                )

    def retire(self, entry: JobEntry, slot_no: int) -> None:
        """Queue an empty completion for a stopped job whose instance is over
        (``Outcome.retirement``); logged by the caller, counted as stale."""
        self.desk.queue(Outcome.retirement(entry.job_id, entry.job_type), entry)

    def count_stale(self, entry: JobEntry, reason: str) -> None:
        """A job found stale while it ran (nothing is reported for it)."""
        self.stats.stale_jobs += 1
        if self.metrics is not None:
            self.metrics.stale_job(entry.job_type, reason)

    # -- reporter threads --------------------------------------------------------

    def on_status(self, outcome: Outcome, status: ReportStatus) -> None:
        # A reporter thread: record, and let the main loop release the job.
        self.stats.record_report(status)
        count = self.desk.on_status(outcome, status)
        source = self.intake.source
        if source is not None:
            source.answered(count)

    def on_retry(self, outcome: Outcome, error: EngineClientError) -> None:
        self.stats.record_report_retry()
        if self.metrics is not None:
            self.metrics.report_retry(outcome.job_type)


__all__ = ["Results"]
