"""``python -m benchlib.sv_host run -c FILE``: the supervisor with a stamping client.

Does what ``rochallor-supervisor run -c FILE`` does (load the file, set up
logging, ``Supervisor(config).run()``), except that the supervisor's engine
client is a ``RestEngineClient`` whose ``poll_jobs`` writes, into each
claimed job's variables, the ``time.monotonic()`` at which the poll answer
had arrived and been parsed (``benchlib.handlers.POLLED_AT``). The handlers
echo it next to the monotonic time of their own first line: the difference
is the supervisor's dispatch latency, from the poll answer to the handler.

The client is passed through ``Supervisor(config, client=...)``, the
supervisor's public constructor; nothing of the supervisor is patched. The
stamp costs one ``time.monotonic()`` per poll and one dict copy per job.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from benchlib.handlers import POLLED_AT
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.supervisor.arbiter import Supervisor
from workflow_sdk.supervisor.config import load_config
from workflow_sdk.supervisor.logs import configure_logging


class StampingClient(RestEngineClient):
    def poll_jobs(
        self, worker_id: str, job_types: list[str], max_jobs: int = 1
    ) -> list[dict[str, Any]]:
        jobs = super().poll_jobs(worker_id, job_types, max_jobs)
        arrived = time.monotonic()
        for job in jobs:
            job["variables"] = {**(job.get("variables") or {}), POLLED_AT: arrived}
        return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchlib.sv_host")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("-c", "--config", required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format)
    engine = config.engine
    client = StampingClient(engine.url, engine.timeout)
    return Supervisor(config, client=client).run()


if __name__ == "__main__":
    sys.exit(main())
