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
A watch thread (``runner.watch``) renews the leases of running jobs when
``heartbeat=True`` and checks every ``stale_check_interval`` seconds whether
they still matter. Each handler finds a ``threading.Event`` under
``context["cancelEvent"]``, set when its job's lease is lost, when the job
went stale, and at shutdown. Nothing is reported for a job whose lease was
lost or which went stale; at shutdown a completion is still sent but a
failure is not (the engine delivers the job again after its lease).

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
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.handler.context import build_context
from workflow_sdk.handler.outcome import Outcome, describe_exception, run_handler
from workflow_sdk.handler.registry import Handler, HandlerRegistry
from workflow_sdk.jobcore import (
    OUTAGE_LOG_EVERY,
    PollOutageLog,
    default_worker_id,
    no_handler_outcome,
    record_outcome,
    usable_jobs,
)
from workflow_sdk.lease import lease_deadline, lease_seconds
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.reporting import DEFAULT_REPORT_DEADLINE, ReportStatus, deliver
from workflow_sdk.retry.backoff import Backoff
from workflow_sdk.runner.watch import (
    CANCEL_LEASE_LOST,
    CANCEL_SHUTDOWN,
    CANCEL_STALE,
    JobWatch,
    WatchedJob,
    reader_of,
)
from workflow_sdk.staleness import StaleVerdict, check_job

log = logging.getLogger("workflow_sdk.runner")

#: Longest a poller wait lasts when a stop may arrive without a notification
#: (signal handler, external ``stop_event``).
_TICK = 0.1
#: While the engine stays unreachable, repeat the warning at most this often.
_OUTAGE_LOG_EVERY = OUTAGE_LOG_EVERY
#: Default seconds between stale checks of a running job.
DEFAULT_STALE_CHECK_INTERVAL = 5.0
#: The engine's accepted range for a requested lease (0 = its default).
_LEASE_RANGE = (5, 3600)

_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


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


# A claimed job as the poller hands it to a worker: the job and the
# ``time.monotonic()`` taken just before the poll that claimed it.
_Work = tuple[dict[str, Any], float]


