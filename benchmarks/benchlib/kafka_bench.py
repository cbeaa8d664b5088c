"""``benchmarks/bench --dispatch kafka``: the supervisor in Kafka dispatch mode beside poll mode.

One run, one machine, the same jobs: a fresh single-node Kafka broker
(``scripts/kafka.py``) for the whole run, topics ``workflow.jobs.<jobType>``
with one partition per worker, and for every batch a fresh local engine
process (``python -m workflow_sdk.testing``, with ``--dispatch kafka
--brokers ...`` in Kafka mode) and a fresh supervisor (``benchlib.kafka_host``,
which stamps job arrival the same way in both modes). Batches:

1. Throughput: N no-op jobs and N CPU-bound jobs (``--cpu-ms`` of the
   handler thread's CPU), pre-created, drained by ``--workers`` workers;
   jobs/s between the 10th and 90th percentile completion (the engine's
   ``completedAt``), as in ``benchlib.scenarios``. Parent CPU per job: the
   supervisor process's CPU time (every thread: its main loop, the poller or
   the Kafka feeder, the reporters, librdkafka's threads) over that window,
   divided by the jobs completed in it.
2. Open-loop dispatch latency: the workers are ready and idle (the parent's
   idle CPU is measured then), and the benchmark creates no-op instances at
   a fixed rate, each carrying ``time.time()`` taken just before its
   ``POST /v1/instances`` (``CREATED_AT``). Latency *created -> handler* is
   the handler's first line minus that stamp: the engine creating the job,
   plus in poll mode the wait for the next poll (an empty poll waits
   ``poll_interval``, 1 s by default) and its answer, and in Kafka mode the
   engine's relay publishing the record, the broker, and the feeder's fetch;
   then the supervisor handing it to a worker. The same definition in both
   modes, from one clock (the machine's wall clock).

Both batches also give *source -> handler*: from the moment the poll answer
(poll mode) or the Kafka fetch (Kafka mode) handed the decoded jobs to the
supervisor's source thread, to the handler's first line (``time.monotonic()``
in both processes): the supervisor's own dispatch path.

Before each batch the benchmark waits (``--quiet-wait``) for the machine to
be quiet, and a batch during which other processes used more than
``--max-foreign-cpu`` % of a core is run again (``--retries``), keeping the
least disturbed run. Poll and Kafka take turns going first in each repeat.

Without Java (or Maven for the first jar fetch) or the ``kafka`` extra, the
comparison is skipped with a message saying how to get them (exit status 0).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchlib.handlers import CPU_JOB, NOOP_JOB
from benchlib.kafka_procs import (
    BrokerSession,
    EngineProcess,
    StampedSupervisor,
    broker_script,
    broker_session,
    start_group_at_end,
    supervisor_config,
    unavailable,
)
from benchlib.kafka_report import (
    KAFKA,
    MODES,
    aggregate,
    finite,
    judge,
    latency_summary,
    table,
)
from benchlib.procs import (
    CpuSampler,
    machine_cpu,
    process_cpu,
    threads_cpu,
    tree_cpu,
    wait_for_quiet,
)
from benchlib.scenarios import definition, wait_done
from benchlib.stats import steady_window
from workflow_sdk.client.models import parse_timestamp
from workflow_sdk.client.rest import RestEngineClient

#: Instance variable: ``time.time()`` just before the instance was created.
CREATED_AT = "_benchCreatedWall"
#: Printed (and exit status 0) when the comparison cannot run here.
SKIPPED = "kafka comparison skipped"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- one batch -------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    mode: str  # POLL or KAFKA
    job_type: str
    jobs: int
    workers: int
    cpu_ms: float = 0.0
    #: 0: pre-create every instance (throughput); > 0: create them at this
    #: rate once the supervisor is ready (open-loop latency).
    rate: float = 0.0
    idle_seconds: float = 0.0

    @property
    def label(self) -> str:
        kind = "open-loop" if self.rate else ("cpu" if self.job_type == CPU_JOB else "noop")
        return f"{kind}-{self.mode}"


@dataclass
class Result:
    label: str
    mode: str
    jobs: int
    rate: float
    window_seconds: float
    parent_cpu_pct: float
    #: Parent CPU time per job completed in the steady window, ms.
    parent_cpu_ms_per_job: float
    engine_cpu_pct: float
    broker_cpu_pct: float
    machine_cpu_pct: float
    foreign_cpu_pct: float
    idle_parent_cpu_pct: float | None = None
    source_to_handler_ms: list[float] = field(default_factory=list)
    created_to_handler_ms: list[float] = field(default_factory=list)
    #: How long each worker sat idle between two of its jobs (same pid).
    worker_gap_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if not k.endswith("_ms")}
        out["source_to_handler_ms"] = latency_summary(self.source_to_handler_ms)
        out["created_to_handler_ms"] = latency_summary(self.created_to_handler_ms)
        out["worker_gap_ms"] = latency_summary(self.worker_gap_ms)
        return out


def _idle_cpu(process: psutil.Process, seconds: float) -> float:
    before = process.cpu_times()
    t0 = time.monotonic()
    time.sleep(seconds)
    after = process.cpu_times()
    used = (after.user + after.system) - (before.user + before.system)
    return 100.0 * used / (time.monotonic() - t0)


def _create_open_loop(
    client: RestEngineClient, definition_id: str, count: int, rate: float, ms: float
) -> None:
    """``count`` instances at ``rate`` per second, each stamped just before its request."""
    t0 = time.monotonic()
    for i in range(count):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        client.start_instance(definition_id, {"ms": ms, CREATED_AT: time.time()})


def run_batch(batch: Batch, workdir: Path, broker: BrokerSession | None) -> Result:
    """One batch on a fresh engine and supervisor; ``broker`` only in Kafka mode."""
    tag = f"{batch.label}-{time.strftime('%H%M%S')}-{os.urandom(2).hex()}"
    group = f"bench.{tag}.{{job_type}}"
    kafka = broker if batch.mode == KAFKA else None
    if kafka is not None:
        # The supervisor consumes every job type its handlers serve.
        for job_type in (NOOP_JOB, CPU_JOB):
            start_group_at_end(kafka.bootstrap, group.replace("{job_type}", job_type), job_type)
    engine = EngineProcess(workdir / f"{tag}.engine.log", kafka.bootstrap if kafka else None)
    sv: StampedSupervisor | None = None
    idle: float | None = None
    try:
        with RestEngineClient(engine.url, timeout=30.0, pool_size=8) as client:
            flow = definition(batch.job_type)
            client.upload_definition(flow)
            if not batch.rate:
                for _ in range(batch.jobs):
                    client.start_instance(flow["id"], {"ms": batch.cpu_ms})
            config = workdir / f"{tag}.toml"
            supervisor_config(config, engine.url, batch.workers, kafka, group)
            sv = StampedSupervisor(config, workdir / f"{tag}.log")
            readers = {
                "parent": threads_cpu(sv.ps),
                "tree": tree_cpu(sv.ps),
                "engine": process_cpu(engine.ps),
                "bench": process_cpu(psutil.Process()),
                "machine": machine_cpu,
            }
            if kafka is not None:
                readers["broker"] = process_cpu(psutil.Process(kafka.pid))
            sampler: CpuSampler | None = None
            if batch.rate:
                sv.wait_ready(batch.workers)
                if kafka is not None:
                    sv.wait_assigned()
                time.sleep(0.5)  # let start-up settle before measuring idle
                idle = _idle_cpu(sv.ps, batch.idle_seconds) if batch.idle_seconds else None
                sampler = CpuSampler(readers)
                _create_open_loop(client, flow["id"], batch.jobs, batch.rate, batch.cpu_ms)
            else:
                sampler = CpuSampler(readers)
            budget = 60.0 + 3.0 * batch.jobs * max(batch.cpu_ms, 5.0) / 1000.0
            try:
                wait_done(client, flow["id"], batch.jobs, sv, budget)
            finally:
                sampler.stop()
            code = sv.stop()
            if code not in (0, None):
                raise RuntimeError(f"{batch.label}: exit status {code}\n{sv.log_tail()}")
            items = client.list_instances(flow["id"], page_size=batch.jobs + 100)["items"]
    finally:
        if sv is not None:
            sv.stop()
        engine.stop()
    finished = [parse_timestamp(i["completedAt"]).timestamp() for i in items]
    start, end, count = steady_window(finished)
    ours = ["tree", "engine", "bench"] + (["broker"] if kafka is not None else [])
    machine = sampler.cpu_between("machine", start, end)
    parent = sampler.cpu_between("parent", start, end)
    variables = [i.get("variables") or {} for i in items]
    return Result(
        label=batch.label,
        mode=batch.mode,
        jobs=len(finished),
        rate=count / (end - start) if end > start else math.inf,
        window_seconds=end - start,
        parent_cpu_pct=parent,
        parent_cpu_ms_per_job=10.0 * parent * (end - start) / count if count else math.nan,
        engine_cpu_pct=sampler.cpu_between("engine", start, end),
        broker_cpu_pct=sampler.cpu_between("broker", start, end) if kafka else 0.0,
        machine_cpu_pct=machine,
        foreign_cpu_pct=max(0.0, machine - sum(sampler.cpu_between(n, start, end) for n in ours)),
        idle_parent_cpu_pct=idle,
        source_to_handler_ms=[
            (v["startedMono"] - v["polledMono"]) * 1000.0
            for v in variables
            if isinstance(v.get("polledMono"), (int, float))
        ],
        created_to_handler_ms=[
            (v["startedWall"] - v[CREATED_AT]) * 1000.0
            for v in variables
            if isinstance(v.get(CREATED_AT), (int, float))
        ],
        worker_gap_ms=worker_gaps(variables),
    )


def worker_gaps(variables: list[dict[str, Any]]) -> list[float]:
    """Milliseconds each worker process sat idle between two of its jobs
    (a handler's last line to the next handler's first line, same pid)."""
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for v in variables:
        if isinstance(v.get("startedMono"), float) and isinstance(v.get("endedMono"), float):
            by_pid.setdefault(v["pid"], []).append((v["startedMono"], v["endedMono"]))
    gaps: list[float] = []
    for jobs in by_pid.values():
        jobs.sort()
        gaps += [(b[0] - a[1]) * 1000.0 for a, b in itertools.pairwise(jobs)]
    return gaps


# -- the comparison --------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    repeat: int
    jobs: int
    noop_jobs: int
    cpu_ms: float
    workers: int
    partitions: int
    open_loop_jobs: int
    open_loop_rate: float
    idle_seconds: float
    max_foreign_cpu: float
    #: Re-runs of a batch disturbed by other processes.
    retries: int
    quiet_wait: float


PRESETS: dict[str, dict[str, float]] = {
    "full": {"repeat": 1, "jobs": 400, "open": 300, "idle": 3.0, "quiet": 30, "retries": 2},
    "quick": {"repeat": 1, "jobs": 120, "open": 100, "idle": 1.0, "quiet": 3, "retries": 0},
    "smoke": {"repeat": 1, "jobs": 8, "open": 8, "idle": 0.3, "quiet": 0, "retries": 0},
}


def settings_from(args: Any) -> Settings:
    preset = PRESETS["smoke" if args.smoke else "quick" if args.quick else "full"]
    jobs = args.jobs or int(preset["jobs"])
    workers = args.workers or _default_workers()
    return Settings(
        repeat=args.repeat or int(preset["repeat"]),
        jobs=jobs,
        noop_jobs=args.noop_jobs or 5 * jobs,
        cpu_ms=args.cpu_ms,
        workers=workers,
        partitions=workers,
        open_loop_jobs=int(preset["open"]),
        open_loop_rate=20.0,
        idle_seconds=args.idle_seconds or preset["idle"],
        max_foreign_cpu=args.max_foreign_cpu,
        retries=args.retries if args.retries >= 0 else int(preset["retries"]),
        quiet_wait=args.quiet_wait if args.quiet_wait >= 0 else preset["quiet"],
    )


def _default_workers() -> int:
    from workflow_sdk.supervisor.config import default_worker_count  # noqa: PLC0415

    return default_worker_count()


def batches(s: Settings, index: int) -> list[Batch]:
    """Every batch of one repeat; poll and Kafka take turns going first."""
    kinds = [
        (NOOP_JOB, s.noop_jobs, 0.0, 0.0, 0.0),
        (CPU_JOB, s.jobs, s.cpu_ms, 0.0, 0.0),
        (NOOP_JOB, s.open_loop_jobs, 0.0, s.open_loop_rate, s.idle_seconds),
    ]
    order = MODES if index % 2 == 0 else MODES[::-1]
    return [
        Batch(mode, job_type, jobs, s.workers, ms, rate, idle)
        for job_type, jobs, ms, rate, idle in kinds
        for mode in order
    ]


def measure(s: Settings, workdir: Path, broker: BrokerSession) -> list[dict[str, Result]]:
    repeats: list[dict[str, Result]] = []
    for index in range(s.repeat):
        found: dict[str, Result] = {}
        for batch in batches(s, index):
            found[batch.label] = _measure_batch(s, batch, workdir, broker, index)
        repeats.append(found)
    return repeats


def _measure_batch(
    s: Settings, batch: Batch, workdir: Path, broker: BrokerSession, index: int
) -> Result:
    """One batch; run again (``s.retries`` times at most) while other processes
    used more than ``s.max_foreign_cpu`` % of a core meanwhile. Keeps the least
    disturbed run."""
    best: Result | None = None
    for attempt in range(s.retries + 1):
        if s.quiet_wait > 0:
            wait_for_quiet(s.max_foreign_cpu, s.quiet_wait)
        began = time.monotonic()
        result = run_batch(batch, workdir, broker if batch.mode == KAFKA else None)
        lat = latency_summary(result.created_to_handler_ms or result.source_to_handler_ms)
        say(
            f"[{index + 1}/{s.repeat}] {result.label:<16} {result.rate:8.1f} jobs/s  parent "
            f"{result.parent_cpu_ms_per_job:6.3f} ms/job ({result.parent_cpu_pct:5.1f}%), "
            f"engine {result.engine_cpu_pct:5.1f}%, broker {result.broker_cpu_pct:5.1f}%, "
            f"others {result.foreign_cpu_pct:5.1f}%; latency p50 {lat.get('p50', math.nan):.2f}"
            f" ms; {time.monotonic() - began:4.1f} s"
        )
        if best is None or result.foreign_cpu_pct < best.foreign_cpu_pct:
            best = result
        if result.foreign_cpu_pct <= s.max_foreign_cpu:
            break
        if attempt < s.retries:
            say(f"[{index + 1}/{s.repeat}] other processes used the CPU meanwhile: again")
    assert best is not None
    return best


def output_path(output: str) -> Path:
    """``bench-results.json`` -> ``bench-results-kafka.json``."""
    path = Path(output)
    return path.with_name(f"{path.stem}-kafka{path.suffix or '.json'}")


def print_table(path: str) -> int:
    """``--dispatch kafka --table-from FILE``: the table of an earlier run."""
    print(table(json.loads(Path(path).read_text())))
    return 0


def compare(args: Any) -> int:
    """Entry point for ``benchmarks/bench --dispatch kafka``; returns the exit status."""
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    why = unavailable()
    if why:
        say(f"{SKIPPED}: {why}")
        return 0
    s = settings_from(args)
    workdir = Path(tempfile.mkdtemp(prefix="rochallor-kbench-"))
    say(
        f"kafka vs poll: {s.repeat} run(s); {s.noop_jobs} no-op, {s.jobs} CPU-bound x "
        f"{s.cpu_ms:g} ms, open loop {s.open_loop_jobs} at {s.open_loop_rate:g}/s; "
        f"{s.workers} workers; logs in {workdir}"
    )
    began = time.monotonic()
    ok = False
    try:
        with broker_session(s.partitions) as broker:
            say(f"broker {broker.bootstrap} started in {broker.started_in:.1f} s")
            repeats = measure(s, workdir, broker)
        results = aggregate(repeats)
        report: dict[str, Any] = {
            "settings": vars(s),
            "broker": f"Apache Kafka {broker_script().KAFKA_VERSION} (KRaft, one node)",
            "results": results,
            "runs": [{k: v.summary() for k, v in r.items()} for r in repeats],
        }
        report["goals"] = judge(results)
        report["seconds"] = round(time.monotonic() - began, 1)
        out = output_path(args.output)
        out.write_text(json.dumps(finite(report), indent=2) + "\n")
        print(table(report))
        print(f"\nwritten: {out} ({report['seconds']:.0f} s)")
        ok = True
        return 0
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as exc:
        say(f"kafka benchmark failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if ok and not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"logs kept in {workdir}")


__all__ = ["SKIPPED", "compare", "output_path", "print_table", "unavailable"]
