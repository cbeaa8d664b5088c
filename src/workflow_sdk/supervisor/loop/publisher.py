"""What the supervisor shows: the /metrics view, the process title, systemd's status.

``open_metrics`` prepares the multiprocess directory the workers write
their metrics to and the parent's own metrics (before anything records
one). The ``Publisher`` serves /metrics over them, and keeps the view of the
workers, the process title and systemd's status (through the
``Announcer``) up to date, at most every ``PUBLISH_INTERVAL``. It reads the
loop's objects and changes none of them.

The server's other paths read what it publishes, never the loop's objects:
the time of the loop's last tick (``last_tick``, written on every tick) for
/healthz, and the ``PoolSnapshot`` of the last publish for /readyz and
/status (``exposition.health``, ``exposition.endpoints``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.supervisor.config import MetricsConfig
from workflow_sdk.supervisor.exposition import multiproc
from workflow_sdk.supervisor.exposition.announcer import Announcer, PoolState
from workflow_sdk.supervisor.exposition.endpoints import Probes, status_document
from workflow_sdk.supervisor.exposition.exporter import MetricsServer, PoolCollector
from workflow_sdk.supervisor.exposition.health import (
    LOOP_STALL_LIMIT,
    Verdict,
    judge_liveness,
    judge_readiness,
)
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.exposition.status import PoolSnapshot, SourceView, WorkerView
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.ledger import JobLedger
from workflow_sdk.supervisor.loop.phase import Phase
from workflow_sdk.supervisor.loop.pool import WorkerPool
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot

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
    :param dispatch: where jobs come from ("poll" or "kafka"), for /status.
    :param config_path: the configuration file, for /status.
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
        dispatch: str = "poll",
        config_path: str = "",
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
        self.dispatch = dispatch
        self.config_path = config_path
        #: ``time.monotonic()`` of the main loop's last tick (before the
        #: first: when start-up began); one float, read by /healthz.
        self.last_tick = time.monotonic()
        self.ticked = False
        #: Seconds without a tick after which /healthz answers 503.
        self.stall_limit = LOOP_STALL_LIMIT
        #: The pool at the last publish (None before the first), read by
        #: /readyz and /status; replaced whole.
        self.snapshot: PoolSnapshot | None = None
        self._paused = False

    def serve(
        self,
        settings: MetricsConfig,
        *,
        kafka: bool = False,
        control: Callable[[str, str], Verdict] | None = None,
    ) -> int:
        """Start the /metrics server; returns its port. ``kafka``: jobs come
        from Kafka, show its source's counters too. ``control``: pauses and
        resumes intake (POST /pause, /resume); without it they answer 503."""
        assert self.metrics_dir is not None, "serve needs the metrics files"
        kafka_stats = self.intake.source_stats if kafka else None
        probes = Probes(
            health=self.health,
            ready=self.readiness,
            status=self.status,
            control=control or (lambda action, origin: Verdict(False, "not available")),
        )
        self._server = MetricsServer(
            self.metrics_dir, PoolCollector(self.stats, lambda: self.views, kafka_stats), probes
        )
        return self._server.start(settings.bind, settings.port or 0)

    # -- what the server's threads ask ---------------------------------------------------

    def health(self) -> Verdict:
        """/healthz: the main loop ticks (any thread)."""
        return judge_liveness(
            time.monotonic(),
            self.last_tick,
            ticked=self.ticked,
            snapshot=self.snapshot,
            limit=self.stall_limit,
        )

    def readiness(self) -> Verdict:
        """/readyz: the supervisor takes jobs (any thread)."""
        return judge_readiness(self.snapshot, time.monotonic(), engine_timeout=self.engine_timeout)

    def status(self) -> dict[str, Any]:
        """/status's document (any thread)."""
        now = time.monotonic()
        health, ready = self.health(), self.readiness()
        # Before the first publish (start-up): the same document, empty.
        snapshot = self.snapshot or PoolSnapshot(
            now, "starting", False, self.pool.target, (), 0, 0, 0, 0, SourceView(self.dispatch)
        )
        server = self._server
        kafka = self.intake.source_stats() if self.dispatch == "kafka" else None
        return status_document(
            snapshot,
            now,
            pid=os.getpid(),
            config=self.config_path,
            health=health,
            ready=ready,
            kafka=kafka,
            memory=server.worker_memory() if server is not None else None,
        )

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
        # Every tick comes here (``Supervisor._act``): /healthz reads this.
        self.last_tick = now
        self.ticked = True
        members = tuple((s.number, s.pid) for s in self.pool.slots.values())
        paused = self.intake.paused
        if now < self._next_publish and members == self._members and paused == self._paused:
            self._due = True
            return
        self._members = members
        self._paused = paused
        self._due = False
        self._next_publish = now + PUBLISH_INTERVAL
        self.views = tuple(_view(s) for s in self.pool.slots.values())
        self.stats.jobs_held = len(self.ledger)
        self.stats.jobs_held_peak = self.ledger.peak
        if self.metrics is not None and now >= self._next_backlog_gauge:
            self.metrics.set_report_backlog(*self.ledger.oldest_report(now))
            self._next_backlog_gauge = now + BACKLOG_GAUGE_INTERVAL
        source = self.intake.source_view(self.dispatch, now, self.engine_timeout)
        self.snapshot = PoolSnapshot(
            taken_at=now,
            phase=phase.value,
            paused=paused,
            target=self.pool.target,
            workers=self.views,
            jobs_held=self.stats.jobs_held,
            held_limit=self.ledger.limit,
            jobs_succeeded=self.stats.jobs_succeeded,
            jobs_failed=self.stats.jobs_failed,
            source=source,
        )
        shown = phase.value if phase in (Phase.DRAINING, Phase.RELOADING) else ""
        if paused and phase is not Phase.DRAINING:
            shown = f"{shown} paused".strip()
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
                healthy=source.responsive,
                paused=paused,
            ),
        )


def _view(slot: WorkerSlot) -> WorkerView:
    """What a scrape and /status may know of ``slot`` (see ``WorkerView``)."""
    job = slot.job
    return WorkerView(
        slot.number,
        slot.pid,
        slot.state is SlotState.BUSY,
        slot.ps,
        state=slot.state.value,
        job_id=job.job_id if job is not None else "",
        job_type=job.job_type if job is not None else "",
        job_started=job.started_at if job is not None else 0.0,
        jobs_done=slot.jobs_done,
        rss_bytes=slot.rss_bytes,
        uss=slot.uss_bytes,
        pss=slot.pss_bytes,
    )


__all__ = ["PUBLISH_INTERVAL", "MetricsFiles", "Publisher", "open_metrics"]
