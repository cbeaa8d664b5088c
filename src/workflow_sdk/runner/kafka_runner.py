"""The threaded Kafka runner: jobs from the engine's Kafka dispatch, on threads.

For an engine in ``kafka_outbox`` dispatch mode (its polls answer 410): jobs
arrive on ``workflow.jobs.<jobType>`` (see ``workflow_sdk.kafka``), results
go back over REST as in poll mode.

Shape
-----
``run()`` is the *driver*: it owns the ``KafkaJobSource`` (one consumer per
job type, group ``workflow.workers.<jobType>``), fetches at most as many
jobs as there are idle worker threads, hands each to one of ``parallelism``
threads, and commits finished offsets every ``commit_interval`` seconds.
With no idle thread it fetches nothing (the partitions are paused) and
waits for a thread to free, serving the consumer group meanwhile.

Delivery
--------
At least once. A record's offset is committed only after its job's result
reached the engine, or the job was dropped as stale or failed for good; in
order per partition. A record whose ``dedup_id`` finished within
``dedup_window_seconds`` is skipped, and a job already running here is not
started twice. There is no lease in this mode: a handler may run as long as
it needs, and a failure is never withheld for time, only when the job no
longer matters (``workflow_sdk.staleness``).

Stop
----
``stop()``, SIGTERM/SIGINT (when ``run`` is called from the main thread) or
the ``stop_event`` end the fetching; running handlers get ``drain_timeout``
seconds to finish and report; finished offsets are committed and the
consumers leave their groups. A handler still running then is abandoned
(daemon thread) and its record, uncommitted, is delivered again to the
group.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any, cast

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.handler.context import build_context
from workflow_sdk.handler.outcome import Outcome, describe_exception, run_handler
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.kafka.consumer import KafkaJobSource
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.reporting import DEFAULT_REPORT_DEADLINE, ReportStatus, deliver
from workflow_sdk.staleness import InstanceReader, StaleVerdict, check_job

log = logging.getLogger("workflow_sdk.runner.kafka")

#: Longest the driver waits before serving the consumer group again.
_SERVE_EVERY = 0.5
#: Longest one fetch blocks waiting for records (a stop is seen after it).
_FETCH_WAIT = 0.2

_SignalHandler = Callable[[int, FrameType | None], Any] | int | None


@dataclass(frozen=True)
class KafkaRunnerStats:
    """Counters of one KafkaRunner (a snapshot)."""

    #: Jobs whose handler was called.
    jobs_started: int = 0
    #: Completions and fails that reached the engine.
    completed: int = 0
    failed: int = 0
    #: Fails not sent because the job no longer mattered (offset committed).
    stale: int = 0
    #: Reports the engine refused for good (offset committed).
    reports_rejected: int = 0
    #: Reports given up (offset left uncommitted: the record comes back).
    reports_lost: int = 0
    #: Handlers that raised a BaseException rather than an Exception.
    handler_crashes: int = 0
    #: Handlers still running when the drain ended.
    abandoned_at_stop: int = 0


class KafkaRunner:
    """Runs the handlers of ``registry`` for jobs dispatched over Kafka.

    :param worker_id: sent with every report.
    :param brokers: ``"host:port,host:port"`` or a list of ``host:port``.
    :param client: the engine (``RestEngineClient``), for ``complete``/``fail``
        and the stale-job check; safe to call from several threads.
    :param registry: job type -> handler; its job types are consumed.
    :param dedup_window_seconds: how long a finished ``dedup_id`` is remembered.
    :param extra_kafka_config: more librdkafka settings (security...).
    :param parallelism: worker threads, i.e. handlers running at once.
    :param drain_timeout: seconds running handlers get after a stop.
    :param report_deadline: seconds a completion is retried before it is lost.
    :param commit_interval: seconds between offset commits while running.
    :param metrics: the shared ``workflow_sdk_*`` metrics; default ``Metrics()``.
    :param job_types: job types to consume; default the registry's.
    """

    def __init__(  # noqa: PLR0917 (the positional signature rochallor-sdk 1.1.0 documents)
        self,
        worker_id: str,
        brokers: str | Sequence[str],
        client: WorkerEngineClient,
        registry: HandlerRegistry,
        dedup_window_seconds: float = 600.0,
        extra_kafka_config: Mapping[str, Any] | None = None,
        *,
        parallelism: int = 4,
        drain_timeout: float = 25.0,
        report_deadline: float = DEFAULT_REPORT_DEADLINE,
        commit_interval: float = 0.2,
        metrics: Metrics | None = None,
        job_types: Sequence[str] | None = None,
    ) -> None:
        if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
            raise ValueError(f"parallelism must be an integer >= 1, got {parallelism!r}")
        if drain_timeout < 0:
            raise ValueError(f"drain_timeout must be >= 0, got {drain_timeout!r}")
        if not commit_interval > 0:
            raise ValueError(f"commit_interval must be > 0, got {commit_interval!r}")
        types = sorted(set(registry.job_types() if job_types is None else job_types))
        if not types:
            raise ValueError(
                "the KafkaRunner has no job types to consume: register at least one "
                "handler in the HandlerRegistry (or pass job_types)"
            )
        self.worker_id = worker_id
        self.brokers = brokers
        self.client = client
        self.registry = registry
        self.dedup_window_seconds = float(dedup_window_seconds)
        self.extra_kafka_config = dict(extra_kafka_config or {})
        self.parallelism = parallelism
        self.drain_timeout = float(drain_timeout)
        self.report_deadline = float(report_deadline)
        self.commit_interval = float(commit_interval)
        self.metrics = metrics if metrics is not None else Metrics()
        self.job_types = types

        self._cond = threading.Condition()
        # Guarded by ``_cond``.
        self._idle = parallelism
        self._stats = KafkaRunnerStats()
        self._state = "new"
        # Plain assignments (a signal handler sets them).
        self._stop_requested = False
        self._stop_signal: int | None = None
        self._external_stop: threading.Event | None = None
        self._give_up = threading.Event()
        self._work: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._source: KafkaJobSource | None = None

    # -- public ------------------------------------------------------------------

    @property
    def stats(self) -> KafkaRunnerStats:
        with self._cond:
            return self._stats

    @property
    def source(self) -> KafkaJobSource | None:
        """The job source while ``run()`` runs (its ``stats`` count duplicates...)."""
        return self._source

    def stop(self) -> None:
        """Stop fetching; ``run()`` drains, commits, leaves the groups, returns. Any thread."""
        self._stop_requested = True
        with self._cond:
            self._cond.notify_all()

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Consume and run jobs until stopped; blocks. A KafkaRunner runs once."""
        with self._cond:
            if self._state != "new":
                raise RuntimeError("a KafkaRunner runs once; create a new one to run again")
            self._state = "running"
        self._external_stop = stop_event
        previous = self._install_signal_handlers()
        try:
            source = KafkaJobSource(
                self.brokers,
                self.job_types,
                dedup_window_seconds=self.dedup_window_seconds,
                extra_config=self.extra_kafka_config,
                client_id=self.worker_id,
            )
            self._source = source
            self._start_workers()
            log.info(
                "kafka runner %s started: job types %s, %d threads",
                self.worker_id,
                self.job_types,
                self.parallelism,
            )
            try:
                self._drive(source)
            finally:
                self._shutdown(source)
        finally:
            self._restore_signal_handlers(previous)
            with self._cond:
                self._state = "done"

    def join_workers(self, timeout: float | None = None) -> bool:
        """Wait for the worker threads to end after ``run()`` returned."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return not any(thread.is_alive() for thread in self._threads)

    # -- driver --------------------------------------------------------------------

    def _stopping(self) -> bool:
        if self._stop_requested:
            return True
        external = self._external_stop
        return external is not None and external.is_set()

    def _drive(self, source: KafkaJobSource) -> None:
        last_commit = time.monotonic()
        while not self._stopping():
            with self._cond:
                if self._idle == 0:
                    # A freed thread or a stop notifies; the timeout keeps the
                    # group served (and sees a stop_event or signal).
                    self._cond.wait(_SERVE_EVERY)
                free = self._idle
            jobs = source.fetch(free, timeout=_FETCH_WAIT if free else 0.0)
            if jobs:
                with self._cond:
                    self._idle -= len(jobs)
                for job in jobs:
                    self._work.put(job)
            now = time.monotonic()
            if now - last_commit >= self.commit_interval:
                source.commit()
                last_commit = now

    # -- workers -------------------------------------------------------------------

    def _start_workers(self) -> None:
        for index in range(self.parallelism):
            thread = threading.Thread(
                target=self._worker_loop, name=f"workflow-kafka-runner-{index}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _worker_loop(self) -> None:
        while True:
            job = self._work.get()
            if job is None:
                return
            try:
                self._process(job)
            except BaseException:
                # A bug of ours (handler errors are caught below): keep the slot.
                log.exception(
                    "kafka runner: unexpected error while processing job %s", job.get("id")
                )
            finally:
                with self._cond:
                    self._idle += 1
                    self._cond.notify_all()

    def _process(self, job: dict[str, Any]) -> None:
        job_type: str = job["jobType"]
        handler = self.registry.get(job_type)
        self._count(jobs_started=1)
        if handler is None:
            outcome = Outcome.failure(
                job["id"],
                job_type,
                f"no handler registered for job type {job_type!r} in worker {self.worker_id}",
                retryable=True,
            )
            log.error("job %s: %s", job["id"], outcome.error_message)
        else:
            started = time.perf_counter()
            try:
                outcome = run_handler(handler, build_context(job))
            except BaseException as exc:  # SystemExit, KeyboardInterrupt, WorkerShutdown...
                self._count(handler_crashes=1)
                log.error(
                    "job %s (%s): handler raised %s; the job is failed retryable",
                    job["id"],
                    job_type,
                    type(exc).__name__,
                    exc_info=True,
                )
                outcome = Outcome.failure(
                    job["id"],
                    job_type,
                    describe_exception(exc),
                    retryable=True,
                    duration=time.perf_counter() - started,
                )
            self.metrics.observe_handler(job_type, outcome.duration)
        self.metrics.job_finished(job_type, "success" if outcome.succeeded else "failure")
        self._report(job, outcome)

    def _report(self, job: dict[str, Any], outcome: Outcome) -> None:
        verdicts: list[StaleVerdict] = []

        def stale_check() -> StaleVerdict:
            verdict = check_job(cast(InstanceReader, self.client), job)
            verdicts.append(verdict)
            return verdict

        # A client without the instance reads (a bare WorkerEngineClient)
        # cannot be asked: its fails follow the plain rules.
        has_reads = hasattr(self.client, "get_instance") and hasattr(
            self.client, "get_instance_history"
        )
        status = deliver(
            self.client,
            self.worker_id,
            outcome,
            deadline=self.report_deadline,
            give_up=self._give_up,
            stale_check=stale_check if has_reads else None,
        )
        source = self._source
        if status is ReportStatus.LOST:
            self._count(reports_lost=1)
            if source is not None:
                source.mark_unfinished(job)
            return
        if status is ReportStatus.DELIVERED:
            if outcome.succeeded:
                self._count(completed=1)
            else:
                self._count(failed=1)
                retries = job.get("retriesRemaining")
                if outcome.retryable and isinstance(retries, int) and retries > 0:
                    self.metrics.retry(outcome.job_type)
        elif status is ReportStatus.STALE:
            self._count(stale=1)
            if verdicts:
                self.metrics.stale_job(outcome.job_type, verdicts[-1].reason)
        else:  # REJECTED (WITHHELD cannot happen: no lease in this mode)
            self._count(reports_rejected=1)
        if source is not None:
            source.mark_done(job)

    # -- stop ----------------------------------------------------------------------

    def _shutdown(self, source: KafkaJobSource) -> None:
        if self._stop_signal is not None:
            log.info(
                "kafka runner %s: received signal %d, stopping", self.worker_id, self._stop_signal
            )
        drain_end = time.monotonic() + self.drain_timeout
        with self._cond:
            while self._idle < self.parallelism:
                remaining = drain_end - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            busy = self.parallelism - self._idle
            if busy:
                self._bump(abandoned_at_stop=busy)
        if busy:
            log.error(
                "kafka runner %s: %d handlers still running after the %.1f s drain; "
                "abandoning them (their records are not committed: the group delivers "
                "them again)",
                self.worker_id,
                busy,
                self.drain_timeout,
            )
        self._give_up.set()
        try:
            source.close()  # commits what is done, leaves the groups
        finally:
            for _ in self._threads:
                self._work.put(None)
            if not busy:
                self.join_workers(timeout=5.0)
        log.info("kafka runner %s stopped: %s", self.worker_id, self.stats)

    # -- helpers -------------------------------------------------------------------

    def _count(self, **increments: int) -> None:
        with self._cond:
            self._bump(**increments)

    def _bump(self, **increments: int) -> None:
        stats = self._stats
        self._stats = replace(
            stats, **{name: getattr(stats, name) + n for name, n in increments.items()}
        )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Assignments only: the driver may hold a lock.
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
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


__all__ = ["KafkaRunner", "KafkaRunnerStats"]
