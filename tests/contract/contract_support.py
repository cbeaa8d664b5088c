"""Definition builders and deadline-based waits for the contract suite."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from workflow_sdk.client.models import parse_timestamp
from workflow_sdk.client.rest import RestEngineClient

TIMEOUT = 10.0
# A timer fires up to one sweep after it is due: the real engine sweeps every
# 5 s, so a PT1S timer may take 6 s there (the local suite's engine: 0.1 s).
TIMER_TIMEOUT = 20.0

T = TypeVar("T")


def service(
    step_id: str, job_type: str, next_step: str | None = "end", **extra: Any
) -> dict[str, Any]:
    step: dict[str, Any] = {
        "id": step_id,
        "name": step_id,
        "type": "SERVICE_TASK",
        "jobType": job_type,
    }
    if next_step:
        step["nextStep"] = next_step
    step.update(extra)
    return step


def step(step_id: str, step_type: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "name": step_id, "type": step_type, **extra}


def end(step_id: str = "end") -> dict[str, Any]:
    return step(step_id, "END")


def definition(definition_id: str, *steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": definition_id, "name": f"contract {definition_id}", "steps": list(steps), **extra}


def wait_status(
    client: RestEngineClient, instance_id: str, status: str, timeout: float = TIMEOUT
) -> dict[str, Any]:
    """Poll the instance until it has ``status``; fail with the last one seen."""
    deadline = time.monotonic() + timeout
    while True:
        instance = client.get_instance(instance_id)
        if instance["status"] == status:
            return instance
        if time.monotonic() > deadline:
            raise AssertionError(
                f"instance {instance_id} is {instance['status']} "
                f"({instance.get('failureReason')!r}), expected {status}"
            )
        time.sleep(0.02)  # polling with a deadline: a real engine may lag


def wait_for(check: Callable[[], T | None], what: str, timeout: float = TIMEOUT) -> T:
    """Call ``check`` until it returns something other than None; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout} s")
        time.sleep(0.02)  # polling with a deadline: a real engine may lag


def history_item(
    client: RestEngineClient, instance_id: str, step_execution_id: str
) -> dict[str, Any]:
    """The history item of one step execution (a job's ``stepExecutionId``)."""
    items = [i for i in client.get_instance_history(instance_id) if i["id"] == step_execution_id]
    assert len(items) == 1, f"{len(items)} history items with id {step_execution_id}"
    return items[0]


def timer(target: str, interrupting: bool, duration: str = "PT1S") -> dict[str, Any]:
    """A TIMER boundary event."""
    return {"type": "TIMER", "duration": duration, "interrupting": interrupting,
            "targetStepId": target}  # fmt: skip


def poll_one(
    client: RestEngineClient,
    job_type: str,
    worker: str = "contract-worker",
    timeout: float = TIMEOUT,
) -> dict[str, Any]:
    """Claim one job of ``job_type``, polling until one is there."""
    jobs = poll_n(client, job_type, 1, worker, timeout)
    return jobs[0]


def poll_n(
    client: RestEngineClient,
    job_type: str,
    count: int,
    worker: str = "contract-worker",
    timeout: float = TIMEOUT,
) -> list[dict[str, Any]]:
    """Claim exactly ``count`` jobs of ``job_type`` (several polls if needed)."""
    deadline = time.monotonic() + timeout
    jobs: list[dict[str, Any]] = []
    while len(jobs) < count:
        jobs.extend(client.poll_jobs(worker, [job_type], count - len(jobs)))
        if len(jobs) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(jobs)} of {count} {job_type} jobs in {timeout} s")
            time.sleep(0.02)
    return jobs


def run_job(
    client: RestEngineClient, job_type: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Claim one job of ``job_type`` and complete it; returns the job."""
    job = poll_one(client, job_type)
    client.complete_job(job["id"], "contract-worker", variables or {})
    return job


def ts(value: str) -> float:
    """An engine time stamp as epoch seconds (parsed with its offset)."""
    return parse_timestamp(value).timestamp()
