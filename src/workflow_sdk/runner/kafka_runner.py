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
the ``stop_event`` end the fetching and set every running job's
``context["cancelEvent"]``; running handlers get ``drain_timeout``
seconds to finish and report (a completion is sent; a failure of a job
asked to stop is not: its record stays uncommitted and comes back, as the
Runner withholds it for the lease); finished offsets are committed and the
consumers leave their groups. A handler still running then is abandoned
(daemon thread) and its record, uncommitted, is delivered again to the
group.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.fate import IN_FLIGHT_WINDOW
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.jobcore import record_outcome
from workflow_sdk.kafka.consumer import KafkaJobSource
from workflow_sdk.lease import is_settled
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.reporting import DEFAULT_REPORT_DEADLINE, ReportStatus
from workflow_sdk.runner.threads import Lifecycle, Tally, WorkerThreads, report, run_job

log = logging.getLogger("workflow_sdk.runner.kafka")

#: Longest the driver waits before serving the consumer group again.
_SERVE_EVERY = 0.5
#: Longest one fetch blocks waiting for records (a stop is seen after it).
_FETCH_WAIT = 0.2


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
    #: Failures not sent because the job was asked to stop at shutdown
    #: (offset left uncommitted: the record comes back).
    fails_withheld: int = 0
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
    :param report_deadline: unused in this mode: a report is retried until it is
        settled or the runner stops (kept for rochallor-sdk 1.1.0's signature).
    :param commit_interval: seconds between offset commits while running.
    :param metrics: the shared ``workflow_sdk_*`` metrics; default ``Metrics()``.
    :param job_types: job types to consume; default the registry's.
    :param in_flight_window: seconds after a report was sent during which the
        engine may still act on it (see ``workflow_sdk.fate``).
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
        in_flight_window: float = IN_FLIGHT_WINDOW,
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
        self.in_flight_window = float(in_flight_window)
        self.metrics = metrics if metrics is not None else Metrics()
        self.job_types = types

        self._cond = threading.Condition()
        # One lock for the stats, the workers' idle count and the run's state.
        self._stats = Tally(self._cond, KafkaRunnerStats())
        self._workers = WorkerThreads(
            self._cond,
            parallelism,
            self._process,
            name="workflow-kafka-runner",
            label="kafka runner",
            log=log,
            job_of=lambda job: job,
        )
        self._life = Lifecycle(self._cond, "KafkaRunner")
        self._give_up = threading.Event()
        self._source: KafkaJobSource | None = None
        #: The cancel event of every running job (guarded by ``_cond``).
        self._cancels: set[threading.Event] = set()
        self._cancelled_all = False

    # -- public ------------------------------------------------------------------

    @property
    def stats(self) -> KafkaRunnerStats:
        return self._stats.snapshot()

    @property
    def source(self) -> KafkaJobSource | None:
        """The job source while ``run()`` runs (its ``stats`` count duplicates...)."""
        return self._source

    def stop(self) -> None:
        """Stop fetching; ``run()`` drains, commits, leaves the groups, returns. Any thread."""
        self._life.request_stop()

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Consume and run jobs until stopped; blocks. A KafkaRunner runs once."""
        with self._life.running(stop_event):
            self._run()

    def _run(self) -> None:
        source = KafkaJobSource(
            self.brokers,
            self.job_types,
            dedup_window_seconds=self.dedup_window_seconds,
            extra_config=self.extra_kafka_config,
            client_id=self.worker_id,
        )
        self._source = source
        self._workers.start()
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

    def join_workers(self, timeout: float | None = None) -> bool:
        """Wait for the worker threads to end after ``run()`` returned."""
        return self._workers.join(timeout)

    # -- driver --------------------------------------------------------------------

    def _drive(self, source: KafkaJobSource) -> None:
        last_commit = time.monotonic()
        while not self._life.stopping():
            with self._cond:
                if self._workers.idle == 0:
                    # A freed thread or a stop notifies; the timeout keeps the
                    # group served (and sees a stop_event or signal).
                    self._cond.wait(_SERVE_EVERY)
                free = self._workers.idle
            jobs = source.fetch(free, timeout=_FETCH_WAIT if free else 0.0)
            if jobs:
                with self._cond:
                    for job in jobs:
                        self._workers.hand(job)
            now = time.monotonic()
            if now - last_commit >= self.commit_interval:
                source.commit()
                last_commit = now

    # -- workers -------------------------------------------------------------------

    def _process(self, job: dict[str, Any]) -> None:
        handler = self.registry.get(job["jobType"])
        self._stats.count(jobs_started=1)
        # Every handler gets its cancelEvent, as docs/api.md promises; it is
        # set at shutdown (this mode has no lease to lose).
        cancel = threading.Event()
        with self._cond:
            if self._cancelled_all:
                cancel.set()
            self._cancels.add(cancel)
        try:
            outcome = run_job(handler, job, self.worker_id, log, tally=self._stats, cancel=cancel)
        finally:
            with self._cond:
                self._cancels.discard(cancel)
        source = self._source
        if cancel.is_set() and not outcome.succeeded:
            status: ReportStatus = ReportStatus.WITHHELD
            stale_reason = ""
            # The handler may have failed because it was asked to stop: a
            # fail would burn a retry or fail the instance. Uncommitted, the
            # record is delivered again to the group.
            self._stats.count(fails_withheld=1)
            log.warning(
                "job %s (%s) failed during shutdown; the failure is not sent (its record "
                "is not committed and comes back): %s",
                job["id"],
                job["jobType"],
                outcome.error_message,
            )
        else:
            # No lease in this mode: a fail is never withheld for time, and
            # nothing delivers the job again while this runner runs, so its
            # report is never given up until it stops (a lost answer is
            # resolved by asking the engine; see workflow_sdk.reporting).
            status, stale_reason = report(
                self.client,
                self.worker_id,
                outcome,
                job,
                self._stats,
                deadline=self.report_deadline,
                give_up=self._give_up,
                until_settled=True,
                retry_seen=None if source is None else lambda: source.retry_seen(job),
                window=self.in_flight_window,
            )
        record_outcome(
            self.metrics,
            outcome,
            job.get("retriesRemaining"),
            status,
            handler_ran=handler is not None,
            stale_reason=stale_reason,
        )
        if source is None:
            return
        # A report is lost only when the runner stops before it is settled, and
        # a fail during shutdown is withheld: the record stays uncommitted and
        # the group delivers it again. Delivered, stale or rejected, the job is
        # finished (the supervisor's rule too: ``workflow_sdk.lease``).
        if is_settled(status):
            source.mark_done(job)
        else:
            source.mark_unfinished(job)

    # -- stop ----------------------------------------------------------------------

    def _shutdown(self, source: KafkaJobSource) -> None:
        if self._life.signum is not None:
            log.info(
                "kafka runner %s: received signal %d, stopping", self.worker_id, self._life.signum
            )
        with self._cond:
            self._cancelled_all = True
            for cancel in self._cancels:
                cancel.set()
            if self._cancels:
                log.info(
                    "kafka runner %s: cancel event set for %d running jobs (shutdown)",
                    self.worker_id,
                    len(self._cancels),
                )
        busy = self._workers.drain(self.drain_timeout)
        if busy:
            self._stats.count(abandoned_at_stop=busy)
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
            self._workers.end(join=not busy)
        log.info("kafka runner %s stopped: %s", self.worker_id, self.stats)


__all__ = ["KafkaRunner", "KafkaRunnerStats"]
