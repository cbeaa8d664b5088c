"""What the supervisor builds before its first worker, from its configuration.

``open_rooms`` builds everything the main loop works with, once, in this
order: the metrics files, the intake, its pause control and the publisher
(/metrics serves), how workers start (``ForkServerStarter``: the fork
server and its preload list), what the engine's client can do (``plan_checks``: lease renewal and
stale checks, the ledger told which are in effect), the report desk and
its reporter threads, the watch over running jobs, the stopper, the drain,
the workers' lifecycle (and its thread of full memory reads), the
directory of the workers' stack dumps (``stack_dumps``), and where
jobs will come from (``default_opener``: the poller, or the Kafka feeder;
opened with the first ready worker). Each
thread or server it starts is registered on the caller's ``ExitStack``, so
that closing it undoes a start however far it got. Nothing here forks: the
arbiter starts the workers.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Protocol, cast

from workflow_sdk.errors import EngineClientError
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.reporting import ReportStatus
from workflow_sdk.staleness import InstanceReader
from workflow_sdk.supervisor.clients import EngineClients
from workflow_sdk.supervisor.config import SupervisorConfig, SupervisorSection
from workflow_sdk.supervisor.exposition.announcer import Announcer
from workflow_sdk.supervisor.exposition.stats import SupervisorStats
from workflow_sdk.supervisor.io.poller import PollOpener
from workflow_sdk.supervisor.io.renewal import LeaseRenewer, plan_renewal
from workflow_sdk.supervisor.io.reporter import Reporter
from workflow_sdk.supervisor.io.source import JobSource, SourceOpener
from workflow_sdk.supervisor.loop.claim_plan import ClaimPolicy
from workflow_sdk.supervisor.loop.control import IntakeControl
from workflow_sdk.supervisor.loop.drain import Drain
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.ledger import JobLedger
from workflow_sdk.supervisor.loop.lifecycle import WorkerLifecycle, open_memory_reader
from workflow_sdk.supervisor.loop.pool import WorkerPool
from workflow_sdk.supervisor.loop.publisher import Publisher, open_metrics
from workflow_sdk.supervisor.loop.reports import ReportDesk, ReportSink, StartReporter
from workflow_sdk.supervisor.loop.slots import WorkerSlot
from workflow_sdk.supervisor.loop.stack_dumps import StackDumps
from workflow_sdk.supervisor.loop.stops import Stopper
from workflow_sdk.supervisor.loop.type_limits import TypeLimits
from workflow_sdk.supervisor.loop.watch import RunningJobWatch
from workflow_sdk.supervisor.loop.worker_setup import parent_hooks, worker_env
from workflow_sdk.supervisor.worker.main import ENV_PRELOAD_MODULES, WorkerSpec, worker_main
from workflow_sdk.supervisor.worker.process_setup import ENV_FORK_SERVER, fork_server_env

log = logging.getLogger("workflow_sdk.supervisor")


class WorkerStarter(Protocol):
    """Starts one worker process for ``spec``; returns it and the parent's end
    of its channel. Raises ``OSError`` or ``EOFError`` when it cannot."""

    def __call__(self, spec: WorkerSpec) -> tuple[BaseProcess, Connection]: ...


def fork_server_preload(settings: SupervisorSection) -> list[str]:
    """The modules the fork server imports once: every worker forked from it
    starts with them loaded. Handler modules (and the hooks module) only on
    request: a module preloaded there is not re-imported by the workers a
    reload starts.

    The fork server's environment is this process's when it starts: the
    workers' variables (``worker_setup.worker_env``) go to it through
    ``ENV_FORK_SERVER``, applied by its first module before any other loads a
    BLAS or OpenMP runtime; this process's own environment keeps its values
    (``[supervisor.env]`` may hold a proxy meant for the handlers, not for the
    engine's client)."""
    os.environ[ENV_FORK_SERVER] = fork_server_env(worker_env(settings))
    preload = [
        "workflow_sdk.supervisor.worker.forkserver_init",
        "workflow_sdk.supervisor.worker.main",
    ]
    if settings.preload_handlers:
        modules = [spec.partition(":")[0] for spec in settings.handlers]
        if settings.hooks:
            modules.append(settings.hooks)
        os.environ[ENV_PRELOAD_MODULES] = ",".join(modules)
        # By name: importing that module here would load the handlers.
        preload.append("workflow_sdk.supervisor.worker.preload")
    return preload


class ForkServerStarter:
    """Workers from a fork server (``multiprocessing``'s "forkserver" context):
    each one is forked from a small single-threaded server process, never
    from the parent, which is therefore free to run threads for HTTP without
    the fork-while-threaded deadlocks, and every replacement starts lean.

    Built once the parent's own environment is cleaned: the fork server
    starts with the first worker and keeps the environment it found.
    """

    def __init__(self, settings: SupervisorSection) -> None:
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(fork_server_preload(settings))

    def __call__(self, spec: WorkerSpec) -> tuple[BaseProcess, Connection]:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main, args=(spec, child_end), name=f"worker-{spec.number}"
        )
        try:
            process.start()
        except (OSError, EOFError):
            # The fork server died (killed, out of memory...): multiprocessing
            # starts a new one on the next attempt.
            parent_end.close()
            child_end.close()
            raise
        child_end.close()
        return process, parent_end


