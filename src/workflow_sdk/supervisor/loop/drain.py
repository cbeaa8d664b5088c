"""The graceful stop (SIGTERM, SIGINT, ``request_stop``), one tick at a time.

No new claims; idle workers are told to exit once no poll is in flight (its
jobs would have no worker left); a job still running when the drain's time
(``graceful_timeout``) or its lease is up is abandoned to the engine's lease
expiry; jobs claimed and never started are dropped. Each ``step`` says
whether workers are left; once none is, the arbiter gives the reports what
is left of the drain time and stops. Every worker told to go has a
deadline (``slots.WorkerSlot.overdue``), so the workers are gone at the
latest ``EXIT_GRACE`` + ``KILL_GRACE`` after the drain's time. A second
signal stops at once (``Stops.abandon_all``).
"""

from __future__ import annotations

import enum
import logging

from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.ledger import JobLedger, JobState
from workflow_sdk.supervisor.loop.pool import WorkerPool
from workflow_sdk.supervisor.loop.slots import SlotState
from workflow_sdk.supervisor.loop.stops import KILL_GRACE, Stops

log = logging.getLogger("workflow_sdk.supervisor")


class DrainStep(enum.Enum):
    #: workers (or a poll's answer) are still to come: step again next tick
    WAIT = "wait"
    #: every worker is gone: wait for the reports, then stop
    WORKERS_GONE = "workers_gone"


class Drain:
    def __init__(
        self,
        pool: WorkerPool,
        ledger: JobLedger,
        intake: Intake,
        stops: Stops,
        stats: SupervisorStats,
    ) -> None:
        self.pool = pool
        self.ledger = ledger
        self.intake = intake
        self.stops = stops
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
        source = self.intake.source
        poll_in_flight = source is not None and source.busy
        # An idle worker waits for the poll in flight (its jobs would have no
        # worker left), but not past the drain's time: they would only be
        # abandoned then, and the worker's exit must not wait for the poll.
        keep_idle = poll_in_flight and now < self.deadline
        for slot in list(self.pool.slots.values()):
            entry = slot.job
            if entry is not None and now >= min(self.deadline, entry.lease_end):
                # If its result was already sent, the worker is idle now:
                # told to exit below.
                self.stops.abandon(slot, entry, now)
            if slot.state is SlotState.IDLE and not keep_idle:
                slot.exit_reason = slot.exit_reason or "shutdown"
                slot.close_channel(now)
            elif slot.state is SlotState.BOOTING:
                slot.terminate(now, KILL_GRACE)
        if poll_in_flight:
            return DrainStep.WAIT
        for entry in self.ledger.claimed():
            # Claimed by the last poll, never started: the lease returns them
            # (Kafka: the uncommitted record does).
            self.intake.drop(entry, done=False)
            self.stats.abandoned += 1
        return DrainStep.WAIT if self.pool.slots else DrainStep.WORKERS_GONE


__all__ = ["Drain", "DrainStep"]
