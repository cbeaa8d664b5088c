"""One measured batch: a fresh engine, N pre-created jobs, one worker pool draining them.

Every batch gets its own engine process (``python -m workflow_sdk.testing``)
so that no run inherits a bigger store from the one before, and the worker
side (supervisor or Runner) runs in a process of its own: the benchmark
process only creates the instances, watches, and reads the results.

Throughput is the steady-state rate: completions between the 10th and the
90th percentile completion time (the engine's ``completedAt`` stamps),
divided by the time between them. That leaves out worker start-up and the
ragged end where fewer jobs than workers remain.
"""

from __future__ import annotations

import itertools
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchlib.handlers import CPU_JOB, NOOP_JOB
from benchlib.procs import (
    Child,
    CpuSampler,
    EngineProcess,
    RunnerProcess,
    SupervisorProcess,
    machine_cpu,
    memory_of,
    process_cpu,
    threads_cpu,
    tree_cpu,
)
from benchlib.stats import percentile, steady_window
from workflow_sdk.client.models import parse_timestamp
from workflow_sdk.client.rest import RestEngineClient

SUPERVISOR = "supervisor"
#: The supervisor under ``benchlib.sv_host`` (stamps poll answers for latency).
SUPERVISOR_STAMPED = "supervisor-stamped"
RUNNER = "runner"


@dataclass(frozen=True)
class Batch:
    label: str
    kind: str  # SUPERVISOR, SUPERVISOR_STAMPED or RUNNER
    job_type: str  # CPU_JOB or NOOP_JOB
    jobs: int
    #: Worker processes (supervisor) or threads (Runner).
    workers: int
    cpu_ms: float = 20.0
    #: Sample RSS/USS of every process at the end (before stopping).
    memory: bool = False


@dataclass
class BatchResult:
    label: str
    jobs: int
    rate: float
    window_seconds: float
    #: CPU of the worker side's main process over the steady window (% of one core):
    #: the supervisor's parent, or the Runner's whole process.
    parent_cpu_pct: float
    #: The engine process's CPU and the whole machine's, same window (% of one core).
    engine_cpu_pct: float
    machine_cpu_pct: float
    #: CPU used meanwhile by processes that are not part of the benchmark.
    foreign_cpu_pct: float
    variables: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, Any] | None = None
    lease_seconds: float = 30.0

    def pids(self) -> set[int]:
        return {v["pid"] for v in self.variables if isinstance(v.get("pid"), int)}


def supervisor_config(path: Path, url: str, workers: int) -> Path:
    """Defaults everywhere except what a benchmark must set."""
    path.write_text(
        "[engine]\n"
        f'url = "{url}"\n'
        "timeout = 10.0\n"
        "[supervisor]\n"
        'handlers = ["benchlib.handlers:registry"]\n'
        f"workers = {workers}\n"
        "[logging]\n"
        'level = "INFO"\n'
    )
    return path


def definition(job_type: str) -> dict[str, Any]:
    return {
        "id": f"bench-{job_type}",
        "name": f"benchmark {job_type}",
        "steps": [
            {"id": "work", "name": "Work", "type": "SERVICE_TASK", "jobType": job_type,
             "nextStep": "end"},
            {"id": "end", "name": "End", "type": "END"},
        ],
    }  # fmt: skip


def _create_instances(client: RestEngineClient, definition_id: str, count: int, ms: float) -> None:
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: client.start_instance(definition_id, {"ms": ms}), range(count)))


def _count(client: RestEngineClient, definition_id: str, status: str) -> int:
    return int(client.list_instances(definition_id, status, page_size=1)["total"])


