"""Instances: start, get, list, history, cancel (ENGINE_CONTRACT.md, "Instances")."""

from __future__ import annotations

import uuid

import pytest
from contract_support import definition, end, poll_one, run_job, service, step, ts, wait_status

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import EngineClientError

STATUSES = {"ACTIVE", "WAITING", "COMPLETED", "FAILED", "CANCELLED"}


def _upload_linear(client: RestEngineClient, uid: str, name: str = "lin") -> str:
    def_id = f"c-{name}-{uid}"
    client.upload_definition(
        definition(def_id, service("a", f"a-{uid}", "b"), service("b", f"b-{uid}"), end())
    )
    return def_id


def _upload_wait(client: RestEngineClient, uid: str) -> str:
    def_id = f"c-wait-{uid}"
    client.upload_definition(definition(def_id, step("hold", "WAIT", nextStep="end"), end()))
    return def_id


def test_start_answers_a_summary(client: RestEngineClient, uid: str) -> None:
    def_id = _upload_linear(client, uid)
    started = client.start_instance(def_id, {"amount": 5, "who": "ann"}, business_key=f"bk-{uid}")
    assert started["id"]
    assert started["definitionId"] == def_id
    assert started["definitionVersion"] == 1
    assert started["status"] == "ACTIVE"
    assert started["currentStepIds"] == ["a"]
    assert started["variables"] == {"amount": 5, "who": "ann"}
    assert started["businessKey"] == f"bk-{uid}"
    assert "completedAt" not in started
    ts(started["startedAt"])

    fetched = client.get_instance(started["id"])
    assert fetched["id"] == started["id"]
    assert fetched["status"] in STATUSES
    assert fetched["variables"] == {"amount": 5, "who": "ann"}


def test_start_takes_the_latest_or_the_given_version(client: RestEngineClient, uid: str) -> None:
    def_id = _upload_linear(client, uid)
    client.upload_definition(definition(def_id, service("only", f"o-{uid}"), end()))
    assert client.start_instance(def_id)["definitionVersion"] == 2
    old = client.start_instance(def_id, definition_version=1)
    assert old["definitionVersion"] == 1
    assert old["currentStepIds"] == ["a"]


def test_start_of_an_unknown_definition_is_a_permanent_500(
    client: RestEngineClient, uid: str
) -> None:
    with pytest.raises(EngineClientError) as caught:
        client.start_instance(f"c-nothing-{uid}")
    assert caught.value.status_code == 500
    assert "definition not found" in caught.value.message
    assert caught.value.retryable is False


def test_get_of_an_unknown_instance_is_404(client: RestEngineClient, uid: str) -> None:
    with pytest.raises(EngineClientError) as caught:
        client.get_instance(str(uuid.uuid4()))
    assert caught.value.status_code == 404
    assert caught.value.error_code == "not-found"
    assert caught.value.message and not caught.value.message.startswith("{")


def test_list_filters_and_pages(client: RestEngineClient, uid: str) -> None:
    def_id = _upload_linear(client, uid)
    other = _upload_wait(client, uid)
    a = [client.start_instance(def_id, business_key=f"bk-{uid}")["id"] for _ in range(3)]
    b = client.start_instance(other, business_key=f"bk-{uid}")["id"]
    run_job(client, f"a-{uid}")
    run_job(client, f"b-{uid}")  # one instance of def_id completes

    by_definition = client.list_instances(definition_id=def_id)
    assert by_definition["total"] == 3
    assert {item["id"] for item in by_definition["items"]} == set(a)

    by_key = client.list_instances(business_key=f"bk-{uid}")
    assert by_key["total"] == 4
    assert {item["id"] for item in by_key["items"]} == {*a, b}

    completed = client.list_instances(definition_id=def_id, status="COMPLETED")
    assert completed["total"] == 1
    assert completed["items"][0]["status"] == "COMPLETED"
    waiting = client.list_instances(business_key=f"bk-{uid}", status="WAITING")
    assert [item["id"] for item in waiting["items"]] == [b]

    pages = [client.list_instances(definition_id=def_id, page=p, page_size=2) for p in range(2)]
    assert [len(p["items"]) for p in pages] == [2, 1]
    assert all(p["total"] == 3 for p in pages)
    assert {i["id"] for p in pages for i in p["items"]} == set(a)

    nothing = client.list_instances(business_key=f"no-such-key-{uid}")
    assert nothing == {"items": [], "total": 0}


