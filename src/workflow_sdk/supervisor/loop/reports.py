"""The report desk: each job's outcome, from the worker's result to the engine's answer.

The loop hands every decided outcome here (``report``): it is counted,
logged (the one line per job event) and queued. At the end of each tick
``flush`` passes the queue to the reporter threads (a failure with the stale
check it must run first, and every report with the check of its fate should
its answer be lost), unless the reports should wait a moment for the poll in
flight (``REPORT_HOLD``). The reporter threads answer through ``on_status``
(the answer is queued, the loop woken when that matters, the source told
how many answers came); ``take`` then releases the answered jobs from the
ledger, settles them with their source (``workflow_sdk.lease.is_settled``)
and counts them in the metrics. The desk owns its reporter threads.

The desk decides when reports leave and what an answer means for the
ledger, the source and the metrics; how a report is delivered (retries,
resends, the lease) is ``workflow_sdk.reporting``'s, on the reporter threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Any, Protocol

from workflow_sdk.errors import EngineClientError
from workflow_sdk.fate import Fate, FateCheck
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.jobcore import record_outcome
from workflow_sdk.lease import is_settled
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.reporting import ReportStatus
from workflow_sdk.staleness import InstanceReader, StaleVerdict, check_job
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.joblog import log_outcome
from workflow_sdk.supervisor.loop.ledger import JobEntry, JobLedger
from workflow_sdk.supervisor.loop.phase import Phase
from workflow_sdk.supervisor.loop.pool import WorkerPool


class ReportSink(Protocol):
    """The reporter threads, as the desk uses them (``io.reporter.Reporter``)."""

    def submit(
        self,
        outcome: Outcome,
        lease_end: float | None = None,
        stale_check: Callable[[], StaleVerdict] | None = None,
        fate: FateCheck | None = None,
    ) -> None: ...

    def pending(self) -> int: ...

    def wait_idle(self, timeout: float) -> bool: ...

    def stop(self, give_up: bool) -> None: ...


#: Starts the reporter threads, given the desk's two callbacks: how a report
#: ended (``on_status``) and that it is being retried (``on_retry``).
StartReporter = Callable[
    [
        Callable[[Outcome, ReportStatus], None],
        Callable[[Outcome, EngineClientError], None],
    ],
    ReportSink,
]


class FailCheck:
    """The stale check a failure's report runs first (on a reporter thread).

    Keeps the verdict, so the main loop can count a stale job by its reason.
    """

    def __init__(self, reader: InstanceReader, context: dict[str, Any]) -> None:
        self._reader = reader
        self._context = context
        self.verdict: StaleVerdict | None = None

    def __call__(self) -> StaleVerdict:
        self.verdict = check_job(self._reader, self._context)
        return self.verdict


@dataclass(frozen=True)
class ReportResult:
    """How one report ended."""

    outcome: Outcome
    status: ReportStatus
    #: the stale verdict's reason (metric label) when ``status`` is STALE
    stale_reason: str = "unknown"

    @property
    def settled(self) -> bool:
        """The job is finished for good (``workflow_sdk.lease.is_settled``)."""
        return is_settled(self.status)


class ReportDesk:
    """Outcomes to the reporter threads, and their answers back (see the module doc).

    :param reader: reads instances for the stale check before a fail and the
        fate check of a lost answer (None: the client cannot).
    :param start_reporter: starts the reporter threads the desk hands reports to.
    :param wake: makes the main loop's wait return (any thread).
    """

    def __init__(
        self,
        pool: WorkerPool,
        ledger: JobLedger,
        intake: Intake,
        stats: SupervisorStats,
        *,
        reader: InstanceReader | None,
        start_reporter: StartReporter,
        wake: Callable[[], None],
        metrics: Metrics | None = None,
    ) -> None:
        self.pool = pool
        self.ledger = ledger
        self.intake = intake
        self.stats = stats
        self.reader = reader
        self.metrics = metrics
        self._wake = wake
        self._outbox: list[tuple[Outcome, JobEntry]] = []
        self._answers: SimpleQueue[tuple[Outcome, ReportStatus]] = SimpleQueue()
        self._checks: dict[str, tuple[FailCheck | None, FateCheck | None]] = {}
        #: Whether an answer wakes the main loop (read by reporter threads;
        #: the loop sets it before it looks at ``answered``).
        self.wake_on_answer = True
        #: Answers queued in all, and taken by the main loop in all: a poll
        #: armed for ``taken + n`` goes out once n more jobs are released.
        self.answers = 0
        self.taken = 0
        self._count_lock = threading.Lock()
        # Last: the threads may call back at once.
        self._reporter = start_reporter(self.on_status, self.on_retry)

    # -- main loop ---------------------------------------------------------------

    def report(self, outcome: Outcome, entry: JobEntry, slot_no: int) -> None:
        """Log the outcome (the one line per job event) and queue its report."""
        self.stats.record_outcome(outcome)
        log_outcome(outcome, entry, slot_no, time.monotonic())
        self._outbox.append((outcome, entry))

    @property
    def queued(self) -> bool:
        return bool(self._outbox)

    def flush(self, phase: Phase) -> None:
        """Hand the queued reports to the reporter threads (end of a tick)."""
        # Reports leave after the poll for the workers they freed: the poll is
        # what an idle worker waits for, and a completion sent at the same
        # moment doubles the poll's round trip (both compete in the engine and
        # in this process). A report waits for that poll REPORT_HOLD at most,
        # and only while a worker is idle: when none is, the poll claims
        # ahead, and no worker waits for it.
        if not self._outbox:
            return
        if (
            self.intake.holds_reports(time.monotonic())
            and phase is not Phase.DRAINING
            and self.pool.idle()
        ):
            return
        self.hand_over()

    def hand_over(self) -> None:
        """Hand every queued outcome to the reporter threads now."""
        reporter = self._reporter
        for outcome, entry in self._outbox:
            check: FailCheck | None = None
            fate: FateCheck | None = None
            if self.reader is not None:
                if not outcome.succeeded:
                    check = FailCheck(self.reader, entry.context)
                fate = FateCheck(self.reader, entry.context, self._retry_check(entry))
                self._checks[outcome.job_id] = (check, fate)
            reporter.submit(outcome, entry.lease_end, check, fate)
        self._outbox.clear()

    def _retry_check(self, entry: JobEntry) -> Callable[[], bool] | None:
        origin = entry.origin
        if origin is None:
            return None
        retry_seen: Callable[[Mapping[str, Any]], bool] = self.intake.retry_seen
        return lambda: retry_seen(origin)

    def answered(self) -> bool:
        """An answer is waiting to be taken."""
        return not self._answers.empty()

    def take(self) -> list[ReportResult]:
        """Release the jobs whose reports the engine answered; returns how
        their reports ended."""
        results = []
        while not self._answers.empty():
            outcome, status = self._answers.get()
            check, fate = self._checks.pop(outcome.job_id, (None, None))
            reason = "unknown"
            if fate is not None and fate.last is not None and fate.last.fate is Fate.SETTLED:
                reason = fate.last.reason or reason
            elif check is not None and check.verdict is not None and check.verdict.reason:
                reason = check.verdict.reason
            results.append(ReportResult(outcome, status, reason))
        self.taken += len(results)
        now = time.monotonic() if results else 0.0
        for result in results:
            # A retry that came while this fail was reported is claimed now.
            entry = self.ledger.release(result.outcome.job_id, now)
            if entry is None:
                continue
            self.intake.settle(entry, result.settled)
            if result.outcome.retire:
                continue  # counted as stale when it was stopped
            if result.status is ReportStatus.STALE:
                self.stats.stale_jobs += 1
            if self.metrics is not None:
                # The Runner's rule, counted once the report's fate is known.
                record_outcome(
                    self.metrics,
                    result.outcome,
                    entry.retries_remaining,
                    result.status,
                    handler_ran=entry.handler_ran,
                    stale_reason=result.stale_reason,
                )
        return results

    def retire(self, entry: JobEntry, slot_no: int) -> None:
        """Queue an empty completion for a stopped job whose instance is over
        (``Outcome.retirement``); logged by the caller, counted as stale."""
        self._outbox.append((Outcome.retirement(entry.job_id, entry.job_type), entry))

    def count_stale(self, entry: JobEntry, reason: str) -> None:
        """A job found stale while it ran (nothing is reported for it)."""
        self.stats.stale_jobs += 1
        if self.metrics is not None:
            self.metrics.stale_job(entry.job_type, reason)

    def pending(self) -> int:
        """Reports handed over and not yet ended."""
        return self._reporter.pending()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every report handed over to end."""
        return self._reporter.wait_idle(timeout)

    def close(self) -> None:
        """Stop the reporter threads, giving up retries still waiting."""
        self._reporter.stop(give_up=True)

    # -- reporter threads --------------------------------------------------------

    def on_status(self, outcome: Outcome, status: ReportStatus) -> None:
        """How a report ended: queued for the main loop (which releases the job)."""
        self.stats.record_report(status)
        # Queued before the flag is read: the loop sets the flag before it
        # looks at ``answered``, so one of the two sees the other.
        with self._count_lock:
            self._answers.put((outcome, status))
            self.answers += 1
            count = self.answers
        if self.wake_on_answer:
            self._wake()
        self.intake.answered(count)

    def on_retry(self, outcome: Outcome, error: EngineClientError) -> None:
        self.stats.record_report_retry()
        if self.metrics is not None:
            self.metrics.report_retry(outcome.job_type)


__all__ = ["FailCheck", "ReportDesk", "ReportResult", "ReportSink", "StartReporter"]
