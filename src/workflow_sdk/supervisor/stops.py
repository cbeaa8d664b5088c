"""Stops: workers whose job must end before its handler returns, and the job's fate.

A running job ends early when its worker crashed, passed the job's time
limit or the hard memory limit (the job is failed retryable, after the
stale check), when the engine says the job no longer matters or gave its
lease to someone else (dropped, nothing reported: ``watch.StopJob``), or at
shutdown (dropped and left to its lease). Workers told to go are escalated
on time: cancel signal, SIGTERM, SIGKILL.

These objects signal processes but never start one: that is the arbiter's.
"""

from __future__ import annotations

import logging
import math
import signal
import time

from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.supervisor.intake import Intake
from workflow_sdk.supervisor.joblog import log_stopped
from workflow_sdk.supervisor.jobs import ClaimKey, JobEntry, JobLedger
from workflow_sdk.supervisor.pool import WorkerPool
from workflow_sdk.supervisor.results import Results
from workflow_sdk.supervisor.slots import SlotState, WorkerSlot
from workflow_sdk.supervisor.stats import SupervisorStats
from workflow_sdk.supervisor.watch import JobWatch, StopJob
from workflow_sdk.supervisor.worker import CANCEL_SIGNAL

log = logging.getLogger("workflow_sdk.supervisor")

#: Seconds between SIGTERM and SIGKILL when a worker must go.
KILL_GRACE = 3.0
#: Seconds between the cancel signal (the handler's ``cancelEvent``) and
#: SIGTERM for a job that no longer matters: time for a handler that watches
#: the event to clean up and return.
CANCEL_GRACE = 1.0
#: Seconds between SIGTERM and SIGKILL for a worker whose job is given up
#: at shutdown.
ABANDON_GRACE = 1.0