def wait_done(
    client: RestEngineClient, definition_id: str, jobs: int, worker: Child, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = _count(client, definition_id, "COMPLETED")
        if done >= jobs:
            return
        failed = _count(client, definition_id, "FAILED")
        if failed:
            raise RuntimeError(f"{failed} instances FAILED\n{worker.log_tail()}")
        if not worker.alive():
            raise RuntimeError(f"the worker process exited early:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done}/{jobs} done after {timeout:.0f} s\n{worker.log_tail()}")
        time.sleep(0.1)


def _memory(worker: Child) -> dict[str, Any]:
    snapshot: dict[str, Any] = {"parent": memory_of(worker.ps)}
    if isinstance(worker, SupervisorProcess):
        found = worker.processes()
        snapshot["fork_server"] = [memory_of(p) for p in found["fork_server"]]
        snapshot["workers"] = [memory_of(p) for p in found["workers"]]
    return snapshot


def run_batch(batch: Batch, workdir: Path) -> BatchResult:
    tag = f"{batch.label}-{time.strftime('%H%M%S')}"
    engine = EngineProcess(workdir / f"{tag}.engine.log")
    worker: Child | None = None
    try:
        with RestEngineClient(engine.url, timeout=30.0, pool_size=8) as client:
            flow = definition(batch.job_type)
            client.upload_definition(flow)
            _create_instances(client, flow["id"], batch.jobs, batch.cpu_ms)
            if batch.kind == RUNNER:
                worker = RunnerProcess(engine.url, batch.workers, workdir / f"{tag}.log")
            else:
                config = supervisor_config(workdir / f"{tag}.toml", engine.url, batch.workers)
                stamped = batch.kind == SUPERVISOR_STAMPED
                worker = SupervisorProcess(config, workdir / f"{tag}.log", stamping=stamped)
            sampler = CpuSampler(
                {
                    "worker": threads_cpu(worker.ps),
                    "tree": tree_cpu(worker.ps),
                    "engine": process_cpu(engine.ps),
                    "bench": process_cpu(psutil.Process()),
                    "machine": machine_cpu,
                }
            )
            budget = 60.0 + 3.0 * batch.jobs * max(batch.cpu_ms, 5.0) / 1000.0
            try:
                wait_done(client, flow["id"], batch.jobs, worker, budget)
            finally:
                sampler.stop()
            memory = _memory(worker) if batch.memory else None
            code = worker.stop()
            if code not in (0, None):
                raise RuntimeError(f"{batch.label}: exit status {code}\n{worker.log_tail()}")
            items = client.list_instances(flow["id"], page_size=batch.jobs + 100)["items"]
    finally:
        if worker is not None:
            worker.stop()
        engine.stop()
    finished = [parse_timestamp(i["completedAt"]).timestamp() for i in items or []]
    start, end, count = steady_window(finished)
    ours = sum(sampler.cpu_between(name, start, end) for name in ("tree", "engine", "bench"))
    machine = sampler.cpu_between("machine", start, end)
    return BatchResult(
        label=batch.label,
        jobs=len(finished),
        rate=count / (end - start) if end > start else math.inf,
        window_seconds=end - start,
        parent_cpu_pct=sampler.cpu_between("worker", start, end),
        engine_cpu_pct=sampler.cpu_between("engine", start, end),
        machine_cpu_pct=machine,
        foreign_cpu_pct=max(0.0, machine - ours),
        variables=[i.get("variables") or {} for i in items or []],
        memory=memory,
        lease_seconds=engine.lease_seconds,
    )


def dispatch_latencies(result: BatchResult) -> dict[str, list[float]]:
    """Milliseconds per job: ready -> handler, and engine claim -> handler.

    "Ready" is the later of the poll answer's arrival and the end of the
    previous job on the same worker: a job claimed ahead (for a worker still
    busy) waits for that worker by design, and that wait is not dispatch.
    """
    from_poll: list[float] = []
    from_claim: list[float] = []
    previous_end: dict[int, float] = {}
    timed = [v for v in result.variables if isinstance(v.get("startedMono"), float)]
    for v in sorted(timed, key=lambda v: float(v["startedMono"])):
        if isinstance(v.get("polledMono"), (int, float)):
            ready = max(v["polledMono"], previous_end.get(v.get("pid", 0), -math.inf))
            from_poll.append((v["startedMono"] - ready) * 1000.0)
        if isinstance(v.get("endedMono"), float):
            previous_end[v.get("pid", 0)] = v["endedMono"]
        if v.get("lockExpiresAt"):
            claimed = parse_timestamp(v["lockExpiresAt"]).timestamp() - result.lease_seconds
            from_claim.append((v["startedWall"] - claimed) * 1000.0)
    return {"poll_answer_to_handler": from_poll, "claim_to_handler": from_claim}


def worker_gaps(result: BatchResult) -> list[float]:
    """Milliseconds each worker process sat idle between two of its jobs
    (from a handler's last line to the next handler's first line, same pid)."""
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for v in result.variables:
        if isinstance(v.get("startedMono"), float) and isinstance(v.get("endedMono"), float):
            by_pid.setdefault(v["pid"], []).append((v["startedMono"], v["endedMono"]))
    gaps: list[float] = []
    for jobs in by_pid.values():
        jobs.sort()
        for (_, prev_end), (start, _) in itertools.pairwise(jobs):
            gaps.append((start - prev_end) * 1000.0)
    return gaps


def latency_summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "count": float(len(values)),
    }


def idle_parent_cpu(workdir: Path, workers: int, seconds: float) -> float:
    """% of one core the supervisor's parent uses with ready workers and no jobs."""
    tag = f"idle-{time.strftime('%H%M%S')}"
    engine = EngineProcess(workdir / f"{tag}.engine.log")
    supervisor: SupervisorProcess | None = None
    try:
        config = supervisor_config(workdir / f"{tag}.toml", engine.url, workers)
        supervisor = SupervisorProcess(config, workdir / f"{tag}.log")
        supervisor.wait_ready(workers)
        time.sleep(min(1.0, seconds))  # let start-up settle
        before = supervisor.ps.cpu_times()
        t0 = time.monotonic()
        time.sleep(seconds)
        after = supervisor.ps.cpu_times()
        elapsed = time.monotonic() - t0
        used = (after.user + after.system) - (before.user + before.system)
        return 100.0 * used / elapsed
    finally:
        if supervisor is not None:
            supervisor.stop()
        engine.stop()


__all__ = [
    "CPU_JOB",
    "NOOP_JOB",
    "RUNNER",
    "SUPERVISOR",
    "SUPERVISOR_STAMPED",
    "Batch",
    "BatchResult",
    "dispatch_latencies",
    "idle_parent_cpu",
    "latency_summary",
    "run_batch",
    "worker_gaps",
]
