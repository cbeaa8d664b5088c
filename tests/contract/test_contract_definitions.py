"""Definitions: upload, versions, get, list, validation (ENGINE_CONTRACT.md, "Definitions")."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from contract_support import definition, end, service, step, ts, wait_status

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import EngineClientError


def _linear(definition_id: str, job_type: str) -> dict[str, Any]:
    return definition(definition_id, service("work", job_type), end())


def test_upload_answers_a_summary_with_version_1(client: RestEngineClient, uid: str) -> None:
    summary = client.upload_definition(_linear(f"c-up-{uid}", f"t-{uid}"))
    assert set(summary) == {"id", "version", "name", "uploadedAt"}
    assert summary["id"] == f"c-up-{uid}"
    assert summary["version"] == 1
    assert summary["name"] == f"contract c-up-{uid}"
    ts(summary["uploadedAt"])  # a time stamp with a zone


def test_identical_upload_is_idempotent_and_changed_one_is_a_new_version(
    client: RestEngineClient, uid: str
) -> None:
    def_id = f"c-ver-{uid}"
    first = _linear(def_id, f"t-{uid}")
    v1 = client.upload_definition(first)
    assert client.upload_definition(copy.deepcopy(first)) == v1

    changed = _linear(def_id, f"other-{uid}")
    v2 = client.upload_definition(changed)
    assert v2["version"] == 2
    # Identical to an older stored version: that version's summary, nothing stored.
    assert client.upload_definition(copy.deepcopy(first)) == v1
    assert client.get_definition(def_id)["version"] == 2
    listed = client.list_definitions(keyword=def_id)
    assert [item["version"] for item in listed["items"]] == [2]


def test_reuploading_what_get_returned_makes_a_new_version(
    client: RestEngineClient, uid: str
) -> None:
    def_id = f"c-get-{uid}"
    client.upload_definition(_linear(def_id, f"t-{uid}"))
    fetched = client.get_definition(def_id)
    assert fetched["version"] == 1
    # "version" is part of the stored JSON and of the comparison.
    assert client.upload_definition(fetched)["version"] == 2


def test_get_latest_and_a_given_version(client: RestEngineClient, uid: str) -> None:
    def_id = f"c-getv-{uid}"
    client.upload_definition(_linear(def_id, f"a-{uid}"))
    client.upload_definition(_linear(def_id, f"b-{uid}"))
    latest = client.get_definition(def_id)
    assert latest["version"] == 2
    assert latest["id"] == def_id
    assert latest["steps"][0]["jobType"] == f"b-{uid}"
    first = client.get_definition_version(def_id, 1)
    assert first["version"] == 1
    assert first["steps"][0]["jobType"] == f"a-{uid}"
    assert [s["id"] for s in first["steps"]] == ["work", "end"]


@pytest.mark.parametrize("version", [None, 7])
def test_unknown_definition_or_version_is_404(
    client: RestEngineClient, uid: str, version: int | None
) -> None:
    def_id = f"c-missing-{uid}"
    if version is not None:
        client.upload_definition(_linear(def_id, f"t-{uid}"))
    with pytest.raises(EngineClientError) as caught:
        if version is None:
            client.get_definition(def_id)
        else:
            client.get_definition_version(def_id, version)
    assert caught.value.status_code == 404
    assert caught.value.error_code == "not-found"
    assert caught.value.retryable is False


def test_list_shows_latest_versions_filtered_and_paged(client: RestEngineClient, uid: str) -> None:
    ids = [f"c-list-{uid}-{n}" for n in range(3)]
    for def_id in ids:
        client.upload_definition(_linear(def_id, f"t-{uid}"))
    client.upload_definition(_linear(ids[0], f"t2-{uid}"))  # ids[0] now has version 2

    everything = client.list_definitions(keyword=f"c-list-{uid}")
    assert everything["total"] == 3
    versions = {item["id"]: item["version"] for item in everything["items"]}
    assert versions == {ids[0]: 2, ids[1]: 1, ids[2]: 1}
    for item in everything["items"]:
        assert set(item) == {"id", "version", "name", "uploadedAt"}
    assert "page" not in everything and "pageSize" not in everything

    first = client.list_definitions(keyword=f"c-list-{uid}", page=0, page_size=2)
    second = client.list_definitions(keyword=f"c-list-{uid}", page=1, page_size=2)
    assert first["total"] == second["total"] == 3
    assert len(first["items"]) == 2 and len(second["items"]) == 1
    paged = {item["id"] for item in first["items"] + second["items"]}
    assert paged == set(ids)


def test_list_with_no_match_is_empty(client: RestEngineClient, uid: str) -> None:
    page = client.list_definitions(keyword=f"no-such-definition-{uid}")
    assert page["items"] == [] and page["total"] == 0


def test_user_task_without_job_type_gets_its_step_id(client: RestEngineClient, uid: str) -> None:
    # The engine derives the jobType from the step id and uses it internally
    # (the task is addressed by its step id), but a GET returns the
    # document as uploaded.
    def_id = f"c-ut-{uid}"
    client.upload_definition(definition(def_id, step("review", "USER_TASK", nextStep="end"), end()))
    stored = client.get_definition(def_id)
    assert "jobType" not in stored["steps"][0]
    instance_id = client.start_instance(def_id)["id"]
    assert wait_status(client, instance_id, "WAITING")["currentStepIds"] == ["review"]
    client.complete_user_task(instance_id, "review", "tester", {"ok": True})
    assert wait_status(client, instance_id, "COMPLETED")["variables"] == {"ok": True}


def _invalid_cases(uid: str) -> dict[str, dict[str, Any]]:
    good = [service("work", f"t-{uid}"), end()]
    cases: dict[str, dict[str, Any]] = {
        "unknown field next": definition(
            f"c-bad-{uid}", {**service("work", f"t-{uid}", None), "next": "end"}, end()
        ),
        "unknown top-level field": definition(f"c-bad-{uid}", *good, colour="blue"),
        "no definition name": {"id": f"c-bad-{uid}", "steps": good},
        "no step name": definition(
            f"c-bad-{uid}",
            {"id": "work", "type": "SERVICE_TASK", "jobType": "x", "nextStep": "end"},
            end(),
        ),
        "id with a space": definition(f"c bad {uid}", *good),
        "id with a slash": definition(f"c/bad/{uid}", *good),
        "id too long": definition("c" * 257, *good),
        "unreachable step": definition(f"c-bad-{uid}", *good, service("orphan", "x")),
        "no END reachable": definition(
            f"c-bad-{uid}", service("a", "x", "b"), service("b", "x", "a")
        ),
        "SERVICE_TASK without jobType": definition(
            f"c-bad-{uid}", step("work", "SERVICE_TASK", nextStep="end"), end()
        ),
        "WAIT without nextStep": definition(f"c-bad-{uid}", step("w", "WAIT"), end()),
        "TRANSFORMATION without nextStep": definition(
            f"c-bad-{uid}", step("t", "TRANSFORMATION", transformations={"a": 1}), end()
        ),
        "DECISION without conditionalNextSteps": definition(
            f"c-bad-{uid}", step("d", "DECISION", nextStep="end"), end()
        ),
        "PARALLEL_GATEWAY with one branch": definition(
            f"c-bad-{uid}",
            step("p", "PARALLEL_GATEWAY", parallelNextSteps=["a"], joinStep="j"),
            service("a", "x", "j"),
            step("j", "JOIN_GATEWAY", nextStep="end"),
            end(),
        ),
        "PARALLEL_GATEWAY without joinStep": definition(
            f"c-bad-{uid}",
            step("p", "PARALLEL_GATEWAY", parallelNextSteps=["a", "b"]),
            service("a", "x", "j"),
            service("b", "x", "j"),
            step("j", "JOIN_GATEWAY", nextStep="end"),
            end(),
        ),
        "JOIN_GATEWAY without nextStep": definition(
            f"c-bad-{uid}",
            step("p", "PARALLEL_GATEWAY", parallelNextSteps=["a", "b"], joinStep="j"),
            service("a", "x", "j"),
            service("b", "x", "j"),
            step("j", "JOIN_GATEWAY"),
            end(),
        ),
    }
    return cases


_CASE_NAMES = list(_invalid_cases("x"))


@pytest.mark.parametrize("case", _CASE_NAMES)
def test_invalid_definitions_are_refused_with_400(
    client: RestEngineClient, uid: str, case: str
) -> None:
    with pytest.raises(EngineClientError) as caught:
        client.upload_definition(_invalid_cases(uid)[case])
    error = caught.value
    assert error.status_code == 400
    assert error.error_code == "bad-request"
    assert error.message and not error.message.startswith("{")
    assert error.retryable is False
