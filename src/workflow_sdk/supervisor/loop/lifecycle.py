"""A worker's lifecycle as the parent sees it: its record, ready, recycled, gone.

The arbiter starts each process (it is the only place that does) and hands
the rest here: the slot record of a started process, what a worker's
"ready" means, its memory samples (``sample_memory``: a verdict on the
workers over the hard limit, over the warning threshold, and the idle ones a
recycle rule may retire) and when it is due for replacement, what its exit
means for its job and the restart counts (and the ``child_exit`` hook), and
the final reaping. Boot failures end in the pool's verdict
(``pool.BootVerdict``), which the arbiter carries out.

Memory: the limits count what a worker owns (``WorkerSlot.owned_bytes``),
not its RSS, which counts in full the pages it shares with the fork server
and the other workers (a preloaded model); see ``memory_watch`` for the
reads and their cost.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import psutil

from workflow_sdk.memory import smaps_rollup_supported
from workflow_sdk.supervisor.config import (
    SupervisorConfig,
    SupervisorSection,
    unhandled_job_types,
)
from workflow_sdk.supervisor.exposition.logs import DETAILS
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.loop.memory_watch import (
    RSS_SAMPLE_INTERVAL,
    MemoryReader,
    apply_full,
    due_for_full,
    memory_rules,
    sample_memory,
    uses_full_reads,
)
from workflow_sdk.supervisor.loop.parent_hooks import ParentHooks, WorkerExit
from workflow_sdk.supervisor.loop.pool import BootVerdict, RecyclePolicy, WorkerPool
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot, describe_exit
from workflow_sdk.supervisor.loop.stops import KILL_GRACE, Stopper
from workflow_sdk.supervisor.loop.type_limits import TypeLimits
from workflow_sdk.supervisor.worker.protocol import Ready

log = logging.getLogger("workflow_sdk.supervisor")


def recycle_policy(settings: SupervisorSection, *, wait_for_uss: bool = False) -> RecyclePolicy:
    return RecyclePolicy(
        settings.max_jobs_per_child, settings.max_jobs_jitter, settings.max_memory_mb, wait_for_uss
    )


def process_handle(pid: int) -> psutil.Process | None:
    """The worker's process as psutil sees it (its memory samples), if it
    can be opened."""
    try:
        return psutil.Process(pid)
    except (psutil.Error, OSError):  # OSError: out of file descriptors
        return None


def open_memory_reader() -> MemoryReader | None:
    """The full reads' thread, where this kernel has smaps_rollup (Linux 4.14+)."""
    return MemoryReader() if smaps_rollup_supported() else None


class WorkerLifecycle:
    """Records, readiness, recycling, memory and exits of the workers (see
    the module doc)."""

    def __init__(
        self,
        pool: WorkerPool,
        stopper: Stopper,
        stats: SupervisorStats,
        *,
        hooks: ParentHooks | None = None,
        reader: MemoryReader | None = None,
        gauges: bool = False,
    ) -> None:
        self.pool = pool
        self.stopper = stopper
        self.stats = stats
        #: ``child_exit``, with ``parent_hooks = true``
        self.hooks = hooks or ParentHooks()
        #: monotonic time of the next memory samples (the loop checks it each tick)
        self.next_rss_sample = 0.0
        #: Full reads (smaps_rollup) on its own thread; None where the kernel
        #: has no smaps_rollup (the limits then count RSS).
        self.reader = reader
        #: /metrics shows the USS and PSS gauges (full reads are made for them).
        self.gauges = gauges

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
        (the memory limit of the type of its last job, with ``limits``), and
        say once that it passed ``memory_warning_mb``."""
        full = self.full_reads(settings, limits)
        warn = settings.memory_warning_mb
        known = not full or not slot.awaiting_full_read()
        if warn and known and not slot.memory_warned and slot.owned_bytes > warn * 2**20:
            self.warn_memory(slot, settings)
        policy = recycle_policy(settings, wait_for_uss=full)
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
                "worker-%d %s, over %s = %g; replacing it",
                slot.number,
                slot.memory_text(),
                setting,
                policy.max_memory_mb,
            )
        if reason is not None:
            slot.retire(reason, time.monotonic())

    def warn_memory(self, slot: WorkerSlot, settings: SupervisorSection) -> None:
        """Once per worker: its memory passed ``memory_warning_mb``."""
        slot.warned_memory()
        if settings.max_memory_mb:
            limits = f"it is replaced past max_memory_mb = {settings.max_memory_mb:g}"
        else:
            limits = "no memory limit is set (max_memory_mb = 0)"
        log.warning(
            "worker-%d %s, over memory_warning_mb = %g; %s",
            slot.number,
            slot.memory_text(),
            settings.memory_warning_mb,
            limits,
        )

    def full_reads(self, settings: SupervisorSection, limits: TypeLimits | None = None) -> bool:
        """Workers' memory is read in full (USS): the kernel can, and a
        memory rule (the pool's or a job type's) or the gauges use it."""
        by_type = limits is not None and limits.memory_by_type
        return self.reader is not None and (
            by_type or uses_full_reads(settings, gauges=self.gauges)
        )

    def sample_memory(
        self, now: float, settings: SupervisorSection, limits: TypeLimits | None = None
    ) -> None:
        """Read each worker's memory; enforce the memory limits during jobs too
        (a job type's own, with ``limits``).

        The full reads asked for now are answered on the reader's thread and
        applied at a later round; those answered since the last round first."""
        by_type = None
        if limits is not None and limits.memory_by_type:
            by_type = limits.hard_limits_bytes()
        hard_mb = settings.memory_hard_limit_mb
        rules = memory_rules(
            settings, full_reads=self.full_reads(settings, limits), hard_by_type=by_type
        )
        slots = list(self.pool.slots.values())
        if self.reader is not None:
            for slot in due_for_full(slots, rules, now):
                self.reader.ask(slot.number, slot.pid)
            apply_full(self.pool.slots, self.reader.take())
        verdict = sample_memory(slots, rules)
        for slot in verdict.warn:
            self.warn_memory(slot, settings)
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
        its job is failed, ``child_exit`` is told. Returns the boot error when
        it died before it was ready (the arbiter then asks ``boot_failed``),
        else None."""
        how, _ = describe_exit(slot.process.exitcode)
        boot_error = self._exited(slot, how, draining=draining)
        self.hooks.child_exit(
            WorkerExit(
                slot.number,
                slot.pid,
                slot.process.exitcode,
                how,
                slot.exit_reason or ("boot_failed" if boot_error is not None else ""),
                slot.exit_job_type,
            )
        )
        return boot_error

    def _exited(self, slot: WorkerSlot, how: str, *, draining: bool) -> str | None:
        _, signum = describe_exit(slot.process.exitcode)
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
    "WorkerLifecycle",
    "open_memory_reader",
    "process_handle",
    "recycle_policy",
]
