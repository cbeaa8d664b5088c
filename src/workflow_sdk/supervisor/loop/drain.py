"""The graceful stop (SIGTERM, SIGINT, ``request_stop``), one tick at a time.

No new claims; idle workers are told to exit once no poll is in flight (its
jobs would have no worker left); a job still running when the drain's time
(``graceful_timeout``) or its lease is up is abandoned to the engine's lease
expiry; jobs claimed and never started are dropped. Each ``step`` says
whether workers are left; once none is, it gives the reports what is left
of the drain time, and says the supervisor is done. Every worker told to go has a
deadline (``slots.WorkerSlot.overdue``), so the workers are gone at the
latest ``EXIT_GRACE`` + ``KILL_GRACE`` after the drain's time. A second
signal stops at once (``Stopper.abandon_all``).
"""

from __future__ import annotations

import enum
import logging

from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.ledger import JobLedger, JobState
from workflow_sdk.supervisor.loop.pool import WorkerPool
from workflow_sdk.supervisor.loop.reports import ReportDesk
from workflow_sdk.supervisor.loop.slots import SlotState
from workflow_sdk.supervisor.loop.stops import KILL_GRACE, Stopper

log = logging.getLogger("workflow_sdk.supervisor")


class DrainStep(enum.Enum):
    #: workers (or a poll's answer) are still to come: step again next tick
    WAIT = "wait"
    #: every worker is gone and the reports were given their time: stop
    DONE = "done"


class Drain:
    """The graceful stop's steps (see the module doc)."""

    def __init__(
        self,
        pool: WorkerPool,
        ledger: JobLedger,
        intake: Intake,
        stopper: Stopper,
        *,
        desk: ReportDesk,
        stats: SupervisorStats,
    ) -> None:
        self.pool = pool
        self.ledger = ledger
        self.intake = intake
        self.stopper = stopper
        self.desk = desk
        self.stats = stats
        #: monotonic time at which running jobs are abandoned
        self.deadline = 0.0

    def begin(self, why: str, now: float, graceful_timeout: float) -> None:
        self.intake.disarm()  # a poll not yet sent claims nothing now
        self.pool.abort_reload()
        self.deadline = now + graceful_timeout
        log.info(
            "%s: stopping; waiting up to %g s for %d running jobs",
            why,
            graceful_timeout,
            self.ledger.count(JobState.RUNNING),
        )

    def remaining(self, now: float) -> float:
        """Seconds left of the drain's time."""
        return max(0.0, self.deadline - now)

    def step(self, now: float) -> DrainStep:
        poll_in_flight = self.intake.poll_in_flight
        # An idle worker waits for the poll in flight (its jobs would have no
        # worker left), but not past the drain's time: they would only be
        # abandoned then, and the worker's exit must not wait for the poll.
        keep_idle = poll_in_flight and now < self.deadline
        for slot in list(self.pool.slots.values()):
            entry = slot.job
            if entry is not None and now >= min(self.deadline, entry.lease_end):
                # If its result was already sent, the worker is idle now:
                # told to exit below.
                self.stopper.abandon(slot, entry, now)
            if slot.state is SlotState.IDLE and not keep_idle:
                slot.close_channel(now, "shutdown")
            elif slot.state is SlotState.BOOTING:
                slot.terminate(now, KILL_GRACE)
        if poll_in_flight:
            return DrainStep.WAIT
        for entry in self.ledger.claimed():
            # Claimed by the last poll, never started: the lease returns them
            # (Kafka: the uncommitted record does).
            self.intake.drop(entry, done=False)
            self.stats.abandoned += 1
        if self.pool.slots:
            return DrainStep.WAIT
        # Every worker is gone: give the reports what is left of the drain time.
        if not self.desk.wait_idle(self.remaining(now)):
            log.error(
                "%d reports still undelivered at the end of graceful_timeout; giving up",
                self.desk.pending(),
            )
        return DrainStep.DONE


__all__ = ["Drain", "DrainStep"]
