"""A worker's lifecycle as the parent sees it: its record, ready, recycled, gone.

The arbiter starts each process (it is the only place that does) and hands
the rest here: the slot record of a started process, what a worker's
"ready" means, its memory samples (``sample_rss``: a verdict on the workers
over the hard limit and the idle ones a recycle rule may retire) and when it
is due for replacement, what its exit means for its job and the restart
counts, and the final reaping. Boot failures end in the pool's verdict
(``pool.BootVerdict``), which the arbiter carries out.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import psutil

from workflow_sdk.supervisor.config import (
    SupervisorConfig,
    SupervisorSection,
    unhandled_job_types,
)
from workflow_sdk.supervisor.exposition.logs import DETAILS
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.loop.pool import BootVerdict, RecyclePolicy, WorkerPool
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot, describe_exit
from workflow_sdk.supervisor.loop.stops import KILL_GRACE, Stopper
from workflow_sdk.supervisor.loop.type_limits import TypeLimits
from workflow_sdk.supervisor.worker.protocol import Ready

log = logging.getLogger("workflow_sdk.supervisor")

#: Seconds between RSS samples of busy workers.
RSS_SAMPLE_INTERVAL = 1.0


def recycle_policy(settings: SupervisorSection) -> RecyclePolicy:
    return RecyclePolicy(
        settings.max_jobs_per_child, settings.max_jobs_jitter, settings.max_memory_mb
    )


def process_handle(pid: int) -> psutil.Process | None:
    """The worker's process as psutil sees it (its memory samples), if it
    can be opened."""
    try:
        return psutil.Process(pid)
    except (psutil.Error, OSError):  # OSError: out of file descriptors
        return None


@dataclass(frozen=True)
class MemoryVerdict:
    """What one round of RSS samples asks of the arbiter."""

    #: workers running a job with RSS over the hard limit: kill, fail the job
    kill: list[WorkerSlot]
    #: idle workers with a fresh sample: check whether to recycle them
    idle: list[WorkerSlot]


def sample_rss(
    slots: Iterable[WorkerSlot],
    hard_limit_bytes: float,
    type_limits: Mapping[str, float] | None = None,
) -> MemoryVerdict:
    """Read each worker's RSS (recorded in its slot); judge it against the
    hard limit (0 = none), during jobs too: ``type_limits`` (job type ->
    bytes) for a worker running a type with a limit of its own."""
    kill: list[WorkerSlot] = []
    idle: list[WorkerSlot] = []
    for slot in slots:
        if slot.ps is None or slot.state is SlotState.STOPPING:
            continue
        try:
            rss = slot.ps.memory_info().rss
        except (psutil.Error, OSError):
            # Gone; or /proc could not be opened (EMFILE: out of file
            # descriptors): keep the last sample, try again next round.
            continue
        if rss == 0:
            continue  # exited and not yet reaped: keep the last real sample
        slot.sampled(rss)
        limit = hard_limit_bytes
        if type_limits and slot.job is not None:
            limit = type_limits.get(slot.job.job_type, hard_limit_bytes)
        if limit and slot.job is not None and rss > limit:
            kill.append(slot)
        elif slot.state is SlotState.IDLE:
            idle.append(slot)
    return MemoryVerdict(kill, idle)


class WorkerLifecycle:
    """Records, readiness, recycling, memory and exits of the workers (see
    the module doc)."""

    def __init__(self, pool: WorkerPool, stopper: Stopper, stats: SupervisorStats) -> None:
        self.pool = pool
        self.stopper = stopper
        self.stats = stats
        #: monotonic time of the next RSS samples (the loop checks it each tick)
        self.next_rss_sample = 0.0

    def started(
        self,
        slot_no: int,
        process: BaseProcess,
        conn: Connection,
        settings: SupervisorSection,
        *,
        surge: bool,
    ) -> WorkerSlot:
        """The record of a worker process just started; it joins the pool."""
        now = time.monotonic()
        slot = WorkerSlot(
            slot_no,
            process,
            conn,
            now + settings.boot_timeout,
            ps=process_handle(process.pid or 0),
            surge=surge,
            max_jobs=recycle_policy(settings).draw_max_jobs(),
        )
        self.pool.add(slot)
        log.debug("worker-%d started, pid %d", slot_no, slot.pid)
        return slot

    def on_ready(self, slot: WorkerSlot, ready: Ready, config: SupervisorConfig) -> None:
        if not self.pool.ever_booted:
            for warning in unhandled_job_types(config, ready.job_types):
                log.warning(warning)
        self.pool.on_ready(slot, ready.job_types)
        log.info(
            "worker-%d ready, pid %d, job types: %s",
            slot.number,
            ready.pid,
            ", ".join(ready.job_types),
        )
        if slot.retiring:
            slot.close_channel(time.monotonic())

    def check_recycle(
        self, slot: WorkerSlot, settings: SupervisorSection, limits: TypeLimits | None = None
    ) -> None:
        """Retire the worker after its current job when a recycle rule says so
        (the memory limit of the type of its last job, with ``limits``)."""
        policy = recycle_policy(settings)
        setting = "max_memory_mb"
        if limits is not None and limits.memory_by_type:
            soft = limits.memory(slot.last_job_type).soft_mb
            policy = dataclasses.replace(policy, max_memory_mb=soft)
            setting = limits.memory_setting(setting, slot.last_job_type)
        reason = self.pool.recycle_reason(slot, policy)
        if reason == "recycle_jobs":
            log.info("worker-%d ran %d jobs; replacing it", slot.number, slot.jobs_done)
        elif reason == "recycle_memory":
            log.warning(
                "worker-%d uses %.0f MiB, over %s = %g; replacing it",
                slot.number,
                slot.rss_bytes / 2**20,
                setting,
                policy.max_memory_mb,
            )
        if reason is not None:
            slot.retire(reason, time.monotonic())

    def sample_memory(
        self, now: float, settings: SupervisorSection, limits: TypeLimits | None = None
    ) -> None:
        """Read each worker's RSS; enforce the memory limits during jobs too
        (a job type's own, with ``limits``)."""
        by_type = None
        if limits is not None and limits.memory_by_type:
            by_type = limits.hard_limits_bytes()
        hard_mb = settings.memory_hard_limit_mb
        verdict = sample_rss(list(self.pool.slots.values()), hard_mb * 2**20, by_type)
        for slot in verdict.kill:
            entry = slot.job
            if entry is None:
                continue
            if by_type and limits is not None:
                type_hard = limits.memory(entry.job_type).hard_mb
                setting = limits.memory_setting("max_memory_hard_mb", entry.job_type)
                self.stopper.kill_for_memory(slot, entry, now, type_hard, setting)
            else:
                self.stopper.kill_for_memory(slot, entry, now, hard_mb)
        for slot in verdict.idle:
            self.check_recycle(slot, settings, limits)
        self.next_rss_sample = now + min(RSS_SAMPLE_INTERVAL, settings.memory_check_interval)

    def on_exit(self, slot: WorkerSlot, *, draining: bool) -> str | None:
        """The worker's process has ended (and was joined): it leaves the pool,
        its job is failed. Returns the boot error when it died before it was
        ready (the arbiter then asks ``boot_failed``), else None."""
        how, signum = describe_exit(slot.process.exitcode)
        self.pool.remove(slot)
        slot.conn.close()
        now = time.monotonic()
        entry = slot.job
        if entry is not None:
            message = (
                f"worker pid {slot.pid} (worker-{slot.number}) {how} after "
                f"{now - entry.started_at:.1f} s running this job; "
                f"last RSS {slot.rss_bytes / 2**20:.0f} MiB"
            )
            if signum == signal.SIGKILL and signal.SIGKILL not in slot.signals_sent:
                message += "; likely killed by the OOM killer"
            self.stopper.fail_running(slot, entry, message, "crash", now)
        elif slot.state is SlotState.BOOTING and not slot.retiring:
            return slot.boot_error or f"worker {how} before it was ready"
        elif not draining and not slot.exit_reason:
            log.warning("worker-%d (pid %d) %s while idle", slot.number, slot.pid, how)
            slot.crashed_idle()
        else:
            log.debug("worker-%d (pid %d) %s", slot.number, slot.pid, how)
        if slot.exit_reason and not draining:
            self.stats.record_restart(slot.exit_reason, slot.exit_job_type)
        return None

    def reap_all(self, now: float) -> None:
        """At the very end: every worker told to go, joined (SIGKILL after
        ``KILL_GRACE``), and out of the pool."""
        slots = list(self.pool.slots.values())
        for slot in slots:
            if slot.process.is_alive() and signal.SIGTERM not in slot.signals_sent:
                slot.terminate(now, KILL_GRACE)
        for slot in slots:
            slot.process.join(KILL_GRACE)
            if slot.process.is_alive():
                slot.send_signal(signal.SIGKILL)
                slot.process.join(5.0)
            slot.conn.close()
            self.pool.remove(slot)

    def boot_failed(self, slot_no: int, error: str, *, surge: bool) -> BootVerdict:
        # A traceback from the worker: its last line here, the whole of it below.
        summary = error.strip().splitlines()[-1:] or ["unknown error"]
        details = error if "\n" in error.strip() else ""
        log.error("worker-%d could not start: %s", slot_no, summary[0], extra={DETAILS: details})
        verdict = self.pool.on_boot_failure(surge)
        if verdict is BootVerdict.ABORT_RELOAD:
            log.error("reload aborted: the new workers cannot start; the old ones keep running")
        elif verdict is BootVerdict.GIVE_UP:
            log.critical("workers cannot start; stopping the supervisor")
        return verdict


__all__ = [
    "RSS_SAMPLE_INTERVAL",
    "MemoryVerdict",
    "WorkerLifecycle",
    "process_handle",
    "recycle_policy",
    "sample_rss",
]
