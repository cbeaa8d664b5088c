"""Boundary timers in the local engine (ENGINE_CONTRACT.md, "When a job goes
stale"). State tests use PT0S timers, due at once, and fire them by calling
``fire_timers()``: no waiting. The last tests let the engine's own timer
thread fire them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from workflow_sdk.testing import LocalEngine
from workflow_sdk.testing.store import INTERRUPTED_REASON, EngineError, EngineState

END = {"id": "end", "name": "End", "type": "END"}


def _timer(target: str, interrupting: bool = True, duration: str = "PT0S") -> dict[str, Any]:
    return {"type": "TIMER", "duration": duration, "interrupting": interrupting,
            "targetStepId": target}  # fmt: skip


def _svc(step_id: str, next_step: str = "end", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "name": step_id, "type": "SERVICE_TASK", "jobType": step_id,
            "nextStep": next_step, **extra}  # fmt: skip


def _state(*steps: dict[str, Any]) -> tuple[EngineState, str]:
    state = EngineState()
    state.upload_definition({"id": "d", "name": "d", "steps": list(steps)})
    return state, str(state.start_instance("d", None, {}, None)["id"])


def _claim(state: EngineState, job_type: str) -> dict[str, Any]:
    jobs = state.poll("w", [job_type], 1)["jobs"]
    assert jobs, f"no {job_type} job"
    return dict(jobs[0])


def _item(state: EngineState, instance_id: str, step_id: str) -> dict[str, Any]:
    (item,) = [i for i in state.inspect_history(instance_id) if i["StepID"] == step_id]
    return item


def _interrupted() -> tuple[EngineState, str, dict[str, Any]]:
    """ "slow" claimed, then its interrupting timer fired towards "late"."""
    state, instance_id = _state(_svc("slow", boundaryEvents=[_timer("late")]), _svc("late"), END)
    job = _claim(state, "slow")
    assert state.fire_timers() == 1
    return state, instance_id, job


def test_an_interrupting_timer_fails_the_step_cancels_the_job_and_takes_its_path() -> None:
    state, instance_id, job = _interrupted()
    item = _item(state, instance_id, "slow")
    assert item["Status"] == "FAILED" and item["FailureReason"] == INTERRUPTED_REASON
    assert item["EndedAt"] is not None
    assert INTERRUPTED_REASON == "interrupted by boundary timer"
    assert state.inspect_job(job["id"])["status"] == "CANCELLED"
    assert [j["id"] for j in state.inspect_jobs(status="CANCELLED")] == [job["id"]]
    instance = state.get_instance(instance_id)
    assert instance["status"] == "ACTIVE" and instance["currentStepIds"] == ["late"]
    assert state.counters["timers_fired"] == 1 and state.counters["jobs_cancelled"] == 1
    state.complete_job(_claim(state, "late")["id"], {})
    assert state.get_instance(instance_id)["status"] == "COMPLETED"


def test_a_cancelled_job_is_never_handed_out_again() -> None:
    state, _, job = _interrupted()
    assert state.poll("w", ["slow"], 5)["jobs"] is None
    assert state.expire_leases() == 0  # and its lease is not swept back either
    assert state.inspect_job(job["id"])["status"] == "CANCELLED"


def test_an_unclaimed_job_is_cancelled_too() -> None:
    state, _ = _state(_svc("slow", boundaryEvents=[_timer("late")]), _svc("late"), END)
    assert state.fire_timers() == 1
    assert state.poll("w", ["slow"], 5)["jobs"] is None
    assert state.inspect_jobs(job_type="slow")[0]["status"] == "CANCELLED"


def test_completing_a_cancelled_job_is_a_no_op() -> None:
    state, instance_id, job = _interrupted()
    state.complete_job(job["id"], {"late": True})
    instance = state.get_instance(instance_id)
    assert instance["currentStepIds"] == ["late"] and "variables" not in instance
    assert _item(state, instance_id, "slow")["Status"] == "FAILED"
    assert state.inspect_job(job["id"])["status"] == "CANCELLED"
    assert state.inspect_job(job["id"])["completeCalls"] == 1


def test_failing_a_cancelled_job_fails_the_instance() -> None:
    state, instance_id, job = _interrupted()
    state.fail_job(job["id"], "handler timed out", retryable=False)
    instance = state.get_instance(instance_id)
    assert instance["status"] == "FAILED" and instance["failureReason"] == "handler timed out"


def test_failing_a_cancelled_job_fails_even_a_completed_instance() -> None:
    # The engine's own timer-interrupting scenario: the timer path completes
    # the instance, then the slow worker's timeout fail turns it FAILED.
    state, instance_id, job = _interrupted()
    state.complete_job(_claim(state, "late")["id"], {})
    assert state.get_instance(instance_id)["status"] == "COMPLETED"
    state.fail_job(job["id"], "timeout", retryable=False)
    assert state.get_instance(instance_id)["status"] == "FAILED"


def test_a_retryable_fail_with_retries_left_requeues_a_cancelled_job() -> None:
    state, instance_id = _state(
        _svc("slow", retryCount=1, boundaryEvents=[_timer("late")]), _svc("late"), END
    )
    job = _claim(state, "slow")
    state.fire_timers()
    state.fail_job(job["id"], "flaky", retryable=True)
    again = _claim(state, "slow")  # it will run again, as on the real engine
    assert again["id"] == job["id"] and again["retriesRemaining"] == 0
    assert state.get_instance(instance_id)["status"] == "ACTIVE"


def test_an_interrupting_timer_can_lead_straight_to_the_end() -> None:
    state, instance_id = _state(_svc("slow", boundaryEvents=[_timer("end")]), END)
    state.fire_timers()
    instance = state.get_instance(instance_id)
    assert instance["status"] == "COMPLETED"
    assert [(i["StepID"], i["Status"]) for i in state.inspect_history(instance_id)] == [
        ("slow", "FAILED"),
        ("end", "COMPLETED"),
    ]


def test_a_non_interrupting_timer_starts_its_path_beside_the_step() -> None:
    state, instance_id = _state(
        _svc("slow", boundaryEvents=[_timer("notify", interrupting=False)]),
        _svc("notify", "end"),
        END,
    )
    job = _claim(state, "slow")
    assert state.fire_timers() == 1
    assert state.fire_timers() == 0  # it fires once
    assert state.inspect_job(job["id"])["status"] == "LOCKED"
    assert _item(state, instance_id, "slow")["Status"] == "RUNNING"
    assert state.get_instance(instance_id)["currentStepIds"] == ["slow", "notify"]
    state.complete_job(job["id"], {"slow": "done"})
    state.complete_job(_claim(state, "notify")["id"], {})
    instance = state.get_instance(instance_id)
    assert instance["status"] == "COMPLETED" and instance["variables"] == {"slow": "done"}


def test_a_non_interrupting_timer_on_a_wait_step() -> None:
    # The shape of the engine's timer.json scenario.
    state, instance_id = _state(
        {"id": "wait", "name": "Wait", "type": "WAIT", "nextStep": "end",
         "boundaryEvents": [_timer("fired", interrupting=False)]},
        _svc("fired"),
        END,
    )  # fmt: skip
    assert state.get_instance(instance_id)["status"] == "WAITING"
    state.fire_timers()
    state.complete_job(_claim(state, "fired")["id"], {})
    assert state.get_instance(instance_id)["status"] == "COMPLETED"


def test_an_interrupting_timer_on_a_user_task_closes_the_task() -> None:
    state, instance_id = _state(
        {"id": "review", "name": "Review", "type": "USER_TASK", "nextStep": "end",
         "boundaryEvents": [_timer("escalate")]},
        _svc("escalate"),
        END,
    )  # fmt: skip
    state.fire_timers()
    assert state.get_instance(instance_id)["status"] == "ACTIVE"
    with pytest.raises(EngineError) as caught:
        state.complete_user_task(instance_id, "review", {})
    assert caught.value.status == 404


def test_a_timer_whose_step_ended_first_does_not_fire() -> None:
    state, instance_id = _state(_svc("quick", boundaryEvents=[_timer("late")]), _svc("late"), END)
    state.complete_job(_claim(state, "quick")["id"], {})
    assert state.fire_timers() == 0
    assert state.get_instance(instance_id)["status"] == "COMPLETED"
    assert state.inspect_jobs(job_type="late") == []


def test_a_timer_of_a_cancelled_instance_does_not_fire() -> None:
    state, instance_id = _state(_svc("slow", boundaryEvents=[_timer("late")]), _svc("late"), END)
    job = _claim(state, "slow")
    state.cancel_instance(instance_id, "stop")
    assert state.fire_timers() == 0
    assert state.inspect_job(job["id"])["status"] == "LOCKED"
    assert _item(state, instance_id, "slow")["Status"] == "RUNNING"


def test_a_timer_fires_only_when_due_and_is_listed_until_then() -> None:
    state, instance_id = _state(
        _svc("slow", boundaryEvents=[_timer("late", duration="PT1H")]), _svc("late"), END
    )
    assert state.fire_timers() == 0
    (pending,) = state.pending_timers()
    assert pending["instanceId"] == instance_id and pending["stepId"] == "slow"
    assert pending["targetStepId"] == "late" and pending["interrupting"] is True
    assert pending["duration"] == "PT1H" and 3500 < pending["dueInSeconds"] <= 3600
    state.complete_job(_claim(state, "slow")["id"], {})
    assert state.pending_timers() == []


def test_reset_forgets_timers() -> None:
    state, _ = _state(
        _svc("slow", boundaryEvents=[_timer("late", duration="PT1H")]), _svc("late"), END
    )
    state.reset()
    assert state.pending_timers() == []


# -- the engine's own timer thread, over HTTP -------------------------------------------


def test_the_engine_fires_timers_by_itself(
    local_engine_factory: Callable[..., LocalEngine],
) -> None:
    engine: LocalEngine = local_engine_factory(timer_interval=0.05)
    assert engine.timer_interval == 0.05
    with engine.client() as client:
        client.upload_definition(
            {"id": "t", "name": "t", "steps": [
                _svc("slow", boundaryEvents=[_timer("late", duration="PT0.2S")]),
                _svc("late"), END]}
        )  # fmt: skip
        instance_id = client.start_instance("t")["id"]
        (job,) = client.poll_jobs("w", ["slow"], 1)
        engine.wait_until(lambda: engine.jobs("CANCELLED"), timeout=10)
        client.complete_job(job["id"], "w", {})  # a 204, and a no-op
        # The timer's path was entered under the same lock as the cancel.
        (late,) = client.poll_jobs("w", ["late"], 1)
        assert engine.instance(instance_id)["currentStepIds"] == ["late"]
        client.complete_job(late["id"], "w", {})
        engine.wait_for_instance(instance_id, "COMPLETED")
        assert engine.counters["timers_fired"] == 1


def test_timer_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timer_interval"):
        LocalEngine(timer_interval=0)
    assert LocalEngine().timer_interval == 0.5
