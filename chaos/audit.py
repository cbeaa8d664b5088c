"""What a chaos run found: the run log read back, extra runs attributed to
the faults injected, and the must-be-zero figures.

Pure functions over plain records (``Run``, ``Injection``), so that each rule
has unit tests (tests/unit/test_chaos_audit.py); the run (``chaos.run``)
gathers the records from the run log, the engine and the processes.

Attribution rule: a job's runs beyond those its plan explains
(``workload.planned_runs``) are *extra*. An extra run is explained by an
injected fault that could have caused it: one aimed at a supervisor (or a
worker) that ran the job before, or at everything (the engine, the broker),
active at some moment between the job's first run and the extra run's start
(plus ``tail`` seconds after the fault ended: a lost answer shows as a rerun
only later). The most recent such fault gets it. An injection *touches* the
jobs that had a run on its target while it was active, or whose outcome was
on its way then (a run followed by another is exposed until that one starts);
each touched job may run once more because of it: that is the class's
allowance.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: A run killed on its way has no end: it is taken to last until the job's
#: next run starts, or this long.
OPEN_RUN_SECONDS = 60.0


@dataclass
class Run:
    job_id: str
    retries: int
    pid: int
    supervisor: str
    start: float
    job_type: str = "?"
    instance_id: str = "?"
    step_execution: str = "?"
    end: float | None = None
    outcome: str = ""  # "ok", "error", "unser", "" (killed)


@dataclass
class Injection:
    """One injected fault: ``target`` is a supervisor's name, ``pid:<n>`` (a
    worker) or ``*`` (the engine, the broker, every supervisor)."""

    kind: str
    fault_class: str
    target: str
    start: float
    end: float
    detail: str = ""
    #: Filled in by ``attribute``.
    touched: set[str] = field(default_factory=set)
    extra_runs: int = 0
    recovery: float | None = None


def read_runlog(directory: Path) -> list[Run]:
    """Every run in the run log files of ``directory``, by start time."""
    runs: list[Run] = []
    for path in sorted(directory.glob("*.log")):
        open_runs: dict[tuple[str, int], Run] = {}
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[0] == "S":
                run = Run(parts[1], int(parts[2]), int(parts[3]), parts[4], float(parts[5]))
                if len(parts) >= 9:
                    run.job_type, run.instance_id, run.step_execution = parts[6:9]
                open_runs[(run.job_id, run.retries)] = run
                runs.append(run)
            elif len(parts) >= 6 and parts[0] == "E":
                found = open_runs.pop((parts[1], int(parts[2])), None)
                if found is not None:
                    found.end = float(parts[5])
                    found.outcome = parts[6] if len(parts) > 6 else ""
    runs.sort(key=lambda r: r.start)
    return runs


def by_job(runs: Iterable[Run]) -> dict[str, list[Run]]:
    jobs: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        jobs[run.job_id].append(run)
    for job_runs in jobs.values():
        job_runs.sort(key=lambda r: r.start)
    return dict(jobs)


def run_until(job_runs: list[Run], index: int) -> float:
    """Until when a run is exposed to faults: to the job's next run when
    there is one (its outcome was on its way to the engine until then, or
    lost), else to its end (a killed last run: ``OPEN_RUN_SECONDS``)."""
    run = job_runs[index]
    if index + 1 < len(job_runs):
        return job_runs[index + 1].start
    if run.end is not None:
        return run.end
    return run.start + OPEN_RUN_SECONDS


def _aims_at(injection: Injection, run: Run) -> bool:
    return injection.target in ("*", run.supervisor, f"pid:{run.pid}")


@dataclass
class Attribution:
    """Extra runs per job and what explained them."""

    extra: dict[str, int] = field(default_factory=dict)
    #: (job id, run start) of extra runs no fault explains.
    unexplained: list[tuple[str, float]] = field(default_factory=list)


def attribute(
    jobs: Mapping[str, list[Run]],
    planned: Mapping[str, int],
    injections: list[Injection],
    tail: float,
) -> Attribution:
    """Touch, attribute and time recovery for every injection (in place)."""
    result = Attribution()
    for injection in injections:
        injection.touched.clear()
        injection.extra_runs = 0
        injection.recovery = None
    for job_id, job_runs in jobs.items():
        for index, run in enumerate(job_runs):
            until = run_until(job_runs, index)
            for injection in injections:
                if (
                    _aims_at(injection, run)
                    and run.start <= injection.end
                    and until >= injection.start
                ):
                    injection.touched.add(job_id)
        allowed = planned.get(job_id, 1)
        for index in range(allowed, len(job_runs)):
            extra = job_runs[index]
            earlier = job_runs[:index]
            first = earlier[0].start
            candidates = [
                i
                for i in injections
                if i.start <= extra.start
                and i.end + tail >= first
                and any(_aims_at(i, r) for r in earlier)
            ]
            result.extra[job_id] = result.extra.get(job_id, 0) + 1
            if not candidates:
                result.unexplained.append((job_id, extra.start))
                continue
            max(candidates, key=lambda i: i.start).extra_runs += 1
    for injection in injections:
        waits = []
        for job_id in injection.touched:
            job_runs = jobs[job_id]
            last = job_runs[-1]
            done = last.end if last.end is not None else last.start
            waits.append(max(0.0, done - injection.end))
        injection.recovery = max(waits) if waits else None
    return result


@dataclass
class ClassFigures:
    fault_class: str
    injected: int = 0
    touched: int = 0
    allowed: int = 0
    seen: int = 0
    recovery: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float | None:
        return statistics.median(self.recovery) if self.recovery else None

    @property
    def worst(self) -> float | None:
        return max(self.recovery) if self.recovery else None


#: Kafka mode: faults after which a supervisor leaves the group and comes
#: back (or a member joins and leaves): its partitions move twice, and a job
#: in flight on them may run twice more.
KAFKA_TWICE = {
    "kill_parent": 2,
    "term_restart": 2,
    "stop_parent": 2,
    "join_leave": 2,
    "broker_restart": 2,
    "broker_net": 2,
    "reload": 2,
}


def per_class(
    injections: Iterable[Injection], factor: Mapping[str, int] | None = None
) -> list[ClassFigures]:
    """Figures per fault class; each touched job is allowed ``factor[kind]``
    extra runs per injection (1 by default)."""
    classes: dict[str, ClassFigures] = {}
    touched: dict[str, set[str]] = defaultdict(set)
    for injection in injections:
        figures = classes.setdefault(injection.fault_class, ClassFigures(injection.fault_class))
        figures.injected += 1
        figures.allowed += len(injection.touched) * (factor or {}).get(injection.kind, 1)
        figures.seen += injection.extra_runs
        touched[injection.fault_class] |= injection.touched
        if injection.recovery is not None:
            figures.recovery.append(injection.recovery)
    for name, figures in classes.items():
        figures.touched = len(touched[name])
    return sorted(classes.values(), key=lambda f: f.fault_class)


def lost_completions(
    jobs: Mapping[str, list[Run]],
    job_status: Mapping[str, str],
    ended_elsewhere: Mapping[str, bool],
) -> list[str]:
    """Jobs a handler finished with success whose completion the engine does
    not have. ``job_status``: the engine's status of each job (``COMPLETED``,
    ``FAILED``, ``CANCELLED`` by a timer, ``LOCKED``...); ``ended_elsewhere``:
    jobs that no longer mattered when they ran (their instance cancelled or
    their step interrupted), for which nothing is to be reported."""
    lost = []
    for job_id, job_runs in jobs.items():
        if not any(r.outcome == "ok" for r in job_runs):
            continue
        if ended_elsewhere.get(job_id):
            continue
        if job_status.get(job_id) != "COMPLETED":
            lost.append(job_id)
    return sorted(lost)


def rss_growth(
    samples: Mapping[int, list[tuple[float, int]]], warmup: float, min_life: float
) -> dict[int, int]:
    """Per parent pid that lived at least ``min_life`` seconds: its largest
    RSS after ``warmup`` seconds minus its largest RSS within them."""
    growth = {}
    for pid, points in samples.items():
        if not points or points[-1][0] - points[0][0] < min_life:
            continue
        born = points[0][0]
        early = [rss for t, rss in points if t - born <= warmup]
        late = [rss for t, rss in points if t - born > warmup]
        if early and late:
            growth[pid] = max(late) - max(early)
    return growth
