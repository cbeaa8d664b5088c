"""``benchmarks/bench --ml``: CPU-heavy libraries under the supervisor (issue 18).

examples/ml's handlers (numpy, scikit-learn with a model loaded at import,
Pillow), wrapped to stamp when they ran (``benchlib.ml_handlers``), against
a fresh local engine process per batch. Side by side in one run:

1. numpy (``ml-matrix`` jobs: a 600 x 600 product and its SVD) jobs/s with
   N workers (one per CPU) and the supervisor's default thread limits, the
   same with every worker's BLAS/OpenMP pools at the libraries' own size
   (oversubscribed: N workers x N threads on N CPUs), and one worker with one
   thread. Until the configuration has ``threads_per_worker``, "defaults"
   means ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``... = 1 in the
   supervisor's environment and "oversubscribed" those variables unset;
   with the key, the key is left to its default, and set to the CPU count
   for the oversubscribed run (the environment has none of the variables).
   Jobs/s between the 10th and 90th percentile completion, as in
   ``benchlib.scenarios``. Goal: defaults >= 0.95 x N x the one-worker rate.
1b. The same ml-matrix jobs in bare Python processes (N, then one; one BLAS
   thread each, no supervisor, no engine): the machine's own scaling, printed
   beside the goal, and what the supervisor and the engine cost against it.
2. Memory: the total PSS (``workflow_sdk.memory.read_memory``: the workers
   and the fork server) of ``--ml-memory-workers`` workers (4) with and
   without ``preload_handlers``, after each worker has run the pipeline's
   jobs, as a ratio to the PSS of one worker holding the model by itself
   (one worker, no preload). Goal: with preload <= 1.2.
3. The job-type change gap: N pipelines at a time (matrix -> classify ->
   image) on N workers, several rounds; per instance and change of step, the
   time from the end of one step's handler to the start of the next one's
   (the report, the engine's next job, the poll, the dispatch); p50 and p90.

The model is built once (``python -m examples.ml.build_model``) into the
user's cache (a small one in a temporary directory for ``--smoke``). Before
each batch the benchmark waits for a quiet machine, and a batch during which
other processes used more than ``--max-foreign-cpu`` % of a core is run again
(``--retries``). Writes ``<output stem>-ml.json``. Without the ``ml`` extra
it says how to get it and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from benchlib.bench_table import fmt, verdict_lines
from benchlib.procs import (
    ROOT,
    CpuSampler,
    EngineProcess,
    SupervisorProcess,
    machine_cpu,
    process_cpu,
    threads_cpu,
    tree_cpu,
    wait_for_quiet,
)
from benchlib.scenarios import wait_done
from benchlib.stats import percentile, spread, steady_window
from workflow_sdk.client.models import parse_timestamp
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.memory import MemoryReadError, read_memory
from workflow_sdk.supervisor.config import SupervisorSection, default_worker_count
from workflow_sdk.threads_limit import THREAD_ENV_VARS

ML_PACKAGES = ("numpy", "sklearn", "PIL", "threadpoolctl", "joblib")
MATRIX = "ml-matrix"
PIPELINE = ("ml-matrix", "ml-classify", "ml-image")
MIB = float(2**20)

#: Thread settings of a numpy batch.
DEFAULTS, OVERSUBSCRIBED = "defaults", "oversubscribed"


@dataclass(frozen=True)
class MlSettings:
    repeat: int
    workers: int
    memory_workers: int
    #: ml-matrix jobs per N-worker batch (half for the oversubscribed one, whose
    #: rate is a few jobs/s; N-th for the one-worker batch)
    jobs: int
    gap_rounds: int
    small_model: bool
    quiet_wait: float
    max_foreign_cpu: float
    retries: int


def unavailable() -> str | None:
    """Why the ML benchmark cannot run here (None: it can)."""
    missing = [name for name in ML_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        return (
            f"the ml extra is not installed (missing: {', '.join(missing)}): "
            "pip install -e '.[ml]' (scripts/test installs it)"
        )
    return None


def has_threads_key() -> bool:
    """Whether this version's ``[supervisor]`` has ``threads_per_worker``."""
    return any(f.name == "threads_per_worker" for f in dataclasses.fields(SupervisorSection))


