"""A KafkaRunner in its own process, for the SIGTERM test.

    python runner_host.py BROKERS ENGINE_URL JOB_TYPE WORK_DIR

Each handler appends its job id to WORK_DIR/started, then waits until
WORK_DIR/release exists (the test creates it after sending SIGTERM).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.runner.kafka_runner import KafkaRunner


def main() -> int:
    brokers, url, job_type, work = sys.argv[1:5]
    work_dir = Path(work)
    lock = threading.Lock()
    pause = threading.Event()

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        with lock, (work_dir / "started").open("a") as out:
            out.write(job["id"] + "\n")
        while not (work_dir / "release").exists():
            pause.wait(0.02)
        return {"ranIn": "host"}

    registry = HandlerRegistry()
    registry.register(job_type, handler)
    with RestEngineClient(url, timeout=5.0, pool_size=8) as client:
        runner = KafkaRunner(
            "host-worker",
            brokers,
            client,
            registry,
            parallelism=3,
            drain_timeout=30.0,
            metrics=Metrics(CollectorRegistry()),
        )
        runner.run()  # main thread: SIGTERM stops it
    stats = runner.stats
    print(f"completed={stats.completed} abandoned={stats.abandoned_at_stop}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