class Runner:
    """Claims jobs of the registry's job types and runs their handlers on threads.

    :param client: the engine (``RestEngineClient`` or anything with the
        ``WorkerEngineClient`` methods); it must be safe to call from several
        threads at once. For ``RestEngineClient`` keep ``pool_size`` at least
        ``parallelism + 1``.
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
    :param lease_seconds: the lease asked for at each renewal (5-3600);
        default: the engine's own.
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
        if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
            raise ValueError(f"parallelism must be an integer >= 1, got {parallelism!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        if drain_timeout < 0:
            raise ValueError(f"drain_timeout must be >= 0, got {drain_timeout!r}")
        if report_deadline < 0:
            raise ValueError(f"report_deadline must be >= 0, got {report_deadline!r}")
        _check_lease_options(client, heartbeat, lease_seconds, heartbeat_interval)
        if not stale_check_interval >= 0:
            raise ValueError(
                f"stale_check_interval must be >= 0 (0 = off), got {stale_check_interval!r}"
            )
        types = list(registry.job_types() if job_types is None else job_types)
        if not types:
            raise ValueError(
                "the Runner has no job types to claim: register at least one handler "
                "in the HandlerRegistry (or pass job_types)"
            )
        for job_type in types:
            if not isinstance(job_type, str) or not job_type:
                raise ValueError(f"job types must be non-empty strings, got {job_type!r}")
        missing = [t for t in types if t not in registry]
        if missing:
            log.warning(
                "no handler registered (yet) for job types %s: their jobs will be failed "
                "retryable until one is",
                missing,
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
        )
        self._watch_thread: threading.Thread | None = None

        self._cond = threading.Condition()
        # All below are guarded by ``_cond``.
        self._idle = parallelism  # worker threads free for a new job
        self._unstarted = 0  # jobs handed to a worker that did not start yet
        self._stats = RunnerStats()
        self._state = "new"  # new -> running -> done
        # Set by stop() or a signal handler: plain assignments, no lock.
        self._stop_requested = False
        self._stop_signal: int | None = None
        self._external_stop: threading.Event | None = None
        self._tick: float | None = None
        self._give_up = threading.Event()
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # Jobs an engine sent beyond what was asked for, waiting for a thread
        # (poller thread only).
        self._backlog: deque[_Work] = deque()

    # -- public --------------------------------------------------------------

    @property
    def stats(self) -> RunnerStats:
        """A snapshot of the counters."""
        watch = self._watch
        with self._cond:
            return replace(
                self._stats,
                lease_renewals=watch.renewals_accepted,
                leases_lost=watch.leases_lost,
            )

    @property
    def busy(self) -> int:
        """Worker threads currently holding a job."""
        with self._cond:
            return self.parallelism - self._idle

    def stop(self) -> None:
        """Stop claiming; ``run()`` drains in-flight handlers, then returns.

        Safe from any thread (a handler included) and before ``run()``.
        """
        self._stop_requested = True
        with self._cond:
            self._cond.notify_all()

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
        with self._cond:
            if self._state != "new":
                raise RuntimeError("a Runner runs once; create a new Runner to run again")
            self._state = "running"
        self._external_stop = stop_event
        previous = self._install_signal_handlers()
        if previous or stop_event is not None:
            self._tick = _TICK
        try:
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
        finally:
            self._restore_signal_handlers(previous)
            with self._cond:
                self._state = "done"

    def join_workers(self, timeout: float | None = None) -> bool:
        """Wait for the worker threads to end after ``run()`` returned.

        ``run()`` does not wait for a handler stuck past the drain; this lets
        tests and embedders wait for it. True when every thread has ended.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return not any(thread.is_alive() for thread in self._threads)

    # -- stop and signals ------------------------------------------------------

    def _stopping(self) -> bool:
        if self._stop_requested:
            return True
        external = self._external_stop
        return external is not None and external.is_set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes, possibly while the
        # poller holds a lock: assignments only (logged by the poller).
        self._stop_signal = signum
        self._stop_requested = True

    def _install_signal_handlers(self) -> dict[int, _SignalHandler]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, _SignalHandler] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)
        return previous

    def _restore_signal_handlers(self, previous: dict[int, _SignalHandler]) -> None:
        for signum, handler in previous.items():
            # None: the previous handler was not installed from Python and
            # cannot be put back; the default is the closest.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    # -- poller ----------------------------------------------------------------

    def _wait(self, predicate: Callable[[], bool], timeout: float | None) -> None:
        """Wait (holding ``_cond``) until ``predicate()``, a stop, or ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not predicate() and not self._stopping():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            if self._tick is not None:
                remaining = self._tick if remaining is None else min(remaining, self._tick)
            self._cond.wait(remaining)

    def _pause(self, seconds: float) -> None:
        with self._cond:
            self._wait(lambda: False, seconds)

    def _count(self, **increments: int) -> None:
        with self._cond:
            self._bump(**increments)

    def _bump(self, **increments: int) -> None:
        # Caller holds ``_cond``.
        stats = self._stats
        self._stats = replace(
            stats, **{name: getattr(stats, name) + n for name, n in increments.items()}
        )

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
                while backlog and self._idle > 0:
                    self._dispatch(backlog.popleft())
                self._wait(lambda: self._idle > 0 and self._unstarted == 0, None)
                if self._stopping():
                    return
                if backlog:
                    continue
                free = self._idle

            poll_sent_at = time.monotonic()
            try:
                jobs = self.client.poll_jobs(self.worker_id, self.job_types, free)
                if not isinstance(jobs, list):
                    raise TypeError(f"poll_jobs returned {type(jobs).__name__}, not a list")
            except Exception as exc:
                self._count(poll_errors=1)
                wait = backoff.next_delay()
                outage.failed(exc, wait)
                self._pause(wait)
                continue

            elapsed = time.monotonic() - poll_sent_at
            outage.succeeded()
            backoff.reset()
            self.metrics.observe_poll(elapsed, len(jobs))
            claimed = [(job, poll_sent_at) for job in usable_jobs(jobs, log)]
            if len(claimed) > free:
                log.warning(
                    "the engine returned %d jobs for a poll of at most %d; the extra ones "
                    "start when a thread frees",
                    len(claimed),
                    free,
                )
            with self._cond:
                self._bump(polls=1, jobs_claimed=len(claimed))
                backlog.extend(claimed)
                while backlog and self._idle > 0:
                    self._dispatch(backlog.popleft())
            if not claimed:
                self._pause(self.poll_interval)

    def _dispatch(self, work: _Work) -> None:
        # Caller holds ``_cond`` and has checked that a thread is idle.
        self._idle -= 1
        self._unstarted += 1
        self._work.put(work)

    # -- workers ---------------------------------------------------------------

    def _start_workers(self) -> None:
        self._watch_thread = threading.Thread(
            target=self._watch.run, name="workflow-runner-watch", daemon=True
        )
        self._watch_thread.start()
        for index in range(self.parallelism):
            thread = threading.Thread(
                target=self._worker_loop,
                name=f"workflow-runner-{index}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def _worker_loop(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                return
            job, poll_sent_at = work
            marked = False
            try:
                lease_end = lease_deadline(job, poll_sent_at)
                expired = time.monotonic() >= lease_end
                with self._cond:
                    self._unstarted -= 1
                    marked = True
                    self._bump(**{"skipped_expired" if expired else "jobs_started": 1})
                    self._cond.notify_all()
                if expired:
                    log.warning(
                        "job %s (%s): its lease passed before a thread could start it; "
                        "not started (the engine delivers it again)",
                        job["id"],
                        job["jobType"],
                    )
                else:
                    self._process(job, lease_end)
            except BaseException:
                # Only a bug of ours (or of the metrics or client code) gets
                # here: handler errors are caught in _call_handler. Keep the
                # thread and its slot alive regardless.
                log.exception("runner: unexpected error while processing job %s", job.get("id"))
            finally:
                with self._cond:
                    if not marked:
                        self._unstarted -= 1
                    self._idle += 1
                    self._cond.notify_all()

    def _process(self, job: dict[str, Any], lease_end: float) -> None:
        job_id: str = job["id"]
        job_type: str = job["jobType"]
        handler = self.registry.get(job_type)
        entry = self._watch.add(job, lease_end, lease_seconds(job))
        try:
            if handler is None:
                outcome = no_handler_outcome(job_id, job_type, self.worker_id)
                log.error("job %s: %s", job_id, outcome.error_message)
            else:
                context = build_context(job)
                context["cancelEvent"] = entry.cancel
                outcome = self._call_handler(handler, context)
            self._watch.finish(entry)
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

    def _call_handler(self, handler: Handler, context: dict[str, Any]) -> Outcome:
        started = time.perf_counter()
        try:
            return run_handler(handler, context)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt, WorkerShutdown...
            duration = time.perf_counter() - started
            self._count(handler_crashes=1)
            log.error(
                "job %s (%s): handler raised %s; the job is failed retryable and the "
                "runner goes on",
                context["id"],
                context["jobType"],
                type(exc).__name__,
                exc_info=True,
            )
            return Outcome.failure(
                context["id"],
                context["jobType"],
                describe_exception(exc),
                retryable=True,
                duration=duration,
            )

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
            self._count(stale=1)
            log.info(
                "job %s (%s) no longer matters (%s); its %s is not reported",
                job["id"],
                job["jobType"],
                entry.stale_reason,
                verb,
            )
            return None, ""
        if entry.cancel_reason == CANCEL_SHUTDOWN and not outcome.succeeded:
            # The handler may have failed because it was asked to stop: the
            # engine delivers the job again after its lease.
            self._count(fails_withheld=1)
            log.warning(
                "job %s (%s) failed during shutdown; the failure is not sent (the engine "
                "delivers the job again after its lease): %s",
                job["id"],
                job["jobType"],
                outcome.error_message,
            )
            return ReportStatus.WITHHELD, ""

        def on_retry(_outcome: Outcome, _exc: Exception) -> None:
            self._count(report_retries=1)
            self.metrics.report_retry(outcome.job_type)

        verdicts: list[StaleVerdict] = []
        stale_check = None
        reader = reader_of(self.client)
        if reader is not None:

            def stale_check() -> StaleVerdict:
                verdict = check_job(reader, job)
                verdicts.append(verdict)
                return verdict

        self._watch.report_began(outcome)
        try:
            status = deliver(
                self.client,
                self.worker_id,
                outcome,
                deadline=self.report_deadline,
                give_up=self._give_up,
                on_retry=on_retry,
                lease_end=lease_end,
                stale_check=stale_check,
            )
        finally:
            self._watch.report_ended(outcome)
        if status is ReportStatus.DELIVERED:
            self._count(**{"completed" if outcome.succeeded else "failed": 1})
        elif status is ReportStatus.WITHHELD:
            self._count(fails_withheld=1)
        elif status is ReportStatus.REJECTED:
            self._count(reports_rejected=1)
        elif status is ReportStatus.STALE:
            self._count(stale=1)
        else:
            self._count(reports_lost=1)
        return status, (verdicts[-1].reason if verdicts else "")

    # -- shutdown --------------------------------------------------------------

    def _shutdown(self) -> None:
        if self._stop_signal is not None:
            log.info("runner %s: received signal %d, stopping", self.worker_id, self._stop_signal)
        leftover = len(self._backlog)
        self._backlog.clear()
        if leftover:
            self._count(dropped_at_stop=leftover)
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
        drain_end = time.monotonic() + self.drain_timeout
        with self._cond:
            while self._idle < self.parallelism:
                remaining = drain_end - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            busy = self.parallelism - self._idle
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
        for _ in self._threads:
            self._work.put(None)
        # Idle threads end at once; a thread in a report retry ends as soon as
        # it sees ``_give_up``. Stuck handlers are left behind (daemon threads).
        if not busy:
            self.join_workers(timeout=5.0)
        log.info("runner %s stopped: %s", self.worker_id, self.stats)


def _check_lease_options(
    client: object, heartbeat: bool, lease_seconds: int | None, interval: float | None
) -> None:
    if not heartbeat:
        if lease_seconds is not None or interval is not None:
            raise ValueError("lease_seconds and heartbeat_interval need heartbeat=True")
        return
    if not callable(getattr(client, "extend_lease", None)):
        raise ValueError(
            f"heartbeat=True needs a client with extend_lease(); {type(client).__name__} has none"
        )
    if lease_seconds is not None and (
        isinstance(lease_seconds, bool)
        or not isinstance(lease_seconds, int)
        or not _LEASE_RANGE[0] <= lease_seconds <= _LEASE_RANGE[1]
    ):
        raise ValueError(
            f"lease_seconds must be an integer from {_LEASE_RANGE[0]} to {_LEASE_RANGE[1]} "
            f"(or None for the engine's default), got {lease_seconds!r}"
        )
    if interval is not None:
        if not interval > 0:
            raise ValueError(f"heartbeat_interval must be > 0, got {interval!r}")
        if lease_seconds is not None and interval >= lease_seconds:
            raise ValueError(
                f"heartbeat_interval ({interval}) must be shorter than lease_seconds "
                f"({lease_seconds}): a renewal must land before the lease ends"
            )


__all__ = ["DEFAULT_STALE_CHECK_INTERVAL", "Runner", "RunnerStats", "default_worker_id"]
