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

A retryable failure of a job type with a ``retry_delay`` is held here until
its due time (``workflow_sdk.retry.delay``: the delay grows per attempt, and
ends before the lease does) instead of going out at once, so that the
engine's retry does not run within milliseconds. Its ledger entry stays
REPORTING meanwhile: its worker is free for other jobs, the bound on what
the supervisor holds counts it, and a re-delivery of the job is coalesced
with it. Nothing waits for it on a thread: the main loop's next deadline
includes the earliest due time (``next_due``), and ``flush`` hands over
what is due. A drain hands every held report over at once (and holds no
new one): the stop does not wait for a delay, nor leave a fail unsent.

The desk decides when reports leave and what an answer means for the
ledger, the source and the metrics; how a report is delivered (retries,
resends, the lease) is ``workflow_sdk.reporting``'s, on the reporter threads.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections import OrderedDict
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
from workflow_sdk.retry.delay import RetryDelay, attempt_number
from workflow_sdk.staleness import InstanceReader, StaleVerdict, check_job
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.joblog import job_fields, log_outcome
from workflow_sdk.supervisor.loop.ledger import JobEntry, JobLedger
from workflow_sdk.supervisor.loop.phase import Phase
from workflow_sdk.supervisor.loop.pool import WorkerPool
from workflow_sdk.supervisor.loop.type_limits import TypeLimits

log = logging.getLogger("workflow_sdk.supervisor")

#: Job ids whose first retry count is remembered (for the attempt number).
ATTEMPTS_REMEMBERED = 4096


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


class AttemptCounter:
    """Which attempt of a job a failure is, from the retries it had left.

    The engine's job carries ``retriesRemaining`` but not the step's
    ``retryCount``: the most retries left seen for a job id stands for its
    first attempt (each retry carries one less; a re-delivery after a lease,
    the same). A job whose earlier attempts ran elsewhere counts from the
    first one seen here: its delay is then shorter, never longer. The ids
    are forgotten oldest first past ``limit``.
    """

    def __init__(self, limit: int = ATTEMPTS_REMEMBERED) -> None:
        self.limit = limit
        self._most: OrderedDict[str, int] = OrderedDict()

    def attempt(self, job_id: str, retries_remaining: int) -> int:
        """The 0-based attempt of ``job_id`` that has ``retries_remaining`` left."""
        most = max(self._most.pop(job_id, retries_remaining), retries_remaining)
        self._most[job_id] = most
        while len(self._most) > self.limit:
            self._most.popitem(last=False)
        return attempt_number(retries_remaining, retry_count=most)

    def forget(self, job_id: str) -> None:
        self._most.pop(job_id, None)


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
        limits: TypeLimits | None = None,
    ) -> None:
        #: The per-type settings (``retry_delay``); the arbiter replaces them
        #: on SIGHUP. None: no report is held.
        self.limits = limits
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
        #: Retryable failures held until their due time: (due, order, outcome, entry).
        self._held: list[tuple[float, int, Outcome, JobEntry]] = []
        self._order = itertools.count()
        self._attempts = AttemptCounter()
        #: False once the drain began: reports leave at once.
        self._holding = True
        # Last: the threads may call back at once.
        self._reporter = start_reporter(self.on_status, self.on_retry)

    # -- main loop ---------------------------------------------------------------

    def report(self, outcome: Outcome, entry: JobEntry, slot_no: int) -> None:
        """Log the outcome (the one line per job event) and queue its report,
        or hold it (a retryable failure of a type with a ``retry_delay``)."""
        self.stats.record_outcome(outcome)
        now = time.monotonic()
        log_outcome(outcome, entry, slot_no, now)
        delay = self._retry_delay(outcome, entry, now)
        if delay is not None and delay.seconds > 0:
            log.debug(
                "job %s (%s): its fail is reported in %.1f s (%s)",
                entry.job_id,
                entry.job_type,
                delay.seconds,
                delay.reason,
                extra=job_fields(entry, slot_no),
            )
            heapq.heappush(self._held, (now + delay.seconds, next(self._order), outcome, entry))
            return
        self._outbox.append((outcome, entry))

    def _retry_delay(self, outcome: Outcome, entry: JobEntry, now: float) -> RetryDelay | None:
        """How long to hold ``outcome``'s report (None: no rule for it)."""
        if outcome.succeeded or not outcome.retryable:
            self._attempts.forget(entry.job_id)
            return None
        policy = self.limits.retry_delay(entry.job_type) if self.limits is not None else None
        if policy is None or not self._holding:
            return None
        retries = entry.retries_remaining
        attempt = self._attempts.attempt(entry.job_id, retries)
        if retries <= 0:
            self._attempts.forget(entry.job_id)  # the last attempt: nothing follows
        lease_left = None if math.isinf(entry.lease_end) else entry.lease_end - now
        return policy.delay(attempt, lease_left=lease_left, retries_remaining=retries)

    @property
    def queued(self) -> bool:
        return bool(self._outbox)

    @property
    def held(self) -> int:
        """Retryable failures waiting for their due time."""
        return len(self._held)

    def next_due(self) -> float:
        """When the earliest held report is due (``inf``: none is held)."""
        return self._held[0][0] if self._held else math.inf

    def release_due(self, now: float) -> None:
        """Queue the held reports that are due at ``now``."""
        while self._held and self._held[0][0] <= now:
            _, _, outcome, entry = heapq.heappop(self._held)
            self._outbox.append((outcome, entry))

    def stop_holding(self) -> None:
        """The drain began: every held report is queued now, and none is held
        from now on (the stop neither waits for a delay nor leaves a fail
        unsent)."""
        self._holding = False
        self.release_due(math.inf)

    def flush(self, phase: Phase) -> None:
        """Hand the queued reports, and the held ones now due, to the
        reporter threads (end of a tick)."""
        if self._held:
            self.release_due(time.monotonic())
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


__all__ = [
    "ATTEMPTS_REMEMBERED",
    "AttemptCounter",
    "FailCheck",
    "ReportDesk",
    "ReportResult",
    "ReportSink",
    "StartReporter",
]
