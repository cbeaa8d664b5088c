"""The threaded Runner: polls the engine and runs light, I/O-bound handlers.

Shape
-----
``run()`` is the *poller*: it claims jobs and hands each to one of
``parallelism`` worker threads, which run the handler and report the outcome
from their own thread (a slow report delays only that slot).

Capacity
--------
The engine's 30 s lease starts at the claim (and a released engine cannot
extend it), so a job that waits behind busy threads burns its lease. The poller therefore asks for
exactly as many jobs as there are idle worker threads, and polls again only
once every job it handed out has actually started. With no idle thread it
does not poll: it waits on a condition that a worker notifies when it frees
its slot.

Wake-ups
--------
Every wait of the poller is a wait on one ``threading.Condition``, notified
when a slot frees, when a claimed job starts, and by ``stop()``. A stop that
cannot notify the condition (a signal handler, which must not take locks, or
an external ``stop_event``) is noticed within ``_TICK`` seconds: only then
are the waits cut into ticks.

Reporting
---------
Through ``workflow_sdk.reporting.deliver``: a completion is retried with
backoff until it lands or ``report_deadline`` passes; a fail is sent at most
once unless it surely never left this machine, and never once the job's lease
has passed (the job may already run on another worker, and a fail checks
neither the worker nor the job's state). A job whose lease has passed before
it could start is not started and not failed: the engine redelivers it.

Before any fail the Runner asks the engine whether the job still matters
(``workflow_sdk.staleness``), when the client can read instances: a fail for
a job of a cancelled or finished instance, or of an interrupted step, would
fail the instance. Such a job is reported not at all.

Running jobs
------------
A watch (``runner.watch``) renews the leases of running jobs when
``heartbeat=True`` and checks every ``stale_check_interval`` seconds whether
they still matter, renewals and checks on threads of their own (a slow
check never delays a renewal). Each handler finds a ``threading.Event`` under
``context["cancelEvent"]``, set when its job's lease is lost, when the job
went stale, and at shutdown. Nothing is reported for a job whose lease was
lost or which went stale; at shutdown a completion is still sent but a
failure is not (the engine delivers the job again after its lease).

One job at a time
-----------------
A job handed out again while this Runner still holds it (its lease passed)
is not started twice: one result is sent, ``redeliveries_coalesced``
counts it (see ``runner.holds`` for the two exceptions).

Stop
----
``stop()``, SIGTERM/SIGINT (when ``run`` is called from the main thread) or
the ``stop_event`` end the claiming and set every running job's cancel
event; in-flight handlers get ``drain_timeout`` (or ``run``'s
``shutdown_timeout``) seconds to finish and report; then pending report
retries give up and ``run()`` returns. Worker threads are daemon threads: a
handler stuck for ever is abandoned and does not hang the shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.jobcore import (
    OUTAGE_LOG_EVERY,
    PollOutageLog,
    default_worker_id,
    record_outcome,
    usable_jobs,
)
from workflow_sdk.lease import lease_deadline, lease_seconds
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.reporting import DEFAULT_REPORT_DEADLINE, ReportStatus
from workflow_sdk.retry.backoff import Backoff
from workflow_sdk.runner.holds import Held, JobHolds
from workflow_sdk.runner.options import check_runner_options
from workflow_sdk.runner.threads import Lifecycle, Tally, WorkerThreads, report, run_job
from workflow_sdk.runner.watch import (
    CANCEL_LEASE_LOST,
    CANCEL_SHUTDOWN,
    CANCEL_STALE,
    JobWatch,
    WatchedJob,
    reader_of,
)
from workflow_sdk.staleness import RETIRE_REASONS

log = logging.getLogger("workflow_sdk.runner")

#: Longest a poller wait lasts when a stop may arrive without a notification
#: (signal handler, external ``stop_event``).
_TICK = 0.1
#: While the engine stays unreachable, repeat the warning at most this often.
_OUTAGE_LOG_EVERY = OUTAGE_LOG_EVERY
#: Default seconds between stale checks of a running job.
DEFAULT_STALE_CHECK_INTERVAL = 5.0


@dataclass(frozen=True)
class RunnerStats:
    """Counters of one Runner (a snapshot; read ``Runner.stats`` again for fresh values)."""

    #: Poll requests that got an answer, and those that raised.
    polls: int = 0
    poll_errors: int = 0
    #: Jobs received from the engine.
    jobs_claimed: int = 0
    #: Jobs whose handler was called.
    jobs_started: int = 0
    #: Completions and fails that reached the engine.
    completed: int = 0
    failed: int = 0
    #: Jobs not started because their lease had already passed.
    skipped_expired: int = 0
    #: Claimed jobs dropped unstarted at stop (beyond what the engine was asked for).
    dropped_at_stop: int = 0
    #: Failures not sent because the job's lease had passed (it may run elsewhere).
    fails_withheld: int = 0
    #: Reports given up: deadline passed, shutdown, or a fail that may have
    #: reached the engine and cannot be resent safely.
    reports_lost: int = 0
    #: Reports the engine refused for good (unknown job, bad request).
    reports_rejected: int = 0
    #: Resends of a report after a transient error.
    report_retries: int = 0
    #: Handlers that raised a BaseException (SystemExit...) rather than an Exception.
    handler_crashes: int = 0
    #: Jobs not reported because they no longer mattered (found before a fail,
    #: or while they ran).
    stale: int = 0
    #: Lease renewals the engine accepted, and leases lost (nothing reported).
    lease_renewals: int = 0
    leases_lost: int = 0
    #: Jobs handed out again while this Runner still held them (not started twice).
    redeliveries_coalesced: int = 0


# A claimed job as the poller hands it to a worker: the job, the
# ``time.monotonic()`` taken just before the poll that claimed it, and its hold.
_Work = tuple[dict[str, Any], float, Held]


class Runner:
    """Claims jobs of the registry's job types and runs their handlers on threads.

    :param client: the engine (``RestEngineClient`` or anything with the
        ``WorkerEngineClient`` methods); it must be safe to call from several
        threads at once. For ``RestEngineClient`` keep ``pool_size`` at least
        ``3 * parallelism + 1`` (handlers' reports, renewals and stale
        checks each run on up to ``parallelism`` threads, and the poll).
    :param registry: job type -> handler.
    :param worker_id: sent with every call; default ``<host name>-<pid>``.
    :param parallelism: worker threads, i.e. handlers running at once.
    :param poll_interval: seconds to wait after a poll that returned no job.
    :param metrics: where to record the shared ``workflow_sdk_*`` metrics;
        default ``Metrics()``, on prometheus_client's default ``REGISTRY``
        (``Metrics`` registers its collectors once per registry, so several
        Runners in one process share them).
    :param drain_timeout: seconds in-flight handlers get to finish and
        report after a stop; pending report retries then give up.
    :param report_deadline: seconds a completion is retried before it is
        counted lost.
    :param job_types: job types to claim; default: the registry's, at
        construction time.
    :param heartbeat: renew the lease of running jobs (engines with lease
        extension only; on a released engine it turns itself off with one
        warning). Renewal runs on a thread and needs the GIL: a handler that
        holds it in one long C call delays it (use the supervisor for
        CPU-heavy work).
    :param lease_seconds: the lease asked for in each poll and at each
        renewal (5-3600); default: the engine's own.
    :param heartbeat_interval: seconds between renewals; default a third of
        the lease.
    :param stale_check_interval: while a job runs, ask the engine this often
        whether it still matters (0 = never); needs a client with
        ``get_instance`` and ``get_instance_history``.
    """

    def __init__(
        self,
        client: WorkerEngineClient,
        registry: HandlerRegistry,
        worker_id: str | None = None,
        *,
        parallelism: int = 4,
        poll_interval: float = 1.0,
        metrics: Metrics | None = None,
        drain_timeout: float = 25.0,
        report_deadline: float = DEFAULT_REPORT_DEADLINE,
        job_types: list[str] | None = None,
        heartbeat: bool = False,
        lease_seconds: int | None = None,
        heartbeat_interval: float | None = None,
        stale_check_interval: float = DEFAULT_STALE_CHECK_INTERVAL,
    ) -> None:
        types = check_runner_options(
            client,
            registry,
            job_types,
            parallelism=parallelism,
            poll_interval=poll_interval,
            drain_timeout=drain_timeout,
            report_deadline=report_deadline,
            heartbeat=heartbeat,
            lease_seconds=lease_seconds,
            heartbeat_interval=heartbeat_interval,
            stale_check_interval=stale_check_interval,
        )
        self.client = client
        self.registry = registry
        self.worker_id = worker_id or default_worker_id()
        self.parallelism = parallelism
        self.poll_interval = float(poll_interval)
        self.metrics = metrics if metrics is not None else Metrics()
        self.drain_timeout = float(drain_timeout)
        self.report_deadline = float(report_deadline)
        self.job_types = sorted(set(types))
        self.heartbeat = heartbeat
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval
        self.stale_check_interval = float(stale_check_interval)
        self._watch = JobWatch(
            client,
            self.worker_id,
            self.metrics,
            heartbeat=heartbeat,
            lease_seconds=lease_seconds,
            heartbeat_interval=heartbeat_interval,
            stale_check_interval=self.stale_check_interval,
            workers=parallelism,
        )
        self._watch_thread: threading.Thread | None = None
        #: Jobs held, from claim to report (guarded by ``_cond``).
        self._holds = JobHolds()

        self._cond = threading.Condition()
        # One lock for this, the stats, the workers' idle count and the run's state.
        self._unstarted = 0  # jobs handed to a worker that did not start yet
        self._stats = Tally(self._cond, RunnerStats())
        self._workers = WorkerThreads(
            self._cond,
            parallelism,
            self._run_work,
            name="workflow-runner",
            label="runner",
            log=log,
            job_of=lambda work: work[0],
        )
        self._life = Lifecycle(self._cond, "Runner")
        self._tick: float | None = None
        self._give_up = threading.Event()
        # Jobs an engine sent beyond what was asked for, waiting for a thread
        # (poller thread only).
        self._backlog: deque[_Work] = deque()

    # -- public --------------------------------------------------------------

    @property
    def stats(self) -> RunnerStats:
        """A snapshot of the counters."""
        watch = self._watch
        return replace(
            self._stats.snapshot(),
            lease_renewals=watch.renewals_accepted,
            leases_lost=watch.leases_lost,
        )

    @property
    def busy(self) -> int:
        """Worker threads currently holding a job."""
        with self._cond:
            return self._workers.busy

    def stop(self) -> None:
        """Stop claiming; ``run()`` drains in-flight handlers, then returns.

        Safe from any thread (a handler included) and before ``run()``.
        """
        self._life.request_stop()

    def run(
        self, stop_event: threading.Event | None = None, shutdown_timeout: float | None = None
    ) -> None:
        """Claim and run jobs until stopped; blocks. A Runner runs once.

        Stops on ``stop()``, when ``stop_event`` is set, or on SIGTERM/SIGINT
        when called from the main thread (the previous signal handlers are
        restored on return). ``shutdown_timeout``, when given, replaces
        ``drain_timeout``: seconds in-flight handlers get after the stop.
        """
        if shutdown_timeout is not None:
            if not shutdown_timeout >= 0:
                raise ValueError(f"shutdown_timeout must be >= 0, got {shutdown_timeout!r}")
            self.drain_timeout = float(shutdown_timeout)
        with self._life.running(stop_event) as by_signal:
            if by_signal or stop_event is not None:
                self._tick = _TICK
            self._run()

    def _run(self) -> None:
        self._start_workers()
        log.info(
            "runner %s started: job types %s, %d threads, lease renewal %s, stale checks %s",
            self.worker_id,
            self.job_types,
            self.parallelism,
            "on" if self.heartbeat else "off",
            f"every {self.stale_check_interval:g} s"
            if self.stale_check_interval and reader_of(self.client) is not None
            else "off",
        )
        try:
            self._poll_loop()
        finally:
            self._shutdown()

    def join_workers(self, timeout: float | None = None) -> bool:
        """Wait for the worker threads to end after ``run()`` returned.

        ``run()`` does not wait for a handler stuck past the drain; this lets
        tests and embedders wait for it. True when every thread has ended.
        """
        return self._workers.join(timeout)

    # -- poller ----------------------------------------------------------------

    def _wait(self, predicate: Callable[[], bool], timeout: float | None) -> None:
        """Wait (holding ``_cond``) until ``predicate()``, a stop, or ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not predicate() and not self._life.stopping():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            if self._tick is not None:
                remaining = self._tick if remaining is None else min(remaining, self._tick)
            self._cond.wait(remaining)

    def _pause(self, seconds: float) -> None:
        with self._cond:
            self._wait(lambda: False, seconds)

    def _poll_loop(self) -> None:
        """Claim and hand out jobs until stopped."""
        backlog = self._backlog
        backoff = Backoff()
        outage = PollOutageLog(log, _OUTAGE_LOG_EVERY)
        while True:
            with self._cond:
                # Hand out what an engine sent beyond what was asked for (it
                # should not happen); then wait until every handed-out job has
                # started and a thread is idle.
                while backlog and self._workers.idle > 0:
                    self._dispatch(backlog.popleft())
                self._wait(lambda: self._workers.idle > 0 and self._unstarted == 0, None)
                if self._life.stopping():
                    return
                if backlog:
                    continue
                free = self._workers.idle

            poll_sent_at = time.monotonic()
            try:
                # The configured lease from the claim on, while renewal is in
                # effect (a released engine would ignore it; then it is not sent).
                lease = self.lease_seconds if self.lease_seconds and self._watch.renewing else 0
                if lease:
                    jobs = self.client.poll_jobs(
                        self.worker_id, self.job_types, free, lease_seconds=lease
                    )
                else:
                    jobs = self.client.poll_jobs(self.worker_id, self.job_types, free)
                if not isinstance(jobs, list):
                    raise TypeError(f"poll_jobs returned {type(jobs).__name__}, not a list")
            except Exception as exc:
                self._stats.count(poll_errors=1)
                wait = backoff.next_delay()
                outage.failed(exc, wait)
                self._pause(wait)
                continue

            elapsed = time.monotonic() - poll_sent_at
            outage.succeeded()
            backoff.reset()
            self.metrics.observe_poll(elapsed, len(jobs))
            usable = usable_jobs(jobs, log)
            with self._cond:
                claimed = [
                    (job, poll_sent_at, held)
                    for job in usable
                    if (held := self._hold(job, poll_sent_at)) is not None
                ]
            if len(claimed) > free:
                log.warning(
                    "the engine returned %d jobs for a poll of at most %d; the extra ones "
                    "start when a thread frees",
                    len(claimed),
                    free,
                )
            with self._cond:
                self._stats.count_locked(polls=1, jobs_claimed=len(usable))
                backlog.extend(claimed)
                while backlog and self._workers.idle > 0:
                    self._dispatch(backlog.popleft())
            if not usable:
                self._pause(self.poll_interval)

    def _hold(self, job: dict[str, Any], poll_sent_at: float) -> Held | None:
        """The hold of a claimed job to start, or None when this Runner already
        holds the job (coalesced). The caller holds ``_cond``."""
        held, start = self._holds.claim(job, poll_sent_at, lease_deadline(job, poll_sent_at))
        if start:
            return held
        self._stats.count_locked(redeliveries_coalesced=1)
        if held.entry is not None:
            self._watch.extend(held.entry, held.lease_end)
        return None

    def _release(self, held: Held) -> _Work | None:
        """The job's run has ended: drop its hold; returns the re-delivery to
        run now on this thread, if one came and this run reported nothing."""
        with self._cond:
            following = self._holds.release(held, stopping=self._life.stopping())
            if following is None:
                return None
            self._unstarted += 1  # counted down when it starts, as any handed-out job
        return following

    def _dispatch(self, work: _Work) -> None:
        # Caller holds ``_cond`` and has checked that a thread is idle.
        self._unstarted += 1
        self._workers.hand(work)

    # -- workers ---------------------------------------------------------------

    def _start_workers(self) -> None:
        self._watch_thread = threading.Thread(
            target=self._watch.run, name="workflow-runner-watch", daemon=True
        )
        self._watch_thread.start()
        self._workers.start()

    def _run_work(self, work: _Work) -> None:
        following: _Work | None = work
        while following is not None:
            following = self._run_one(following)

    def _run_one(self, work: _Work) -> _Work | None:
        """Run one claimed job; returns a re-delivery of it to run next, if any."""
        job, poll_sent_at, held = work
        try:
            lease_end = lease_deadline(job, poll_sent_at)
        except BaseException:
            # A bug of ours (WorkerThreads logs it): the poller must not wait
            # for this job to start.
            with self._cond:
                self._unstarted -= 1
                self._cond.notify_all()
            self._release(held)
            raise
        with self._cond:
            # A re-delivery coalesced before the start brought a later lease.
            lease_end = max(lease_end, held.lease_end)
            expired = time.monotonic() >= lease_end
            self._unstarted -= 1
            self._stats.count_locked(**{"skipped_expired" if expired else "jobs_started": 1})
            self._cond.notify_all()
        if expired:
            log.warning(
                "job %s (%s): its lease passed before a thread could start it; "
                "not started (the engine delivers it again)",
                job["id"],
                job["jobType"],
            )
            self._release(held)
            return None
        try:
            self._process(job, lease_end, held)
        finally:
            following = self._release(held)
        return following

    def _process(self, job: dict[str, Any], lease_end: float, held: Held) -> None:
        handler = self.registry.get(job["jobType"])
        entry = self._watch.add(job, lease_end, lease_seconds(job))
        with self._cond:
            held.entry = entry
            later = held.lease_end
        if later > lease_end:
            self._watch.extend(entry, later)
        try:
            outcome = run_job(
                handler,
                job,
                self.worker_id,
                log,
                tally=self._stats,
                cancel=entry.cancel,
            )
            self._watch.finish(entry)
            with self._cond:
                held.handler_done = True
            # The lease as renewed so far (no renewal lands once the handler is done).
            status, stale_reason = self._report(job, outcome, entry.lease_end, entry)
            record_outcome(
                self.metrics,
                outcome,
                job.get("retriesRemaining"),
                status,
                handler_ran=handler is not None,
                stale_reason=stale_reason,
            )
        finally:
            self._watch.remove(entry)

    def _report(
        self, job: dict[str, Any], outcome: Outcome, lease_end: float, entry: WatchedJob
    ) -> tuple[ReportStatus | None, str]:
        """Send what the job's fate allows; returns the delivery status (None:
        nothing sent on purpose) and, for STALE, the verdict's reason."""
        verb = "completion" if outcome.succeeded else "failure"
        if entry.cancel_reason == CANCEL_LEASE_LOST:
            # No fail (the job may run elsewhere) and no completion either: two
            # completions of one job at once can both advance the instance.
            log.warning(
                "job %s (%s): lease lost; its %s is not reported", job["id"], job["jobType"], verb
            )
            return None, ""
        if entry.cancel_reason == CANCEL_STALE:
            self._stats.count(stale=1)
            retire = entry.stale_reason in RETIRE_REASONS
            log.info(
                "job %s (%s) no longer matters (%s); its %s is not reported%s",
                job["id"],
                job["jobType"],
                entry.stale_reason,
                verb,
                "; the job is retired with an empty completion" if retire else "",
            )
            if retire:
                # Left locked, the engine would hand it out again after every lease.
                retirement = Outcome.retirement(outcome.job_id, outcome.job_type)
                self._watch.report_began(retirement)
                try:
                    report(
                        self.client,
                        self.worker_id,
                        retirement,
                        job,
                        self._stats,
                        deadline=self.report_deadline,
                        give_up=self._give_up,
                        lease_end=lease_end,
                    )
                finally:
                    self._watch.report_ended(retirement)
            return None, ""
        if entry.cancel_reason == CANCEL_SHUTDOWN and not outcome.succeeded:
            # The handler may have failed because it was asked to stop: the
            # engine delivers the job again after its lease.
            self._stats.count(fails_withheld=1)
            log.warning(
                "job %s (%s) failed during shutdown; the failure is not sent (the engine "
                "delivers the job again after its lease): %s",
                job["id"],
                job["jobType"],
                outcome.error_message,
            )
            return ReportStatus.WITHHELD, ""

        def on_retry(_outcome: Outcome, _exc: Exception) -> None:
            self._stats.count(report_retries=1)
            self.metrics.report_retry(outcome.job_type)

        self._watch.report_began(outcome)
        try:
            return report(
                self.client,
                self.worker_id,
                outcome,
                job,
                self._stats,
                deadline=self.report_deadline,
                give_up=self._give_up,
                on_retry=on_retry,
                lease_end=lease_end,
            )
        finally:
            self._watch.report_ended(outcome)

    # -- shutdown --------------------------------------------------------------

    def _shutdown(self) -> None:
        if self._life.signum is not None:
            log.info("runner %s: received signal %d, stopping", self.worker_id, self._life.signum)
        leftover = len(self._backlog)
        self._backlog.clear()
        if leftover:
            self._stats.count(dropped_at_stop=leftover)
            log.warning(
                "runner %s: %d claimed jobs never started; the engine delivers them again "
                "after their lease",
                self.worker_id,
                leftover,
            )
        cancelled = self._watch.cancel_all(CANCEL_SHUTDOWN)
        if cancelled:
            log.info(
                "runner %s: cancel event set for %d running jobs (shutdown)",
                self.worker_id,
                cancelled,
            )
        # The drain may not be cut short by the stop that started it.
        self._tick = None
        busy = self._workers.drain(self.drain_timeout)
        if busy:
            log.error(
                "runner %s: %d handlers still running after the %.1f s drain; abandoning "
                "them (their jobs are delivered again after the lease)",
                self.worker_id,
                busy,
                self.drain_timeout,
            )
        self._give_up.set()
        self._watch.stop()
        if self._watch_thread is not None:
            self._watch_thread.join(5.0)
        self._watch.join_calls(5.0)
        # Stuck handlers are left behind (daemon threads).
        self._workers.end(join=not busy)
        log.info("runner %s stopped: %s", self.worker_id, self.stats)


__all__ = ["DEFAULT_STALE_CHECK_INTERVAL", "Runner", "RunnerStats", "default_worker_id"]
