"""Per-job-type settings under a real supervisor and a real LocalEngine (issue 18).

``[job_types."x"]`` ``concurrency``, ``retry_delay``, ``max_memory_hard_mb``
and ``threads``, and the poll after an empty answer at each change of job
type in a pipeline. Every assertion is on what happened (counts, order,
lower bounds on a delay), none on speed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ml_support import SKIP_REASON
from process.conftest import SupervisorProcess, start_instances, upload_single_step, wait_for
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

pytestmark = pytest.mark.slow

Start = Callable[..., SupervisorProcess]


def upload_pipeline(client: RestEngineClient, def_id: str, *job_types: str) -> None:
    steps: list[dict[str, Any]] = []
    for n, job_type in enumerate(job_types):
        nxt = f"s{n + 1}" if n + 1 < len(job_types) else "end"
        steps.append(
            {"id": f"s{n}", "name": job_type, "type": "SERVICE_TASK", "jobType": job_type,
             "retryCount": 0, "nextStep": nxt}
        )  # fmt: skip
    steps.append({"id": "end", "name": "End", "type": "END"})
    client.upload_definition({"id": def_id, "name": def_id, "steps": steps})


def test_a_pipeline_changes_job_type_without_waiting_a_poll_interval(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    """Pins the job-type change gap: with ``poll_interval`` an hour, a
    two-step pipeline still finishes. Each second step's job is made by the
    completion of the first, after a poll that found nothing (the poll
    claiming ahead for the first step's type, or an idle worker's): the
    supervisor polls again once that completion is answered instead of
    waiting the interval (the old code sat there for the hour)."""
    upload_pipeline(client, "two-steps", "cpu", "span")
    instances = start_instances(client, "two-steps", 6, {"ms": 30, "seconds": 0.01})
    start_supervisor(workers=2, poll_interval=3600)
    engine.wait_for_instances(instances, "COMPLETED", timeout=60)
    counters = engine.counters
    assert counters["jobs_completed"] == 12
    assert counters["empty_polls"] < counters["polls"], counters


def test_concurrency_runs_at_most_n_jobs_of_a_type_at_once(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    """Three workers, ``span`` limited to 1: its jobs never overlap, while
    the other workers take the other type."""
    upload_single_step(client, "limited", "span", retries=0)
    upload_single_step(client, "free", "span-other", retries=0)
    limited = start_instances(client, "limited", 4, {"seconds": 0.3})
    free = start_instances(client, "free", 4, {"seconds": 0.3})
    start_supervisor(workers=3, extra='[job_types."span"]\nconcurrency = 1\n')
    summaries = engine.wait_for_instances([*limited, *free], "COMPLETED", timeout=60)
    spans = sorted((s["variables"]["spanStart"], s["variables"]["spanEnd"]) for s in summaries[:4])
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"two span jobs ran at once: {spans}"
    others = [(s["variables"]["span_otherStart"], s["variables"]["span_otherEnd"])
              for s in summaries[4:]]  # fmt: skip
    # The limit held the limited type only: the other type ran beside it.
    assert any(o_start < end and start < o_end for start, end in spans for o_start, o_end in others)


def test_a_retryable_failure_is_reported_after_its_delay_and_the_worker_works_meanwhile(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, tmp_path: Path
) -> None:
    """One worker, ``retry_delay = 3``: the failed attempt's retry starts at
    least 2.4 s later (3 s less the jitter), and a job that came meanwhile
    ran on that worker before it (the delay blocks nothing)."""
    upload_single_step(client, "flaky", "attempts", retries=1)
    upload_single_step(client, "other", "span", retries=0)
    piddir = tmp_path / "runs"
    piddir.mkdir()
    start_supervisor(workers=1, extra='[job_types."attempts"]\nretry_delay = 3\n')
    (flaky,) = start_instances(client, "flaky", 1, {"piddir": str(piddir), "fail": 1})
    record = piddir / f"{flaky}.attempts"
    wait_for(lambda: record.exists() and record.read_text().count("\n") >= 1, 30, "attempt 1")
    (other,) = start_instances(client, "other", 1, {"seconds": 0.01})
    done = engine.wait_for_instance(flaky, "COMPLETED", timeout=30)
    assert done["variables"]["attempts"] == 2
    (_, first_end), (second_start, _) = (
        tuple(map(float, line.split())) for line in record.read_text().splitlines()
    )
    assert second_start - first_end >= 2.4
    meanwhile = engine.wait_for_instance(other, "COMPLETED", timeout=10)
    assert first_end < meanwhile["variables"]["spanStart"] < second_start
    (job,) = engine.jobs(instance_id=flaky)
    assert job["failCalls"] == 1


def test_a_job_types_own_hard_memory_limit_kills_its_worker(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    """No pool limit; ``script`` jobs limited to 300 MiB: the growing one's
    worker is killed during the job, the job failed retryable and retried,
    and the log names the type's setting."""
    upload_single_step(client, "grow", "script", retries=1)
    sv = start_supervisor(
        workers=1,
        extra='memory_check_interval = 0.1\n[job_types."script"]\nmax_memory_hard_mb = 300\n',
    )
    (hard,) = start_instances(
        client, "grow", 1, {"retries": 1, "first": "grow", "then": "ok", "mb": 500}
    )
    summary = engine.wait_for_instance(hard, "COMPLETED", timeout=60)
    assert summary["variables"]["attempt"] == "later"
    assert 'over [job_types."script"] max_memory_hard_mb = 300' in sv.log()


def test_a_job_types_threads_are_in_force_for_its_jobs_only(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    """One worker, one BLAS thread from the environment; ``blas-wide`` jobs
    run with 3, the other type's jobs with 1 again."""
    pytest.importorskip("numpy", reason=SKIP_REASON)
    pytest.importorskip("threadpoolctl", reason=SKIP_REASON)
    upload_pipeline(client, "blas", "blas-plain", "blas-wide", "blas-plain")
    start_supervisor(
        workers=1,
        handlers="ml_thread_handlers:registry",
        extra='[job_types."blas-wide"]\nthreads = 3\n',
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
    )
    (instance,) = start_instances(client, "blas", 1, {})
    summary = engine.wait_for_instance(instance, "COMPLETED", timeout=60)
    variables = summary["variables"]
    assert variables["blas_wideThreads"] == 3
    # The last step (plain, after wide) overwrote the first's: back to 1.
    assert variables["blas_plainThreads"] == 1
