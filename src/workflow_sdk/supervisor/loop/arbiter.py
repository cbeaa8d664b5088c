"""The supervisor: owns the worker processes and is the only place that starts them.

One main loop (``_tick``) waits on every worker's channel and process
sentinel, a wake-up pipe and a timer, then acts: collect outcomes, claim and
dispatch jobs to idle workers, notice deaths, timeouts and stale jobs,
respawn, poll. Signal handlers only record the signal; the loop acts on it.

Decisions live in small objects that return verdicts: the job ledger
(``jobs.JobLedger``: what we hold, from claim to the engine's answer, and
the bound on it), the worker pool (``pool.WorkerPool``: which workers
exist, which should, which must go) and the claim plan (``claims``). Each
other concern is a helper of its own, called directly from the loop: the
intake (``intake.Intake``: the job source, polls, claims, dispatch to idle
workers), the results (``results.Results``: outcomes to the reporters and
their answers), the stops (``stops.Stops``: time limits, memory kills,
stale and lease-lost jobs, escalation to SIGKILL), the workers' lives
(``lifecycle.WorkerLife``: records, readiness, recycling, exits), the drain
(``drain.Drain``), SIGHUP's new configuration (``reload``), what is shown
outside (``monitor.Publisher``) and the start-up wiring (``startup``).
This class owns the phase and the loop, starts every worker, and carries
the verdicts out.

Workers come from a fork server (``multiprocessing`` "forkserver" context):
each one is forked from a small single-threaded server process, never from
this process, which is therefore free to run threads for HTTP (a poller, a
few reporters, a stale-job watcher) without the fork-while-threaded
deadlocks, and every replacement starts lean instead of inheriting a
bloated parent or sibling.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import time
from typing import Any, cast

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.client.lean import make_worker_client
from workflow_sdk.errors import DispatchModeError
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.sanitize import redact_url
from workflow_sdk.staleness import InstanceReader
from workflow_sdk.supervisor.config import SupervisorConfig
from workflow_sdk.supervisor.exposition.announcer import Announcer
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.exposition.systemd import SYSTEMD_ENV, SystemdNotifier
from workflow_sdk.supervisor.io.poller import PollResult
from workflow_sdk.supervisor.io.renewal import RenewalUnavailableError
from workflow_sdk.supervisor.loop.claim_plan import ClaimPolicy
from workflow_sdk.supervisor.loop.drain import Drain, DrainStep
from workflow_sdk.supervisor.loop.intake import REPORT_HOLD, Intake, PollVerdict
from workflow_sdk.supervisor.loop.ledger import JobLedger
from workflow_sdk.supervisor.loop.lifecycle import WorkerLife
from workflow_sdk.supervisor.loop.pool import (
    BootVerdict,
    Phase,
    ReloadStep,
    WorkerPool,
)
from workflow_sdk.supervisor.loop.publisher import PUBLISH_INTERVAL, Publisher
from workflow_sdk.supervisor.loop.reports import ReportDesk
from workflow_sdk.supervisor.loop.signals import SignalInbox
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot
from workflow_sdk.supervisor.loop.startup import fork_server_preload, make_reader, start_helpers
from workflow_sdk.supervisor.loop.stops import CANCEL_GRACE, KILL_GRACE, Stops
from workflow_sdk.supervisor.loop.waitset import WaitSet
from workflow_sdk.supervisor.reload import Reload, reload_config
from workflow_sdk.supervisor.results import Results
from workflow_sdk.supervisor.worker.main import (
    WorkerSpec,
    worker_main,
)
from workflow_sdk.supervisor.worker.protocol import BootFailed, JobDone, Ready

log = logging.getLogger("workflow_sdk.supervisor")

# Exit statuses of ``Supervisor.run`` (and of the CLI).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_BOOT_FAILED = 3

#: Jobs held at most (claimed, running, reports in flight), per worker.
HELD_PER_WORKER = 2
#: Environment variables that belong to this process only.
PRIVATE_ENV = (*SYSTEMD_ENV, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class Supervisor:
    """Run a pool of worker processes for the job types of ``config``'s handlers.

    ``registry`` adds handlers built in code; its handler functions must be
    importable by name (module-level functions), since workers receive the
    registry by pickling. ``client`` replaces the REST client built from
    ``config.engine``; it is used from this process's poller, reporter and
    stale-watch threads only, never from the workers. A client without
    ``get_instance``/``get_instance_history`` disables the stale-job checks.
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
        self.phase = Phase.RUNNING
        self.pool = WorkerPool(config.supervisor.workers)
        self.ledger = JobLedger(
            HELD_PER_WORKER * config.supervisor.workers, config.supervisor.stale_check_interval
        )
        #: How many jobs to claim: per idle worker, and ahead for short job types.
        self.claims = ClaimPolicy()
        #: The job source, when to ask it, the claim rules, dispatch to idle workers.
        self.intake = Intake(
            self.pool, self.ledger, self.claims, self.stats, config.supervisor.poll_interval
        )
        self._client = client
        #: This process's environment as it started, secrets included, for
        #: SIGHUP's re-read (the secrets leave ``os.environ`` in ``_setup``).
        self._environ: dict[str, str] | None = None
        self._ctx = multiprocessing.get_context("forkserver")
        self.signals = SignalInbox()
        self._waitset = WaitSet()
        #: The ledger's next deadline, as of the start of this tick.
        self._ledger_due = 0.0
        self._reader: InstanceReader | None = None
        #: The /metrics view, the title and systemd's status.
        self.publisher = Publisher(
            self.pool,
            self.ledger,
            self.stats,
            self.intake,
            announcer=Announcer(SystemdNotifier(None), os.path.basename(config.source)),
            engine_timeout=config.engine.timeout,
        )
        self._exit_code = EXIT_OK
        #: Outcomes from this tick's decisions to the engine's answers.
        self.reports = ReportDesk(None, self.signals.wake, self.intake.retry_seen)
        self.results = Results(self.pool, self.ledger, self.intake, self.stats, self.reports)
        #: Jobs that end before their handler returns, and their workers.
        self.stops = Stops(self.pool, self.ledger, self.intake, self.results, self.stats)
        # Before any stop, the stops read what the worker already sent.
        self.stops.collect = self._collect
        #: The graceful stop.
        self.drain = Drain(self.pool, self.ledger, self.intake, self.stops, self.stats)
        #: Worker records: started, ready, recycled, gone.
        self.life = WorkerLife(self.pool, self.stops, self.stats)
        #: SIGHUP's reload: the configuration on trial, a SIGHUP queued.
        self.reload = Reload()

    # -- public ------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped by a signal (or ``request_stop``); returns an exit status."""
        try:
            self._setup()
            while self.phase is not Phase.DONE:
                self._tick()
        finally:
            self._teardown()
        return self._exit_code

    def request_stop(self) -> None:
        """Begin a graceful stop, as SIGTERM does (safe from any thread)."""
        self.signals.record(signal.SIGTERM)

    # -- set-up and tear-down ----------------------------------------------------

    def _make_client(self) -> WorkerEngineClient:
        """For the hot calls (poll, complete, fail): the lean keep-alive client
        (a quarter of ``requests``' CPU per call), unless a proxy is set."""
        if self._client is not None:
            return self._client
        engine = self.config.engine
        return make_worker_client(
            engine.url,
            engine.timeout,
            token=engine.token,
            verify=engine.verify_tls,
            ca_bundle=engine.ca_bundle,
        )

    def _setup(self) -> None:
        # systemd's variables are for this process only: read them, then
        # remove them before the fork server (and so every worker) starts.
        self.publisher.announcer = Announcer(
            SystemdNotifier.from_environment(), os.path.basename(self.config.source)
        )
        # So are the secrets the configuration read from it (the token,
        # [kafka.config_env]): the fork server and the workers never talk to
        # the engine or the brokers.
        self._environ = dict(os.environ)
        for name in (*PRIVATE_ENV, *self.config.secret_env):
            os.environ.pop(name, None)
        for warning in self.config.warnings:
            log.warning("%s", warning)
        self.signals.install()
        if self.config.metrics.port is not None:
            self._setup_metrics()
        self._ctx.set_forkserver_preload(fork_server_preload(self.config.supervisor))
        try:
            helpers = start_helpers(
                self.config,
                self._make_client,
                make_reader(self.config, self._client),
                ledger=self.ledger,
                results=self.results,
                wake=self.signals.wake,
                metrics=self.publisher.metrics,
            )
        except RenewalUnavailableError as exc:
            self._fatal(EXIT_ERROR, f'lease_renewal = "required": {exc}')
            return
        self.results.reporter = helpers.reporter
        self.intake.source = helpers.poller
        self.stops.watch = helpers.watch
        self._reader = self.reports.reader = helpers.reader
        log.info(
            "supervisor starting: %d workers, engine %s, worker id %s",
            self.pool.target,
            redact_url(self.config.engine.url),
            self.config.supervisor.worker_id,
        )
        self._fill_pool()
        self.publisher.publish(time.monotonic(), self.phase)

    def _setup_metrics(self) -> None:
        kafka = self.config.engine.dispatch == "kafka"
        self.metrics_port = self.publisher.serve(self.config.metrics, kafka=kafka)
        self.intake.metrics = self.results.metrics = self.publisher.metrics

    def _teardown(self) -> None:
        self.life.reap_all(time.monotonic())
        self.results.take()  # settle what the reporters finished (Kafka commits it)
        self.intake.close()
        if self.stops.watch is not None:
            self.stops.watch.close()
        if self.results.reporter is not None:
            self.results.reporter.stop(give_up=True)
        self.publisher.close()
        self.signals.close()
        self._waitset.close()
        log.info("supervisor stopped (%s)", self.stats.summary())

    # -- signals -----------------------------------------------------------------

    def _handle_signals(self) -> None:
        for signum in self.signals.take():
            name = signal.Signals(signum).name
            if signum in (signal.SIGTERM, signal.SIGINT):
                if self.phase is Phase.DRAINING:
                    self._stop_now(name)
                else:
                    self._begin_drain(name)
            elif self.phase in (Phase.DRAINING, Phase.DONE):
                log.info("%s ignored: stopping", name)
            elif signum == signal.SIGHUP:
                self.handle_hup()
            elif signum == signal.SIGTTIN:
                self.handle_scale(+1)
            elif signum == signal.SIGTTOU:
                self.handle_scale(-1)

    # -- processes -------------------------------------------------------------------

    def _fill_pool(self) -> None:
        if self.phase not in (Phase.RUNNING, Phase.RELOADING):
            return
        for _ in range(self.pool.missing()):
            if self._spawn() is None:
                return  # try again next tick (or give up: see _on_boot_failure)

    def _spawn(self, *, surge: bool = False) -> WorkerSlot | None:
        slot_no = self.pool.next_slot_number()
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        config = self.reload.config_for(self.config, surge=surge)
        spec = WorkerSpec(
            slot=slot_no,
            handlers=tuple(config.supervisor.handlers),
            registry=self.registry,
            log_level=config.logging.level,
            log_format=config.logging.format,
            scrub_env=(*PRIVATE_ENV, *config.secret_env),
            metrics_dir=self.publisher.metrics_dir,
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
        slot = self.life.started(slot_no, process, parent_end, config.supervisor, surge=surge)
        self.reload.started(slot, config)
        return slot

    def _on_message(self, slot: WorkerSlot, message: object, *, dispatch: bool = True) -> None:
        if isinstance(message, JobDone):
            self._on_job_done(slot, message, dispatch=dispatch)
        elif isinstance(message, Ready):
            new = self.reload.ready(slot)
            if new is not None:
                self._adopt(new)
            self.life.on_ready(slot, message, self.config)
            if self.config.engine.dispatch == "kafka" and self.intake.source is None:
                self._start_kafka(message.job_types)
        elif isinstance(message, BootFailed):
            slot.boot_error = message.error
        else:
            log.error("worker-%d sent an unexpected message: %r", slot.slot, message)

    def _read_message(self, slot: WorkerSlot) -> None:
        """Take one message from a worker whose channel is readable: one per
        wake-up (a worker sends one per job; more wake the next wait at once),
        without the extra poll per message ``_read_messages`` pays."""
        try:
            self._on_message(slot, slot.conn.recv())
        except (EOFError, OSError):
            pass  # the worker is gone; its sentinel tells the rest

    def _read_messages(self, slot: WorkerSlot, *, dispatch: bool = True) -> None:
        """Take everything the worker has sent (before judging its death)."""
        try:
            while not slot.conn.closed and slot.conn.poll():
                self._on_message(slot, slot.conn.recv(), dispatch=dispatch)
        except (EOFError, OSError):
            pass  # the worker is gone; its sentinel tells the rest

    def _collect(self, slot: WorkerSlot) -> None:
        """Take everything a worker has sent before it is stopped (``Stops``):
        a result there is its job's outcome. Nothing is dispatched from here:
        the worker may be about to go, and the tick dispatches after its stops."""
        self._read_messages(slot, dispatch=False)

    def _on_job_done(self, slot: WorkerSlot, done: JobDone, *, dispatch: bool = True) -> None:
        slot.rss_bytes = done.rss_bytes
        entry = slot.job
        outcome = done.outcome
        if entry is None or entry.job_id != outcome.job_id:
            # Already decided (timed out, stale, or abandoned at shutdown):
            # the job was failed, dropped or left to lease expiry.
            log.info("worker-%d: late result for job %s ignored", slot.slot, outcome.job_id)
            return
        slot.job = None
        slot.jobs_done += 1
        if slot.state is SlotState.BUSY:
            slot.state = SlotState.IDLE
        now = time.monotonic()
        self.ledger.finish(entry.job_id, now)
        entry.handler_ran = done.handler_ran
        lease = entry.lease_length if entry.lease_end != math.inf else math.inf
        self.claims.observe(entry.job_type, outcome.duration, lease)
        self.results.report(outcome, entry, slot.slot)
        self.life.check_recycle(slot, self.config.supervisor)
        if slot.retiring and slot.state is SlotState.IDLE:
            slot.close_channel(now)
        elif dispatch and self.phase is not Phase.DRAINING:
            # A job claimed ahead starts now, without waiting for a poll.
            self.intake.dispatch_claimed(now, self.config)

    def _on_death(self, slot: WorkerSlot) -> None:
        self._read_messages(slot)
        slot.process.join(0.5)
        boot_error = self.life.on_exit(slot, draining=self.phase is Phase.DRAINING)
        self.publisher.worker_gone(slot.slot)
        if boot_error is not None:
            self._on_boot_failure(slot.slot, boot_error, slot.surge)

    def _on_boot_failure(self, slot_no: int, error: str, surge: bool) -> None:
        verdict = self.life.boot_failed(slot_no, error, surge=surge)
        if verdict is BootVerdict.GIVE_UP:
            self.fatal_error = error
            self._exit_code = EXIT_BOOT_FAILED
            self._stop_now("boot failure")
        elif verdict is BootVerdict.ABORT_RELOAD and self.phase is Phase.RELOADING:
            self._end_reload(aborted=True)

    # -- the main loop -----------------------------------------------------------------

    def _tick(self) -> None:
        try:
            self._tick_once()
        finally:
            self.results.flush(self.phase)

    def _tick_once(self) -> None:
        now = time.monotonic()
        timeout = self._next_deadline(now) - now
        # The flag was set before this look; a reporter thread queues its
        # answer before reading the flag: one of the two sees the other.
        if self.reports.wake_on_answer and self.reports.answered():
            timeout = 0.0
        ready = self._wait(timeout)
        if self.signals.read_fd in ready:
            self.signals.drain()
        self._handle_signals()
        sentinels: dict[int, WorkerSlot] = {}
        for slot in list(self.pool.slots.values()):
            sentinels[slot.sentinel()] = slot
            if not slot.conn.closed and slot.conn in ready:
                self._read_message(slot)
        self.results.take()
        self.stops.take_watch_verdicts()
        source = self.intake.source
        result = source.take() if source is not None else None
        if result is not None:
            self._on_poll_result(result)
        for fd, slot in sentinels.items():
            if fd in ready and self.pool.slots.get(slot.slot) is slot:
                self._on_death(slot)
        if self.phase is Phase.DONE:
            return
        now = time.monotonic()
        self._enforce_deadlines(now)
        if now >= self.life.next_rss_sample:
            self.life.sample_memory(now, self.config.supervisor)
        plan = None
        if self.phase is Phase.DRAINING:
            self._continue_drain(now)
        else:
            self._continue_reload()
            self._trim_pool(now)
            self._fill_pool()
            self.intake.follow_kafka_types()
            # A job claimed ahead waits for a busy worker; a worker can also
            # become idle without a result (a replacement just booted): it
            # takes the job too, or the job would wait for a poll that its
            # own claim holds back. Expired waiting jobs are dropped here.
            self.intake.dispatch_claimed(now, self.config)
            plan = self.intake.maybe_poll(now, self.phase, self.reports.taken)
        self.publisher.publish(now, self.phase)
        self.reports.wake_on_answer = self.intake.acks_urgent(self.phase, plan)

    def _wait(self, timeout: float) -> list[Any]:
        waitables: list[Any] = [self.signals.read_fd]
        for slot in self.pool.slots.values():
            if not slot.conn.closed:
                waitables.append(slot.conn)
            waitables.append(slot.sentinel())
        return self._waitset.wait(waitables, timeout)

    def _next_deadline(self, now: float) -> float:
        deadline = min(now + 1.0, self.intake.poll_deadline(now, self.phase))
        # Only deadlines still ahead, or that act once when reached: a passed
        # deadline left in here would make the loop spin.
        self._ledger_due = self.ledger.next_deadline()
        deadline = min(deadline, self._ledger_due)
        deadline = min(deadline, self.stops.next_deadline())
        if self.phase is Phase.DRAINING and now < self.drain.deadline:
            deadline = min(deadline, self.drain.deadline)
        deadline = min(deadline, self.publisher.next_deadline())
        hold_until = self.intake.requested_at + REPORT_HOLD
        if self.reports.queued and hold_until > now:
            deadline = min(deadline, hold_until)
        return deadline

    def _enforce_deadlines(self, now: float) -> None:
        self.stops.enforce_slots(now, self.config.supervisor.boot_timeout)
        if now < self._ledger_due:
            # No time limit, lease, stale check or renewal is due: skip the
            # scans of the running jobs (a job started this tick is at the
            # earliest due next tick, whose deadline counts it).
            return
        for entry in self.ledger.timed_out(now):
            running_on = self.stops.slot_of(entry)
            if running_on is not None:
                self.stops.time_out(running_on, entry, now)
        self.stops.log_overruns(now)
        if self.stops.watch is not None:
            self.stops.watch.ask_due(now)

    # -- the job source and fatal errors ------------------------------------------------

    def _on_wrong_dispatch(self, error: DispatchModeError) -> None:
        self.fatal_error = str(error)
        log.critical(
            "the engine dispatches jobs through Kafka and refuses polls: set "
            '[engine] dispatch = "kafka" and [kafka] brokers in %s (%s)',
            self.config.source,
            error,
        )
        self._exit_code = EXIT_CONFIG
        self._stop_now("wrong dispatch mode")

    def _start_kafka(self, job_types: tuple[str, ...]) -> None:
        wake, answers = self.signals.wake, self.reports.answers
        error = self.intake.start_kafka(self.config, job_types, wake, answers)
        if error is not None:
            self._fatal(EXIT_CONFIG if error.missing_topics else EXIT_ERROR, str(error))

    def _fatal(self, code: int, message: str) -> None:
        log.critical("%s; stopping the supervisor", message)
        self.fatal_error = message
        self._exit_code = code
        self._stop_now("fatal error")

    def _on_poll_result(self, result: PollResult) -> None:
        # An armed poll went out after the answers it waited for were queued:
        # release their jobs first, so the new ones fit in the ledger.
        self.results.take()
        now = time.monotonic()
        verdict = self.intake.on_result(result, now)
        if verdict is PollVerdict.WRONG_DISPATCH:
            self._on_wrong_dispatch(cast(DispatchModeError, result.error))
        elif verdict is PollVerdict.CLAIMED:
            self.intake.dispatch_claimed(now, self.config)

    # -- reload and scaling ------------------------------------------------------------

    def handle_hup(self) -> None:
        if self.phase is Phase.RELOADING:
            if self.reload.queue():
                log.info("SIGHUP during a reload: applied once this reload ends")
            return
        new = reload_config(
            self.config,
            self.pool.target,
            require_handlers=self.registry is None,
            environ=self._environ,
        )
        if new is None:
            return
        self.reload.begin(new)
        self.publisher.announcer.reloading()
        self.phase = Phase.RELOADING
        count = self.pool.begin_reload()
        log.info(
            "SIGHUP: replacing %d workers one at a time; the new configuration takes effect "
            "once its first worker is ready",
            count,
        )
        if count == 0:
            self._spawn(surge=True)  # no worker to replace: still try the configuration

    def _adopt(self, new: SupervisorConfig) -> None:
        """A worker of the reload's configuration is ready: it is now in effect."""
        if new is self.config:
            return  # built in code, no file: the workers are replaced, nothing else
        old, self.config = self.config, new
        self.intake.poll_interval = new.supervisor.poll_interval
        self._resize(new.supervisor.workers)
        if self._reader is not None:
            self.ledger.stale_interval = new.supervisor.stale_check_interval
        if self.ledger.renew_every is not None:  # renewal is in effect
            self.ledger.renew_every = new.supervisor.lease_renewal_interval
        self.reload.apply_logging(old, new)
        log.info("SIGHUP: the new configuration is in effect (its first worker is ready)")

    def _continue_reload(self) -> None:
        if self.phase is not Phase.RELOADING:
            return
        step, old = self.pool.reload_step()
        if step is ReloadStep.START_SURGE:
            self._spawn(surge=True)
        elif step is ReloadStep.RETIRED and old is not None:
            old.retire("reload", time.monotonic())
        elif step is ReloadStep.DONE:
            log.info("reload finished")
            self._end_reload()

    def _end_reload(self, *, aborted: bool = False) -> None:
        self.phase = Phase.RUNNING
        self.publisher.announcer.reloaded()
        if self.reload.end(aborted=aborted):
            log.info("SIGHUP: applying the SIGHUP that came during the reload")
            self.handle_hup()

    def handle_scale(self, delta: int) -> None:
        name = "SIGTTIN" if delta > 0 else "SIGTTOU"
        if self.pool.scale(delta) is None:
            log.info("%s ignored: the pool keeps at least one worker", name)
            return
        self._resize(self.pool.target)
        log.info("%s: pool size now %d", name, self.pool.target)

    def _resize(self, workers: int) -> None:
        self.pool.target = workers
        self.ledger.limit = HELD_PER_WORKER * workers

    def _trim_pool(self, now: float) -> None:
        if self.phase is not Phase.RUNNING:
            return
        for slot in self.pool.to_trim():
            slot.retire("scale", now)

    # -- stopping ----------------------------------------------------------------------

    def _begin_drain(self, why: str) -> None:
        self.phase = Phase.DRAINING
        self.drain.begin(why, time.monotonic(), self.config.supervisor.graceful_timeout)
        self.publisher.announcer.stopping()

    def _continue_drain(self, now: float) -> None:
        reporter = self.results.reporter
        assert reporter is not None
        if self.drain.step(now) is DrainStep.WAIT:
            return
        # Every worker is gone: give the reports what is left of the drain time.
        if not reporter.wait_idle(self.drain.remaining(now)):
            log.error(
                "%d reports still undelivered at the end of graceful_timeout; giving up",
                reporter.pending(),
            )
        self.phase = Phase.DONE

    def _stop_now(self, why: str) -> None:
        log.warning("%s: stopping now; running jobs are left to the engine's lease expiry", why)
        if self.phase is not Phase.DRAINING:
            self.publisher.announcer.stopping()
        self.stops.abandon_all(time.monotonic())
        self.phase = Phase.DONE


__all__ = [
    "CANCEL_GRACE",
    "EXIT_BOOT_FAILED",
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_OK",
    "KILL_GRACE",
    "PUBLISH_INTERVAL",
    "REPORT_HOLD",
    "Phase",
    "Supervisor",
]
