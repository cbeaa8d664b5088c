"""A cancelled instance's jobs, as the real engine treats them
(ENGINE_CONTRACT.md, "When a job goes stale"): driven without HTTP."""

from __future__ import annotations

from typing import Any

from workflow_sdk.testing.store import EngineState

END = {"id": "end", "name": "End", "type": "END"}


def _svc(step_id: str, next_step: str = "end", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "name": step_id, "type": "SERVICE_TASK", "jobType": step_id,
            "nextStep": next_step, **extra}  # fmt: skip


def _cancelled_with_a_locked_job(retries: int = 0) -> tuple[EngineState, str, dict[str, Any]]:
    state = EngineState()
    state.upload_definition(
        {"id": "d", "name": "d", "steps": [_svc("a", "b", retryCount=retries), _svc("b"), END]}
    )
    instance_id = str(state.start_instance("d", None, {"n": 1}, None)["id"])
    (job,) = state.poll("w", ["a"], 1)["jobs"]
    state.cancel_instance(instance_id, "stop")
    return state, instance_id, dict(job)


def _item(state: EngineState, instance_id: str, job: dict[str, Any]) -> dict[str, Any]:
    (item,) = [i for i in state.inspect_history(instance_id) if i["ID"] == job["stepExecutionId"]]
    return item


def test_cancel_changes_only_the_instance() -> None:
    state, instance_id, job = _cancelled_with_a_locked_job()
    assert state.inspect_job(job["id"])["status"] == "LOCKED"
    assert _item(state, instance_id, job)["Status"] == "RUNNING"
    instance = state.get_instance(instance_id)
    assert instance["status"] == "CANCELLED" and instance["currentStepIds"] == ["a"]


def test_a_pending_job_of_a_cancelled_instance_is_still_handed_out() -> None:
    state = EngineState()
    state.upload_definition({"id": "d", "name": "d", "steps": [_svc("a"), END]})
    instance_id = str(state.start_instance("d", None, {}, None)["id"])
    state.cancel_instance(instance_id, "")
    (job,) = state.poll("w", ["a"], 1)["jobs"]
    assert job["instanceId"] == instance_id


def test_completing_it_completes_only_the_job_and_its_step() -> None:
    """Pins the contract's corrected text: a complete of a cancelled
    instance's job marks the job and its step execution COMPLETED; the
    instance stays CANCELLED with its variables, and does not move on."""
    state, instance_id, job = _cancelled_with_a_locked_job()
    state.complete_job(job["id"], {"late": True})
    instance = state.get_instance(instance_id)
    assert instance["status"] == "CANCELLED" and instance["failureReason"] == "stop"
    assert instance["variables"] == {"n": 1}
    assert instance["currentStepIds"] == ["a"]
    item = _item(state, instance_id, job)
    assert item["Status"] == "COMPLETED" and item["EndedAt"] is not None
    assert item["FailureReason"] is None
    assert state.inspect_job(job["id"])["status"] == "COMPLETED"
    assert state.poll("w", ["b"], 1)["jobs"] is None  # the instance did not move on
    ended = item["EndedAt"]
    state.complete_job(job["id"], {"again": True})  # a no-op now
    assert _item(state, instance_id, job)["EndedAt"] == ended
    assert state.get_instance(instance_id)["variables"] == {"n": 1}


def test_completing_a_job_of_a_failed_instance_completes_only_the_job_and_its_step() -> None:
    """The same for a finished instance: branch b failed the instance while
    branch a's job was held by a worker; a's late complete marks a's job and
    step COMPLETED, the instance stays FAILED with its variables."""
    state = EngineState()
    parallel = {
        "id": "p",
        "name": "p",
        "type": "PARALLEL_GATEWAY",
        "parallelNextSteps": ["a", "b"],
        "joinStep": "j",
    }
    join = {"id": "j", "name": "j", "type": "JOIN_GATEWAY", "nextStep": "end"}
    state.upload_definition(
        {"id": "d", "name": "d", "steps": [parallel, _svc("a", "j"), _svc("b", "j"), join, END]}
    )  # fmt: skip
    instance_id = str(state.start_instance("d", None, {"n": 1}, None)["id"])
    (job_a,) = state.poll("w", ["a"], 1)["jobs"]
    (job_b,) = state.poll("w", ["b"], 1)["jobs"]
    state.fail_job(job_b["id"], "b broke", retryable=False)
    assert state.get_instance(instance_id)["status"] == "FAILED"
    state.complete_job(job_a["id"], {"late": True})
    instance = state.get_instance(instance_id)
    assert instance["status"] == "FAILED" and instance["failureReason"] == "b broke"
    assert instance["variables"] == {"n": 1}
    assert _item(state, instance_id, dict(job_a))["Status"] == "COMPLETED"
    assert _item(state, instance_id, dict(job_b))["Status"] == "FAILED"


def test_a_non_retryable_fail_turns_the_cancelled_instance_failed() -> None:
    state, instance_id, job = _cancelled_with_a_locked_job(retries=2)
    state.fail_job(job["id"], "worker gave up", retryable=False)
    instance = state.get_instance(instance_id)
    assert instance["status"] == "FAILED" and instance["failureReason"] == "worker gave up"
    item = _item(state, instance_id, job)
    assert item["Status"] == "FAILED" and item["FailureReason"] == "worker gave up"
    assert state.inspect_job(job["id"])["status"] == "FAILED"


def test_a_retryable_fail_with_no_retries_left_fails_it_too() -> None:
    state, instance_id, job = _cancelled_with_a_locked_job(retries=0)
    state.fail_job(job["id"], "timeout", retryable=True)
    assert state.get_instance(instance_id)["status"] == "FAILED"


def test_a_retryable_fail_with_retries_left_requeues_the_job() -> None:
    state, instance_id, job = _cancelled_with_a_locked_job(retries=2)
    state.fail_job(job["id"], "flaky", retryable=True)
    assert state.get_instance(instance_id)["status"] == "CANCELLED"
    (again,) = state.poll("w2", ["a"], 1)["jobs"]
    assert again["id"] == job["id"] and again["retriesRemaining"] == 1
    assert _item(state, instance_id, job)["Status"] == "RUNNING"


def test_a_fail_after_the_instance_completed_fails_it() -> None:
    # Completed by another path while "a" was still claimed (a parallel branch).
    state = EngineState()
    state.upload_definition(
        {"id": "d", "name": "d", "steps": [
            {"id": "p", "name": "P", "type": "PARALLEL_GATEWAY", "parallelNextSteps": ["a", "b"],
             "joinStep": "j"},
            _svc("a", "j"), _svc("b", "end"),
            {"id": "j", "name": "J", "type": "JOIN_GATEWAY", "nextStep": "end"}, END]}
    )  # fmt: skip
    instance_id = str(state.start_instance("d", None, {}, None)["id"])
    (a,) = state.poll("w", ["a"], 1)["jobs"]
    (b,) = state.poll("w", ["b"], 1)["jobs"]
    state.complete_job(b["id"], {})
    assert state.get_instance(instance_id)["status"] == "COMPLETED"
    state.fail_job(a["id"], "too late", retryable=False)
    instance = state.get_instance(instance_id)
    assert instance["status"] == "FAILED" and instance["failureReason"] == "too late"
