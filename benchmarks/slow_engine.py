#!/usr/bin/env python3
"""The supervisor against an engine that answers completions slowly.

    .venv/bin/python benchmarks/slow_engine.py [--jobs 400] [--delay 0.05] [--lease 5] [--workers 2]

A loaded PostgreSQL can take tens of milliseconds per completion. The
supervisor reports from a few threads; without a bound on what it holds it
would keep claiming for every freed worker while reports queue, and queued
jobs would outlive their leases and run twice. This script runs no-op jobs
through a real supervisor process against a ``LocalEngine(complete_delay=...)``
with a short lease and prints: jobs claimed more than once (the goal is 0),
the most jobs the supervisor held at once (bound: 2 x workers, read from its
stop summary) and the throughput. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

HANDLERS = """
from workflow_sdk import HandlerRegistry

registry = HandlerRegistry()


@registry.register("slow-engine-noop")
def noop(job):
    return None
"""


def measure(jobs: int, delay: float, lease: float, workers: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="slow-engine-") as tmp,
        LocalEngine(lease_seconds=lease, complete_delay=delay) as engine,
    ):
        work = Path(tmp)
        (work / "slow_engine_handlers.py").write_text(HANDLERS)
        config = work / "supervisor.toml"
        config.write_text(
            f'[engine]\nurl = "{engine.url}"\n'
            f'[supervisor]\nhandlers = ["slow_engine_handlers:registry"]\nworkers = {workers}\n'
            "poll_interval = 0.1\ngraceful_timeout = 30\n"
        )
        with RestEngineClient(engine.url) as client:
            client.upload_definition(
                {
                    "id": "slow-engine",
                    "name": "slow-engine",
                    "steps": [
                        {
                            "id": "work",
                            "name": "Work",
                            "type": "SERVICE_TASK",
                            "jobType": "slow-engine-noop",
                            "nextStep": "end",
                        },
                        {"id": "end", "name": "End", "type": "END"},
                    ],
                }
            )
            ids = [client.start_instance("slow-engine")["id"] for _ in range(jobs)]
        env = dict(os.environ, PYTHONPATH=str(work))
        log_path = work / "supervisor.log"
        with log_path.open("wb") as log:
            started = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-m", "workflow_sdk.supervisor", "run", "-c", str(config)],
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                engine.wait_for_instances(ids, "COMPLETED", timeout=max(60.0, jobs * delay * 2))
                elapsed = time.monotonic() - started
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        text = log_path.read_text(errors="replace")
        held = re.search(r"(\d+) held at most", text)
        claimed = engine.jobs(job_type="slow-engine-noop")
        return {
            "jobs": jobs,
            "complete_delay_s": delay,
            "lease_s": lease,
            "workers": workers,
            "claimed_twice": sum(1 for job in claimed if job["deliveries"] > 1),
            "completed_twice": sum(1 for job in claimed if job["completeCalls"] > 1),
            "held_at_most": int(held.group(1)) if held else None,
            "held_bound": 2 * workers,
            "jobs_per_s": round(jobs / elapsed, 1),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per completion")
    parser.add_argument("--lease", type=float, default=5.0, help="the engine's lease, seconds")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    result = measure(args.jobs, args.delay, args.lease, args.workers)
    print(
        f"slow engine ({args.delay * 1000:g} ms per completion, {args.lease:g} s lease, "
        f"{args.workers} workers, {args.jobs} no-op jobs): claimed twice {result['claimed_twice']} "
        f"(goal 0), held at most {result['held_at_most']} (bound {result['held_bound']}), "
        f"{result['jobs_per_s']} jobs/s",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
