"""What the supervisor shows, and what it measures: the published view and the RSS samples.

``Publisher`` serves /metrics (and owns the multiprocess directory the
workers write their metrics to), and keeps the view of the workers, the
process title and systemd's status (through the ``Announcer``) up to date,
at most every ``PUBLISH_INTERVAL``. ``sample_rss`` reads each worker's memory and returns
a verdict: the workers over the hard limit (``WorkerLife.sample_memory``
has them killed and their jobs failed) and the idle ones a recycle rule may
now retire. Neither signals a process.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.supervisor.config import MetricsConfig
from workflow_sdk.supervisor.exposition import multiproc
from workflow_sdk.supervisor.exposition.announcer import Announcer, PoolState
from workflow_sdk.supervisor.exposition.exporter import MetricsServer, PoolCollector, WorkerView
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.ledger import JobLedger
from workflow_sdk.supervisor.loop.pool import Phase, WorkerPool
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot

#: Seconds between two updates of the /metrics view, title and systemd status:
#: every tick (two or three per job) cost the parent a few % of its CPU per job.
PUBLISH_INTERVAL = 0.1
#: Seconds between two updates of the report backlog gauge.
BACKLOG_GAUGE_INTERVAL = 1.0


class Publisher:
    """The /metrics view of the workers, the title and systemd's status."""

    def __init__(
        self,
        pool: WorkerPool,
        ledger: JobLedger,
        stats: SupervisorStats,
        intake: Intake,
        *,
        announcer: Announcer,
        engine_timeout: float,
    ) -> None:
        self.pool = pool
        self.ledger = ledger
        self.stats = stats
        self.intake = intake
        #: Title and systemd notifications (replaced once systemd's variables are read).
        self.announcer = announcer
        self.engine_timeout = engine_timeout
        #: The parent's own metrics, and the directory every worker writes
        #: its own to (None: no /metrics).
        self.metrics: Metrics | None = None
        self.metrics_dir: str | None = None
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
        self.metrics_dir = multiproc.prepare_dir(multiproc.choose_dir(settings.dir))
        self.metrics = multiproc.metrics_with_identifier("supervisor")
        kafka_stats = self.intake.kafka_stats if kafka else None
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
        members = tuple((s.slot, s.pid) for s in self.pool.slots.values())
        if now < self._next_publish and members == self._members:
            self._due = True
            return
        self._members = members
        self._due = False
        self._next_publish = now + PUBLISH_INTERVAL
        slots = self.pool.slots.values()
        self.views = tuple(
            WorkerView(s.slot, s.pid, s.state is SlotState.BUSY, s.ps) for s in slots
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


@dataclass(frozen=True)
class MemoryVerdict:
    """What one round of RSS samples asks of the arbiter."""

    #: workers running a job with RSS over the hard limit: kill, fail the job
    kill: list[WorkerSlot]
    #: idle workers with a fresh sample: check whether to recycle them
    idle: list[WorkerSlot]


def sample_rss(slots: Iterable[WorkerSlot], hard_limit_bytes: float) -> MemoryVerdict:
    """Read each worker's RSS (into ``rss_bytes``); judge it against the
    hard limit (0 = none), during jobs too."""
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
        slot.rss_bytes = rss
        if hard_limit_bytes and slot.job is not None and rss > hard_limit_bytes:
            kill.append(slot)
        elif slot.state is SlotState.IDLE:
            idle.append(slot)
    return MemoryVerdict(kill, idle)


__all__ = ["PUBLISH_INTERVAL", "MemoryVerdict", "Publisher", "sample_rss"]
