"""``python -m benchlib.kafka_host run -c FILE``: the supervisor, stamping job arrival.

The Kafka comparison's counterpart of ``benchlib.sv_host``, for both
dispatch modes, so that both are measured the same way:

- poll mode: the supervisor's clients are the lean keep-alive clients it
  makes for itself (``make_worker_client``), except that ``poll_jobs`` writes
  the ``time.monotonic()`` at which the poll answer had arrived and been
  parsed into each job's variables (``benchlib.handlers.POLLED_AT``). Unlike
  ``sv_host`` (one ``RestEngineClient`` for everything), the completions go
  through the same client as in production, so parent CPU per job compares;
- Kafka mode: the job source is a ``KafkaJobSource`` whose ``fetch`` writes
  the ``time.monotonic()`` at which the fetch returned the records, decoded,
  into the same variable.

Either way the handler echoes it next to the monotonic time of its first
line: the difference is the supervisor's dispatch latency from "the source
handed the job to the supervisor's thread" to the handler. The stamp costs
one ``time.monotonic()`` per answer and one dict copy per job, in both modes.

Both go through the supervisor's public constructor: the clients through
``Supervisor(config, clients=...)`` (an ``EngineClients`` whose hot-call
client stamps, one per caller as the supervisor makes them; the rest are the
usual ones), the Kafka source through ``Supervisor(config, source=...)`` (a
``KafkaOpener`` whose consumer is the stamping ``KafkaJobSource``). Nothing
of the supervisor is patched.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Collection
from typing import Any

from benchlib.handlers import POLLED_AT
from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.client.lean import LeanJobClient
from workflow_sdk.supervisor import Supervisor, load_config
from workflow_sdk.supervisor.clients import EngineClients
from workflow_sdk.supervisor.exposition.logs import configure_logging
from workflow_sdk.supervisor.io.source import SourceOpener


def _stamp(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    arrived = time.monotonic()
    for job in jobs:
        job["variables"] = {**(job.get("variables") or {}), POLLED_AT: arrived}
    return jobs


class StampingLeanClient(LeanJobClient):
    def poll_jobs(
        self, worker_id: str, job_types: list[str], max_jobs: int = 1, *, lease_seconds: int = 0
    ) -> list[dict[str, Any]]:
        return _stamp(
            super().poll_jobs(worker_id, job_types, max_jobs, lease_seconds=lease_seconds)
        )


class StampingClients(EngineClients):
    def for_jobs(self) -> WorkerEngineClient:
        # One client per caller (poller, reporter), as the supervisor makes them.
        return StampingLeanClient(self.engine.url, self.engine.timeout)


def _stamping_kafka_source(config: Any) -> SourceOpener:
    from workflow_sdk.kafka.consumer import KafkaJobSource  # noqa: PLC0415 - the kafka extra
    from workflow_sdk.supervisor.io.kafka_feeder import KafkaOpener  # noqa: PLC0415

    class StampingSource(KafkaJobSource):
        def fetch(
            self,
            max_records: int,
            timeout: float = 0.0,
            job_types: Collection[str] | None = None,
        ) -> list[dict[str, Any]]:
            return _stamp(super().fetch(max_records, timeout, job_types))

    return KafkaOpener(config.kafka, config.supervisor.worker_id, consumer=StampingSource)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchlib.kafka_host")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("-c", "--config", required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format)
    source = _stamping_kafka_source(config) if config.engine.dispatch == "kafka" else None
    return Supervisor(config, clients=StampingClients(config.engine), source=source).run()


if __name__ == "__main__":
    sys.exit(main())
