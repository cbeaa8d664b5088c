"""``/metrics`` of the supervisor: every process's metrics plus the pool's own.

Served from a fresh registry holding a ``MultiProcessCollector`` (the sum of
the workers' and the supervisor's metric files) and ``PoolCollector``, which
reads the supervisor's counters and each worker's RSS and CPU at scrape time,
its USS and PSS from the main loop's last sample (a read of smaps_rollup
costs too much to repeat per scrape), and, with ``dispatch = "kafka"``, the
Kafka source's counters.
No metric is registered on that registry directly: it would appear twice.

The server is prometheus_client's WSGI application on a server of our own:
a thread per connection as there, but at most ``MAX_CONNECTIONS`` at once
(more are closed unanswered) and ``CONNECTION_TIMEOUT`` seconds for each
read and write, so idle or half-sent requests cannot use up this process's
file descriptors and threads (which the rest of the supervisor needs).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import psutil
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from workflow_sdk.errors import ConfigError
from workflow_sdk.kafka.stats import SourceStats
from workflow_sdk.supervisor.checks import listen_problem
from workflow_sdk.supervisor.exposition import multiproc
from workflow_sdk.supervisor.exposition.endpoints import (
    LOCAL_ADDRESS_KEY,
    Endpoints,
    Probes,
    worker_memory,
)
from workflow_sdk.supervisor.exposition.stats import RESTART_REASONS, SupervisorStats
from workflow_sdk.supervisor.exposition.status import WorkerView

log = logging.getLogger("workflow_sdk.supervisor")

PREFIX = "workflow_supervisor_"
#: Connections to /metrics served at once; a scraper needs one or two.
MAX_CONNECTIONS = 8
#: Seconds a connection may wait for each read or write (a scraper sends its
#: request at once; its own timeout is 10 s by default).
CONNECTION_TIMEOUT = 10.0


#: Label values of workflow_supervisor_kafka_records_skipped_total, and the
#: ``SourceStats`` field each one reads.
KAFKA_SKIP_REASONS = (
    ("duplicate", "duplicates"),
    ("held_while_running", "held_while_running"),
    ("malformed", "malformed"),
)


def kafka_metrics(stats: SourceStats) -> Iterator[Metric]:
    """The Kafka source's counters, every one shown (at 0 until it happens),
    and its two gauges."""
    skipped = CounterMetricFamily(
        PREFIX + "kafka_records_skipped",
        "Kafka records not run, by reason: duplicate (its dispatch finished within the "
        "dedup window), held_while_running (the same dispatch was running here), "
        "malformed (not a usable dispatch)",
        labels=["reason"],
    )
    for reason, attribute in KAFKA_SKIP_REASONS:
        skipped.add_metric([reason], getattr(stats, attribute))
    yield skipped
    counters: list[tuple[str, str, int]] = [
        ("kafka_jobs_fetched", "Jobs fetched from Kafka and handed to the pool", stats.fetched),
        (
            "kafka_jobs_deferred",
            "Other dispatches of a job running here, run once it finished (then counted "
            "as fetched)",
            stats.deferred,
        ),
        (
            "kafka_jobs_unfinished",
            "Jobs whose result did not reach the engine: their offsets stay uncommitted and "
            "their records are delivered again",
            stats.unfinished,
        ),
        (
            "kafka_commits",
            "Kafka offsets committed (one per partition and commit)",
            stats.commits,
        ),
        ("kafka_commit_errors", "Kafka offset commits that failed", stats.commit_errors),
        ("kafka_partitions_assigned", "Kafka partitions assigned by rebalances", stats.assigned),
        (
            "kafka_partitions_revoked",
            "Kafka partitions revoked or lost in rebalances",
            stats.revoked,
        ),
    ]
    for name, text, value in counters:
        yield CounterMetricFamily(PREFIX + name, text, value)
    yield GaugeMetricFamily(
        PREFIX + "kafka_jobs_in_flight",
        "Jobs fetched from Kafka and not yet done (running, or their result on its way to "
        "the engine)",
        stats.in_flight,
    )
    yield GaugeMetricFamily(
        PREFIX + "kafka_offsets_pending",
        "Kafka records fetched whose offsets cannot be committed yet (a job still running "
        "holds back every later offset of its partition); a restart now would deliver "
        "them again",
        stats.offsets_pending,
    )
    yield GaugeMetricFamily(
        PREFIX + "kafka_partitions_held_back",
        "Kafka partitions whose fetching is paused because [kafka] max_pending_offsets "
        "records wait behind one whose job is not finished (its result not yet confirmed)",
        stats.partitions_held_back,
    )


class PoolCollector(Collector):
    """``kafka``: the Kafka source's counters (``dispatch = "kafka"``); None
    in poll mode, which shows no ``workflow_supervisor_kafka_*`` metric."""

    def __init__(
        self,
        stats: SupervisorStats,
        workers: Callable[[], tuple[WorkerView, ...]],
        kafka: Callable[[], SourceStats] | None = None,
    ):
        self._stats = stats
        self._workers = workers
        self._kafka = kafka

    def collect(self) -> Iterator[Metric]:
        workers = self._workers()
        stats = self._stats
        yield GaugeMetricFamily(PREFIX + "workers", "Worker processes alive", len(workers))
        yield GaugeMetricFamily(
            PREFIX + "workers_busy", "Workers running a job", sum(w.busy for w in workers)
        )
        restarts = CounterMetricFamily(
            PREFIX + "worker_restarts",
            'Workers replaced, by reason and the job type they were running ("" when idle)',
            labels=["reason", "job_type"],
        )
        counts = stats.restart_counts()
        for reason in RESTART_REASONS:
            # Every reason is shown, at 0 until it happens, so alerts can use rate().
            restarts.add_metric([reason, ""], counts.pop((reason, ""), 0))
        for (reason, job_type), count in sorted(counts.items()):
            restarts.add_metric([reason, job_type], count)
        yield restarts
        yield GaugeMetricFamily(
            PREFIX + "jobs_held",
            "Jobs claimed and not yet acknowledged by the engine (running or reporting)",
            stats.jobs_held,
        )
        simple: list[tuple[str, str, int]] = [
            ("jobs_claimed", "Jobs claimed from the engine", stats.jobs_claimed),
            (
                "jobs_skipped_expired",
                "Claimed jobs not started because their lease had passed",
                stats.skipped_expired,
            ),
            ("report_retries", "Report attempts repeated after an error", stats.report_retries),
            ("reports_lost", "Outcomes given up without reaching the engine", stats.lost()),
            ("lease_overruns", "Jobs still running when their lease ran out", stats.lease_overruns),
            ("poll_errors", "Polls that failed", stats.poll_errors),
            (
                "stale_jobs",
                "Jobs that no longer mattered (instance finished or cancelled, step "
                "interrupted): stopped while running, or their fail not sent",
                stats.stale_jobs,
            ),
            (
                "redeliveries_coalesced",
                "Jobs handed out again by the engine while this supervisor still ran them "
                "(not started twice)",
                stats.redeliveries_coalesced,
            ),
            (
                "claims_held_back",
                "Polls held back or shrunk because 2 x workers jobs were already held",
                stats.claims_held_back,
            ),
        ]
        for name, text, value in simple:
            yield CounterMetricFamily(PREFIX + name, text, value)
        if self._kafka is not None:
            yield from kafka_metrics(self._kafka())
        rss = GaugeMetricFamily(
            PREFIX + "worker_rss_bytes",
            "Resident memory of each worker (RSS: pages it shares with the fork server and "
            "the other workers, a preloaded model's, count in full)",
            labels=["slot"],
        )
        uss = GaugeMetricFamily(
            PREFIX + "worker_uss_bytes",
            "Memory each worker alone holds (USS, what its exit gives back; what "
            "max_memory_mb counts), at the supervisor's last sample",
            labels=["slot"],
        )
        pss = GaugeMetricFamily(
            PREFIX + "worker_pss_bytes",
            "Each worker's share of the memory it maps (PSS: shared pages divided between "
            "the processes that map them; the workers' sum is their real total), at the "
            "supervisor's last sample",
            labels=["slot"],
        )
        cpu = CounterMetricFamily(
            PREFIX + "worker_cpu_seconds", "CPU time used by each worker", labels=["slot"]
        )
        for worker in workers:
            if worker.uss is not None:
                uss.add_metric([str(worker.slot)], worker.uss)
            if worker.pss is not None:
                pss.add_metric([str(worker.slot)], worker.pss)
            if worker.ps is None:
                continue
            try:
                with worker.ps.oneshot():
                    memory = worker.ps.memory_info().rss
                    times = worker.ps.cpu_times()
            except (psutil.Error, OSError):
                # It died between the snapshot and now; or /proc could not be
                # opened (out of file descriptors): no sample this scrape.
                continue
            if memory == 0:
                continue  # exited, not yet reaped: a zombie has no memory to show
            rss.add_metric([str(worker.slot)], memory)
            cpu.add_metric([str(worker.slot)], times.user + times.system)
        yield rss
        yield uss
        yield pss
        yield cpu


class _QuietHandler(WSGIRequestHandler):
    """Logs no request; its socket times out (``StreamRequestHandler.timeout``)."""

    timeout = CONNECTION_TIMEOUT

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        # Who may pause intake depends on the address the connection came in on.
        try:
            environ[LOCAL_ADDRESS_KEY] = str(self.connection.getsockname()[0])
        except OSError:
            environ[LOCAL_ADDRESS_KEY] = ""
        return environ

    def log_message(self, format: str, *args: Any) -> None:
        pass


class BoundedWSGIServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, ``limit`` of them at most (see the module doc)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], family: int, limit: int) -> None:
        self.address_family = family
        self._slots = threading.BoundedSemaphore(limit)
        #: Connections closed unanswered because ``limit`` were open.
        self.refused = 0
        super().__init__(address, _QuietHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            # No thread started (out of threads or memory): nothing will release it.
            self._slots.release()
            self.shutdown_request(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper that hangs up or times out: not worth a traceback on stderr.
        log.debug("metrics: connection from %s failed", client_address, exc_info=True)


def listen_address(bind: str, port: int) -> tuple[int, str]:
    """The address family and host to listen on for ``bind`` (IPv4 or IPv6)."""
    infos = socket.getaddrinfo(bind, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return int(family), str(address[0])


class MetricsServer:
    """The HTTP server thread answering ``/metrics``, and with ``probes`` the
    paths of ``endpoints`` (/healthz, /readyz, /status, /pause, /resume)."""

    def __init__(self, directory: str, pool: PoolCollector, probes: Probes | None = None) -> None:
        self.registry = CollectorRegistry()
        # Tolerates the gauge files of a worker that just exited vanishing mid-scrape.
        multiproc.scrape_tolerant_collector()(self.registry, path=directory)
        self.registry.register(pool)
        self._probes = probes
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self, bind: str, port: int) -> int:
        """Listen on ``bind:port``; a ``ConfigError`` names the key when we cannot."""
        try:
            family, host = listen_address(bind, port)
            server = BoundedWSGIServer((host, port), family, MAX_CONNECTIONS)
        except OSError as exc:
            raise ConfigError(listen_problem(bind, port, exc)) from None
        app = make_wsgi_app(self.registry)
        server.set_app(Endpoints(app, self._probes) if self._probes is not None else app)
        thread = threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        self.port = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", bind, self.port)
        return self.port

    def worker_memory(self) -> dict[int, dict[str, int]]:
        """Each worker's memory gauges as a scrape reads them now (by slot)."""
        return worker_memory(self.registry.collect())

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


__all__ = [
    "CONNECTION_TIMEOUT",
    "KAFKA_SKIP_REASONS",
    "MAX_CONNECTIONS",
    "BoundedWSGIServer",
    "MetricsServer",
    "PoolCollector",
    "WorkerView",
    "kafka_metrics",
]