def stamp_key(job_type: str) -> str:
    """The prefix of the stamps ``benchlib.ml_handlers`` adds (its rule; not
    imported from there: that module loads the model)."""
    return job_type.replace("-", "_")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def environment(changes: Mapping[str, str | None]) -> Iterator[None]:
    """``os.environ`` changed (None: removed) while children are started."""
    saved = {name: os.environ.get(name) for name in changes}
    for name, value in changes.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build_model(small: bool, cache: Path | None) -> Path:
    """examples/ml's model (built once; small for a smoke run), its path."""
    argv = [sys.executable, "-m", "examples.ml.build_model"]
    if small:
        argv += ["--samples", "2000", "--trees", "5"]
    env = dict(os.environ)
    env.pop("ROCHALLOR_ML_MODEL", None)
    if cache is not None:
        env["ROCHALLOR_ML_CACHE"] = str(cache)
    say("building examples/ml's model (once; kept in the cache)")
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"build_model failed ({done.returncode}): {done.stderr.strip()}")
    return Path(done.stdout.strip().splitlines()[-1])


def child_changes(model: Path, threads: str) -> dict[str, str | None]:
    """The supervisor's environment: examples importable, the model named,
    the thread variables as ``threads`` wants (see the module doc)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    changes: dict[str, str | None] = {"PYTHONPATH": path, "ROCHALLOR_ML_MODEL": str(model)}
    one = threads == DEFAULTS and not has_threads_key()
    for name in THREAD_ENV_VARS:
        changes[name] = "1" if one else None
    return changes


def config_text(url: str, workers: int, *, preload: bool, threads: str) -> str:
    lines = [
        "[engine]",
        f'url = "{url}"',
        "timeout = 10.0",
        "[supervisor]",
        'handlers = ["benchlib.ml_handlers:registry"]',
        f"workers = {workers}",
        f"preload_handlers = {'true' if preload else 'false'}",
        "boot_timeout = 300.0",
        "job_timeout = 120.0",
    ]
    if threads == OVERSUBSCRIBED and has_threads_key():
        lines.append(f"threads_per_worker = {default_worker_count()}")
    lines += ["[logging]", 'level = "INFO"']
    return "\n".join(lines) + "\n"


def definition(def_id: str, job_types: tuple[str, ...]) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for n, job_type in enumerate(job_types):
        nxt = f"s{n + 1}" if n + 1 < len(job_types) else "end"
        steps.append({"id": f"s{n}", "name": job_type, "type": "SERVICE_TASK",
                      "jobType": job_type, "nextStep": nxt})  # fmt: skip
    steps.append({"id": "end", "name": "End", "type": "END"})
    return {"id": def_id, "name": def_id, "steps": steps}


def start_instances(client: RestEngineClient, def_id: str, seeds: range) -> None:
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda seed: client.start_instance(def_id, {"seed": seed}), seeds))


class Run:
    """One engine and one supervisor, stopped (and reaped) on the way out."""

    def __init__(
        self, workdir: Path, tag: str, model: Path, workers: int, *, preload: bool, threads: str
    ) -> None:
        self.tag = f"{tag}-{time.strftime('%H%M%S')}"
        self.workdir = workdir
        self.engine = EngineProcess(workdir / f"{self.tag}.engine.log")
        self.client = RestEngineClient(self.engine.url, timeout=30.0, pool_size=8)
        config = workdir / f"{self.tag}.toml"
        config.write_text(config_text(self.engine.url, workers, preload=preload, threads=threads))
        self.supervisor: SupervisorProcess | None = None
        self._changes = child_changes(model, threads)
        self._config = config

    def start_supervisor(self) -> SupervisorProcess:
        with environment(self._changes):
            self.supervisor = SupervisorProcess(self._config, self.workdir / f"{self.tag}.log")
        return self.supervisor

    def close(self) -> None:
        try:
            if self.supervisor is not None:
                code = self.supervisor.stop()
                if code not in (0, None):
                    say(f"{self.tag}: the supervisor exited {code}: {self.supervisor.log_tail()}")
        finally:
            self.client.close()
            self.engine.stop()


def _completed(client: RestEngineClient, def_id: str, count: int) -> list[dict[str, Any]]:
    items = client.list_instances(def_id, page_size=count + 100)["items"] or []
    return [i for i in items if i.get("status") == "COMPLETED"]


# -- 1. numpy jobs/s -----------------------------------------------------------------


def matrix_batch(
    workdir: Path, model: Path, workers: int, jobs: int, threads: str
) -> dict[str, float]:
    """ml-matrix jobs/s of ``workers`` workers (steady window); the CPU of
    the supervisor's parent, of the engine, and of other processes meanwhile
    (% of one core)."""
    run = Run(workdir, f"matrix-{threads}-x{workers}", model, workers, preload=False,
              threads=threads)  # fmt: skip
    try:
        flow = definition("ml-matrix-only", (MATRIX,))
        run.client.upload_definition(flow)
        start_instances(run.client, flow["id"], range(jobs))
        supervisor = run.start_supervisor()
        sampler = CpuSampler(
            {
                "parent": threads_cpu(supervisor.ps),
                "tree": tree_cpu(supervisor.ps),
                "engine": process_cpu(run.engine.ps),
                "bench": process_cpu(psutil.Process()),
                "machine": machine_cpu,
            }
        )
        try:
            wait_done(run.client, flow["id"], jobs, supervisor, 120.0 + jobs * 2.0)
        finally:
            sampler.stop()
        items = _completed(run.client, flow["id"], jobs)
    finally:
        run.close()
    finished = [parse_timestamp(i["completedAt"]).timestamp() for i in items]
    start, end, count = steady_window(finished)
    ours = sum(sampler.cpu_between(name, start, end) for name in ("tree", "engine", "bench"))
    foreign = max(0.0, sampler.cpu_between("machine", start, end) - ours)
    rate = count / (end - start) if end > start else math.inf
    return {
        "rate": rate,
        "parent_cpu_pct": sampler.cpu_between("parent", start, end),
        "engine_cpu_pct": sampler.cpu_between("engine", start, end),
        "foreign_cpu_pct": foreign,
        "between_jobs_ms": between_jobs_ms(items),
    }


def between_jobs_ms(items: list[dict[str, Any]]) -> float | None:
    """Mean time in a worker from one ml-matrix job's end to the next one's
    start (the handlers' own stamps): what the supervisor adds per job."""
    spans: dict[Any, list[tuple[float, float]]] = {}
    for item in items:
        v = item.get("variables") or {}
        if "ml_matrixStart" in v and "ml_matrixEnd" in v:
            spans.setdefault(v.get("matrixWorkerPid"), []).append(
                (v["ml_matrixStart"], v["ml_matrixEnd"])
            )
    gaps = [
        (b[0] - a[1]) * 1000.0
        for runs in spans.values()
        for a, b in itertools.pairwise(sorted(runs))
    ]
    return sum(gaps) / len(gaps) if gaps else None


# -- 1b. the machine's own ceiling: the same jobs in bare processes ---------------------

#: One bare process: load the handlers (the model too, as a worker does), say
#: ready, wait for "go", run ``count`` ml-matrix jobs from seed ``first``,
#: print each one's end (wall clock, as the engine's completedAt).
_BARE = """
import sys, time
from examples.ml import handlers
count, first = int(sys.argv[1]), int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
ends = []
for seed in range(first, first + count):
    handlers.matrix({"variables": {"seed": seed}})
    ends.append(time.time())
print(" ".join(map(repr, ends)), flush=True)
"""


def bare_batch(model: Path, processes: int, jobs: int) -> float:
    """ml-matrix jobs/s of ``processes`` plain Python processes, one BLAS
    thread each, no supervisor or engine: what the machine itself gives, so
    that the scaling goal can be read against the machine's own (two
    processes on two CPUs share caches, memory bandwidth and, on SMT
    machines, cores)."""
    env = dict(os.environ)
    env.update({k: v for k, v in child_changes(model, DEFAULTS).items() if v is not None})
    for name in THREAD_ENV_VARS:
        env[name] = "1"
    per = max(2, jobs // processes)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _BARE, str(per), str(k * per)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        for k in range(processes)
    ]  # fmt: skip
    try:
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a bare process could not load the handlers")
        ends: list[float] = []
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            out, _ = child.communicate(timeout=120.0 + per * 2.0)
            ends += [float(x) for x in out.split()]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
    start, end, count = steady_window(ends)
    return count / (end - start) if end > start else math.inf


# -- 2. memory -------------------------------------------------------------------------


def _pss(pid: int) -> dict[str, float] | None:
    try:
        memory = read_memory(pid)
    except MemoryReadError:
        return None
    return {
        "pid": pid,
        "rss_mib": (memory.rss or 0) / MIB,
        "pss_mib": (memory.pss or 0) / MIB,
        "uss_mib": (memory.uss or 0) / MIB,
    }


def memory_batch(workdir: Path, model: Path, workers: int, *, preload: bool) -> dict[str, Any]:
    """PSS of every worker and of the fork server once each worker has run
    the pipeline's jobs (the model used by each)."""
    run = Run(workdir, f"memory-{'preload' if preload else 'own'}-x{workers}", model, workers,
              preload=preload, threads=DEFAULTS)  # fmt: skip
    try:
        flow = definition("ml-pipeline-memory", PIPELINE)
        run.client.upload_definition(flow)
        supervisor = run.start_supervisor()
        supervisor.wait_ready(workers, timeout=300.0)
        started, classified_by = 0, set()
        for _ in range(5):  # rounds until every worker has classified a batch
            batch = 3 * workers
            start_instances(run.client, flow["id"], range(started, started + batch))
            started += batch
            wait_done(run.client, flow["id"], started, supervisor, 300.0)
            items = _completed(run.client, flow["id"], started)
            classified_by = {i["variables"].get("classifyWorkerPid") for i in items}
            if len(classified_by) >= workers:
                break
        found = supervisor.processes()
        worker_mem = [m for m in (_pss(p.pid) for p in found["workers"]) if m is not None]
        server_mem = [m for m in (_pss(p.pid) for p in found["fork_server"]) if m is not None]
    finally:
        run.close()
    total = sum(m["pss_mib"] for m in worker_mem) + sum(m["pss_mib"] for m in server_mem)
    return {
        "workers": worker_mem,
        "fork_server": server_mem,
        "total_pss_mib": total,
        "workers_that_classified": len(classified_by & {m["pid"] for m in worker_mem}),
    }


# -- 3. the job-type change gap --------------------------------------------------------


def gap_batch(workdir: Path, model: Path, workers: int, rounds: int) -> list[float]:
    """Milliseconds from one step's handler end to the next step's start, per
    instance and change of type (N pipelines at a time, so none queues)."""
    run = Run(workdir, f"gap-x{workers}", model, workers, preload=True, threads=DEFAULTS)
    gaps: list[float] = []
    try:
        flow = definition("ml-pipeline-gap", PIPELINE)
        run.client.upload_definition(flow)
        supervisor = run.start_supervisor()
        supervisor.wait_ready(workers, timeout=300.0)
        for n in range(rounds):
            start_instances(run.client, flow["id"], range(n * workers, (n + 1) * workers))
            wait_done(run.client, flow["id"], (n + 1) * workers, supervisor, 300.0)
        items = _completed(run.client, flow["id"], rounds * workers)
    finally:
        run.close()
    keys = [stamp_key(t) for t in PIPELINE]
    for item in items:
        v = item["variables"]
        for before, after in itertools.pairwise(keys):
            ended, started = v.get(f"{before}End"), v.get(f"{after}Start")
            if isinstance(ended, float) and isinstance(started, float):
                gaps.append((started - ended) * 1000.0)
    return gaps


# -- a run -----------------------------------------------------------------------------


def one_repeat(s: MlSettings, workdir: Path, model: Path, index: int) -> dict[str, Any]:
    prefix = f"[ml {index + 1}/{s.repeat}]"
    n = s.workers
    out: dict[str, Any] = {}

    def quiet() -> None:
        if s.quiet_wait > 0:
            wait_for_quiet(s.max_foreign_cpu, s.quiet_wait)

    def numpy(key: str, workers: int, jobs: int, threads: str) -> None:
        best: dict[str, float] | None = None
        for attempt in range(s.retries + 1):
            quiet()
            result = matrix_batch(workdir, model, workers, jobs, threads)
            say(f"{prefix} numpy {threads:<15} x{workers}: {result['rate']:7.2f} jobs/s "
                f"(parent {result['parent_cpu_pct']:4.1f}%, engine "
                f"{result['engine_cpu_pct']:4.1f}%, others {result['foreign_cpu_pct']:5.1f}% "
                "CPU)")  # fmt: skip
            if best is None or result["foreign_cpu_pct"] < best["foreign_cpu_pct"]:
                best = result
            if result["foreign_cpu_pct"] <= s.max_foreign_cpu:
                break
            if attempt < s.retries:
                say(f"{prefix} other processes used the CPU meanwhile: running it again")
        out[key] = best

    numpy("numpy_defaults", n, s.jobs, DEFAULTS)
    numpy("numpy_oversubscribed", n, max(2, s.jobs // 2), OVERSUBSCRIBED)
    numpy("numpy_one_worker", 1, max(2, s.jobs // n), DEFAULTS)
    for key, processes, jobs in (("bare_n", n, s.jobs), ("bare_one", 1, max(2, s.jobs // n))):
        quiet()
        out[key] = bare_batch(model, processes, jobs)
        say(f"{prefix} numpy bare processes  x{processes}: {out[key]:7.2f} jobs/s")
    for key, workers, preload in (
        ("memory_one_worker", 1, False),
        ("memory_preload", s.memory_workers, True),
        ("memory_no_preload", s.memory_workers, False),
    ):
        quiet()
        out[key] = memory_batch(workdir, model, workers, preload=preload)
        say(f"{prefix} memory {key[7:]:<11} x{workers}: total PSS "
            f"{out[key]['total_pss_mib']:7.1f} MiB")  # fmt: skip
    quiet()
    gaps = gap_batch(workdir, model, n, s.gap_rounds)
    out["gaps"] = gaps
    if gaps:
        say(f"{prefix} job-type change gap p50 {percentile(gaps, 50):7.2f} ms ({len(gaps)} gaps)")
    return out


def aggregate(repeats: list[dict[str, Any]], s: MlSettings) -> dict[str, Any]:
    def rates(key: str) -> list[float]:
        return [r[key]["rate"] for r in repeats]

    defaults, over, one = (
        rates("numpy_defaults"),
        rates("numpy_oversubscribed"),
        rates("numpy_one_worker"),
    )
    bare_n = [r["bare_n"] for r in repeats]
    bare_one = [r["bare_one"] for r in repeats]
    one_pss = [
        r["memory_one_worker"]["total_pss_mib"]
        - sum(m["pss_mib"] for m in r["memory_one_worker"]["fork_server"])
        for r in repeats
    ]
    preload = [r["memory_preload"]["total_pss_mib"] for r in repeats]
    own = [r["memory_no_preload"]["total_pss_mib"] for r in repeats]
    gaps = [g for r in repeats for g in r["gaps"]]
    per_run_p50 = [percentile(r["gaps"], 50) for r in repeats if r["gaps"]]
    return {
        "numpy_jobs_per_s": {
            "defaults": spread(defaults),
            "oversubscribed": spread(over),
            "one_worker_one_thread": spread(one),
            "ratio_defaults_oversubscribed": spread(
                [d / o for d, o in zip(defaults, over, strict=True) if o > 0]
            ),
            "ratio_defaults_scaling": spread(
                [d / (s.workers * o) for d, o in zip(defaults, one, strict=True) if o > 0]
            ),
            "between_jobs_ms": spread(
                [g for r in repeats if (g := r["numpy_defaults"].get("between_jobs_ms"))]
            ),
            "bare_n": spread(bare_n),
            "bare_one": spread(bare_one),
            "ratio_bare_scaling": spread(
                [b / (s.workers * o) for b, o in zip(bare_n, bare_one, strict=True) if o > 0]
            ),
            "ratio_defaults_bare": spread(
                [d / b for d, b in zip(defaults, bare_n, strict=True) if b > 0]
            ),
        },
        "memory_pss_mib": {
            "one_worker_holding_the_model": spread(one_pss),
            "preload_total": spread(preload),
            "no_preload_total": spread(own),
            "ratio_preload": spread([p / o for p, o in zip(preload, one_pss, strict=True) if o]),
            "ratio_no_preload": spread([p / o for p, o in zip(own, one_pss, strict=True) if o]),
            "last_run": {
                key: repeats[-1][key]
                for key in ("memory_one_worker", "memory_preload", "memory_no_preload")
            },
        },
        "job_type_change_gap_ms": {
            "p50": spread(per_run_p50),
            "p90_all": percentile(gaps, 90) if gaps else None,
            "count": len(gaps),
        },
        **{
            f"{what}_cpu_pct": {
                key: spread([r[key][f"{what}_cpu_pct"] for r in repeats])
                for key in ("numpy_defaults", "numpy_oversubscribed", "numpy_one_worker")
            }
            for what in ("parent", "engine", "foreign")
        },
    }


GOALS = (
    ("numpy defaults / (N x one single-thread worker)", "numpy_jobs_per_s.ratio_defaults_scaling",
     ">=", 0.95),
    ("total PSS with preload / one worker holding the model", "memory_pss_mib.ratio_preload",
     "<=", 1.2),
)  # fmt: skip


def judge(results: dict[str, Any]) -> list[dict[str, Any]]:
    judged = []
    for name, key, op, target in GOALS:
        node: Any = results
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        value = node.get("median") if isinstance(node, dict) else None
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        judged.append({"goal": f"{name} {op} {target:g}", "key": key, "value": value, "met": met})
    return judged


def table(report: dict[str, Any]) -> str:
    st, r = report["settings"], report["results"]
    n, mem_n = st["workers"], st["memory_workers"]
    numpy, mem, gap = r["numpy_jobs_per_s"], r["memory_pss_mib"], r["job_type_change_gap_ms"]
    how = "threads_per_worker" if report["threads_key"] else "OMP_NUM_THREADS etc. = 1"
    rows = [
        (f"**numpy jobs/s ({n} workers, ml-matrix)**", ""),
        (f"defaults ({how})", fmt(numpy["defaults"])),
        ("oversubscribed (libraries' own thread count)", fmt(numpy["oversubscribed"])),
        ("one worker, one thread", fmt(numpy["one_worker_one_thread"])),
        ("defaults / oversubscribed", fmt(numpy["ratio_defaults_oversubscribed"], 2)),
        (f"defaults / ({n} x one worker)", fmt(numpy["ratio_defaults_scaling"], 2)),
        (
            f"bare processes (no supervisor, no engine): {n}; one",
            f"{fmt(numpy['bare_n'])}; {fmt(numpy['bare_one'])}",
        ),
        (
            "in a worker, one job's end to the next one's start, mean ms",
            fmt(numpy["between_jobs_ms"], 1),
        ),
        (f"the machine's own: bare {n} / ({n} x bare one)", fmt(numpy["ratio_bare_scaling"], 2)),
        (
            f"defaults / bare {n} (what the supervisor and engine cost)",
            fmt(numpy["ratio_defaults_bare"], 2),
        ),
        (
            "supervisor parent / engine CPU during defaults, % of a core",
            f"{fmt(r['parent_cpu_pct']['numpy_defaults'])} / "
            f"{fmt(r['engine_cpu_pct']['numpy_defaults'])}",
        ),
        (
            "other processes during the numpy batches, worst, % of a core",
            fmt(spread([max(v["max"] for v in r["foreign_cpu_pct"].values())])),
        ),
        (f"**total PSS, MiB ({mem_n} workers + fork server)**", ""),
        ("one worker holding the model (no preload)", fmt(mem["one_worker_holding_the_model"])),
        ("preload_handlers = true", fmt(mem["preload_total"])),
        ("preload_handlers = false", fmt(mem["no_preload_total"])),
        ("with preload / one worker", fmt(mem["ratio_preload"], 2)),
        ("without preload / one worker", fmt(mem["ratio_no_preload"], 2)),
        (f"**job-type change gap, ms ({n} pipelines at a time)**", ""),
        ("p50 (median of runs)", fmt(gap["p50"], 1)),
        ("p90 (all runs)", "n/a" if gap["p90_all"] is None else f"{gap['p90_all']:.1f}"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [
        f"ML benchmark: median [min-max] of {st['repeat']}; {st['jobs']} numpy jobs per "
        f"{n}-worker batch; {report['machine_cpus']} CPUs",
        "",
        f"| {'measure':<{width}} | value |",
        f"|{'-' * (width + 2)}|-------|",
    ]
    lines += [f"| {label:<{width}} | {value} |" for label, value in rows]
    lines += verdict_lines(report, "ML goals:")
    return "\n".join(lines)


def settings_from(args: argparse.Namespace) -> MlSettings:
    smoke, quick = args.smoke, args.quick
    workers = args.workers or default_worker_count()
    return MlSettings(
        repeat=args.repeat or (1 if smoke or quick else 3),
        workers=workers,
        memory_workers=args.ml_memory_workers or (2 if smoke else 4),
        jobs=args.jobs or (4 * workers if smoke else 60 if quick else 200),
        gap_rounds=1 if smoke else 3 if quick else 5,
        small_model=smoke,
        quiet_wait=args.quiet_wait if args.quiet_wait >= 0 else 0 if smoke else 3 if quick else 60,
        max_foreign_cpu=args.max_foreign_cpu,
        retries=args.retries if args.retries >= 0 else 0 if smoke or quick else 2,
    )


def output_path(output: str) -> Path:
    path = Path(output)
    return path.with_name(f"{path.stem}-ml{path.suffix or '.json'}")


def run(args: argparse.Namespace) -> int:
    """The ML benchmark (``benchmarks/bench --ml``); exit status as the bench's."""
    why = unavailable()
    if why:
        say(f"ML benchmark skipped: {why}")
        return 0
    s = settings_from(args)
    workdir = Path(tempfile.mkdtemp(prefix="rochallor-bench-ml-"))
    say(
        f"ML benchmark: {s.repeat} run(s); {s.workers} workers, {s.jobs} numpy jobs; memory "
        f"with {s.memory_workers} workers; logs in {workdir}"
    )
    started = time.monotonic()
    ok = False
    try:
        model = build_model(s.small_model, workdir / "model-cache" if s.small_model else None)
        repeats = [one_repeat(s, workdir, model, i) for i in range(s.repeat)]
        results = aggregate(repeats, s)
        report: dict[str, Any] = {
            "settings": dataclasses.asdict(s),
            "threads_key": has_threads_key(),
            "machine_cpus": default_worker_count(),
            "model": {"path": str(model), "file_mib": model.stat().st_size / MIB},
            "results": results,
        }
        report["goals"] = judge(results)
        report["seconds"] = round(time.monotonic() - started, 1)
        out = output_path(args.output)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(table(report))
        print(f"\nwritten: {out} ({report['seconds']:.0f} s)")
        ok = True
        return 0
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as exc:
        say(f"ML benchmark failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if ok and not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            say(f"logs kept in {workdir}")


__all__ = ["has_threads_key", "run", "table", "unavailable"]
