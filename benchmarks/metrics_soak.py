"""Many recycled workers, bounded metric files, exact totals (and the poll round trip).

Runs the supervisor against a LocalEngine with ``max_jobs_per_child`` small,
so that workers are replaced every few jobs, then reports: the number of
files in the prometheus multiprocess directory, how long a scrape takes, and
whether ``workflow_sdk_jobs_completed_total`` equals the jobs run.

    .venv/bin/python benchmarks/metrics_soak.py --jobs 10000 --per-child 10
    .venv/bin/python benchmarks/metrics_soak.py --jobs 400 --per-child 0 --job-ms 20
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

HANDLERS = """
import time
from workflow_sdk import HandlerRegistry
registry = HandlerRegistry()

@registry.register("soak")
def soak(job):
    end = time.thread_time() + job["variables"].get("ms", 0) / 1000
    while time.thread_time() < end:
        pass
    return None
"""


def completed_total(text: str) -> float:
    pattern = r'workflow_sdk_jobs_completed_total\{job_type="soak",outcome="success"\} (\S+)'
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def mean_poll_ms(text: str) -> float:
    total = re.search(r"workflow_sdk_poll_latency_seconds_sum (\S+)", text)
    count = re.search(r"workflow_sdk_poll_latency_seconds_count (\S+)", text)
    if not total or not count or float(count.group(1)) == 0:
        return float("nan")
    return float(total.group(1)) / float(count.group(1)) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--per-child", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--job-ms", type=float, default=0, help="CPU each job burns")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rochallor-soak-"))
    (work / "soak_handlers.py").write_text(HANDLERS)
    metrics_dir = work / "metrics"
    config = work / "supervisor.toml"
    with LocalEngine() as engine, RestEngineClient(engine.url) as client:
        config.write_text(
            f'[engine]\nurl = "{engine.url}"\n'
            f'[supervisor]\nhandlers = ["soak_handlers"]\nworkers = {args.workers}\n'
            f"poll_interval = 0.05\nmax_jobs_per_child = {args.per_child}\n"
            f'[metrics]\nport = 0\ndir = "{metrics_dir}"\n[logging]\nlevel = "WARNING"\n'
        )
        client.upload_definition(
            {
                "id": "soak",
                "name": "soak",
                "steps": [
                    {
                        "id": "s",
                        "name": "s",
                        "type": "SERVICE_TASK",
                        "jobType": "soak",
                        "nextStep": "end",
                    },
                    {"id": "end", "name": "End", "type": "END"},
                ],
            }
        )
        for _ in range(args.jobs):
            client.start_instance("soak", {"ms": args.job_ms})
        log = (work / "supervisor.log").open("w")
        env = dict(os.environ, PYTHONPATH=str(work), ROCHALLOR_LOG_LEVEL="INFO")
        proc = subprocess.Popen(
            [sys.executable, "-m", "workflow_sdk.supervisor", "run", "-c", str(config)],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started = time.monotonic()
        try:
            url = ""
            while not url:
                found = re.search(r"metrics on (http://\S+)", (work / "supervisor.log").read_text())
                url = found.group(1) if found else ""
                time.sleep(0.1)
            done = 0.0
            while done < args.jobs:
                time.sleep(1)
                text = requests.get(url, timeout=10).text
                done = completed_total(text)
                print(f"\r{done:.0f}/{args.jobs} jobs", end="", flush=True)
            wall = time.monotonic() - started
            scrape_started = time.perf_counter()
            text = requests.get(url, timeout=10).text
            scrape_ms = (time.perf_counter() - scrape_started) * 1000
            restarts = re.search(
                r'workflow_supervisor_worker_restarts_total\{reason="recycle_jobs"\} (\S+)', text
            )
            files = len(list(metrics_dir.glob("*.db")))
            engine_done = engine.counters.get("jobs_completed", 0)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            log.close()
    print()
    print(f"jobs run:                  {args.jobs} in {wall:.1f} s")
    print(f"workers recycled:          {restarts.group(1) if restarts else '?'}")
    print(f"metric files in the dir:   {files} (workers: {args.workers})")
    print(f"scrape time:               {scrape_ms:.1f} ms")
    print(f"mean poll round trip:      {mean_poll_ms(text):.2f} ms")
    print(f"jobs_completed_total:      {completed_total(text):.0f} (engine saw {engine_done})")
    exact = completed_total(text) == args.jobs == engine_done
    print("exact:                     " + ("yes" if exact else "NO"))
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
