"""The supervisor: owns the worker processes and is the only place that starts them.

One main loop (``tick``) waits on every worker's channel and process
sentinel, a wake-up pipe and a timer, takes in what happened (signals,
workers' messages and exits, report answers, the source's answer), then acts
on what is due: deadlines, drain or reload, the pool's size, dispatch to
idle workers, the next poll. Signal handlers only record the signal; the
loop acts on it.

Decisions live in small objects that return verdicts: the job ledger
(``ledger.JobLedger``: what we hold, from claim to the engine's answer, and
the bound on it), the worker pool (``pool.WorkerPool``: which workers
exist, which should, which must go) and the claim plan (``claim_plan``).
Each other concern is an object of its own, built by ``start`` before the
loop runs and called directly from it: the intake (``intake.Intake``: the
job source, polls, claims, dispatch to idle workers), the report desk
(``reports.ReportDesk``: outcomes to the reporter threads and their
answers), the stopper (``stops.Stopper``: time limits, memory kills, stale
and lease-lost jobs, escalation to SIGKILL), the workers' lifecycle
(``lifecycle.WorkerLifecycle``: records, readiness, recycling, exits), the
drain (``drain.Drain``), SIGHUP's new configuration (``reload``) and what
is shown outside (``publisher.Publisher``). This class owns the phase and
the loop, starts every worker (through ``start_worker``: the fork server by
default, see ``startup``), and carries the verdicts out.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from typing import Any, cast

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.errors import DispatchModeError
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.sanitize import redact_url
from workflow_sdk.supervisor.clients import EngineClients
from workflow_sdk.supervisor.config import SupervisorConfig
from workflow_sdk.supervisor.exposition.announcer import Announcer
from workflow_sdk.supervisor.exposition.manual import (
    EXIT_BOOT_FAILED,
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_OK,
)
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.exposition.systemd import SYSTEMD_ENV, SystemdNotifier
from workflow_sdk.supervisor.io.renewal import RenewalUnavailableError
from workflow_sdk.supervisor.io.source import PollResult, SourceOpener, SourceUnavailableError
from workflow_sdk.supervisor.loop import worker_setup
from workflow_sdk.supervisor.loop.claim_plan import ClaimPolicy
from workflow_sdk.supervisor.loop.control import TOGGLE, IntakeControl
from workflow_sdk.supervisor.loop.drain import Drain, DrainStep
from workflow_sdk.supervisor.loop.intake import REPORT_HOLD, Intake, PollVerdict
from workflow_sdk.supervisor.loop.ledger import JobLedger
from workflow_sdk.supervisor.loop.lifecycle import WorkerLifecycle
from workflow_sdk.supervisor.loop.parent_hooks import HooksImportError
from workflow_sdk.supervisor.loop.phase import Phase
from workflow_sdk.supervisor.loop.pool import BootVerdict, ReloadStep, WorkerPool
from workflow_sdk.supervisor.loop.publisher import Publisher
from workflow_sdk.supervisor.loop.reports import ReportDesk
from workflow_sdk.supervisor.loop.signals import SignalInbox
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot
from workflow_sdk.supervisor.loop.stack_dumps import StackDumps
from workflow_sdk.supervisor.loop.startup import WorkerStarter, open_rooms
from workflow_sdk.supervisor.loop.stops import Stopper
from workflow_sdk.supervisor.loop.type_limits import TypeLimits
from workflow_sdk.supervisor.loop.waitset import WaitSet
from workflow_sdk.supervisor.loop.watch import RunningJobWatch
from workflow_sdk.supervisor.reload import Reload, reload_config
from workflow_sdk.supervisor.worker.protocol import BootFailed, JobDone, Ready

log = logging.getLogger("workflow_sdk.supervisor")


#: Jobs held at most (claimed, running, reports in flight), per worker.
HELD_PER_WORKER = 2
#: Environment variables that belong to this process only.
PRIVATE_ENV = (*SYSTEMD_ENV, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class Supervisor:
    """Run a pool of worker processes for the job types of ``config``'s handlers.

    ``registry`` adds handlers built in code; its handler functions must be
    importable by name (module-level functions), since workers receive the
    registry by pickling. ``client`` replaces the REST clients built from
    ``config.engine``; it is used from this process's poller, reporter and
    stale-watch threads only, never from the workers. A client without
    ``get_instance``/``get_instance_history`` disables the stale-job checks.

    Keyword-only, for embedding and tests: ``clients`` makes the engine
    clients instead (an ``EngineClients``; not with ``client``);
    ``source`` opens the job source once the first worker is ready (an
    ``io.source.SourceOpener``; default: the poller, or the Kafka feeder);
    ``start_worker`` starts each worker process (a ``startup.WorkerStarter``;
    default: forked from a fork server).
    """

    def __init__(
        self,
        config: SupervisorConfig,
        registry: HandlerRegistry | None = None,
        client: WorkerEngineClient | None = None,
        *,
        clients: EngineClients | None = None,
        source: SourceOpener | None = None,
        start_worker: WorkerStarter | None = None,
    ) -> None:
        if not config.supervisor.handlers and registry is None:
            raise ValueError("no handlers: set [supervisor] handlers or pass registry=")
        if client is not None and clients is not None:
            raise ValueError("pass client= or clients=, not both")
        self.config = config
        self.registry = registry
        #: Every engine client the supervisor uses is made here.
        self.clients = clients or EngineClients(config.engine, client)
        self._given_source = source
        self._given_starter = start_worker
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
        #: What each job type's settings come to (replaced with the configuration).
        self.limits = TypeLimits(config)
        #: How many jobs to claim: per idle worker, and ahead for short job types.
        self.claim_policy = ClaimPolicy(concurrency=self.limits.concurrency)
        self.signals = SignalInbox()
        #: SIGHUP's reload: the configuration on trial, a SIGHUP queued.
        self.reload = Reload()
        #: This process's environment as it started, secrets included, for
        #: SIGHUP's re-read (the secrets leave ``os.environ`` in ``start``).
        self._environ: dict[str, str] = {}
        self._waitset = WaitSet()
        #: The ledger's next deadline, as of the start of this tick.
        self._ledger_due = 0.0
        self._exit_code = EXIT_OK
        #: What ``close`` undoes, in the reverse order of ``start``.
        self._closing = contextlib.ExitStack()
        # Built by ``start``, before the loop runs:
        self.announcer: Announcer
        self.start_worker: WorkerStarter
        self.intake: Intake
        self.control: IntakeControl
        self.publisher: Publisher
        self.desk: ReportDesk
        self.watch: RunningJobWatch
        self.stopper: Stopper
        self.drain: Drain
        self.life: WorkerLifecycle
        self.dumps: StackDumps
        self._open_source: SourceOpener

    # -- public ------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped by a signal (or ``request_stop``); returns an exit status."""
        try:
            self.start()
            while self.phase is not Phase.DONE:
                self.tick()
        finally:
            self.close()
        return self._exit_code

    def request_stop(self) -> None:
        """Begin a graceful stop, as SIGTERM does (safe from any thread)."""
        self.signals.record(signal.SIGTERM)

    # -- start and close -----------------------------------------------------------

    def start(self) -> None:
        """Build everything the loop works with, then start the first workers.

        First systemd's and the secrets' variables leave the environment (no
        worker sees them) and the signals are recorded; then
        ``startup.open_rooms`` builds the rest (/metrics serves, the engine
        is asked what it can do, the reporter and watch threads start). The
        job source opens with the first ready worker. ``close`` undoes it
        all, however far it got.
        """
        config = self.config
        self._closing.callback(self._waitset.close)
        self.announcer = Announcer(
            SystemdNotifier.from_environment(), os.path.basename(config.source)
        )
        self._closing.callback(self.announcer.close)  # the publisher closes it too
        # The secrets the configuration read from the environment (the token,
        # [kafka.config_env]) stay in this process too: the fork server and
        # the workers never talk to the engine or the brokers.
        self._environ = dict(os.environ)
        for name in (*PRIVATE_ENV, *config.secret_env):
            os.environ.pop(name, None)
        for warning in config.warnings:
            log.warning("%s", warning)
        for warning in worker_setup.start_warnings(config.supervisor, os.environ):
            log.warning("%s", warning)
        self.signals.install()
        self._closing.callback(self.signals.close)
        try:
            rooms = open_rooms(
                config,
                pool=self.pool,
                ledger=self.ledger,
                claim_policy=self.claim_policy,
                stats=self.stats,
                announcer=self.announcer,
                clients=self.clients,
                wake=self.signals.wake,
                collect=self._collect,
                closing=self._closing,
                source=self._given_source,
                start_worker=self._given_starter,
                limits=self.limits,
            )
        except RenewalUnavailableError as exc:
            self._fatal(EXIT_ERROR, f'lease_renewal = "required": {exc}')
            return
        except HooksImportError as exc:
            self._fatal(EXIT_BOOT_FAILED, str(exc))
            return
        self.intake, self.publisher, self.desk = rooms.intake, rooms.publisher, rooms.desk
        self.watch, self.stopper, self.drain = rooms.watch, rooms.stopper, rooms.drain
        self.life, self.metrics_port, self.control = rooms.life, rooms.metrics_port, rooms.control
        self.start_worker, self._open_source = rooms.start_worker, rooms.open_source
        self.dumps = rooms.dumps
        log.info(
            "supervisor starting: %s, engine %s, worker id %s",
            worker_setup.start_line(config, self.pool.target),
            redact_url(config.engine.url),
            config.supervisor.worker_id,
        )
        self._fill_pool()
        self.publisher.publish(time.monotonic(), self.phase)

    def close(self) -> None:
        """Stop every worker and thread ``start`` started (safe after a partial start)."""
        self._closing.close()
        log.info("supervisor stopped (%s)", self.stats.summary())

    # -- the main loop -----------------------------------------------------------------

    def tick(self) -> None:
        """One pass of the main loop: wait until something happens or falls
        due, take in what happened, act on what is due. The reports of the
        pass leave at its end."""
        try:
            ready = self._wait_for_events(time.monotonic())
            self._take_events(ready)
            if self.phase is not Phase.DONE:
                self._act(time.monotonic())
        finally:
            self.desk.flush(self.phase)

    def _wait_for_events(self, now: float) -> list[Any]:
        timeout = self.next_deadline(now) - now
        # The flag was set before this look; a reporter thread queues its
        # answer before reading the flag: one of the two sees the other.
        if self.desk.wake_on_answer and self.desk.answered():
            timeout = 0.0
        waitables: list[Any] = [self.signals.read_fd]
        for slot in self.pool.slots.values():
            if not slot.conn.closed:
                waitables.append(slot.conn)
            waitables.append(slot.sentinel)
        return self._waitset.wait(waitables, timeout)

    def _take_events(self, ready: list[Any]) -> None:
        """Signals, workers' messages, report answers, the watch's verdicts,
        the source's answer, then the workers' exits (after their messages)."""
        if self.signals.read_fd in ready:
            self.signals.drain()
        self._handle_signals()
        self.control.take(self.phase)  # pause and resume asked over HTTP
        sentinels: dict[int, WorkerSlot] = {}
        for slot in list(self.pool.slots.values()):
            sentinels[slot.sentinel] = slot
            if not slot.conn.closed and slot.conn in ready:
                self._read_message(slot)
        self.desk.take()
        self.stopper.take_watch_verdicts()
        result = self.intake.take()
        if result is not None:
            self._on_poll_result(result)
        for fd, slot in sentinels.items():
            if fd in ready and self.pool.slots.get(slot.number) is slot:
                self._on_death(slot)

    def _act(self, now: float) -> None:
        self._enforce_deadlines(now)
        if now >= self.life.next_rss_sample:
            self.life.sample_memory(now, self.config.supervisor, self.limits)
        if now >= self.dumps.next_check:
            self.dumps.check(now, self.pool.slots.values())  # live workers' stack dumps
        plan = None
        if self.phase is Phase.DRAINING:
            self._continue_drain(now)
        else:
            self._continue_reload()
            self._trim_pool(now)
            self._fill_pool()
            self.intake.follow_types()
            # A job claimed ahead waits for a busy worker; a worker can also
            # become idle without a result (a replacement just booted): it
            # takes the job too, or the job would wait for a poll that its
            # own claim holds back. Expired waiting jobs are dropped here.
            self.intake.dispatch_claimed(now, self.config)
            plan = self.intake.maybe_poll(now, self.phase, self.desk.taken)
        self.publisher.publish(now, self.phase)
        self.desk.wake_on_answer = self.intake.answers_wake_loop(self.phase, plan)

    def next_deadline(self, now: float) -> float:
        """When the loop must wake next at the latest (a poll, a job's time limit,
        lease or check, an escalation, the drain's end, a publish, a held report)."""
        deadline = min(now + 1.0, self.intake.poll_deadline(now, self.phase))
        # Only deadlines still ahead, or that act once when reached: a passed
        # deadline left in here would make the loop spin.
        self._ledger_due = self.ledger.next_deadline()
        deadline = min(deadline, self._ledger_due)
        deadline = min(deadline, self.stopper.next_deadline())
        if self.phase is Phase.DRAINING and now < self.drain.deadline:
            deadline = min(deadline, self.drain.deadline)
        deadline = min(deadline, self.publisher.next_deadline(), self.desk.next_due())
        hold_until = self.intake.requested_at + REPORT_HOLD
        if self.desk.queued and hold_until > now:
            deadline = min(deadline, hold_until)
        return deadline

    def _enforce_deadlines(self, now: float) -> None:
        self.stopper.enforce_slots(now, self.config.supervisor.boot_timeout)
        if now < self._ledger_due:
            # No time limit, lease, stale check or renewal is due: skip the
            # scans of the running jobs (a job started this tick is at the
            # earliest due next tick, whose deadline counts it).
            return
        for entry in self.ledger.timed_out(now):
            running_on = self.stopper.slot_of(entry)
            if running_on is not None:
                self.stopper.time_out(running_on, entry, now)
        self.stopper.log_overruns(now)
        self.watch.ask_due(now)

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
            elif signum == signal.SIGUSR2:
                self.control.apply(TOGGLE, self.phase, name)
            elif signum == signal.SIGUSR1:
                log.warning(
                    "SIGUSR1 ignored: it means nothing to the supervisor (logs go to "
                    "stderr, there is no file to reopen; a worker's stacks: kill -s "
                    "RTMIN+1 <worker pid>)"
                )

    # -- processes -------------------------------------------------------------------

    def _fill_pool(self) -> None:
        if self.phase not in (Phase.RUNNING, Phase.RELOADING):
            return
        for _ in range(self.pool.missing()):
            if self._spawn() is None:
                return  # try again next tick (or give up: see _on_boot_failure)

    def _spawn(self, *, surge: bool = False) -> WorkerSlot | None:
        slot_no = self.pool.next_slot_number()
        config = self.reload.config_for(self.config, surge=surge)
        limits = self.limits if config is self.config else TypeLimits(config)
        spec = worker_setup.worker_spec(
            config,
            slot_no,
            self.registry,
            scrub_env=(*PRIVATE_ENV, *config.secret_env),
            metrics_dir=self.publisher.metrics_dir,
            type_threads=limits.threads,
            stack_dir=self.dumps.directory,
        )
        try:
            process, conn = self.start_worker(spec)
        except (OSError, EOFError) as exc:
            self._on_boot_failure(slot_no, f"could not start a worker process: {exc!r}", surge)
            return None
        slot = self.life.started(slot_no, process, conn, config.supervisor, surge=surge)
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
            if not self.intake.is_open:
                self._open_intake(message.job_types)
        elif isinstance(message, BootFailed):
            slot.boot_failed(message.error)
        else:
            log.error("worker-%d sent an unexpected message: %r", slot.number, message)

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
        """Take everything a worker has sent before it is stopped (``Stopper``):
        a result there is its job's outcome. Nothing is dispatched from here:
        the worker may be about to go, and the tick dispatches after its stops."""
        self._read_messages(slot, dispatch=False)

    def _on_job_done(self, slot: WorkerSlot, done: JobDone, *, dispatch: bool = True) -> None:
        outcome = done.outcome
        entry = slot.job_done(outcome.job_id, done.rss_bytes)
        if entry is None:
            # Already decided (timed out, stale, or abandoned at shutdown):
            # the job was failed, dropped or left to lease expiry.
            log.info("worker-%d: late result for job %s ignored", slot.number, outcome.job_id)
            return
        now = time.monotonic()
        self.ledger.finish(entry.job_id, now)
        entry.handler_ran = done.handler_ran
        lease = entry.lease_length if entry.lease_end != math.inf else math.inf
        self.claim_policy.observe(entry.job_type, outcome.duration, lease)
        self.desk.report(outcome, entry, slot.number)
        self.life.check_recycle(slot, self.config.supervisor, self.limits)
        if slot.retiring and slot.state is SlotState.IDLE:
            slot.close_channel(now)
        elif dispatch and self.phase is not Phase.DRAINING:
            # A job claimed ahead starts now, without waiting for a poll.
            self.intake.dispatch_claimed(now, self.config)

    def _on_death(self, slot: WorkerSlot) -> None:
        self._read_messages(slot)
        slot.process.join(0.5)
        boot_error = self.life.on_exit(slot, draining=self.phase is Phase.DRAINING)
        self.dumps.reaped(slot)
        self.publisher.worker_gone(slot.number)
        if boot_error is not None:
            self._on_boot_failure(slot.number, boot_error, slot.surge)

    def _on_boot_failure(self, slot_no: int, error: str, surge: bool) -> None:
        verdict = self.life.boot_failed(slot_no, error, surge=surge)
        if verdict is BootVerdict.GIVE_UP:
            self.fatal_error = error
            self._exit_code = EXIT_BOOT_FAILED
            self._stop_now("boot failure")
        elif verdict is BootVerdict.ABORT_RELOAD and self.phase is Phase.RELOADING:
            self._end_reload(aborted=True)

    # -- the job source and fatal errors ------------------------------------------------

    def _open_intake(self, job_types: tuple[str, ...]) -> None:
        try:
            self.intake.open(self._open_source, job_types, self.signals.wake)
        except SourceUnavailableError as exc:
            self._fatal(EXIT_CONFIG if exc.config_error else EXIT_ERROR, str(exc))
            return
        # Report answers counted before it was open (an armed poll counts them).
        self.intake.answered(self.desk.answers)

    def _on_poll_result(self, result: PollResult) -> None:
        # An armed poll went out after the answers it waited for were queued:
        # release their jobs first, so the new ones fit in the ledger.
        self.desk.take()
        now = time.monotonic()
        verdict = self.intake.on_result(result, now)
        if verdict is PollVerdict.WRONG_DISPATCH:
            self._on_wrong_dispatch(cast(DispatchModeError, result.error))
        elif verdict is PollVerdict.CLAIMED:
            self.intake.dispatch_claimed(now, self.config)

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

    def _fatal(self, code: int, message: str) -> None:
        log.critical("%s; stopping the supervisor", message)
        self.fatal_error = message
        self._exit_code = code
        self._stop_now("fatal error")

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
        self.announcer.reloading()
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
        self.limits = self.desk.limits = TypeLimits(new)
        self.claim_policy.concurrency = self.limits.concurrency
        self.intake.poll_interval = new.supervisor.poll_interval
        self._resize(new.supervisor.workers)
        if self.watch.checks_stale:
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
        self.announcer.reloaded()
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
        self.desk.stop_holding()  # held retryable fails go out now
        self.drain.begin(why, time.monotonic(), self.config.supervisor.graceful_timeout)
        self.announcer.stopping()

    def _continue_drain(self, now: float) -> None:
        if self.drain.step(now) is DrainStep.DONE:
            self.phase = Phase.DONE

    def _stop_now(self, why: str) -> None:
        log.warning("%s: stopping now; running jobs are left to the engine's lease expiry", why)
        if self.phase is not Phase.DRAINING:
            self.announcer.stopping()
        if self.pool.slots:  # none before the first start (a fatal error in ``start``)
            self.stopper.abandon_all(time.monotonic())
        self.phase = Phase.DONE


__all__ = ["EXIT_BOOT_FAILED", "EXIT_CONFIG", "EXIT_ERROR", "EXIT_OK", "Supervisor"]