def plan_checks(
    config: SupervisorConfig, client: object, ledger: JobLedger
) -> tuple[LeaseRenewer | None, InstanceReader | None]:
    """What the engine's client can do for running jobs: renew their leases
    (asked of the engine, as ``[supervisor] lease_renewal`` says) and read
    instances (stale checks). The ledger is told which are in effect.

    :raises RenewalUnavailableError: lease renewal is required and the
        engine could not be asked; ``ConfigError``: it cannot renew.
    """
    renewer = plan_renewal(config, client)
    if renewer is not None:
        ledger.renew_every = config.supervisor.lease_renewal_interval
    if hasattr(client, "get_instance") and hasattr(client, "get_instance_history"):
        return renewer, cast(InstanceReader, client)
    log.warning(
        "the engine client cannot read instances: jobs of cancelled or finished "
        "instances are not detected (failures are sent as they are)"
    )
    ledger.stale_interval = 0.0  # nothing could answer the checks
    return renewer, None


def reporter_starter(config: SupervisorConfig, clients: EngineClients) -> StartReporter:
    """Starts the reporter threads, with a client of their own."""

    def start(
        on_status: Callable[[Outcome, ReportStatus], None],
        on_retry: Callable[[Outcome, EngineClientError], None],
    ) -> ReportSink:
        return Reporter(
            clients.for_jobs(),
            config.supervisor.worker_id,
            deadline=config.supervisor.report_deadline,
            window=config.engine.in_flight_window,
            on_status=on_status,
            on_retry=on_retry,
        )

    return start


def start_watch(
    config: SupervisorConfig,
    ledger: JobLedger,
    *,
    wake: Callable[[], None],
    reader: InstanceReader | None,
    renewer: LeaseRenewer | None,
    metrics: Metrics | None,
) -> RunningJobWatch:
    """The stale checks and lease renewals of running jobs, on threads of their own."""
    return RunningJobWatch(
        ledger,
        wake=wake,
        reader=reader,
        renewer=renewer,
        worker_id=config.supervisor.worker_id,
        lease_seconds=config.supervisor.lease_seconds,
        metrics=metrics,
        join_timeout=config.engine.timeout * 2 + 1,
    )


def default_opener(
    config: SupervisorConfig, clients: EngineClients, *, renewing: bool
) -> SourceOpener:
    """The poller (``dispatch = "poll"``), or the Kafka feeder."""
    worker_id = config.supervisor.worker_id
    if config.engine.dispatch == "poll":
        # Polls ask for the configured lease only when renewal is in effect
        # (0, the engine's default, sends nothing).
        lease = config.supervisor.lease_seconds if renewing else 0
        return PollOpener(clients.for_jobs, worker_id, lease_seconds=lease)

    def open_kafka(job_types: tuple[str, ...], wake: Callable[[], None]) -> JobSource:
        # Imported here: the kafka extra is only needed in Kafka mode.
        from workflow_sdk.supervisor.io.kafka_feeder import open_feeder  # noqa: PLC0415

        return open_feeder(config.kafka, job_types, worker_id, wake)

    return open_kafka


@dataclass(frozen=True)
class Rooms:
    """Everything the main loop works with (see ``open_rooms``)."""

    intake: Intake
    #: pause and resume requests (POST /pause, /resume; SIGUSR2)
    control: IntakeControl
    publisher: Publisher
    #: the /metrics server's port (None: no /metrics)
    metrics_port: int | None
    start_worker: WorkerStarter
    desk: ReportDesk
    watch: RunningJobWatch
    stopper: Stopper
    drain: Drain
    life: WorkerLifecycle
    open_source: SourceOpener
    #: the workers' stack dump files, logged by the loop
    dumps: StackDumps


