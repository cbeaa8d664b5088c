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

The poll client comes from a ``Supervisor`` subclass overriding its client
factory; the Kafka source is swapped by replacing the ``KafkaJobSource`` name
in ``workflow_sdk.kafka.consumer`` and ``workflow_sdk.supervisor.io.kafka_feeder``
before the supervisor starts consuming. Nothing else of the supervisor is touched.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from benchlib.handlers import POLLED_AT
from workflow_sdk.client.interface import WorkerEngineClient
from workflow_sdk.client.lean import LeanJobClient
from workflow_sdk.supervisor.config import load_config
from workflow_sdk.supervisor.exposition.logs import configure_logging
from workflow_sdk.supervisor.loop.arbiter import Supervisor


class StampingLeanClient(LeanJobClient):
    def poll_jobs(
        self, worker_id: str, job_types: list[str], max_jobs: int = 1
    ) -> list[dict[str, Any]]:
        jobs = super().poll_jobs(worker_id, job_types, max_jobs)
        arrived = time.monotonic()
        for job in jobs:
            job["variables"] = {**(job.get("variables") or {}), POLLED_AT: arrived}
        return jobs


class StampingSupervisor(Supervisor):
    def _make_client(self) -> WorkerEngineClient:
        # One client per caller (poller, reporter), as the supervisor makes them.
        engine = self.config.engine
        return StampingLeanClient(engine.url, engine.timeout)


def _install_stamping_source() -> None:
    from workflow_sdk.kafka import consumer  # noqa: PLC0415 - needs the kafka extra

    class StampingSource(consumer.KafkaJobSource):
        def fetch(self, max_records: int, timeout: float = 0.0) -> list[dict[str, Any]]:
            jobs = super().fetch(max_records, timeout)
            arrived = time.monotonic()
            for job in jobs:
                job["variables"] = {**(job.get("variables") or {}), POLLED_AT: arrived}
            return jobs

    consumer.KafkaJobSource = StampingSource  # type: ignore[misc]
    # The feeder module binds the name at import: replace it there too.
    from workflow_sdk.supervisor.io import kafka_feeder  # noqa: PLC0415

    if hasattr(kafka_feeder, "KafkaJobSource"):
        kafka_feeder.KafkaJobSource = StampingSource  # type: ignore[misc]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchlib.kafka_host")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("-c", "--config", required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format)
    if config.engine.dispatch == "kafka":
        _install_stamping_source()
    return StampingSupervisor(config).run()


if __name__ == "__main__":
    sys.exit(main())
