"""The local engine's state machine, driven without HTTP."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from workflow_sdk.testing.store import EngineError, EngineState, format_time

END = {"id": "end", "name": "End", "type": "END"}


def _svc(step_id: str, next_step: str | None = "end", **extra: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"id": step_id, "name": step_id, "type": "SERVICE_TASK",
                            "jobType": step_id}  # fmt: skip
    if next_step:
        step["nextStep"] = next_step
    return {**step, **extra}


def _state(*steps: dict[str, Any], def_id: str = "d", **extra: Any) -> EngineState:
    state = EngineState()
    state.upload_definition({"id": def_id, "name": def_id, "steps": list(steps), **extra})
    return state


def _start(state: EngineState, variables: dict[str, Any] | None = None, def_id: str = "d") -> str:
    return str(state.start_instance(def_id, None, variables or {}, None)["id"])


def _claim(state: EngineState, job_type: str) -> dict[str, Any]:
    jobs = state.poll("w", [job_type], 1)["jobs"]
    assert jobs, f"no {job_type} job"
    return dict(jobs[0])


def test_format_time_keeps_microseconds_drops_trailing_zeros_and_shows_the_offset() -> None:
    zone = timezone(timedelta(hours=2))
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, 123456, zone)) == (
        "2026-01-02T03:04:05.123456+02:00"
    )
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, 120000, zone)) == (
        "2026-01-02T03:04:05.12+02:00"
    )
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, 0, timezone.utc)) == (
        "2026-01-02T03:04:05+00:00"
    )


def test_decision_takes_the_first_true_key_in_definition_order() -> None:
    state = _state(
        _svc("prep", "route"),
        {"id": "route", "name": "R", "type": "DECISION",
         "conditionalNextSteps": {"#n > 1": "b", "#n > 0": "a"}},
        _svc("a"),
        _svc("b"),
        END,
    )  # fmt: skip
    _start(state, {"n": 5})
    state.complete_job(_claim(state, "prep")["id"], {})
    assert state.poll("w", ["a"], 1)["jobs"] is None
    assert _claim(state, "b")


def test_a_service_task_without_next_step_routes_by_its_conditions() -> None:
    state = _state(_svc("a", None, conditionalNextSteps={"#ok == true": "end"}), END)
    instance_id = _start(state)
    state.complete_job(_claim(state, "a")["id"], {"ok": True})
    assert state.get_instance(instance_id)["status"] == "COMPLETED"


def test_a_dead_end_leaves_the_instance_active_for_ever() -> None:
    # "a" has neither nextStep nor conditions; END stays reachable through "b".
    state = _state(
        {"id": "p", "name": "P", "type": "PARALLEL_GATEWAY", "parallelNextSteps": ["a", "b"],
         "joinStep": "j"},
        _svc("a", None),
        _svc("b", "j"),
        {"id": "j", "name": "J", "type": "JOIN_GATEWAY", "nextStep": "end"},
        END,
    )  # fmt: skip
    instance_id = _start(state)
    state.complete_job(_claim(state, "a")["id"], {})
    state.complete_job(_claim(state, "b")["id"], {})
    instance = state.get_instance(instance_id)
    assert instance["status"] == "ACTIVE"  # the join waits for "a" for ever
    assert instance["currentStepIds"] == ["j"]


def test_fail_after_complete_acts_like_the_real_engine() -> None:
    state = _state(_svc("a", "b", retryCount=1), _svc("b"), END)
    instance_id = _start(state)
    job = _claim(state, "a")
    state.complete_job(job["id"], {})
    # Retries left: the completed job goes back to the queue.
    state.fail_job(job["id"], "late", retryable=True)
    assert _claim(state, "a")["id"] == job["id"]
    state.complete_job(job["id"], {})  # does not advance the instance a second time
    state.complete_job(_claim(state, "b")["id"], {})
    assert state.get_instance(instance_id)["status"] == "COMPLETED"
    # No retries left: even a finished instance becomes FAILED.
    state.fail_job(job["id"], "too late", retryable=True)
    failed = state.get_instance(instance_id)
    assert failed["status"] == "FAILED" and failed["failureReason"] == "too late"


def test_completing_a_job_of_a_failed_instance_changes_nothing_of_the_instance() -> None:
    state = _state(
        {"id": "p", "name": "P", "type": "PARALLEL_GATEWAY", "parallelNextSteps": ["a", "b"],
         "joinStep": "j"},
        _svc("a", "j"),
        _svc("b", "j"),
        {"id": "j", "name": "J", "type": "JOIN_GATEWAY", "nextStep": "end"},
        END,
    )  # fmt: skip
    instance_id = _start(state)
    a, b = _claim(state, "a"), _claim(state, "b")
    state.fail_job(a["id"], "broken", retryable=False)
    state.complete_job(b["id"], {"x": 1})
    instance = state.get_instance(instance_id)
    assert instance["status"] == "FAILED" and "variables" not in instance
    assert sorted(instance["currentStepIds"]) == ["a", "b"]


def test_parallel_user_task_branch_makes_the_instance_waiting() -> None:
    state = _state(
        {"id": "p", "name": "P", "type": "PARALLEL_GATEWAY", "parallelNextSteps": ["s", "u"],
         "joinStep": "j"},
        _svc("s", "j"),
        {"id": "u", "name": "U", "type": "USER_TASK", "nextStep": "j"},
        {"id": "j", "name": "J", "type": "JOIN_GATEWAY", "nextStep": "end"},
        END,
    )  # fmt: skip
    instance_id = _start(state)
    assert state.get_instance(instance_id)["status"] == "WAITING"
    state.complete_user_task(instance_id, "u", {})
    assert state.get_instance(instance_id)["status"] == "ACTIVE"  # the service branch runs
    state.complete_job(_claim(state, "s")["id"], {})
    assert state.get_instance(instance_id)["status"] == "COMPLETED"
    steps = [item["StepID"] for item in state.history(instance_id)["items"]]
    assert steps.count("j") == 1 and steps[-1] == "end"


def test_transformation_of_an_undefined_variable_fails_the_instance() -> None:
    state = _state(
        {"id": "t", "name": "T", "type": "TRANSFORMATION", "nextStep": "end",
         "transformations": {"copy": "${missing}"}},
        END,
    )  # fmt: skip
    instance = state.get_instance(_start(state))
    assert instance["status"] == "FAILED"
    assert "missing" in instance["failureReason"]


def test_a_loop_of_automatic_steps_fails_instead_of_hanging() -> None:
    state = _state(
        {"id": "d1", "name": "D", "type": "DECISION",
         "conditionalNextSteps": {"#stop == true": "end", "#stop == false": "t"}},
        {"id": "t", "name": "T", "type": "TRANSFORMATION", "nextStep": "d1",
         "transformations": {"n": 1}},
        END,
    )  # fmt: skip
    instance = state.get_instance(_start(state, {"stop": False}))
    assert instance["status"] == "FAILED"
    assert "loops" in instance["failureReason"]


def test_chaining_to_a_missing_workflow_is_recorded() -> None:
    state = _state(_svc("a"), END, autoStartNextWorkflow=True, nextWorkflowId="missing")
    instance_id = _start(state)
    state.complete_job(_claim(state, "a")["id"], {"v": 1})
    assert state.get_instance(instance_id)["status"] == "COMPLETED"
    assert len(state.chain_errors) == 1 and "missing" in state.chain_errors[0]


def test_history_ids_rise_and_end_gets_an_item() -> None:
    state = _state(
        {"id": "t", "name": "T", "type": "TRANSFORMATION", "nextStep": "end",
         "transformations": {"a": 1}},
        END,
    )  # fmt: skip
    items = state.history(_start(state))["items"]
    assert [(i["StepID"], i["Status"]) for i in items] == [("t", "COMPLETED"), ("end", "COMPLETED")]
    assert items[0]["ID"] < items[1]["ID"]
    assert all(re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", i["ID"]) for i in items)


def test_poll_takes_the_oldest_over_several_types() -> None:
    state = EngineState()
    for job_type in ("x", "y"):
        state.upload_definition({"id": job_type, "name": job_type,
                                 "steps": [_svc(job_type), END]})  # fmt: skip
    first = _start(state, def_id="y")
    second = _start(state, def_id="x")
    third = _start(state, def_id="y")
    jobs = state.poll("w", ["x", "y", "x"], 10)["jobs"]
    assert [job["instanceId"] for job in jobs] == [first, second, third]


def test_errors_carry_status_and_code() -> None:
    state = EngineState()
    with pytest.raises(EngineError) as caught:
        state.complete_job("nope", {})
    assert (caught.value.status, caught.value.code) == (500, "internal-error")
    with pytest.raises(EngineError) as caught:
        state.get_instance("nope")
    assert (caught.value.status, caught.value.code) == (404, "not-found")
    with pytest.raises(EngineError) as caught:
        state.upload_definition({"id": "x"})
    assert (caught.value.status, caught.value.code) == (400, "bad-request")


def test_extra_poll_items_ride_on_the_next_answer_that_claims_a_job_once() -> None:
    state = _state(_svc("a"), END)
    state.poll_extras.extend([{"jobType": "a"}, "junk"])
    assert state.poll("w", ["a"], 5)["jobs"] is None  # an empty answer keeps them
    _start(state)
    jobs = state.poll("w", ["a"], 5)["jobs"]
    assert jobs[:2] == [{"jobType": "a"}, "junk"] and jobs[2]["jobType"] == "a"
    assert state.counters["poll_extras_sent"] == 2
    _start(state)
    assert len(state.poll("w", ["a"], 5)["jobs"]) == 1