def open_rooms(
    config: SupervisorConfig,
    *,
    pool: WorkerPool,
    ledger: JobLedger,
    claim_policy: ClaimPolicy,
    stats: SupervisorStats,
    announcer: Announcer,
    clients: EngineClients,
    wake: Callable[[], None],
    collect: Callable[[WorkerSlot], None],
    closing: contextlib.ExitStack,
    source: SourceOpener | None = None,
    start_worker: WorkerStarter | None = None,
    limits: TypeLimits | None = None,
) -> Rooms:
    """Build the loop's objects and start its threads (see the module doc).

    ``collect``: the arbiter's reading of a worker's channel (the stopper
    reads what a worker sent before it stops it); ``source`` and
    ``start_worker`` replace the defaults (``default_opener``, the fork server);
    ``limits``: the per-type settings (default: ``config``'s).

    :raises HooksImportError: ``parent_hooks = true`` and the hooks module
        cannot be imported here (nothing was started);
        ``RenewalUnavailableError``: lease renewal is required and the engine
        could not be asked (no thread was started); ``ConfigError``: the
        metrics port or directory cannot be used, or renewal is required and
        the engine cannot renew.
    """
    hooks = parent_hooks(config.supervisor)  # first: it may refuse
    files = open_metrics(config.metrics) if config.metrics.port is not None else None
    metrics = files.metrics if files is not None else None
    poll_interval = config.supervisor.poll_interval
    intake = Intake(pool, ledger, claim_policy, stats, poll_interval, metrics=metrics)
    control = IntakeControl(intake, wake)
    publisher = Publisher(
        pool,
        ledger,
        stats,
        intake,
        announcer=announcer,
        engine_timeout=config.engine.timeout,
        files=files,
        dispatch=config.engine.dispatch,
        config_path=config.source,
    )
    closing.callback(publisher.close)
    metrics_port = None
    if files is not None:
        kafka = config.engine.dispatch == "kafka"
        metrics_port = publisher.serve(config.metrics, kafka=kafka, control=control.request)
    starter = start_worker or ForkServerStarter(config.supervisor)
    # First: the probe may refuse, and then no thread is to be stopped.
    renewer, reader = plan_checks(config, clients.for_checks(), ledger)
    desk = ReportDesk(
        pool,
        ledger,
        intake,
        stats,
        reader=reader,
        start_reporter=reporter_starter(config, clients),
        wake=wake,
        metrics=metrics,
        limits=limits or TypeLimits(config),
    )
    closing.callback(desk.close)
    watch = start_watch(config, ledger, wake=wake, reader=reader, renewer=renewer, metrics=metrics)
    closing.callback(watch.close)
    closing.callback(intake.close)
    dumps = StackDumps.create()
    # Before ``reap``, so that it runs after it: what the last workers dumped
    # is logged once they are gone, then the directory is removed.
    closing.callback(dumps.close)
    stopper = Stopper(pool, ledger, intake, desk, stats, watch=watch, collect=collect, dumps=dumps)
    memory_reader = open_memory_reader()
    if memory_reader is not None:
        closing.callback(memory_reader.close)
    life = WorkerLifecycle(
        pool, stopper, stats, hooks=hooks, reader=memory_reader, gauges=files is not None
    )

    def reap() -> None:
        life.reap_all(time.monotonic())
        desk.take()  # settle what the reporters finished (Kafka commits it)

    closing.callback(reap)
    return Rooms(
        intake=intake,
        control=control,
        publisher=publisher,
        metrics_port=metrics_port,
        start_worker=starter,
        desk=desk,
        watch=watch,
        stopper=stopper,
        drain=Drain(pool, ledger, intake, stopper, desk=desk, stats=stats),
        life=life,
        open_source=source or default_opener(config, clients, renewing=renewer is not None),
        dumps=dumps,
    )


__all__ = [
    "ForkServerStarter",
    "Rooms",
    "WorkerStarter",
    "default_opener",
    "fork_server_preload",
    "open_rooms",
    "plan_checks",
    "reporter_starter",
    "start_watch",
]
