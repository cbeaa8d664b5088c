"""What the supervisor shows: the /metrics view, the process title, systemd's status.

``open_metrics`` prepares the multiprocess directory the workers write
their metrics to and the parent's own metrics (before anything records
one). The ``Publisher`` serves /metrics over them, and keeps the view of the
workers, the process title and systemd's status (through the
``Announcer``) up to date, at most every ``PUBLISH_INTERVAL``. It reads the
loop's objects and changes none of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.supervisor.config import MetricsConfig
from workflow_sdk.supervisor.exposition import multiproc
from workflow_sdk.supervisor.exposition.announcer import Announcer, PoolState
from workflow_sdk.supervisor.exposition.exporter import MetricsServer, PoolCollector, WorkerView
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.ledger import JobLedger
from workflow_sdk.supervisor.loop.phase import Phase
from workflow_sdk.supervisor.loop.pool import WorkerPool
from workflow_sdk.supervisor.loop.slots import SlotState

#: Seconds between two updates of the /metrics view, title and systemd status:
#: every tick (two or three per job) cost the parent a few % of its CPU per job.
PUBLISH_INTERVAL = 0.1
#: Seconds between two updates of the report backlog gauge.
BACKLOG_GAUGE_INTERVAL = 1.0


@dataclass(frozen=True)
class MetricsFiles:
    """The multiprocess directory every process writes its metrics to, and
    the parent's own metrics."""

    dir: str
    metrics: Metrics


def open_metrics(settings: MetricsConfig) -> MetricsFiles:
    """Prepare (wipe) the metrics directory and the parent's metrics in it."""
    directory = multiproc.prepare_dir(multiproc.choose_dir(settings.dir))
    return MetricsFiles(directory, multiproc.metrics_with_identifier("supervisor"))


class Publisher:
    """The /metrics view of the workers, the title and systemd's status.

    :param files: the metrics directory and the parent's metrics (None: no /metrics).
    """

    def __init__(
        self,
        pool: WorkerPool,
        ledger: JobLedger,
        stats: SupervisorStats,
        intake: Intake,
        *,
        announcer: Announcer,
        engine_timeout: float,
        files: MetricsFiles | None = None,
    ) -> None:
        self.pool = pool
        self.ledger = ledger
        self.stats = stats
        self.intake = intake
        #: Title and systemd notifications.
        self.announcer = announcer
        self.engine_timeout = engine_timeout
        #: The parent's own metrics, and the directory every worker writes
        #: its own to (None: no /metrics).
        self.metrics = files.metrics if files is not None else None
        self.metrics_dir = files.dir if files is not None else None
        self._server: MetricsServer | None = None
        #: What the /metrics collector reads.
        self.views: tuple[WorkerView, ...] = ()
        self._next_publish = 0.0
        self._due = False
        #: (slot, pid) of every worker at the last publish.
        self._members: tuple[tuple[int, int], ...] = ()
        self._next_backlog_gauge = 0.0

    def serve(self, settings: MetricsConfig, *, kafka: bool = False) -> int:
        """Start the /metrics server; returns its port. ``kafka``: jobs come
        from Kafka, show its source's counters too."""
        assert self.metrics_dir is not None, "serve needs the metrics files"
        kafka_stats = self.intake.source_stats if kafka else None
        self._server = MetricsServer(
            self.metrics_dir, PoolCollector(self.stats, lambda: self.views, kafka_stats)
        )
        return self._server.start(settings.bind, settings.port or 0)

    def worker_gone(self, slot_no: int) -> None:
        """A worker has exited (and its slot is free): its gauges go with it
        (see ``multiproc.forget_gauges``). Before the slot is reused."""
        if self.metrics_dir is not None:
            multiproc.forget_gauges(self.metrics_dir, multiproc.worker_identifier(slot_no))

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
        self.announcer.close()
        multiproc.release_dir(self.metrics_dir)

    def next_deadline(self) -> float:
        """When the loop must wake for a skipped update or systemd's watchdog."""
        deadline = self._next_publish if self._due else math.inf
        watchdog = self.announcer.next_deadline()
        if watchdog is not None:
            deadline = min(deadline, watchdog)
        return deadline

    def publish(self, now: float, phase: Phase) -> None:
        """At most every ``PUBLISH_INTERVAL`` (a skipped update is due then),
        and at once when a worker came or went (a scrape must not read a
        process that is gone)."""
        members = tuple((s.number, s.pid) for s in self.pool.slots.values())
        if now < self._next_publish and members == self._members:
            self._due = True
            return
        self._members = members
        self._due = False
        self._next_publish = now + PUBLISH_INTERVAL
        slots = self.pool.slots.values()
        self.views = tuple(
            WorkerView(s.number, s.pid, s.state is SlotState.BUSY, s.ps, s.uss_bytes, s.pss_bytes)
            for s in slots
        )
        self.stats.jobs_held = len(self.ledger)
        self.stats.jobs_held_peak = self.ledger.peak
        if self.metrics is not None and now >= self._next_backlog_gauge:
            self.metrics.set_report_backlog(*self.ledger.oldest_report(now))
            self._next_backlog_gauge = now + BACKLOG_GAUGE_INTERVAL
        shown = phase.value if phase in (Phase.DRAINING, Phase.RELOADING) else ""
        self.announcer.publish(
            now,
            PoolState(
                workers=len(self.pool),
                busy=self.pool.busy(),
                jobs_done=self.stats.jobs_succeeded,
                jobs_failed=self.stats.jobs_failed,
                phase=shown,
                ready=self.pool.booted() >= self.pool.target,
                # The loop runs (we are here); also check the poller is not wedged.
                healthy=self.intake.healthy(now, self.engine_timeout),
            ),
        )


__all__ = ["PUBLISH_INTERVAL", "MetricsFiles", "Publisher", "open_metrics"]
