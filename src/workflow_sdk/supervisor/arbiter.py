"""The supervisor: owns the worker processes and is the only place that starts them.

One main loop (``_tick``) waits on every worker's channel and process
sentinel, a wake-up pipe and a timer, then acts: dispatch claimed jobs to
idle workers, collect outcomes, notice deaths and timeouts, respawn, poll.
Signal handlers only record the signal; the loop acts on it.

Workers come from a fork server (``multiprocessing`` "forkserver" context):
each one is forked from a small single-threaded server process, never from
this process, which is therefore free to run threads for HTTP (a poller and
a few reporters) without the fork-while-threaded deadlocks, and every
replacement starts lean instead of inheriting a bloated parent or sibling.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Iterable
from multiprocessing.connection import wait
from types import FrameType
from typing import Any

import psutil

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import ConfigError, EngineClientError
from workflow_sdk.handler.context import build_context
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.lease import lease_deadline
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.reporting import ReportStatus
from workflow_sdk.retry.backoff import Backoff
from workflow_sdk.supervisor import multiproc
from workflow_sdk.supervisor.announcer import Announcer, PoolState
from workflow_sdk.supervisor.config import SupervisorConfig, load_config, unhandled_job_types
from workflow_sdk.supervisor.exporter import MetricsServer, PoolCollector, WorkerView
from workflow_sdk.supervisor.poller import Poller, PollResult
from workflow_sdk.supervisor.protocol import BootFailed, JobDone, Ready, RunJob
from workflow_sdk.supervisor.reporter import Reporter
from workflow_sdk.supervisor.slots import RunningJob, SlotState, WorkerSlot, describe_exit
from workflow_sdk.supervisor.stats import SupervisorStats
from workflow_sdk.supervisor.systemd import SYSTEMD_ENV, SystemdNotifier
from workflow_sdk.supervisor.worker import ENV_PRELOAD_MODULES, WorkerSpec, worker_main

log = logging.getLogger("workflow_sdk.supervisor")

# Exit statuses of ``Supervisor.run`` (and of the CLI).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_BOOT_FAILED = 3

#: Seconds between SIGTERM and SIGKILL when a worker must go.
KILL_GRACE = 3.0
#: Replacements that fail to boot in a row before the supervisor gives up.
MAX_BOOT_FAILURES = 5
#: Seconds between RSS samples of busy workers.
RSS_SAMPLE_INTERVAL = 1.0
#: Seconds a report may wait for the poll in flight to return first.
REPORT_HOLD = 0.05
#: Environment variables that belong to this process only.
PRIVATE_ENV = (*SYSTEMD_ENV, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
_HANDLED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
)


class Supervisor:
    """Run a pool of worker processes for the job types of ``config``'s handlers.

    ``registry`` adds handlers built in code; its handler functions must be
    importable by name (module-level functions), since workers receive the
    registry by pickling. ``client`` replaces the REST client built from
    ``config.engine``; it is used from this process's poller and reporter
    threads only, never from the workers.
    """

    def __init__(
        self,
        config: SupervisorConfig,
        registry: HandlerRegistry | None = None,
        client: WorkerEngineClient | None = None,
    ) -> None:
        if not config.supervisor.handlers and registry is None:
            raise ValueError("no handlers: set [supervisor] handlers or pass registry=")
        self.config = config
        self.registry = registry
        self.stats = SupervisorStats()
        #: Why the supervisor stopped on its own (a worker boot error), if it did.
        self.fatal_error = ""
        #: Port of the /metrics server once started (useful with ``port = 0``).
        self.metrics_port: int | None = None
        self._client = client
        self._ctx = multiprocessing.get_context("forkserver")
        self._slots: dict[int, WorkerSlot] = {}
        self._target = config.supervisor.workers
        self._signals: list[int] = []
        self._wake_r = -1
        self._wake_w = -1
        self._poller: Poller | None = None
        self._reporter: Reporter | None = None
        self._metrics: Metrics | None = None
        self._metrics_dir: str | None = None
        self._metrics_server: MetricsServer | None = None
        self._views: tuple[WorkerView, ...] = ()
        self._announcer = Announcer(SystemdNotifier(None), os.path.basename(config.source))
        self._poll_backoff = Backoff()
        self._poll_requested_at = 0.0
        self._next_poll_at = 0.0
        self._next_rss_sample = 0.0
        self._reload_queue: list[int] = []
        self._reloading = False
        self._draining = False
        self._drain_deadline = 0.0
        self._done = False
        self._exit_code = EXIT_OK
        self._ever_booted = False
        self._boot_failures = 0
        #: Outcomes decided this tick, handed to the reporter at its end.
        self._outbox: list[tuple[Outcome, float]] = []

    # -- public ------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped by a signal (or ``request_stop``); returns an exit status."""
        try:
            self._setup()
            while not self._done:
                self._tick()
        finally:
            self._teardown()
        return self._exit_code

    def request_stop(self) -> None:
        """Begin a graceful stop, as SIGTERM does (safe from any thread)."""
        self._record_signal(signal.SIGTERM, None)

    # -- set-up and tear-down ----------------------------------------------------

    def _make_client(self) -> WorkerEngineClient:
        if self._client is not None:
            return self._client
        engine = self.config.engine
        verify: bool | str = engine.ca_bundle or engine.verify_tls
        return RestEngineClient(engine.url, engine.timeout, token=engine.token, verify=verify)

    def _setup(self) -> None:
        # systemd's variables are for this process only: read them, then
        # remove them before the fork server (and so every worker) starts.
        self._announcer = Announcer(
            SystemdNotifier.from_environment(), os.path.basename(self.config.source)
        )
        for name in PRIVATE_ENV:
            os.environ.pop(name, None)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        for signum in _HANDLED_SIGNALS:
            signal.signal(signum, self._record_signal)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        if self.config.metrics.port is not None:
            self._setup_metrics()
        # The fork server imports these once; every worker forked from it
        # starts with them loaded. Handler modules only on request: a module
        # preloaded there is not re-imported by the workers a reload starts.
        preload = ["workflow_sdk.supervisor.forkserver_init", "workflow_sdk.supervisor.worker"]
        if self.config.supervisor.preload_handlers:
            modules = [spec.partition(":")[0] for spec in self.config.supervisor.handlers]
            os.environ[ENV_PRELOAD_MODULES] = ",".join(modules)
            # By name: importing that module here would load the handlers.
            preload.append("workflow_sdk.supervisor.preload")
        self._ctx.set_forkserver_preload(preload)
        worker_id = self.config.supervisor.worker_id
        self._poller = Poller(self._make_client(), worker_id, self._wake)
        self._reporter = Reporter(
            self._make_client(),
            worker_id,
            deadline=self.config.supervisor.report_deadline,
            on_status=self._on_report_status,
            on_retry=self._on_report_retry,
        )
        log.info(
            "supervisor starting: %d workers, engine %s, worker id %s",
            self._target,
            self.config.engine.url,
            worker_id,
        )
        self._fill_pool()
        self._publish(time.monotonic())

    def _setup_metrics(self) -> None:
        settings = self.config.metrics
        self._metrics_dir = multiproc.prepare_dir(multiproc.choose_dir(settings.dir))
        self._metrics = multiproc.metrics_with_identifier("supervisor")
        self._metrics_server = MetricsServer(
            self._metrics_dir, PoolCollector(self.stats, lambda: self._views)
        )
        self.metrics_port = self._metrics_server.start(settings.bind, settings.port or 0)

    def _teardown(self) -> None:
        now = time.monotonic()
        for slot in list(self._slots.values()):
            if slot.process.is_alive() and signal.SIGTERM not in slot.signals_sent:
                slot.terminate(now, KILL_GRACE)
        for slot in list(self._slots.values()):
            slot.process.join(KILL_GRACE)
            if slot.process.is_alive():
                slot.send_signal(signal.SIGKILL)
                slot.process.join(5.0)
            slot.conn.close()
        self._slots.clear()
        if self._poller is not None:
            self._poller.close()
        if self._reporter is not None:
            self._reporter.stop(give_up=True)
        if self._metrics_server is not None:
            self._metrics_server.stop()
        self._announcer.close()
        signal.set_wakeup_fd(-1)
        for signum in _HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        if self._wake_r >= 0:
            os.close(self._wake_r)
            os.close(self._wake_w)
        multiproc.release_dir(self._metrics_dir)
        log.info("supervisor stopped (%s)", self.stats.summary())

    # -- signals and wake-ups ------------------------------------------------------

    def _record_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only record: the main loop acts. set_wakeup_fd wakes the loop for
        # real signals; request_stop() from a thread needs the explicit wake.
        self._signals.append(signum)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass  # the pipe is full (a wake-up is pending anyway) or closed

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            name = signal.Signals(signum).name
            if signum in (signal.SIGTERM, signal.SIGINT):
                if self._draining:
                    self._stop_now(name)
                else:
                    self._begin_drain(name)
            elif self._draining:
                log.info("%s ignored: stopping", name)
            elif signum == signal.SIGHUP:
                self._begin_reload()
            elif signum == signal.SIGTTIN:
                self._scale(+1)
            elif signum == signal.SIGTTOU:
                self._scale(-1)

    # -- processes -------------------------------------------------------------------

    def _capacity(self) -> int:
        """Workers that count towards the pool size (not leaving, not reload extras)."""
        return sum(1 for s in self._slots.values() if not s.retiring and not s.surge)

    def _fill_pool(self) -> None:
        while not self._draining and not self._done and self._capacity() < self._target:
            if self._spawn() is None:
                return  # try again next tick (or give up: see _on_boot_failure)

    def _free_slot_number(self) -> int:
        # The lowest free number: slot numbers name the metric files, so
        # reusing them keeps the file count bounded by the pool size.
        number = 1
        while number in self._slots:
            number += 1
        return number

    def _spawn(self, *, surge: bool = False) -> WorkerSlot | None:
        slot_no = self._free_slot_number()
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        spec = WorkerSpec(
            slot=slot_no,
            handlers=tuple(self.config.supervisor.handlers),
            registry=self.registry,
            log_level=self.config.logging.level,
            log_format=self.config.logging.format,
            scrub_env=PRIVATE_ENV,
            metrics_dir=self._metrics_dir,
        )
        process = self._ctx.Process(
            target=worker_main, args=(spec, child_end), name=f"worker-{slot_no}"
        )
        try:
            process.start()
        except (OSError, EOFError) as exc:
            # The fork server died (killed, out of memory...): multiprocessing
            # starts a new one on the next attempt.
            parent_end.close()
            child_end.close()
            self._on_boot_failure(slot_no, f"could not start a worker process: {exc!r}", surge)
            return None
        child_end.close()
        now = time.monotonic()
        slot = WorkerSlot(
            slot=slot_no,
            process=process,
            conn=parent_end,
            boot_deadline=now + self.config.supervisor.boot_timeout,
            pid=process.pid or 0,
            surge=surge,
            max_jobs=self._draw_max_jobs(),
        )
        try:
            slot.ps = psutil.Process(slot.pid)
        except psutil.Error:
            slot.ps = None
        self._slots[slot_no] = slot
        log.debug("worker-%d started, pid %d", slot_no, slot.pid)
        return slot

    def _draw_max_jobs(self) -> int:
        pool = self.config.supervisor
        if pool.max_jobs_per_child <= 0:
            return 0
        extra = int(pool.max_jobs_per_child * pool.max_jobs_jitter)
        return pool.max_jobs_per_child + random.randint(0, extra)

    def _on_message(self, slot: WorkerSlot, message: object) -> None:
        if isinstance(message, JobDone):
            self._on_job_done(slot, message)
        elif isinstance(message, Ready):
            if slot.state is SlotState.BOOTING:
                slot.state = SlotState.IDLE
            slot.job_types = frozenset(message.job_types)
            if not self._ever_booted:
                for warning in unhandled_job_types(self.config, message.job_types):
                    log.warning(warning)
            self._ever_booted = True
            self._boot_failures = 0
            log.info(
                "worker-%d ready, pid %d, job types: %s",
                slot.slot,
                message.pid,
                ", ".join(message.job_types),
            )
            if slot.retiring:
                slot.close_channel()
        elif isinstance(message, BootFailed):
            slot.boot_error = message.error
        else:
            log.error("worker-%d sent an unexpected message: %r", slot.slot, message)

    def _read_messages(self, slot: WorkerSlot) -> None:
        """Take everything the worker has sent (before judging its death)."""
        try:
            while not slot.conn.closed and slot.conn.poll():
                self._on_message(slot, slot.conn.recv())
        except (EOFError, OSError):
            pass  # the worker is gone; its sentinel tells the rest

    def _on_job_done(self, slot: WorkerSlot, done: JobDone) -> None:
        slot.rss_bytes = done.rss_bytes
        job = slot.job
        outcome = done.outcome
        if job is None or job.job_id != outcome.job_id:
            # Already decided (timed out, or abandoned at shutdown): the job
            # was failed or left to lease expiry, so this result is dropped.
            log.warning("worker-%d: late result for job %s ignored", slot.slot, outcome.job_id)
            return
        slot.job = None
        slot.jobs_done += 1
        if slot.state is SlotState.BUSY:
            slot.state = SlotState.IDLE
        self._report(outcome, job)
        self._check_recycle(slot)
        if slot.retiring and slot.state is SlotState.IDLE:
            slot.close_channel()

    def _check_recycle(self, slot: WorkerSlot) -> None:
        pool = self.config.supervisor
        if slot.retiring:
            return
        if slot.max_jobs and slot.jobs_done >= slot.max_jobs:
            log.info("worker-%d ran %d jobs; replacing it", slot.slot, slot.jobs_done)
            slot.retire("recycle_jobs", time.monotonic())
        elif pool.max_memory_mb and slot.rss_bytes > pool.max_memory_mb * 2**20:
            log.warning(
                "worker-%d uses %.0f MiB, over max_memory_mb = %g; replacing it",
                slot.slot,
                slot.rss_bytes / 2**20,
                pool.max_memory_mb,
            )
            slot.retire("recycle_memory", time.monotonic())

    def _report(self, outcome: Outcome, job: RunningJob) -> None:
        now = time.monotonic()
        self.stats.record_outcome(outcome)
        if outcome.succeeded and now > job.lease_deadline:
            log.warning(
                "job %s (%s) finished %.1f s after its lease ran out; reporting it anyway",
                job.job_id,
                job.job_type,
                now - job.lease_deadline,
            )
        if outcome.succeeded:
            # DEBUG: at hundreds of jobs a second an INFO line per success
            # floods the journal and costs the parent a few % of a core.
            log.debug("job %s (%s) succeeded in %.3f s", job.job_id, job.job_type, outcome.duration)
        else:
            log.warning(
                "job %s (%s) failed after %.3f s (%s): %s",
                job.job_id,
                job.job_type,
                outcome.duration,
                "retryable" if outcome.retryable else "not retryable",
                outcome.error_message,
            )
        # A failure past the lease is withheld by reporting.deliver.
        self._outbox.append((outcome, job.lease_deadline))

    def _on_death(self, slot: WorkerSlot) -> None:
        self._read_messages(slot)
        slot.process.join(0.5)
        how, signum = describe_exit(slot.process.exitcode)
        del self._slots[slot.slot]
        slot.conn.close()
        now = time.monotonic()
        if slot.job is not None:
            job = slot.job
            message = (
                f"worker pid {slot.pid} (worker-{slot.slot}) {how} after "
                f"{now - job.started_at:.1f} s running this job; "
                f"last RSS {slot.rss_bytes / 2**20:.0f} MiB"
            )
            if signum == signal.SIGKILL and signal.SIGKILL not in slot.signals_sent:
                message += "; likely killed by the OOM killer"
            log.error("job %s (%s): %s", job.job_id, job.job_type, message)
            self._report(
                Outcome.failure(
                    job.job_id, job.job_type, message, retryable=True, duration=now - job.started_at
                ),
                job,
            )
            slot.exit_reason = slot.exit_reason or "crash"
        elif slot.state is SlotState.BOOTING and not slot.retiring:
            self._on_boot_failure(
                slot.slot, slot.boot_error or f"worker {how} before it was ready", slot.surge
            )
            return
        elif not self._draining and not slot.exit_reason:
            log.warning("worker-%d (pid %d) %s while idle", slot.slot, slot.pid, how)
            slot.exit_reason = "crash"
        else:
            log.debug("worker-%d (pid %d) %s", slot.slot, slot.pid, how)
        if slot.exit_reason and not self._draining:
            self.stats.record_restart(slot.exit_reason)

    def _on_boot_failure(self, slot_no: int, error: str, surge: bool) -> None:
        log.error("worker-%d could not start: %s", slot_no, error)
        if surge:
            log.error("reload aborted: the new workers cannot start; the old ones keep running")
            self._reload_queue.clear()
            return
        self._boot_failures += 1
        if not self._ever_booted or self._boot_failures >= MAX_BOOT_FAILURES:
            log.critical("workers cannot start; stopping the supervisor")
            self.fatal_error = error
            self._exit_code = EXIT_BOOT_FAILED
            self._stop_now("boot failure")

    # -- the main loop -----------------------------------------------------------------

    def _tick(self) -> None:
        try:
            self._tick_once()
        finally:
            self._flush_reports()

    def _flush_reports(self) -> None:
        # Reports leave after the poll for the workers they freed: the poll is
        # what an idle worker waits for, and a completion sent at the same
        # moment doubles the poll's round trip (both compete in the engine and
        # in this process). A report waits for that poll REPORT_HOLD at most.
        assert self._reporter is not None and self._poller is not None
        if not self._outbox:
            return
        held = time.monotonic() - self._poll_requested_at < REPORT_HOLD
        if self._poller.busy and held and not self._draining:
            return
        for outcome, lease_end in self._outbox:
            self._reporter.submit(outcome, lease_end)
        self._outbox.clear()

    def _tick_once(self) -> None:
        now = time.monotonic()
        ready = self._wait(self._next_deadline(now) - now)
        self._drain_wake_pipe()
        self._handle_signals()
        sentinels: dict[int, WorkerSlot] = {}
        for slot in list(self._slots.values()):
            sentinels[slot.sentinel()] = slot
            if not slot.conn.closed and slot.conn in ready:
                self._read_messages(slot)
        assert self._poller is not None
        result = self._poller.take()
        if result is not None:
            self._on_poll_result(result)
        for fd, slot in sentinels.items():
            if fd in ready and self._slots.get(slot.slot) is slot:
                self._on_death(slot)
        if self._done:
            return
        now = time.monotonic()
        self._enforce_deadlines(now)
        if now >= self._next_rss_sample:
            self._sample_rss(now)
            self._next_rss_sample = now + min(
                RSS_SAMPLE_INTERVAL, self.config.supervisor.memory_check_interval
            )
        if self._draining:
            self._continue_drain(now)
        else:
            self._continue_reload()
            self._trim_pool(now)
            self._fill_pool()
            self._maybe_poll(now)
        self._publish(now)

    def _wait(self, timeout: float) -> list[Any]:
        waitables: list[Any] = [self._wake_r]
        for slot in self._slots.values():
            if not slot.conn.closed:
                waitables.append(slot.conn)
            waitables.append(slot.sentinel())
        return wait(waitables, max(0.0, timeout))

    def _next_deadline(self, now: float) -> float:
        deadline = now + 1.0
        if not self._draining and self._idle_slots() and self._poller and not self._poller.busy:
            deadline = min(deadline, self._next_poll_at)
        # Only deadlines still ahead, or that act once when reached: a passed
        # deadline left in here would make the loop spin.
        for slot in self._slots.values():
            job = slot.job
            if job is not None:
                if job.timeout_at is not None:
                    deadline = min(deadline, job.timeout_at)
                if not job.overrun_logged:
                    deadline = min(deadline, job.lease_deadline)
            if slot.kill_at is not None:
                deadline = min(deadline, slot.kill_at)
            if slot.state is SlotState.BOOTING:
                deadline = min(deadline, slot.boot_deadline)
        if self._draining and now < self._drain_deadline:
            deadline = min(deadline, self._drain_deadline)
        watchdog = self._announcer.next_deadline()
        if watchdog is not None:
            deadline = min(deadline, watchdog)
        if self._outbox:
            deadline = min(deadline, self._poll_requested_at + REPORT_HOLD)
        return deadline

    def _enforce_deadlines(self, now: float) -> None:
        for slot in list(self._slots.values()):
            job = slot.job
            if slot.kill_at is not None and now >= slot.kill_at:
                log.warning(
                    "worker-%d (pid %d) still alive after SIGTERM; sending SIGKILL",
                    slot.slot,
                    slot.pid,
                )
                slot.send_signal(signal.SIGKILL)
                slot.kill_at = None
            if slot.state is SlotState.BOOTING and now >= slot.boot_deadline:
                slot.boot_error = (
                    f"not ready after {self.config.supervisor.boot_timeout:g} s "
                    "(boot_timeout); does importing the handlers hang?"
                )
                slot.boot_deadline = float("inf")
                slot.send_signal(signal.SIGKILL)
            if job is None:
                continue
            if job.timeout_at is not None and now >= job.timeout_at:
                self._read_messages(slot)  # it may have just finished
                if slot.job is job:
                    self._time_out(slot, job, now)
                continue
            if now >= job.lease_deadline and not job.overrun_logged:
                job.overrun_logged = True
                self.stats.lease_overruns += 1
                log.warning(
                    "job %s (%s) has run %.1f s, past its lease: the engine may hand it "
                    "to another worker (set a [job_types] timeout below the lease)",
                    job.job_id,
                    job.job_type,
                    now - job.started_at,
                )

    def _time_out(self, slot: WorkerSlot, job: RunningJob, now: float) -> None:
        message = f"timed out after {job.timeout:g} s (worker pid {slot.pid} killed)"
        log.error("job %s (%s) %s", job.job_id, job.job_type, message)
        slot.job = None
        slot.exit_reason = "timeout"
        slot.retiring = True
        slot.terminate(now, KILL_GRACE)
        self._report(
            Outcome.failure(
                job.job_id, job.job_type, message, retryable=True, duration=now - job.started_at
            ),
            job,
        )

    # -- claiming and dispatch ---------------------------------------------------------

    def _idle_slots(self) -> list[WorkerSlot]:
        return [s for s in self._slots.values() if s.state is SlotState.IDLE and not s.retiring]

    def _job_types(self, slots: Iterable[WorkerSlot]) -> list[str]:
        types: set[str] = set()
        for slot in slots:
            types |= slot.job_types
        return sorted(types)

    def _maybe_poll(self, now: float) -> None:
        assert self._poller is not None
        idle = self._idle_slots()
        if not idle or self._poller.busy or now < self._next_poll_at:
            return
        self._poll_requested_at = now
        self._poller.request(len(idle), self._job_types(idle))

    def _on_poll_result(self, result: PollResult) -> None:
        now = time.monotonic()
        self.stats.record_poll(len(result.jobs), result.error is not None)
        if result.error is not None:
            wait_s = self._poll_backoff.next_delay()
            self._next_poll_at = now + wait_s
            failures = self._poll_backoff.failures
            level = logging.WARNING if failures == 1 or failures % 20 == 0 else logging.DEBUG
            log.log(
                level,
                "poll failed (%d in a row), next try in %.1f s: %s",
                failures,
                wait_s,
                result.error,
            )
            return
        if self._metrics is not None:
            self._metrics.observe_poll(result.latency, len(result.jobs))
        if self._poll_backoff.failures:
            log.info("engine reachable again after %d failed polls", self._poll_backoff.failures)
        self._poll_backoff.reset()
        self._next_poll_at = now if result.jobs else now + self.config.supervisor.poll_interval
        for job in result.jobs:
            self._dispatch(job, result.sent_at)

    def _dispatch(self, raw_job: dict[str, Any], poll_sent_at: float) -> None:
        context = build_context(raw_job)
        job_id, job_type = context["id"], context["jobType"]
        now = time.monotonic()
        deadline = lease_deadline(raw_job, poll_sent_at)
        if now >= deadline:
            self.stats.skipped_expired += 1
            log.warning(
                "job %s (%s) not started: its lease had already passed (another worker "
                "may have it)",
                job_id,
                job_type,
            )
            return
        for slot in self._idle_slots():
            if job_type not in slot.job_types:
                continue
            try:
                slot.conn.send(RunJob(context))
            except OSError:
                continue  # that worker just died; its sentinel will tell
            timeout = self.config.job_timeout(job_type)
            slot.state = SlotState.BUSY
            slot.job = RunningJob(
                context=context,
                started_at=now,
                lease_deadline=deadline,
                timeout_at=now + timeout if timeout > 0 else None,
                timeout=timeout,
            )
            log.debug("job %s (%s) sent to worker-%d", job_id, job_type, slot.slot)
            return
        # Cannot happen while we claim no more than our idle workers; if it
        # does, the engine redelivers the job when its lease passes.
        log.error("job %s (%s): no idle worker for it; left to lease expiry", job_id, job_type)

    # -- monitoring --------------------------------------------------------------------

    def _sample_rss(self, now: float) -> None:
        """Read each worker's RSS; enforce the memory limits during jobs too."""
        pool = self.config.supervisor
        hard = pool.memory_hard_limit_mb * 2**20
        for slot in list(self._slots.values()):
            if slot.ps is None or slot.state is SlotState.STOPPING:
                continue
            try:
                rss = slot.ps.memory_info().rss
            except psutil.Error:
                continue
            if rss == 0:
                continue  # exited and not yet reaped: keep the last real sample
            slot.rss_bytes = rss
            job = slot.job
            if hard and job is not None and slot.rss_bytes > hard:
                self._kill_for_memory(slot, job, now)
            elif slot.state is SlotState.IDLE:
                self._check_recycle(slot)

    def _kill_for_memory(self, slot: WorkerSlot, job: RunningJob, now: float) -> None:
        limit = self.config.supervisor.memory_hard_limit_mb
        message = (
            f"worker pid {slot.pid} (worker-{slot.slot}) killed: RSS reached "
            f"{slot.rss_bytes / 2**20:.0f} MiB, over max_memory_hard_mb = {limit:g}"
        )
        log.error("job %s (%s): %s", job.job_id, job.job_type, message)
        slot.job = None
        slot.retiring = True
        slot.exit_reason = "recycle_memory"
        slot.state = SlotState.STOPPING
        slot.send_signal(signal.SIGKILL)
        self._report(
            Outcome.failure(
                job.job_id, job.job_type, message, retryable=True, duration=now - job.started_at
            ),
            job,
        )

    def _publish(self, now: float) -> None:
        """The /metrics view of the workers, the title and systemd's status."""
        busy = sum(1 for s in self._slots.values() if s.state is SlotState.BUSY)
        self._views = tuple(
            WorkerView(s.slot, s.pid, s.state is SlotState.BUSY, s.ps) for s in self._slots.values()
        )
        booted = sum(1 for s in self._slots.values() if s.state is not SlotState.BOOTING)
        self._announcer.publish(
            now,
            PoolState(
                workers=len(self._slots),
                busy=busy,
                jobs_done=self.stats.jobs_succeeded,
                jobs_failed=self.stats.jobs_failed,
                phase="draining" if self._draining else ("reloading" if self._reloading else ""),
                ready=booted >= self._target,
                healthy=self._healthy(now),
            ),
        )

    def _healthy(self, now: float) -> bool:
        """The loop runs (we are here); also check the poller is not wedged."""
        assert self._poller is not None
        if self._poller.busy:
            return now - self._poll_requested_at < self.config.engine.timeout * 2 + 5
        return True

    def _on_report_status(self, outcome: Outcome, status: ReportStatus) -> None:
        self.stats.record_report(status)

    def _on_report_retry(self, outcome: Outcome, error: EngineClientError) -> None:
        self.stats.record_report_retry()

    # -- reload and scaling ------------------------------------------------------------

    def _begin_reload(self) -> None:
        if self._reloading:
            log.warning("SIGHUP ignored: a reload is already in progress")
            return
        if os.path.isfile(self.config.source):
            try:
                new = load_config(self.config.source, require_handlers=self.registry is None)
            except ConfigError as exc:
                log.error("SIGHUP: configuration not reloaded, still running the old one:\n%s", exc)
                return
            for section in ("engine", "metrics"):
                if getattr(new, section) != getattr(self.config, section):
                    log.warning("SIGHUP: [%s] changes take effect at the next restart", section)
            if self._target != self.config.supervisor.workers:
                log.info(
                    "SIGHUP: pool size back to the configuration's %d workers "
                    "(SIGTTIN/SIGTTOU had made it %d)",
                    new.supervisor.workers,
                    self._target,
                )
            self.config = dataclasses.replace(
                new, engine=self.config.engine, metrics=self.config.metrics
            )
            self._target = new.supervisor.workers
        self._announcer.reloading()
        self._reloading = True
        self._reload_queue = sorted(self._slots)
        log.info("SIGHUP: replacing %d workers one at a time", len(self._reload_queue))

    def _continue_reload(self) -> None:
        """One extra worker at a time: start it, and once it is ready retire an
        old one, so the pool never has fewer ready workers than before."""
        if not self._reloading:
            return
        surge = [s for s in self._slots.values() if s.surge]
        if surge:
            fresh = surge[0]
            if fresh.state is SlotState.BOOTING:
                return
            fresh.surge = False
            while self._reload_queue:
                old = self._slots.get(self._reload_queue.pop(0))
                if old is not None and not old.retiring:
                    old.retire("reload", time.monotonic())
                    break
            return
        self._reload_queue = [n for n in self._reload_queue if n in self._slots]
        if self._reload_queue:
            self._spawn(surge=True)
            return
        if all(s.state is not SlotState.BOOTING for s in self._slots.values()):
            self._reloading = False
            self._announcer.reloaded()
            log.info("reload finished")

    def _scale(self, delta: int) -> None:
        target = max(1, self._target + delta)
        if target == self._target:
            log.info("SIGTTOU ignored: the pool keeps at least one worker")
            return
        self._target = target
        log.info("%s: pool size now %d", "SIGTTIN" if delta > 0 else "SIGTTOU", target)

    def _trim_pool(self, now: float) -> None:
        while self._capacity() > self._target and not self._reloading:
            keep = [s for s in self._slots.values() if not s.retiring and not s.surge]
            # Prefer a worker that is not running a job, then the newest slot.
            keep.sort(key=lambda s: (s.state is SlotState.BUSY, -s.slot))
            keep[0].retire("scale", now)

    # -- stopping ----------------------------------------------------------------------

    def _begin_drain(self, why: str) -> None:
        self._draining = True
        self._reloading = False
        self._drain_deadline = time.monotonic() + self.config.supervisor.graceful_timeout
        self._announcer.stopping()
        busy = [s for s in self._slots.values() if s.job is not None]
        log.info(
            "%s: stopping; waiting up to %g s for %d running jobs",
            why,
            self.config.supervisor.graceful_timeout,
            len(busy),
        )

    def _continue_drain(self, now: float) -> None:
        assert self._poller is not None and self._reporter is not None
        poll_in_flight = self._poller.busy
        for slot in list(self._slots.values()):
            job = slot.job
            if slot.state is SlotState.IDLE and not poll_in_flight:
                slot.close_channel()
            elif slot.state is SlotState.BOOTING:
                slot.terminate(now, KILL_GRACE)
            elif job is not None and now >= min(self._drain_deadline, job.lease_deadline):
                self._abandon(slot, job, now)
        if self._slots:
            return
        # Every worker is gone: give the reports what is left of the drain time.
        remaining = max(0.0, self._drain_deadline - now)
        if not self._reporter.wait_idle(remaining):
            log.error(
                "%d reports still undelivered at the end of graceful_timeout; giving up",
                self._reporter.pending(),
            )
        self._done = True

    def _abandon(self, slot: WorkerSlot, job: RunningJob, now: float) -> None:
        """Stop a job we may not finish; the engine redelivers it after its lease.

        Failing it instead would burn one of its retries (or fail the instance)
        for what is only a restart of this worker.
        """
        log.warning(
            "job %s (%s) still running at shutdown; killing worker-%d and leaving the "
            "job to the engine's lease expiry",
            job.job_id,
            job.job_type,
            slot.slot,
        )
        slot.job = None
        self.stats.abandoned += 1
        slot.terminate(now, 1.0)

    def _stop_now(self, why: str) -> None:
        log.warning("%s: stopping now; running jobs are left to the engine's lease expiry", why)
        if not self._draining:
            self._announcer.stopping()
        self._draining = True
        now = time.monotonic()
        for slot in list(self._slots.values()):
            if slot.job is not None:
                self.stats.abandoned += 1
                slot.job = None
            slot.terminate(now, 1.0)
        self._done = True


__all__ = ["EXIT_BOOT_FAILED", "EXIT_CONFIG", "EXIT_ERROR", "EXIT_OK", "Supervisor"]
