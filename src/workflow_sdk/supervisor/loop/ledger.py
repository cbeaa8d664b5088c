"""The job ledger: every job this supervisor holds, from claim to the engine's answer.

A job enters when a poll claims it and leaves when the engine acknowledged
its report (or the report was given up, withheld or judged stale), or when
it is dropped unstarted. The main loop asks the ledger questions and acts on
its verdicts; the ledger itself never talks to workers or to the engine, so
every rule here has a unit test without a process.

Why a ledger: the parent claims on behalf of its workers, but reports from
other threads. Without a bound on what it holds, a slow engine lets reports
queue while claims go on, and queued jobs outlive their leases and run
twice. ``room()`` is that bound: claims never exceed it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from workflow_sdk.lease import (
    next_renewal,
    renewal_interval,
    renewal_retry_at,
    renewed_lease_end,
)


class JobState(enum.Enum):
    #: claimed from the engine, not yet on a worker
    CLAIMED = "claimed"
    #: on a worker
    RUNNING = "running"
    #: outcome handed to the reporter; waiting for the engine's answer
    REPORTING = "reporting"


class ClaimVerdict(enum.Enum):
    #: a job we do not hold: start it
    NEW = "new"
    #: the engine handed out again a job we still hold (its lease had passed
    #: while it ran): do not start it twice; its one report is still to come
    DUPLICATE = "duplicate"
    #: its lease passed before it could start: another worker may have it
    EXPIRED = "expired"
    #: the engine's next attempt of a job whose retryable fail we are still
    #: reporting (the fail reached the engine before its answer reached us):
    #: held, and claimed as a new job once that report is answered
    RETRY_HELD = "retry_held"
    #: a held next attempt handed out again (its lease passed while the fail
    #: before it was still being reported), or a later attempt still: it
    #: replaces the held one (its lease and delivery), which is not started
    RETRY_REDELIVERED = "retry_redelivered"


@dataclass(frozen=True)
class NextAttempt:
    """A job's next delivery, waiting for the report of the attempt before."""

    context: dict[str, Any]
    lease_end: float
    lease_length: float
    origin: dict[str, Any] | None


@dataclass(frozen=True)
class ClaimKey:
    """One claim of a job: its id and the ledger's number for that claim.

    A job id alone does not say which attempt a request was made for: the
    engine's retry of a job has the same id, and may run here while an
    answer asked for the attempt before is still on its way. Requests made
    for a running job (renewals, stale checks) carry this key, and their
    answers act only on the claim that asked.
    """

    job_id: str
    claim_no: int


@dataclass
class JobEntry:
    context: dict[str, Any]
    #: monotonic time after which the engine may hand the job to another worker
    lease_end: float
    claimed_at: float
    #: seconds the engine grants per claim (and per renewal); inf = no lease
    lease_length: float = 30.0
    #: the job as its source gave it (a Kafka record's coordinates included)
    origin: dict[str, Any] | None = None
    state: JobState = JobState.CLAIMED
    #: worker slot number while RUNNING
    slot: int | None = None
    started_at: float = 0.0
    #: monotonic time at which the handler is killed; None = no limit
    timeout_at: float | None = None
    timeout: float = 0.0
    overrun_logged: bool = False
    #: monotonic time of the next "does this job still matter?" check
    next_stale_check: float = math.inf
    stale_check_pending: bool = False
    #: times the engine handed this job out again while we held it
    redeliveries: int = 0
    #: monotonic time of the next lease renewal (engines that renew only)
    next_renewal: float = math.inf
    renewal_pending: bool = False
    renewal_failures: int = 0
    #: monotonic time its outcome went to the reporter
    reported_at: float = 0.0
    #: a handler ran for it (false: no handler for its type in the worker)
    handler_ran: bool = True
    #: the engine's retry of this job, delivered while this attempt's fail
    #: was still being reported; claimed when this entry is released
    next_attempt: NextAttempt | None = None
    #: the ledger's number for this claim, unique in the ledger (a job's
    #: next attempt gets a new one): see ``ClaimKey``
    claim_no: int = 0

    @property
    def job_id(self) -> str:
        return str(self.context["id"])

    @property
    def key(self) -> ClaimKey:
        return ClaimKey(self.job_id, self.claim_no)

    @property
    def job_type(self) -> str:
        return str(self.context["jobType"])

    @property
    def instance_id(self) -> str:
        return str(self.context.get("instanceId") or "")

    @property
    def retries_remaining(self) -> int:
        value = self.context.get("retriesRemaining")
        return value if isinstance(value, int) else 0


