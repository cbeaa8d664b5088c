"""Jobs that stop mattering, and a slow engine: the job ledger's rules, end to end."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .conftest import SupervisorProcess, read_pid, start_instances, upload_single_step, wait_for

pytestmark = pytest.mark.slow

Start = Callable[..., SupervisorProcess]
#: Seconds from the cancel signal to SIGTERM, and from SIGTERM to SIGKILL
#: (arbiter.CANCEL_GRACE + arbiter.KILL_GRACE).
KILL_GRACE = 1.0 + 3.0


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _stop(sv: SupervisorProcess) -> str:
    sv.signal(signal.SIGTERM)
    assert sv.wait(20) == 0
    return sv.log()


def test_a_cancelled_instance_s_long_job_is_stopped_and_no_result_is_reported(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, piddir: Path
) -> None:
    upload_single_step(client, "long", "lifecycle", retries=2)
    (iid,) = start_instances(client, "long", 1, {"piddir": str(piddir), "seconds": 60})
    sv = start_supervisor(workers=1, extra="stale_check_interval = 0.5\njob_timeout = 0\n")
    victim = read_pid(piddir, iid)
    client.cancel_instance(iid, "user changed their mind")
    # Within one check interval plus the kill grace (plus slack for a busy machine).
    wait_for(lambda: _gone(victim), 0.5 + KILL_GRACE + 5, "the stale job's worker to exit")
    sv.wait_for_log("no longer matters")
    # The handler saw why it was stopped (the courtesy cancel event).
    assert (piddir / f"{iid}.cancelled").read_text() == "set"
    # No result is reported; the job is retired with one empty completion.
    engine.wait_until(lambda: engine.jobs(instance_id=iid)[0]["completeCalls"] == 1, 10)
    (job,) = engine.jobs(instance_id=iid)
    assert (job["failCalls"], job["completeCalls"]) == (0, 1)
    assert engine.instance(iid)["status"] == "CANCELLED"
    # The slot is refilled.
    new_workers = sv.wait_for_workers(1)
    assert victim not in {w.pid for w in new_workers}
    log = _stop(sv)
    assert f"of instance {iid} no longer matters (instance CANCELLED" in log
    assert "1 stale" in log


@pytest.mark.parametrize(
    ("then", "extra"),
    [
        ("nonretryable", ""),
        ("raise", ""),  # retryable with retries left: must not requeue it either
        ("block", '[job_types."lifecycle"]\ntimeout = 1.5\n'),  # killed at its time limit
    ],
)
def test_a_job_of_a_cancelled_instance_that_then_fails_leaves_it_cancelled(
    engine: LocalEngine,
    client: RestEngineClient,
    *,
    start_supervisor: Start,
    piddir: Path,
    then: str,
    extra: str,
) -> None:
    upload_single_step(client, "late-fail", "lifecycle", retries=2)
    seconds = 60 if then == "block" else 1.0
    (iid,) = start_instances(
        client, "late-fail", 1, {"piddir": str(piddir), "seconds": seconds, "then": then}
    )
    # No checks while running: the check before the fail is what protects.
    sv = start_supervisor(workers=1, extra=f"stale_check_interval = 0\n{extra}")
    read_pid(piddir, iid)
    client.cancel_instance(iid)
    sv.wait_for_log("its failure is not sent")
    (job,) = engine.jobs(instance_id=iid)
    assert job["failCalls"] == 0
    assert job["deliveries"] == 1
    assert engine.instance(iid)["status"] == "CANCELLED"
    log = _stop(sv)
    assert "1 stale" in log


def test_a_failure_of_a_live_job_is_still_sent(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, piddir: Path
) -> None:
    upload_single_step(client, "live-fail", "lifecycle", retries=0)
    (iid,) = start_instances(
        client, "live-fail", 1, {"piddir": str(piddir), "seconds": 0.1, "then": "nonretryable"}
    )
    sv = start_supervisor(workers=1)
    summary = engine.wait_for_instance(iid, "FAILED", timeout=20)
    assert summary["failureReason"] == "gave up late"
    log = _stop(sv)
    # One line for the failure, from the parent, naming the instance and worker.
    lines = [line for line in log.splitlines() if "gave up late" in line]
    assert len(lines) == 1, log
    assert f"of instance {iid} failed on worker-1" in lines[0]


@pytest.mark.local_engine(complete_delay=0.1, lease_seconds=3.0)
def test_slow_completions_hold_claims_back_and_no_job_runs_twice(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    upload_single_step(client, "quick", "noop", retries=0)
    ids = start_instances(client, "quick", 200, {})
    sv = start_supervisor(workers=2)
    engine.wait_for_instances(ids, "COMPLETED", timeout=90)
    jobs = engine.jobs(job_type="noop")
    assert len(jobs) == 200
    claimed_twice = [job["id"] for job in jobs if job["deliveries"] != 1]
    assert claimed_twice == []
    assert all(job["completeCalls"] == 1 for job in jobs)
    log = _stop(sv)
    match = re.search(r"(\d+) held at most", log)
    assert match is not None, log
    assert 1 <= int(match.group(1)) <= 4  # 2 x workers


def upload_timed_step(client: RestEngineClient, def_id: str, park: bool = False) -> None:
    """A slow step with an interrupting 1 s boundary timer leading to an END,
    or (``park``) to a WAIT step, so that the instance stays active."""
    late: dict[str, object] = {"id": "late", "name": "Too late", "type": "END"}
    if park:
        late = {"id": "late", "name": "Parked", "type": "WAIT", "nextStep": "done"}
    client.upload_definition(
        {
            "id": def_id,
            "name": def_id,
            "steps": [
                {
                    "id": "slow",
                    "name": "Slow",
                    "type": "SERVICE_TASK",
                    "jobType": "lifecycle",
                    "retryCount": 2,
                    "nextStep": "done",
                    "boundaryEvents": [
                        {
                            "type": "TIMER",
                            "duration": "PT1S",
                            "interrupting": True,
                            "targetStepId": "late",
                        }
                    ],
                },
                {"id": "done", "name": "Done", "type": "END"},
                late,
            ],
        }
    )


@pytest.mark.parametrize(
    "extra",
    [
        # Killed at its time limit after the timer fired: the fail is withheld.
        'stale_check_interval = 0\n[job_types."lifecycle"]\ntimeout = 3\n',
        # Watched while running: stopped soon after the timer fired.
        "stale_check_interval = 0.5\njob_timeout = 0\n",
    ],
    ids=["timeout", "watched"],
)
def test_a_job_interrupted_by_a_boundary_timer_never_fails_the_instance(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, piddir: Path, extra: str
) -> None:
    upload_timed_step(client, "timed")
    # The worker first, then the instance: its job must be claimed before the
    # 1 s timer fires (else it is cancelled unclaimed and never runs: under
    # load a supervisor's start-up took longer than that).
    sv = start_supervisor(workers=1, extra=extra)
    sv.wait_for_log("all 1 workers ready")
    (iid,) = start_instances(client, "timed", 1, {"piddir": str(piddir), "seconds": 60})
    victim = read_pid(piddir, iid)
    summary = engine.wait_for_instance(iid, "COMPLETED", timeout=20)
    assert summary["currentStepIds"] == [] or summary["currentStepIds"] is None
    wait_for(lambda: _gone(victim), 0.5 + KILL_GRACE + 8, "the interrupted job's worker to exit")
    sv.wait_for_log("no longer matters (instance COMPLETED")
    (job,) = engine.jobs(instance_id=iid)
    assert job["status"] == "CANCELLED"
    # No fail. The instance is over, so the job may be retired with an empty
    # completion (a no-op 204 for a job a timer cancelled, by the contract).
    assert job["failCalls"] == 0
    assert job["completeCalls"] <= 1
    assert engine.instance(iid)["status"] == "COMPLETED"
    _stop(sv)
    (job,) = engine.jobs(instance_id=iid)
    assert job["status"] == "CANCELLED"


def test_a_job_interrupted_while_its_instance_goes_on_is_stopped_by_its_history(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, piddir: Path
) -> None:
    upload_timed_step(client, "parked", park=True)
    sv = start_supervisor(workers=1, extra="stale_check_interval = 0.5\njob_timeout = 0\n")
    sv.wait_for_log("all 1 workers ready")  # claimed before its 1 s timer fires
    (iid,) = start_instances(client, "parked", 1, {"piddir": str(piddir), "seconds": 60})
    victim = read_pid(piddir, iid)
    wait_for(lambda: _gone(victim), 1 + 0.5 + KILL_GRACE + 8, "the interrupted job's worker")
    sv.wait_for_log("(step execution FAILED (interrupted by boundary timer))")
    status = engine.instance(iid)["status"]
    assert status in ("ACTIVE", "WAITING")
    (job,) = engine.jobs(instance_id=iid)
    assert (job["failCalls"], job["completeCalls"]) == (0, 0)
    log = _stop(sv)
    assert "1 stale" in log


@pytest.mark.lease(2)
@pytest.mark.parametrize("then", ["running", "nonretryable"])
def test_a_job_of_a_cancelled_instance_is_retired_not_handed_out_again(
    engine: LocalEngine,
    client: RestEngineClient,
    *,
    start_supervisor: Start,
    piddir: Path,
    then: str,
) -> None:
    """Found by the chaos suite: a job of a cancelled instance was stopped (or
    its fail withheld) and nothing was reported, so it stayed LOCKED, the
    engine handed it out again after each lease, and every supervisor ran
    its handler again, for ever. The sequence: job running, instance
    cancelled, stale stop (``running``) or a fail not sent (``nonretryable``),
    lease expiry. Now an empty completion retires the job (harmless for a
    cancelled instance, by the contract): one delivery, job COMPLETED, the
    instance CANCELLED with its variables unchanged."""
    upload_single_step(client, "retire", "lifecycle", retries=2)
    variables = {"piddir": str(piddir), "seconds": 60 if then == "running" else 1.0, "then": then}
    (iid,) = start_instances(client, "retire", 1, variables)
    interval = "0.5" if then == "running" else "0"
    sv = start_supervisor(workers=1, extra=f"stale_check_interval = {interval}\njob_timeout = 0\n")
    read_pid(piddir, iid)
    before = engine.instance(iid)["variables"]
    client.cancel_instance(iid, "user changed their mind")
    engine.wait_until(lambda: engine.jobs(instance_id=iid)[0]["status"] == "COMPLETED", timeout=20)
    (job,) = engine.jobs(instance_id=iid)
    assert job["deliveries"] == 1
    assert (job["failCalls"], job["completeCalls"]) == (0, 1)
    summary = engine.instance(iid)
    assert summary["status"] == "CANCELLED"
    assert summary["variables"] == before
    log = _stop(sv)
    assert "retired" in log
    assert "1 stale" in log
