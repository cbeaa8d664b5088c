#!/usr/bin/env python3
"""Where the supervisor parent's CPU goes: per job, per thread, and (optionally) per function.

    .venv/bin/python benchmarks/parent_profile.py [--kind cpu|noop] [--jobs N] [--workers N]
                                               [--cpu-ms MS] [--profile] [--top N]

Runs one batch as ``benchmarks/bench`` does (a fresh local engine process, the
jobs created up front, the supervisor in its own process with the
benchmark's handlers) and reads, over the steady window (from the 10th to
the 90th percentile of completions), the CPU time the kernel kept for each
thread of the supervisor's parent. The threads are named by
``benchlib.profile_host``. Prints microseconds of CPU per job for each
thread and for the whole parent.

With ``--profile``, the main loop's thread also runs under ``cProfile``
timed by that thread's CPU clock, and the functions with the most CPU are
printed (per job). The profiler slows the loop down several times: read its
figures as shares of the main loop's time, not as absolute costs (the
per-thread figures of a run without ``--profile`` are those).
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import psutil
from benchlib.handlers import CPU_JOB, NOOP_JOB
from benchlib.procs import Child, EngineProcess
from benchlib.scenarios import definition, supervisor_config

from workflow_sdk.client.rest import RestEngineClient


def completed(client: RestEngineClient, definition_id: str) -> int:
    return int(client.list_instances(definition_id, "COMPLETED", page_size=1)["total"])


def thread_cpu(process: psutil.Process) -> dict[int, float]:
    """CPU seconds of each thread: from schedstat (ns) where the kernel has it,
    else psutil's thread times (10 ms clock ticks)."""
    times: dict[int, float] = {}
    for t in process.threads():
        try:
            with open(f"/proc/{process.pid}/task/{t.id}/schedstat") as fh:
                times[t.id] = int(fh.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            times[t.id] = t.user_time + t.system_time
    return times


def thread_names(path: Path, after: float, timeout: float = 30.0) -> dict[str, str]:
    """The host's names of its threads, from a listing written after ``after``.

    The host rewrites the listing every half second; one read earlier could
    predate the poller and the reporters (a short window can end before the
    host's second listing) and leave them unnamed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            listing = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            listing = {"written_at": 0.0}
        if listing["written_at"] > after:
            return dict(listing["names"])
        time.sleep(0.05)
    raise RuntimeError(f"{path} was not rewritten within {timeout:g} s")


def group(name: str) -> str:
    """reporter-0 .. reporter-3 -> reporters."""
    return "reporters" if name.startswith("reporter-") else name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parent_profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["cpu", "noop"], default="cpu")
    parser.add_argument("--jobs", type=int, default=0, help="jobs (cpu 800, noop 4000)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpu-ms", type=float, default=20.0)
    parser.add_argument("--profile", action="store_true", help="cProfile the main loop too")
    parser.add_argument("--top", type=int, default=25, help="functions to print (--profile)")
    args = parser.parse_args(argv)
    jobs = args.jobs or (800 if args.kind == "cpu" else 4000)
    job_type = CPU_JOB if args.kind == "cpu" else NOOP_JOB
    workdir = Path(tempfile.mkdtemp(prefix="rochallor-profile-"))
    threads_file = workdir / "threads.json"
    stats_file = workdir / "main.pstats"
    if args.profile:
        os.environ["BENCH_PROFILE"] = str(stats_file)
    engine = EngineProcess(workdir / "engine.log")
    supervisor: Child | None = None
    try:
        with RestEngineClient(engine.url, timeout=30.0, pool_size=8) as client:
            spec = definition(job_type)
            client.upload_definition(spec)
            for _ in range(jobs):
                client.start_instance(str(spec["id"]), {"ms": args.cpu_ms})
            config = supervisor_config(workdir / "sv.toml", engine.url, args.workers)
            argv_ = [sys.executable, "-m", "benchlib.profile_host", "run", "-c", str(config)]
            supervisor = Child([*argv_, str(threads_file)], workdir / "sv.log")
            while completed(client, str(spec["id"])) < jobs // 10:
                if not supervisor.alive():
                    raise RuntimeError(f"the supervisor exited:\n{supervisor.log_tail()}")
                time.sleep(0.01)
            n0, t0 = completed(client, str(spec["id"])), time.monotonic()
            cpu0 = thread_cpu(supervisor.ps)
            while completed(client, str(spec["id"])) < jobs * 9 // 10:
                time.sleep(0.01)
            n1, t1 = completed(client, str(spec["id"])), time.monotonic()
            cpu1 = thread_cpu(supervisor.ps)
            names = thread_names(threads_file, after=time.time())
            while completed(client, str(spec["id"])) < jobs:
                time.sleep(0.05)
            supervisor.stop()
            supervisor = None
    finally:
        if supervisor is not None:
            supervisor.stop()
        engine.stop()
    done = n1 - n0
    per_group: dict[str, float] = {}
    for tid, seconds in cpu1.items():
        name = group(names.get(str(tid), f"thread {tid}"))
        per_group[name] = per_group.get(name, 0.0) + seconds - cpu0.get(tid, 0.0)
    total = sum(per_group.values())
    what = f"{args.cpu_ms:g} ms CPU-bound" if args.kind == "cpu" else "no-op"
    print(
        f"{what} jobs, {args.workers} workers: {done} jobs in the steady window, "
        f"{done / (t1 - t0):.1f} jobs/s{' (under cProfile)' if args.profile else ''}"
    )
    print(f"parent CPU per job: {1e6 * total / done:.0f} us")
    for name, seconds in sorted(per_group.items(), key=lambda kv: -kv[1]):
        share = 100 * seconds / total if total else 0.0
        print(f"  {name:<14} {1e6 * seconds / done:6.0f} us/job  {share:5.1f} %")
    if args.profile:
        print(f"\nmain loop, CPU per function (cumulative, whole run, {jobs} jobs):")
        stats = pstats.Stats(str(stats_file))
        stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