class JobLedger:
    """What the supervisor holds, and the bound on it.

    :param limit: most jobs held at once (claimed + running + reports in
        flight); the supervisor uses 2 x workers.
    :param stale_interval: seconds between staleness checks of a running
        job (0 = never).
    """

    def __init__(self, limit: int, stale_interval: float = 0.0) -> None:
        self.limit = limit
        self.stale_interval = stale_interval
        #: Seconds between lease renewals of a running job; None = no renewal,
        #: 0 = a third of its lease.
        self.renew_every: float | None = None
        self._jobs: dict[str, JobEntry] = {}
        #: entries holding a ``next_attempt`` (each is one more job held)
        self._attempts_held = 0
        #: claims numbered so far (``JobEntry.claim_no``)
        self._claims = 0
        #: the most jobs ever held at once (for tests and benchmarks)
        self.peak = 0

    # -- questions -------------------------------------------------------------

    def __len__(self) -> int:
        """Jobs held: entries, and the next attempts waiting behind them."""
        return len(self._jobs) + self._attempts_held

    @property
    def attempts_held(self) -> int:
        """Retries delivered while their previous attempt's fail was in flight."""
        return self._attempts_held

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def get(self, job_id: str) -> JobEntry | None:
        return self._jobs.get(job_id)

    def holds(self, key: ClaimKey) -> JobEntry | None:
        """The entry of that claim, if the ledger still holds it (not an
        earlier or later attempt of the same job)."""
        entry = self._jobs.get(key.job_id)
        return entry if entry is not None and entry.claim_no == key.claim_no else None

    def room(self) -> int:
        """How many more jobs may be claimed now."""
        return max(0, self.limit - len(self))

    def count(self, state: JobState) -> int:
        return sum(1 for e in self._jobs.values() if e.state is state)

    def by_type(self, *states: JobState) -> dict[str, int]:
        """Jobs in ``states`` per job type (for the per-type concurrency)."""
        counts: dict[str, int] = {}
        for entry in self._jobs.values():
            if entry.state in states:
                job_type = entry.job_type
                counts[job_type] = counts.get(job_type, 0) + 1
        return counts

    def attempts_held_by_type(self) -> dict[str, int]:
        """Next attempts held behind their previous attempt's report, per job type."""
        counts: dict[str, int] = {}
        if self._attempts_held:
            for entry in self._jobs.values():
                if entry.next_attempt is not None:
                    counts[entry.job_type] = counts.get(entry.job_type, 0) + 1
        return counts

    def claimed(self) -> list[JobEntry]:
        """Jobs waiting for a worker, oldest claim first."""
        return [e for e in self._jobs.values() if e.state is JobState.CLAIMED]

    def running(self) -> list[JobEntry]:
        return [e for e in self._jobs.values() if e.state is JobState.RUNNING]

    def timed_out(self, now: float) -> list[JobEntry]:
        """Running jobs past their time limit."""
        return [e for e in self.running() if e.timeout_at is not None and now >= e.timeout_at]

    def overrun(self, now: float) -> list[JobEntry]:
        """Running jobs past their lease, not yet logged (each is returned once)."""
        due = [e for e in self.running() if not e.overrun_logged and now >= e.lease_end]
        for entry in due:
            entry.overrun_logged = True
        return due

    def stale_checks_due(self, now: float) -> list[JobEntry]:
        """Running jobs to ask the engine about now (each marked pending)."""
        due = [e for e in self.running() if not e.stale_check_pending and now >= e.next_stale_check]
        for entry in due:
            entry.stale_check_pending = True
        return due

    def renewals_due(self, now: float) -> list[JobEntry]:
        """Running jobs whose lease to renew now (each marked pending)."""
        if self.renew_every is None:
            return []
        due = [e for e in self.running() if not e.renewal_pending and now >= e.next_renewal]
        for entry in due:
            entry.renewal_pending = True
        return due

    def oldest_report(self, now: float) -> tuple[int, float]:
        """Reports in flight and the age of the oldest one, in seconds."""
        reporting = [e for e in self._jobs.values() if e.state is JobState.REPORTING]
        oldest = min((e.reported_at for e in reporting), default=now)
        return len(reporting), now - oldest

    def next_deadline(self) -> float:
        """The earliest time one of the questions above changes its answer."""
        deadline = math.inf
        for entry in self._jobs.values():
            if entry.state is not JobState.RUNNING:
                continue
            if entry.timeout_at is not None:
                deadline = min(deadline, entry.timeout_at)
            if not entry.overrun_logged:
                deadline = min(deadline, entry.lease_end)
            if not entry.stale_check_pending:
                deadline = min(deadline, entry.next_stale_check)
            if not entry.renewal_pending and self.renew_every is not None:
                deadline = min(deadline, entry.next_renewal)
        return deadline

    # -- changes -----------------------------------------------------------------

    def claim(
        self,
        context: dict[str, Any],
        lease_end: float,
        now: float,
        lease_length: float = 30.0,
        *,
        origin: dict[str, Any] | None = None,
    ) -> ClaimVerdict:
        job_id = str(context["id"])
        held = self._jobs.get(job_id)
        if held is not None and _is_next_attempt(context, held):
            if now >= lease_end:
                return ClaimVerdict.EXPIRED
            held.next_attempt = NextAttempt(context, lease_end, lease_length, origin)
            self._attempts_held += 1
            self.peak = max(self.peak, len(self))
            return ClaimVerdict.RETRY_HELD
        if held is not None and _redelivers_held_attempt(context, held):
            # Without this, the delivery would count as a duplicate of the
            # attempt being reported, and the held attempt would keep the
            # lease that passed: dropped as expired once the fail's answer
            # comes, and run only after one more lease (30-45 s).
            if now >= lease_end:
                return ClaimVerdict.EXPIRED
            held.next_attempt = NextAttempt(context, lease_end, lease_length, origin)
            return ClaimVerdict.RETRY_REDELIVERED
        if held is not None:
            held.redeliveries += 1
            held.lease_end = max(held.lease_end, lease_end)
            held.lease_length = lease_length
            held.overrun_logged = held.overrun_logged and now >= held.lease_end
            return ClaimVerdict.DUPLICATE
        if now >= lease_end:
            return ClaimVerdict.EXPIRED
        self._enter(context, lease_end, now, lease_length, origin)
        self.peak = max(self.peak, len(self))
        return ClaimVerdict.NEW

    def _enter(
        self,
        context: dict[str, Any],
        lease_end: float,
        now: float,
        lease_length: float,
        origin: dict[str, Any] | None,
    ) -> None:
        self._claims += 1
        self._jobs[str(context["id"])] = JobEntry(
            context=context,
            lease_end=lease_end,
            claimed_at=now,
            lease_length=lease_length,
            origin=origin,
            claim_no=self._claims,
        )

    def start(self, job_id: str, slot: int, now: float, timeout: float) -> JobEntry:
        entry = self._jobs[job_id]
        entry.state = JobState.RUNNING
        entry.slot = slot
        entry.started_at = now
        entry.timeout = timeout
        entry.timeout_at = now + timeout if timeout > 0 else None
        if self.stale_interval > 0:
            entry.next_stale_check = now + self.stale_interval
        self._plan_renewal(entry, now)
        return entry

    def _plan_renewal(self, entry: JobEntry, since: float) -> None:
        if self.renew_every is None or math.isinf(entry.lease_length):
            entry.next_renewal = math.inf
            return
        every = renewal_interval(self.renew_every, entry.lease_length)
        entry.next_renewal = next_renewal(since, every, entry.lease_end, entry.lease_length)

    def renewed(self, key: ClaimKey, sent_at: float, lease_length: float) -> JobEntry | None:
        """The engine extended the lease of that claim (asked at ``sent_at``)."""
        entry = self.holds(key)
        if entry is None:
            return None
        entry.renewal_pending = False
        entry.renewal_failures = 0
        entry.lease_length = lease_length
        entry.lease_end = renewed_lease_end(entry.lease_end, sent_at, lease_length)
        entry.overrun_logged = False
        self._plan_renewal(entry, sent_at)
        return entry

    def renewal_failed(self, key: ClaimKey, now: float, wait: float) -> JobEntry | None:
        """A renewal of that claim got no answer: try again after ``wait``,
        inside the lease while there is lease left."""
        entry = self.holds(key)
        if entry is None:
            return None
        entry.renewal_pending = False
        entry.renewal_failures += 1
        entry.next_renewal = renewal_retry_at(now, wait, entry.lease_end)
        return entry

    def stop_renewals(self) -> None:
        """The engine cannot renew leases after all."""
        self.renew_every = None
        for entry in self._jobs.values():
            entry.next_renewal = math.inf
            entry.renewal_pending = False

    def finish(self, job_id: str, now: float = 0.0) -> JobEntry | None:
        """The job's outcome is decided (at ``now``) and goes to the reporter."""
        entry = self._jobs.get(job_id)
        if entry is None or entry.state is not JobState.RUNNING:
            return None
        entry.state = JobState.REPORTING
        entry.slot = None
        entry.reported_at = now
        return entry

    def stale_check_done(self, key: ClaimKey, now: float) -> JobEntry | None:
        """A staleness check of that claim came back live (or unknown): check
        again later."""
        entry = self.holds(key)
        if entry is None:
            return None
        entry.stale_check_pending = False
        entry.next_stale_check = now + self.stale_interval
        return entry

    def release(self, job_id: str, now: float = 0.0) -> JobEntry | None:
        """The job leaves the ledger: its report was answered (or given up,
        withheld, stale), or it was dropped before or while it ran. A next
        attempt held behind it takes its place as a claimed job (claimed at
        ``now``; one whose lease has passed is dropped at dispatch)."""
        entry = self._jobs.pop(job_id, None)
        if entry is not None and entry.next_attempt is not None:
            attempt = entry.next_attempt
            self._attempts_held -= 1
            self._enter(
                attempt.context, attempt.lease_end, now, attempt.lease_length, attempt.origin
            )
        return entry


def _retries(context: dict[str, Any]) -> int | None:
    retries = context.get("retriesRemaining")
    return retries if isinstance(retries, int) else None


def _is_next_attempt(context: dict[str, Any], held: JobEntry) -> bool:
    """A delivery of a held job is the engine's retry, not a re-delivery of
    the same attempt, when the fail we are reporting has reached the engine:
    a retry carries one retry less, a re-delivery after a lease the same
    count (the engine's rules). Only a REPORTING entry can have a retry."""
    retries = _retries(context)
    return (
        held.state is JobState.REPORTING
        and held.next_attempt is None
        and retries is not None
        and retries < held.retries_remaining
    )


def _redelivers_held_attempt(context: dict[str, Any], held: JobEntry) -> bool:
    """A delivery of a job whose next attempt is held is that attempt again
    (its lease passed: the same retry count), or a later one (another worker
    had it meanwhile and failed it: fewer retries). Either way the engine's
    newest delivery is the one to run."""
    if held.next_attempt is None:
        return False
    retries, waiting = _retries(context), _retries(held.next_attempt.context)
    return retries is not None and waiting is not None and retries <= waiting


__all__ = ["ClaimKey", "ClaimVerdict", "JobEntry", "JobLedger", "JobState", "NextAttempt"]
