"""The stopper: workers whose job must end before its handler returns, and the job's fate.

A running job ends early when its worker crashed, passed the job's time
limit or the hard memory limit (the job is failed retryable, after the
stale check), when the engine says the job no longer matters or gave its
lease to someone else (dropped, nothing reported: ``watch.StopJob``), or at
shutdown (dropped and left to its lease). Before any of these stops, what
the worker already sent is read (``finished_meanwhile``): a result that was
on its channel is the job's outcome, and there is nothing left to stop.
Workers told to go are escalated on time: cancel signal, SIGTERM, SIGKILL;
one told to exit by its closed channel gets SIGTERM ``EXIT_GRACE`` later.

The stopper signals processes (through their slots) but never starts one:
that is the arbiter's.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable

from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.staleness import RETIRE_REASONS
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.joblog import log_stopped
from workflow_sdk.supervisor.loop.ledger import ClaimKey, JobEntry, JobLedger
from workflow_sdk.supervisor.loop.pool import WorkerPool
from workflow_sdk.supervisor.loop.reports import ReportDesk
from workflow_sdk.supervisor.loop.slots import EXIT_GRACE, Overdue, WorkerSlot
from workflow_sdk.supervisor.loop.stack_dumps import StackDumps
from workflow_sdk.supervisor.loop.watch import RunningJobWatch, StopJob
from workflow_sdk.supervisor.worker.main import CANCEL_SIGNAL
from workflow_sdk.supervisor.worker.process_setup import DUMP_SIGNAL, DUMP_SIGNAL_NAME

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
#: Seconds between the stack-dump signal and SIGTERM: the dump is written
#: from the signal handler at once (milliseconds); this leaves it time to
#: reach the worker's dump file before the process is stopped (the parent
#: logs the file once the worker has exited: ``stack_dumps``).
DUMP_GRACE = 0.5


class Stopper:
    """Stops jobs before their handler returns, and the workers told to go
    (see the module doc).

    :param watch: the stale checks and lease renewals of running jobs, whose
        verdicts stop jobs (``take_watch_verdicts``).
    :param collect: takes everything a worker has sent so far, its result
        included (the arbiter's reading of its channel).
    :param dumps: told why each stack dump is asked for (the job it stops),
        so that its record names the job (default: nowhere to tell).
    """

    def __init__(
        self,
        pool: WorkerPool,
        ledger: JobLedger,
        intake: Intake,
        desk: ReportDesk,
        stats: SupervisorStats,
        *,
        watch: RunningJobWatch,
        collect: Callable[[WorkerSlot], None],
        dumps: StackDumps | None = None,
    ) -> None:
        self.pool = pool
        self.ledger = ledger
        self.intake = intake
        self.desk = desk
        self.stats = stats
        self.watch = watch
        self.collect = collect
        self.dumps = dumps or StackDumps(None)

    def slot_of(self, entry: JobEntry) -> WorkerSlot | None:
        """The worker running ``entry``, if one still is."""
        slot = self.pool.slots.get(entry.slot) if entry.slot is not None else None
        return slot if slot is not None and slot.job is entry else None

    # -- escalation ----------------------------------------------------------------

    def next_deadline(self) -> float:
        """The earliest escalation or boot deadline of any worker (``inf``: none)."""
        deadline = math.inf
        for slot in self.pool.slots.values():
            due = slot.next_deadline()
            if due is not None:
                deadline = min(deadline, due)
        return deadline

    def enforce_slots(self, now: float, boot_timeout: float) -> None:
        """Closed channel or cancel signal -> SIGTERM -> SIGKILL on time; kill
        workers that do not boot."""
        for slot in list(self.pool.slots.values()):
            step = slot.escalate(now, KILL_GRACE)
            if step is Overdue.EXIT:
                # Its exit should take milliseconds: something on its way out
                # blocks. Said once; the SIGKILL that may follow is not.
                log.warning(
                    "worker-%d (pid %d) did not exit within %g s of being told to (%s); "
                    "sending SIGTERM, and SIGKILL %g s later if it is still alive "
                    "(something in the handler code blocks its exit)",
                    slot.number,
                    slot.pid,
                    EXIT_GRACE,
                    slot.exit_reason or "stopping",
                    KILL_GRACE,
                )
            elif step is Overdue.KILL and not slot.exit_overdue:
                log.warning(
                    "worker-%d (pid %d) still alive after SIGTERM; sending SIGKILL",
                    slot.number,
                    slot.pid,
                )
        for slot in self.pool.boot_overdue(now):
            slot.boot_failed(
                f"not ready after {boot_timeout:g} s (boot_timeout); does importing "
                "the handlers (or the hooks' worker_init) hang?"
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

    # -- before any stop ----------------------------------------------------------------

    def finished_meanwhile(self, slot: WorkerSlot, entry: JobEntry) -> bool:
        """Read what the worker already sent, before its job is stopped for any
        reason; True when ``entry``'s result was there.

        That result is then the job's outcome, reported as if it had been read
        a moment earlier (the worker is idle again, or retired by its recycle
        rules), and there is nothing left to stop: killing the worker for a
        job it had finished would throw a success away and run the job again.
        """
        self.collect(slot)
        return slot.job is not entry

    # -- failed ----------------------------------------------------------------------

    def fail_running(
        self, slot: WorkerSlot, entry: JobEntry, message: str, reason: str, now: float
    ) -> None:
        """The one path for a job whose worker we stop or lost: crash, timeout,
        memory kill. The job is failed retryable (after the stale check) and
        counted like a handler's failure; the slot is replaced."""
        slot.lose_job(reason)
        self.ledger.finish(entry.job_id, now)
        outcome = Outcome.failure(
            entry.job_id, entry.job_type, message, retryable=True, duration=now - entry.started_at
        )
        self.desk.report(outcome, entry, slot.number)

    def time_out(self, slot: WorkerSlot, entry: JobEntry, now: float) -> None:
        if self.finished_meanwhile(slot, entry):
            return
        message = (
            f"timed out after {entry.timeout:g} s (worker pid {slot.pid} killed; "
            "the stacks of its threads are logged when it exits)"
        )
        log.warning(
            "worker-%d (pid %d) passed the time limit of job %s (%s); stopping it (the "
            "stacks of its threads are logged when it exits)",
            slot.number,
            slot.pid,
            entry.job_id,
            entry.job_type,
        )
        slot.dump_then_terminate(DUMP_SIGNAL, now, DUMP_GRACE)
        self.dumps.expect(slot, entry, "at the time limit of")
        self.fail_running(slot, entry, message, "timeout", now)

    def kill_for_memory(
        self,
        slot: WorkerSlot,
        entry: JobEntry,
        now: float,
        limit: float,
        setting: str = "max_memory_hard_mb",
    ) -> None:
        """``slot``'s memory is over ``limit`` MiB (named ``setting`` in the log)."""
        # The sample over the limit (a result read now brings its own RSS).
        memory = slot.memory_text()
        if self.finished_meanwhile(slot, entry):
            if not slot.retiring:
                log.warning(
                    "worker-%d %s, over %s = %g, and has just finished its "
                    "job (its result is kept); replacing it",
                    slot.number,
                    memory,
                    setting,
                    limit,
                )
                slot.retire("recycle_memory", now)
            return
        message = (
            f"worker pid {slot.pid} (worker-{slot.number}) killed: it {memory}, "
            f"over {setting} = {limit:g}"
        )
        slot.kill()
        self.fail_running(slot, entry, message, "memory_kill", now)

    # -- dropped ---------------------------------------------------------------------

    def take_watch_verdicts(self) -> None:
        now = time.monotonic()
        for stop in self.watch.take(now):
            # The claim the verdict was asked for, not a later attempt of the job.
            entry = self.ledger.holds(ClaimKey(stop.job_id, stop.claim_no))
            slot = self.slot_of(entry) if entry is not None else None
            if entry is not None and slot is not None:
                self.stop_running(slot, entry, stop, now)

    def stop_running(self, slot: WorkerSlot, entry: JobEntry, stop: StopJob, now: float) -> None:
        """The job no longer matters, or is no longer ours: stop its worker,
        report no result (a fail could fail the instance; the lease's new
        holder reports the job); a job of a cancelled or finished instance is
        retired with an empty completion. A result the worker had already sent is
        reported as any other (``finished_meanwhile``), except a fail after a
        lost lease: the job may run elsewhere already."""
        if stop.reason == "lease_lost":
            # The lease is over, whatever our clock said: the lease rule then
            # withholds a fail the worker already sent (a completion still
            # goes: the engine accepts late ones).
            entry.lease_end = min(entry.lease_end, now)
        if self.finished_meanwhile(slot, entry):
            return
        retire = stop.reason == "stale" and stop.stale_reason in RETIRE_REASONS
        log_stopped(entry, slot.number, stop.reason == "stale", stop.detail, retire=retire)
        if retire:
            # Its instance is over: an empty completion retires the job (else
            # the engine hands it out again after every lease). Reported as
            # any outcome: no longer RUNNING (no stale check or time limit
            # acts on its slot again), released by the report's answer.
            self.ledger.finish(entry.job_id, now)
            self.desk.retire(entry, slot.number)
        else:
            # Stale: its record is done (nothing will ever report it). Lease
            # lost: the lease's new holder reports it.
            self.intake.drop(entry, done=True)
        if stop.reason == "stale":
            self.desk.count_stale(entry, stop.stale_reason)
        else:
            self.stats.leases_lost += 1
        # The courtesy first (the handler's cancelEvent), then, after a short
        # grace in which the handler may clean up and return, the stop.
        slot.cancel(stop.reason, CANCEL_SIGNAL, now, CANCEL_GRACE)

    def abandon(self, slot: WorkerSlot, entry: JobEntry, now: float) -> None:
        """Stop a job we may not finish; the engine redelivers it after its lease.

        Failing it instead would burn one of its retries (or fail the instance)
        for what is only a restart of this worker. A result the worker had
        already sent is reported instead; the drain then closes its channel.
        """
        if self.finished_meanwhile(slot, entry):
            return
        log.warning(
            "job %s (%s) still running at shutdown; killing worker-%d (the stacks of its "
            "threads are logged when it exits, dumped on %s) and leaving the job to the "
            "engine's lease expiry",
            entry.job_id,
            entry.job_type,
            slot.number,
            DUMP_SIGNAL_NAME,
        )
        slot.abandon_job()
        self.intake.drop(entry, done=False)
        self.stats.abandoned += 1
        slot.dump_then_terminate(DUMP_SIGNAL, now, DUMP_GRACE, ABANDON_GRACE)
        self.dumps.expect(slot, entry, "at shutdown, still running")

    def abandon_all(self, now: float) -> None:
        """Stop every worker now; their jobs are left to the engine's lease
        (a result already sent is reported, if the reporters still can)."""
        for slot in list(self.pool.slots.values()):
            if slot.job is not None:
                self.finished_meanwhile(slot, slot.job)
            entry = slot.abandon_job()
            if entry is not None:
                self.stats.abandoned += 1
                self.intake.drop(entry, done=False)
            slot.terminate(now, ABANDON_GRACE)


__all__ = ["ABANDON_GRACE", "CANCEL_GRACE", "DUMP_GRACE", "EXIT_GRACE", "KILL_GRACE", "Stopper"]