def test_history_has_an_item_per_step_including_end(client: RestEngineClient, uid: str) -> None:
    def_id = _upload_linear(client, uid)
    instance_id = client.start_instance(def_id)["id"]
    run_job(client, f"a-{uid}")
    run_job(client, f"b-{uid}")
    wait_status(client, instance_id, "COMPLETED")

    history = client.get_instance_history(instance_id)
    assert [item["stepId"] for item in history] == ["a", "b", "end"]
    assert [item["stepType"] for item in history] == ["SERVICE_TASK", "SERVICE_TASK", "END"]
    for item in history:
        assert item["status"] == "COMPLETED"
        assert item["instanceId"] == instance_id
        assert item["attemptNumber"] == 1
        assert item["inputSnapshot"] is None and item["outputSnapshot"] is None
        assert ts(item["endedAt"]) >= ts(item["startedAt"])
    ids = [item["id"] for item in history]
    assert ids == sorted(ids) and len(set(ids)) == 3  # ULIDs rise with time


def test_history_of_an_unknown_instance_is_empty(client: RestEngineClient, uid: str) -> None:
    assert client.get_instance_history(str(uuid.uuid4())) == []


def test_cancel_a_waiting_instance(client: RestEngineClient, uid: str) -> None:
    def_id = _upload_wait(client, uid)
    instance_id = client.start_instance(def_id, {"x": 1}, business_key=f"bk-{uid}")["id"]
    wait_status(client, instance_id, "WAITING")

    answer = client.cancel_instance(instance_id, "no longer needed")
    assert answer["id"] == instance_id
    assert answer["status"] == "CANCELLED"
    assert answer["failureReason"] == "no longer needed"
    assert "completedAt" not in answer and "businessKey" not in answer
    assert client.get_instance(instance_id)["status"] == "CANCELLED"

    with pytest.raises(EngineClientError) as caught:
        client.cancel_instance(instance_id, "again")
    assert caught.value.status_code == 500
    assert "no rows in result set" in caught.value.message
    assert caught.value.retryable is False


def test_cancel_without_a_reason_gives_an_empty_failure_reason(
    client: RestEngineClient, uid: str
) -> None:
    instance_id = client.start_instance(_upload_wait(client, uid))["id"]
    assert client.cancel_instance(instance_id)["failureReason"] == ""


def test_cancel_of_unknown_or_finished_instances_is_500(client: RestEngineClient, uid: str) -> None:
    def_id = _upload_linear(client, uid)
    done = client.start_instance(def_id)["id"]
    run_job(client, f"a-{uid}")
    run_job(client, f"b-{uid}")
    wait_status(client, done, "COMPLETED")
    for instance_id in (done, str(uuid.uuid4())):
        with pytest.raises(EngineClientError) as caught:
            client.cancel_instance(instance_id, "x")
        assert caught.value.status_code == 500
        assert caught.value.retryable is False


def test_cancel_does_not_withdraw_jobs_and_completing_one_is_a_no_op(
    client: RestEngineClient, uid: str
) -> None:
    def_id = _upload_linear(client, uid)
    instance_id = client.start_instance(def_id)["id"]
    client.cancel_instance(instance_id, "stop")
    job = poll_one(client, f"a-{uid}")  # still handed out
    assert job["instanceId"] == instance_id
    client.complete_job(job["id"], "contract-worker", {"late": True})  # 204
    after = client.get_instance(instance_id)
    assert after["status"] == "CANCELLED"
    assert "late" not in after.get("variables", {})
    assert client.poll_jobs("contract-worker", [f"b-{uid}"], 5) == []


def test_business_key_finds_the_instance(client: RestEngineClient, uid: str) -> None:
    def_id = _upload_linear(client, uid)
    instance_id = client.start_instance(def_id, business_key=f"BK-{uid}")["id"]
    client.start_instance(def_id, business_key=f"other-{uid}")
    run_job(client, f"a-{uid}")
    found = client.list_instances(business_key=f"BK-{uid}")
    assert [item["id"] for item in found["items"]] == [instance_id]
    assert found["items"][0]["businessKey"] == f"BK-{uid}"


def test_chained_workflow_starts_with_the_final_variables(
    client: RestEngineClient, uid: str
) -> None:
    first, second = f"c-chain-a-{uid}", f"c-chain-b-{uid}"
    client.upload_definition(
        definition(
            first,
            service("start", f"ca-{uid}"),
            end(),
            autoStartNextWorkflow=True,
            nextWorkflowId=second,
        )
    )
    client.upload_definition(definition(second, service("finish", f"cb-{uid}"), end()))
    instance_id = client.start_instance(first, {"applicant": "ann"})["id"]
    run_job(client, f"ca-{uid}", {"amount": 100.0})
    wait_status(client, instance_id, "COMPLETED")

    job = poll_one(client, f"cb-{uid}")
    assert job["variables"] == {"applicant": "ann", "amount": 100.0}
    chained = client.list_instances(definition_id=second)
    assert chained["total"] == 1
    assert chained["items"][0]["id"] == job["instanceId"]