class Stops:
    def __init__(
        self,
        pool: WorkerPool,
        ledger: JobLedger,
        intake: Intake,
        results: Results,
        stats: SupervisorStats,
    ) -> None:
        self.pool = pool
        self.ledger = ledger
        self.intake = intake
        self.results = results
        self.stats = stats
        #: Stale checks and lease renewals of running jobs (set up with the client).
        self.watch: JobWatch | None = None

    def slot_of(self, entry: JobEntry) -> WorkerSlot | None:
        """The worker running ``entry``, if one still is."""
        slot = self.pool.slots.get(entry.slot) if entry.slot is not None else None
        return slot if slot is not None and slot.job is entry else None

    # -- escalation ----------------------------------------------------------------

    def next_deadline(self) -> float:
        """The earliest escalation or boot deadline of any worker (``inf``: none)."""
        deadline = math.inf
        for slot in self.pool.slots.values():
            if slot.kill_at is not None:
                deadline = min(deadline, slot.kill_at)
            if slot.term_at is not None:
                deadline = min(deadline, slot.term_at)
            if slot.state is SlotState.BOOTING:
                deadline = min(deadline, slot.boot_deadline)
        return deadline

    def enforce_slots(self, now: float, boot_timeout: float) -> None:
        """Cancel signal -> SIGTERM -> SIGKILL on time; kill workers that do not boot."""
        for slot in list(self.pool.slots.values()):
            if slot.term_at is not None and now >= slot.term_at:
                slot.term_at = None
                slot.terminate(now, KILL_GRACE)
            if slot.kill_at is not None and now >= slot.kill_at:
                log.warning(
                    "worker-%d (pid %d) still alive after SIGTERM; sending SIGKILL",
                    slot.slot,
                    slot.pid,
                )
                slot.send_signal(signal.SIGKILL)
                slot.kill_at = None
        for slot in self.pool.boot_overdue(now):
            slot.boot_error = (
                f"not ready after {boot_timeout:g} s "
                "(boot_timeout); does importing the handlers hang?"
            )
            slot.send_signal(signal.SIGKILL)

    def log_overruns(self, now: float) -> None:
        for entry in self.ledger.overrun(now):
            self.stats.lease_overruns += 1
            log.warning(
                "job %s (%s) has run %.1f s, past its lease: the engine may hand it "
                "to another worker (set a [job_types] timeout below the lease)",
                entry.job_id,
                entry.job_type,
                now - entry.started_at,
            )

    # -- failed ----------------------------------------------------------------------

    def fail_running(
        self, slot: WorkerSlot, entry: JobEntry, message: str, reason: str, now: float
    ) -> None:
        """The one path for a job whose worker we stop or lost: crash, timeout,
        memory kill. The job is failed retryable (after the stale check) and
        counted like a handler's failure; the slot is replaced."""
        slot.job = None
        slot.exit_reason = slot.exit_reason or reason
        slot.exit_job_type = entry.job_type
        self.ledger.finish(entry.job_id, now)
        outcome = Outcome.failure(
            entry.job_id, entry.job_type, message, retryable=True, duration=now - entry.started_at
        )
        self.results.report(outcome, entry, slot.slot)

    def time_out(self, slot: WorkerSlot, entry: JobEntry, now: float) -> None:
        message = f"timed out after {entry.timeout:g} s (worker pid {slot.pid} killed)"
        slot.retiring = True
        slot.terminate(now, KILL_GRACE)
        self.fail_running(slot, entry, message, "timeout", now)

    def kill_for_memory(self, slot: WorkerSlot, entry: JobEntry, now: float, limit: float) -> None:
        message = (
            f"worker pid {slot.pid} (worker-{slot.slot}) killed: RSS reached "
            f"{slot.rss_bytes / 2**20:.0f} MiB, over max_memory_hard_mb = {limit:g}"
        )
        slot.retiring = True
        slot.state = SlotState.STOPPING
        slot.send_signal(signal.SIGKILL)
        self.fail_running(slot, entry, message, "recycle_memory", now)

    # -- dropped ---------------------------------------------------------------------

    def take_watch_verdicts(self) -> None:
        if self.watch is None:
            return
        now = time.monotonic()
        for stop in self.watch.take(now):
            # The claim the verdict was asked for, not a later attempt of the job.
            entry = self.ledger.holds(ClaimKey(stop.job_id, stop.claim_no))
            slot = self.slot_of(entry) if entry is not None else None
            if entry is not None and slot is not None:
                self.stop_running(slot, entry, stop, now)

    def stop_running(self, slot: WorkerSlot, entry: JobEntry, stop: StopJob, now: float) -> None:
        """The job no longer matters, or is no longer ours: stop its worker,
        report nothing (a fail could fail the instance; the lease's new
        holder reports the job)."""
        log_stopped(entry, slot.slot, stop.reason == "stale", stop.detail)
        # Stale: its record is done (nothing will ever report it). Lease lost:
        # the lease's new holder reports it.
        self.intake.drop(entry, done=True)
        if stop.reason == "stale":
            self.results.count_stale(entry, stop.stale_reason)
        else:
            self.stats.leases_lost += 1
        slot.job = None
        slot.retiring = True
        slot.exit_reason = stop.reason
        slot.exit_job_type = entry.job_type
        # The courtesy first (the handler's cancelEvent), then, after a short
        # grace in which the handler may clean up and return, the stop.
        slot.send_signal(CANCEL_SIGNAL)
        slot.state = SlotState.STOPPING
        slot.term_at = now + CANCEL_GRACE

    def abandon(self, slot: WorkerSlot, entry: JobEntry, now: float) -> None:
        """Stop a job we may not finish; the engine redelivers it after its lease.

        Failing it instead would burn one of its retries (or fail the instance)
        for what is only a restart of this worker.
        """
        log.warning(
            "job %s (%s) still running at shutdown; killing worker-%d and leaving the "
            "job to the engine's lease expiry",
            entry.job_id,
            entry.job_type,
            slot.slot,
        )
        slot.job = None
        self.intake.drop(entry, done=False)
        self.stats.abandoned += 1
        slot.terminate(now, ABANDON_GRACE)

    def abandon_all(self, now: float) -> None:
        """Stop every worker now; their jobs are left to the engine's lease."""
        for slot in list(self.pool.slots.values()):
            if slot.job is not None:
                self.stats.abandoned += 1
                self.intake.drop(slot.job, done=False)
                slot.job = None
            slot.terminate(now, ABANDON_GRACE)


__all__ = ["CANCEL_GRACE", "KILL_GRACE", "Stops"]
