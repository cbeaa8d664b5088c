"""What the supervisor sets up before its first worker, from its configuration.

The fork server's preload list, and the parent's helper threads: the
reporters, the poller (poll dispatch; a Kafka feeder starts with the first
ready worker instead), and the watch over running jobs (stale checks and
lease renewals), with the ledger told what the engine's client can do.
Nothing here forks: the arbiter starts the workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.staleness import InstanceReader
from workflow_sdk.supervisor.config import PoolConfig, SupervisorConfig
from workflow_sdk.supervisor.io.poller import Poller
from workflow_sdk.supervisor.io.renewal import plan_renewal
from workflow_sdk.supervisor.io.reporter import Reporter
from workflow_sdk.supervisor.loop.ledger import JobLedger
from workflow_sdk.supervisor.loop.watch import JobWatch
from workflow_sdk.supervisor.results import Results
from workflow_sdk.supervisor.worker.main import ENV_PRELOAD_MODULES

log = logging.getLogger("workflow_sdk.supervisor")


def fork_server_preload(settings: PoolConfig) -> list[str]:
    """The modules the fork server imports once: every worker forked from it
    starts with them loaded. Handler modules only on request: a module
    preloaded there is not re-imported by the workers a reload starts."""
    preload = [
        "workflow_sdk.supervisor.worker.forkserver_init",
        "workflow_sdk.supervisor.worker.main",
    ]
    if settings.preload_handlers:
        modules = [spec.partition(":")[0] for spec in settings.handlers]
        os.environ[ENV_PRELOAD_MODULES] = ",".join(modules)
        # By name: importing that module here would load the handlers.
        preload.append("workflow_sdk.supervisor.worker.preload")
    return preload


def make_reader(config: SupervisorConfig, client: WorkerEngineClient | None) -> object:
    """For the rare calls (stale checks, lease renewal): the full client."""
    if client is not None:
        return client
    engine = config.engine
    verify: bool | str = engine.ca_bundle or engine.verify_tls
    return RestEngineClient(engine.url, engine.timeout, token=engine.token, verify=verify)


@dataclass(frozen=True)
class Helpers:
    """The parent's threads, started."""

    reporter: Reporter
    watch: JobWatch
    #: None: jobs come from Kafka
    poller: Poller | None
    #: None: the client cannot read instances (no stale checks)
    reader: InstanceReader | None


def start_helpers(
    config: SupervisorConfig,
    make_client: Callable[[], WorkerEngineClient],
    reader: object,
    *,
    ledger: JobLedger,
    results: Results,
    wake: Callable[[], None],
    metrics: Metrics | None,
) -> Helpers:
    """Start the reporters, the poller and the job watch.

    :raises RenewalUnavailableError: lease renewal is required and the
        engine cannot renew (nothing is started then).
    """
    # First: the probe may refuse, and then nothing is to be stopped.
    renewer = plan_renewal(config, reader)
    if renewer is not None:
        ledger.renew_every = config.supervisor.lease_renewal_interval
    instances: InstanceReader | None = None
    if hasattr(reader, "get_instance") and hasattr(reader, "get_instance_history"):
        instances = cast(InstanceReader, reader)
    else:
        log.warning(
            "the engine client cannot read instances: jobs of cancelled or finished "
            "instances are not detected (failures are sent as they are)"
        )
        ledger.stale_interval = 0.0  # nothing could answer the checks
    worker_id = config.supervisor.worker_id
    reporter = Reporter(
        make_client(),
        worker_id,
        deadline=config.supervisor.report_deadline,
        window=config.engine.in_flight_window,
        on_status=results.on_status,
        on_retry=results.on_retry,
    )
    poller = None
    if config.engine.dispatch == "poll":
        # After the probe: polls ask for the configured lease only when
        # renewal is in effect (0, the engine's default, sends nothing).
        lease = config.supervisor.lease_seconds if renewer is not None else 0
        poller = Poller(make_client(), worker_id, wake, lease_seconds=lease)
    watch = JobWatch(
        ledger,
        wake=wake,
        reader=instances,
        renewer=renewer,
        worker_id=worker_id,
        lease_seconds=config.supervisor.lease_seconds,
        metrics=metrics,
        join_timeout=config.engine.timeout * 2 + 1,
    )
    return Helpers(reporter, watch, poller, instances)


__all__ = ["Helpers", "fork_server_preload", "make_reader", "start_helpers"]
