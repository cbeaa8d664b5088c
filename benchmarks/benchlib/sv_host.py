"""``python -m benchlib.sv_host run -c FILE``: the supervisor with a stamping client.

Does what ``rochallor-supervisor run -c FILE`` does (load the file, set up
logging, ``Supervisor(config).run()``), except that the supervisor's engine
client stamps, into each claimed job's variables, the ``time.monotonic()``
at which the poll answer had arrived and been parsed
(``benchlib.handlers.POLLED_AT``). The handlers echo it next to the
monotonic time of their own first line: the difference is the supervisor's
dispatch latency, from the poll answer to the handler.

The hot calls (poll, complete, fail) go through ``LeanJobClient``, as the
supervisor's own do; the rest (stale checks, lease renewal) through
``RestEngineClient``. The client is passed through
``Supervisor(config, client=...)``, the supervisor's public constructor;
nothing of the supervisor is patched. The stamp costs one
``time.monotonic()`` per poll and one dict copy per job.

With ``BENCH_PROFILE=FILE`` in the environment, the supervisor's main
thread runs under ``cProfile`` (timed by the thread's CPU clock, so waits
count for nothing) and its statistics are written to FILE at
the end (``python -m pstats FILE``); the poller and reporter threads are
not profiled (use ``py-spy`` for every thread).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
import time
from typing import Any

from benchlib.handlers import POLLED_AT
from workflow_sdk.client.lean import LeanJobClient
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.supervisor import Supervisor, load_config
from workflow_sdk.supervisor.exposition.logs import configure_logging


class StampingClient(RestEngineClient):
    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(url, timeout)
        self._lean = LeanJobClient(url, timeout)

    def poll_jobs(
        self, worker_id: str, job_types: list[str], max_jobs: int = 1
    ) -> list[dict[str, Any]]:
        jobs = self._lean.poll_jobs(worker_id, job_types, max_jobs)
        arrived = time.monotonic()
        for job in jobs:
            job["variables"] = {**(job.get("variables") or {}), POLLED_AT: arrived}
        return jobs

    def complete_job(
        self, job_id: str, worker_id: str, variables: dict[str, Any] | None = None
    ) -> None:
        self._lean.complete_job(job_id, worker_id, variables)

    def fail_job(
        self, job_id: str, worker_id: str, error_message: str, retryable: bool = True
    ) -> None:
        self._lean.fail_job(job_id, worker_id, error_message, retryable)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchlib.sv_host")
    parser.add_argument("command", choices=["run"])
    parser.add_argument("-c", "--config", required=True)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.format)
    engine = config.engine
    supervisor = Supervisor(config, client=StampingClient(engine.url, engine.timeout))
    profile_path = os.environ.get("BENCH_PROFILE")
    if not profile_path:
        return supervisor.run()
    # The main thread's CPU time, not wall time: the loop mostly waits.
    profiler = cProfile.Profile(time.thread_time)
    try:
        return profiler.runcall(supervisor.run)
    finally:
        profiler.dump_stats(profile_path)


if __name__ == "__main__":
    sys.exit(main())
