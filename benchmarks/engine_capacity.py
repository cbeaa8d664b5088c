#!/usr/bin/env python3
"""How many poll+complete cycles per second the local engine serves.

    .venv/bin/python benchmarks/engine_capacity.py --seconds 5

Prints one line with the figure. The engine runs in its own process by
default (``python -m workflow_sdk.testing``), as it does beside a benchmarked
worker pool; ``--in-process`` serves it from this process instead, where the
clients and the engine share one GIL. Client threads each loop over
``poll_jobs(max_jobs=1)`` then ``complete_job`` through ``RestEngineClient``;
the jobs come from instances that loop SERVICE_TASK -> DECISION -> the same
task, so every completion makes the next job.

The client side (``requests``) costs more CPU per cycle than the engine, so
on a small machine the figure is bounded by the clients: the line also says
how busy the engine process was and the rate one engine core would reach at
that cost (``--processes`` adds client processes).

Importable: ``measure(seconds) -> float`` (cycles per second), or
``run(...) -> Capacity`` for the details.
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psutil

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

JOB_TYPE = "capacity-work"


def _definition(definition_id: str) -> dict[str, object]:
    return {
        "id": definition_id,
        "name": "engine capacity loop",
        "steps": [
            {"id": "work", "name": "Work", "type": "SERVICE_TASK", "jobType": JOB_TYPE,
             "nextStep": "again"},
            {"id": "again", "name": "Again?", "type": "DECISION",
             "conditionalNextSteps": {"#again == true": "work", "#again == false": "end"}},
            {"id": "end", "name": "End", "type": "END"},
        ],
    }  # fmt: skip


@dataclass(frozen=True)
class Capacity:
    cycles_per_second: float
    seconds: float
    #: CPU seconds the engine process used per wall second (None in-process).
    engine_cpu: float | None

    @property
    def engine_ceiling(self) -> float | None:
        """Cycles per second one fully busy engine core would serve."""
        if not self.engine_cpu:
            return None
        return self.cycles_per_second / self.engine_cpu


@contextmanager
def _engine(in_process: bool) -> Iterator[tuple[str, int | None]]:
    """A running local engine's URL and process id (None when in this process)."""
    if in_process:
        with LocalEngine() as engine:
            yield engine.url, None
        return
    child = subprocess.Popen(
        [sys.executable, "-m", "workflow_sdk.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the local engine did not start (printed {url!r})")
        yield url, child.pid
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _client_threads(url: str, seconds: float, threads: int) -> int:
    """Run ``threads`` poll+complete loops for ``seconds``; returns the cycles done."""
    stop = threading.Event()
    counts = [0] * threads
    errors: list[BaseException] = []
    with RestEngineClient(url, timeout=10.0) as client:

        def loop(index: int) -> None:
            worker = f"capacity-{index}"
            try:
                while not stop.is_set():
                    for job in client.poll_jobs(worker, [JOB_TYPE], 1):
                        client.complete_job(job["id"], worker, {"again": True})
                        counts[index] += 1
            except BaseException as exc:  # report it, do not hang the measure
                errors.append(exc)
                stop.set()

        workers = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(threads)]
        for worker in workers:
            worker.start()
        stop.wait(seconds)
        stop.set()
        for worker in workers:
            worker.join(15)
    if errors:
        raise RuntimeError(f"a client thread failed: {errors[0]!r}") from errors[0]
    return sum(counts)


def _client_process(url: str, seconds: float, threads: int, results: Any) -> None:
    results.put(_client_threads(url, seconds, threads))


def _cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def run(seconds: float, threads: int = 4, processes: int = 1, in_process: bool = False) -> Capacity:
    """Measure with ``processes`` client processes of ``threads`` threads each
    (``processes=1``: the threads run in this process)."""
    if seconds <= 0 or threads < 1 or processes < 1:
        raise ValueError("seconds must be > 0, threads and processes >= 1")
    with _engine(in_process) as (url, pid), RestEngineClient(url) as setup:
        definition_id = f"capacity-{uuid.uuid4().hex[:8]}"
        setup.upload_definition(_definition(definition_id))
        for _ in range(threads * processes * 2):  # enough jobs that no client waits
            setup.start_instance(definition_id, {"again": True})
        cpu_before = _cpu_seconds(pid)
        started = time.perf_counter()
        if processes == 1:
            cycles = _client_threads(url, seconds, threads)
        else:
            context = multiprocessing.get_context("spawn")
            results = context.Queue()
            children = [
                context.Process(target=_client_process, args=(url, seconds, threads, results))
                for _ in range(processes)
            ]
            try:
                for child in children:
                    child.start()
                cycles = sum(results.get(timeout=seconds + 60) for _ in children)
            finally:
                # Reaped on every path, also when a result never came.
                for child in children:
                    if child.pid is None:
                        continue  # never started
                    child.join(15)
                    if child.is_alive():
                        child.kill()
                        child.join()
        elapsed = time.perf_counter() - started
        engine_cpu = None if pid is None else (_cpu_seconds(pid) - cpu_before) / elapsed
    return Capacity(cycles / elapsed, elapsed, engine_cpu)


def measure(seconds: float) -> float:
    """Poll+complete cycles per second over ``seconds`` (4 client threads)."""
    return run(seconds).cycles_per_second


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to measure")
    parser.add_argument("--threads", type=int, default=4, help="client threads per process")
    parser.add_argument("--processes", type=int, default=1, help="client processes")
    parser.add_argument(
        "--in-process", action="store_true", help="serve the engine from this process"
    )
    args = parser.parse_args(argv)
    result = run(args.seconds, args.threads, args.processes, args.in_process)
    line = (
        f"engine capacity: {result.cycles_per_second:.0f} poll+complete cycles/s "
        f"({args.processes} x {args.threads} client threads, {args.seconds:g} s"
    )
    if result.engine_cpu is None:
        line += ", engine in this process)"
    else:
        line += (
            f", engine process {result.engine_cpu:.0%} of a core"
            f" -> ~{result.engine_ceiling or 0:.0f} cycles/s per engine core)"
        )
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
