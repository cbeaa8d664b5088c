"""Step types: USER_TASK, WAIT, DECISION, TRANSFORMATION, gateways (ENGINE_CONTRACT.md)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from contract_support import definition, end, poll_n, poll_one, run_job, service, step, wait_status

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import EngineClientError


def _status_of(call: Any) -> int:
    with pytest.raises(EngineClientError) as caught:
        call()
    assert caught.value.message and not caught.value.message.startswith("{")
    return caught.value.status_code


# -- USER_TASK -------------------------------------------------------------------


def _user_task_flow(client: RestEngineClient, uid: str) -> str:
    def_id = f"c-user-{uid}"
    client.upload_definition(
        definition(
            def_id,
            service("before", f"before-{uid}", "review"),
            step("review", "USER_TASK", nextStep="after"),
            service("after", f"after-{uid}"),
            end(),
        )
    )
    return def_id


def test_user_task_parks_the_instance_until_completed(client: RestEngineClient, uid: str) -> None:
    instance_id = client.start_instance(_user_task_flow(client, uid), {"a": 1})["id"]
    run_job(client, f"before-{uid}")
    waiting = wait_status(client, instance_id, "WAITING")
    assert waiting["currentStepIds"] == ["review"]

    client.complete_user_task(instance_id, "review", "reviewer-1", {"approved": True})
    job = poll_one(client, f"after-{uid}")
    assert job["variables"] == {"a": 1, "approved": True}
    assert client.get_instance(instance_id)["status"] == "ACTIVE"
    client.complete_job(job["id"], "contract-worker", {})
    wait_status(client, instance_id, "COMPLETED")


def test_user_task_errors(client: RestEngineClient, uid: str) -> None:
    def_id = _user_task_flow(client, uid)
    instance_id = client.start_instance(def_id)["id"]
    # Not parked yet: the service task runs first.
    assert _status_of(lambda: client.complete_user_task(instance_id, "review")) == 404
    assert _status_of(lambda: client.complete_user_task(instance_id, "before")) == 400
    assert _status_of(lambda: client.complete_user_task(instance_id, "no-such-step")) == 404
    unknown = str(uuid.uuid4())
    assert _status_of(lambda: client.complete_user_task(unknown, "review")) == 404

    run_job(client, f"before-{uid}")
    wait_status(client, instance_id, "WAITING")
    client.complete_user_task(instance_id, "review", result={"ok": 1})
    # Repeated call: no open user task at that step any more.
    assert _status_of(lambda: client.complete_user_task(instance_id, "review")) == 404

    finished = client.start_instance(def_id)["id"]
    client.cancel_instance(finished, "done with it")
    assert _status_of(lambda: client.complete_user_task(finished, "review")) == 409


# -- WAIT and signals ------------------------------------------------------------------


def _wait_flow(client: RestEngineClient, uid: str) -> str:
    def_id = f"c-signal-{uid}"
    client.upload_definition(
        definition(
            def_id,
            service("prepare", f"prepare-{uid}", "hold"),
            step("hold", "WAIT", nextStep="after"),
            service("after", f"after-{uid}"),
            end(),
        )
    )
    return def_id


def test_signal_resumes_a_wait_step_with_variables(client: RestEngineClient, uid: str) -> None:
    instance_id = client.start_instance(_wait_flow(client, uid), {"a": 1})["id"]
    run_job(client, f"prepare-{uid}")
    assert wait_status(client, instance_id, "WAITING")["currentStepIds"] == ["hold"]
    client.signal(instance_id, "hold", {"paid": True})
    job = poll_one(client, f"after-{uid}")
    assert job["variables"] == {"a": 1, "paid": True}


def test_signal_with_no_variables(client: RestEngineClient, uid: str) -> None:
    def_id = f"c-signal0-{uid}"
    client.upload_definition(definition(def_id, step("hold", "WAIT", nextStep="end"), end()))
    instance_id = client.start_instance(def_id)["id"]
    wait_status(client, instance_id, "WAITING")
    client.signal(instance_id, "hold")
    wait_status(client, instance_id, "COMPLETED")


def test_signal_errors(client: RestEngineClient, uid: str) -> None:
    def_id = _wait_flow(client, uid)
    instance_id = client.start_instance(def_id)["id"]
    assert _status_of(lambda: client.signal(instance_id, "hold")) == 409  # not parked yet
    assert _status_of(lambda: client.signal(instance_id, "no-such-step")) == 409
    assert _status_of(lambda: client.signal(instance_id, "prepare")) == 400  # not a WAIT
    assert _status_of(lambda: client.signal(str(uuid.uuid4()), "hold")) == 404

    run_job(client, f"prepare-{uid}")
    wait_status(client, instance_id, "WAITING")
    client.signal(instance_id, "hold")
    assert _status_of(lambda: client.signal(instance_id, "hold")) == 409  # repeated

    finished = client.start_instance(def_id)["id"]
    client.cancel_instance(finished)
    assert _status_of(lambda: client.signal(finished, "hold")) == 409


# -- DECISION --------------------------------------------------------------------------


def _decision_flow(client: RestEngineClient, uid: str, conditions: dict[str, str]) -> str:
    def_id = f"c-decide-{uid}"
    client.upload_definition(
        definition(
            def_id,
            service("prepare", f"prepare-{uid}", "route"),
            step("route", "DECISION", conditionalNextSteps=conditions),
            service("yes", f"yes-{uid}"),
            service("no", f"no-{uid}"),
            end(),
        )
    )
    return def_id


@pytest.mark.parametrize(("result", "branch"), [("approved", "yes"), ("rejected", "no")])
def test_decision_takes_the_matching_branch(
    client: RestEngineClient, uid: str, result: str, branch: str
) -> None:
    def_id = _decision_flow(
        client, uid, {"#result == 'approved'": "yes", "#result != 'approved'": "no"}
    )
    instance_id = client.start_instance(def_id)["id"]
    run_job(client, f"prepare-{uid}", {"result": result})
    run_job(client, f"{branch}-{uid}")
    wait_status(client, instance_id, "COMPLETED")
    steps = [item["stepId"] for item in client.get_instance_history(instance_id)]
    assert steps == ["prepare", "route", branch, "end"]


def test_decision_with_numbers_and_booleans(client: RestEngineClient, uid: str) -> None:
    def_id = _decision_flow(
        client,
        uid,
        {"#score >= 650 && #verified == true": "yes", "#score < 650 || #verified == false": "no"},
    )
    instance_id = client.start_instance(def_id)["id"]
    run_job(client, f"prepare-{uid}", {"score": 700, "verified": True})
    run_job(client, f"yes-{uid}")
    wait_status(client, instance_id, "COMPLETED")


def test_decision_without_a_match_fails_the_instance(client: RestEngineClient, uid: str) -> None:
    def_id = _decision_flow(
        client, uid, {"#result == 'approved'": "yes", "#result == 'rejected'": "no"}
    )
    instance_id = client.start_instance(def_id)["id"]
    run_job(client, f"prepare-{uid}", {"result": "unclear"})
    failed = wait_status(client, instance_id, "FAILED")
    assert "DecisionNoBranchMatched" in failed["failureReason"]


def test_decision_on_an_undefined_variable_fails_the_instance(
    client: RestEngineClient, uid: str
) -> None:
    def_id = _decision_flow(client, uid, {"#missing == 'x'": "yes", "#missing != 'x'": "no"})
    instance_id = client.start_instance(def_id)["id"]
    run_job(client, f"prepare-{uid}", {"result": "approved"})
    assert wait_status(client, instance_id, "FAILED")["failureReason"]


# -- TRANSFORMATION ------------------------------------------------------------------


def test_transformation_sets_literals_and_copies_variables(
    client: RestEngineClient, uid: str
) -> None:
    def_id = f"c-transform-{uid}"
    client.upload_definition(
        definition(
            def_id,
            service("init", f"init-{uid}", "shape"),
            step(
                "shape",
                "TRANSFORMATION",
                nextStep="end",
                transformations={"fullName": "${firstName}", "greeting": "Hello", "score": 42},
            ),
            end(),
        )
    )
    instance_id = client.start_instance(def_id)["id"]
    run_job(client, f"init-{uid}", {"firstName": "Alice"})
    done = wait_status(client, instance_id, "COMPLETED")
    assert done["variables"] == {
        "firstName": "Alice",
        "fullName": "Alice",
        "greeting": "Hello",
        "score": 42,
    }


# -- PARALLEL_GATEWAY / JOIN_GATEWAY ---------------------------------------------------


def test_parallel_branches_join_before_going_on(client: RestEngineClient, uid: str) -> None:
    def_id = f"c-parallel-{uid}"
    client.upload_definition(
        definition(
            def_id,
            step("fork", "PARALLEL_GATEWAY", parallelNextSteps=["left", "right"], joinStep="join"),
            service("left", f"left-{uid}", "join"),
            service("right", f"right-{uid}", "join"),
            step("join", "JOIN_GATEWAY", nextStep="merge"),
            service("merge", f"merge-{uid}"),
            end(),
        )
    )
    instance_id = client.start_instance(def_id, {"base": 0})["id"]
    started = client.get_instance(instance_id)
    assert started["status"] == "ACTIVE"
    assert sorted(started["currentStepIds"]) == ["left", "right"]

    run_job(client, f"left-{uid}", {"left": 1})
    # One branch done: the join waits, no merge job yet.
    assert client.poll_jobs("contract-worker", [f"merge-{uid}"], 5) == []
    assert client.get_instance(instance_id)["status"] == "ACTIVE"
    run_job(client, f"right-{uid}", {"right": 2})
    merge = poll_one(client, f"merge-{uid}")
    assert merge["variables"] == {"base": 0, "left": 1, "right": 2}
    client.complete_job(merge["id"], "contract-worker", {})
    wait_status(client, instance_id, "COMPLETED")
    steps = {item["stepId"] for item in client.get_instance_history(instance_id)}
    assert steps == {"fork", "left", "right", "join", "merge", "end"}


def test_parallel_with_a_user_task_waits_on_it(client: RestEngineClient, uid: str) -> None:
    def_id = f"c-par-user-{uid}"
    client.upload_definition(
        definition(
            def_id,
            step("fork", "PARALLEL_GATEWAY", parallelNextSteps=["svc", "human"], joinStep="join"),
            service("svc", f"svc-{uid}", "join"),
            step("human", "USER_TASK", nextStep="join"),
            step("join", "JOIN_GATEWAY", nextStep="end"),
            end(),
        )
    )
    instance_id = client.start_instance(def_id)["id"]
    assert wait_status(client, instance_id, "WAITING")
    run_job(client, f"svc-{uid}")
    assert wait_status(client, instance_id, "WAITING")
    client.complete_user_task(instance_id, "human", result={"userTaskDone": True})
    done = wait_status(client, instance_id, "COMPLETED")
    assert done["variables"] == {"userTaskDone": True}


def test_each_branch_job_carries_the_snapshot_of_its_creation(
    client: RestEngineClient, uid: str
) -> None:
    def_id = f"c-snap-{uid}"
    client.upload_definition(
        definition(
            def_id,
            step("fork", "PARALLEL_GATEWAY", parallelNextSteps=["p", "q"], joinStep="join"),
            service("p", f"p-{uid}", "join", retryCount=1),
            service("q", f"q-{uid}", "join", retryCount=1),
            step("join", "JOIN_GATEWAY", nextStep="end"),
            end(),
        )
    )
    client.start_instance(def_id, {"v": 0})
    q = poll_one(client, f"q-{uid}")
    run_job(client, f"p-{uid}", {"fromP": True})  # changes the instance's variables
    client.fail_job(q["id"], "contract-worker", "retry me", retryable=True)
    (again,) = poll_n(client, f"q-{uid}", 1)
    assert again["variables"] == {"v": 0}  # the redelivery carries the old snapshot
