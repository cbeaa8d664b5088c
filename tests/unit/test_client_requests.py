"""What RestEngineClient puts on the wire and what it hands back (HTTP mocked by ``responses``)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import EngineClientError, EngineResponseError, LeaseLostError

BASE = "http://engine.test:8080"
ANY_URL = re.compile(re.escape(BASE) + r"/.*")

INSTANCE = {
    "id": "inst-1",
    "definitionId": "order",
    "definitionVersion": 1,
    "status": "ACTIVE",
    "currentStepIds": ["s1"],
    "startedAt": "2024-03-01T12:00:00.5+02:00",
}

JOB = {
    "id": "job-1",
    "instanceId": "inst-1",
    "stepExecutionId": "se-1",
    "jobType": "score",
    "status": "LOCKED",
    "workerId": "w-1",
    "lockedAt": "2024-03-01T12:00:00.123456+02:00",
    "lockExpiresAt": "2024-03-01T12:00:30.123456+02:00",
    "retriesRemaining": 3,
    "variables": {"amount": 12},
    "createdAt": "2024-03-01T11:59:59+02:00",
}


@pytest.fixture
def client() -> Iterator[RestEngineClient]:
    with RestEngineClient(BASE, timeout=7.5) as c:
        yield c


def sent_json(call: Any) -> Any:
    body = call.request.body
    assert body is not None, "the request had no body"
    if isinstance(body, bytes):
        body = body.decode("utf-8")
    return json.loads(body)


def query(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query, keep_blank_values=True)


def path_of(call: Any) -> str:
    return str(urlsplit(call.request.url).path)


# -- construction ------------------------------------------------------------


@pytest.mark.parametrize("bad", ["engine:8080", "ftp://engine", "", "localhost"])
def test_base_url_needs_http_scheme(bad: str) -> None:
    with pytest.raises(ValueError):
        RestEngineClient(bad)


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError):
        RestEngineClient(BASE, timeout=timeout)


def test_trailing_slash_of_base_url_is_dropped(rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/v1/instances/i", json=INSTANCE)
    with RestEngineClient(BASE + "/") as c:
        c.get_instance("i")
    assert rsps.calls[0].request.url == BASE + "/v1/instances/i"


# -- definitions -------------------------------------------------------------


def test_upload_definition_posts_the_definition_as_is(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    definition = {
        "id": "order",
        "name": "Order",
        "steps": [
            {
                "id": "s1",
                "name": "Score",
                "type": "SERVICE_TASK",
                "jobType": "score",
                "nextStep": "end",
            },
            {"id": "end", "name": "End", "type": "END"},
        ],
    }
    summary = {"id": "order", "version": 2, "name": "Order", "uploadedAt": "2024-03-01T10:00:00Z"}
    rsps.post(BASE + "/v1/definitions", status=201, json=summary)
    assert client.upload_definition(definition) == summary
    call = rsps.calls[0]
    assert call.request.method == "POST"
    assert sent_json(call) == definition
    assert call.request.headers["Content-Type"] == "application/json"


def test_get_definition_and_version(rsps: responses.RequestsMock, client: RestEngineClient) -> None:
    rsps.get(BASE + "/v1/definitions/order", json={"id": "order", "version": 3, "steps": []})
    rsps.get(BASE + "/v1/definitions/order/versions/2", json={"id": "order", "version": 2})
    assert client.get_definition("order")["version"] == 3
    assert client.get_definition_version("order", 2)["version"] == 2
    assert [c.request.method for c in rsps.calls] == ["GET", "GET"]
    assert [path_of(c) for c in rsps.calls] == [
        "/v1/definitions/order",
        "/v1/definitions/order/versions/2",
    ]


def test_list_definitions_default_query(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.get(BASE + "/v1/definitions", json={"items": None, "total": 0})
    page = client.list_definitions()
    assert page["items"] == []
    assert page["total"] == 0
    assert query(rsps.calls[0]) == {"page": ["0"], "pageSize": ["20"]}


def test_list_definitions_keyword_and_paging(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    summary = {"id": "order", "version": 1, "name": "Order", "uploadedAt": "2024-03-01T10:00:00Z"}
    rsps.get(BASE + "/v1/definitions", json={"items": [summary], "total": 41})
    page = client.list_definitions(keyword="ord er&x", page=2, page_size=5)
    assert page == {"items": [summary], "total": 41}
    assert query(rsps.calls[0]) == {"keyword": ["ord er&x"], "page": ["2"], "pageSize": ["5"]}


# -- instances ---------------------------------------------------------------


def test_start_instance_sends_only_the_definition_id_by_default(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/instances", status=201, json=INSTANCE)
    assert client.start_instance("order") == INSTANCE
    assert sent_json(rsps.calls[0]) == {"definitionId": "order"}


def test_start_instance_sends_optional_fields_when_given(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/instances", status=201, json=INSTANCE)
    client.start_instance("order", {"a": 1}, definition_version=4, business_key="bk-7")
    assert sent_json(rsps.calls[0]) == {
        "definitionId": "order",
        "variables": {"a": 1},
        "definitionVersion": 4,
        "businessKey": "bk-7",
    }


def test_start_instance_keeps_empty_variables(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/instances", status=201, json=INSTANCE)
    client.start_instance("order", {})
    assert sent_json(rsps.calls[0]) == {"definitionId": "order", "variables": {}}


def test_get_instance(rsps: responses.RequestsMock, client: RestEngineClient) -> None:
    rsps.get(BASE + "/v1/instances/inst-1", json=INSTANCE)
    assert client.get_instance("inst-1")["status"] == "ACTIVE"
    assert rsps.calls[0].request.method == "GET"


def test_list_instances_without_filters(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.get(BASE + "/v1/instances", json={"items": None, "total": 0})
    assert client.list_instances() == {"items": [], "total": 0}
    assert query(rsps.calls[0]) == {"page": ["0"], "pageSize": ["20"]}


def test_list_instances_with_every_filter(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.get(BASE + "/v1/instances", json={"items": [INSTANCE], "total": 1})
    page = client.list_instances(
        definition_id="order", status="WAITING", business_key="bk 1", page=3, page_size=50
    )
    assert page["items"] == [INSTANCE]
    assert query(rsps.calls[0]) == {
        "definitionId": ["order"],
        "status": ["WAITING"],
        "businessKey": ["bk 1"],
        "page": ["3"],
        "pageSize": ["50"],
    }


def test_list_instances_with_one_filter(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.get(BASE + "/v1/instances", json={"items": [], "total": 0})
    client.list_instances(status="FAILED")
    assert query(rsps.calls[0]) == {"status": ["FAILED"], "page": ["0"], "pageSize": ["20"]}


def test_history_pascal_case_becomes_camel_case(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    item = {
        "ID": "01HV",
        "InstanceID": "inst-1",
        "StepID": "s1",
        "StepType": "SERVICE_TASK",
        "AttemptNumber": 1,
        "Status": "COMPLETED",
        "StartedAt": "2024-03-01T12:00:00+02:00",
        "EndedAt": "2024-03-01T12:00:01.5+02:00",
        "InputSnapshot": None,
        "OutputSnapshot": None,
        "FailureReason": "",
    }
    rsps.get(BASE + "/v1/instances/inst-1/history", json={"items": [item]})
    [step] = client.get_instance_history("inst-1")
    assert step == {
        "id": "01HV",
        "instanceId": "inst-1",
        "stepId": "s1",
        "stepType": "SERVICE_TASK",
        "attemptNumber": 1,
        "status": "COMPLETED",
        "startedAt": "2024-03-01T12:00:00+02:00",
        "endedAt": "2024-03-01T12:00:01.5+02:00",
        "inputSnapshot": None,
        "outputSnapshot": None,
        "failureReason": "",
    }


def test_history_camel_case_input_is_kept(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    items = [
        {"id": "01A", "instanceId": "inst-1", "stepId": "s1", "status": "COMPLETED"},
        {"id": "01B", "instanceId": "inst-1", "stepId": "end", "status": "COMPLETED"},
    ]
    rsps.get(BASE + "/v1/instances/inst-1/history", json={"items": items})
    history = client.get_instance_history("inst-1")
    assert [step["stepId"] for step in history] == ["s1", "end"]
    assert history[0]["status"] == "COMPLETED"
    # Keys the engine left out are present (as None) so lookups never KeyError.
    assert history[0]["endedAt"] is None


def test_history_of_unknown_instance_is_empty(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.get(BASE + "/v1/instances/nope/history", json={"items": None})
    assert client.get_instance_history("nope") == []


def test_cancel_sends_the_reason(rsps: responses.RequestsMock, client: RestEngineClient) -> None:
    cancelled = dict(INSTANCE, status="CANCELLED", failureReason="customer left")
    rsps.post(BASE + "/v1/instances/inst-1/cancel", json=cancelled)
    assert client.cancel_instance("inst-1", "customer left")["status"] == "CANCELLED"
    assert sent_json(rsps.calls[0]) == {"reason": "customer left"}


def test_cancel_without_reason_sends_empty_reason(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/instances/inst-1/cancel", json=dict(INSTANCE, status="CANCELLED"))
    client.cancel_instance("inst-1")
    assert sent_json(rsps.calls[0]) == {"reason": ""}


def test_complete_user_task_sends_variables_and_result(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/instances/inst-1/user-tasks/approve/complete", status=204)
    client.complete_user_task("inst-1", "approve", "alice", {"approved": True})
    body = sent_json(rsps.calls[0])
    # The engine reads "variables" (and "workerId"); "result" rides along for OpenAPI engines.
    assert body["variables"] == {"approved": True}
    assert body["result"] == {"approved": True}
    assert body["workerId"] == "alice"
    assert set(body) <= {"variables", "result", "workerId", "completedBy"}


def test_complete_user_task_without_user_or_result(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/instances/inst-1/user-tasks/approve/complete", status=204)
    client.complete_user_task("inst-1", "approve")
    body = sent_json(rsps.calls[0])
    assert body["variables"] == {}
    assert "workerId" not in body
    assert "completedBy" not in body


def test_signal_body_is_the_bare_variable_map(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/instances/inst-1/signals/wait-pay", status=204)
    client.signal("inst-1", "wait-pay", {"paid": True, "amount": 3})
    assert sent_json(rsps.calls[0]) == {"paid": True, "amount": 3}


def test_signal_without_variables_sends_empty_object_with_length(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/instances/inst-1/signals/wait-pay", status=204)
    client.signal("inst-1", "wait-pay")
    request = rsps.calls[0].request
    assert sent_json(rsps.calls[0]) == {}
    # The engine reads a signal body only when a Content-Length is sent.
    assert request.headers.get("Content-Length") == "2"
    assert "Transfer-Encoding" not in request.headers


# -- jobs --------------------------------------------------------------------


def test_poll_body_has_exactly_the_three_fields(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/jobs/poll", json={"jobs": [JOB]})
    jobs = client.poll_jobs("w-1", ["score", "ship"], max_jobs=5)
    assert sent_json(rsps.calls[0]) == {
        "workerId": "w-1",
        "jobTypes": ["score", "ship"],
        "maxJobs": 5,
    }
    assert len(jobs) == 1
    assert jobs[0]["id"] == "job-1"
    assert jobs[0]["variables"] == {"amount": 12}
    assert jobs[0]["retriesRemaining"] == 3


#: A poll answer with two good jobs and, between them, a job without an id,
#: one whose variables are a string, and one that is not an object.
MIXED_POLL = {
    "jobs": [
        JOB,
        {k: v for k, v in JOB.items() if k != "id"},
        dict(JOB, id="job-bad", variables="oops"),
        dict(JOB, id="job-2", retriesRemaining=0),
        "not a job",
    ]
}


def test_a_malformed_job_is_left_out_and_logged_and_the_good_ones_kept(
    rsps: responses.RequestsMock, client: RestEngineClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Pins: the engine locked every job of the answer; one bad job must not
    make the client refuse the answer (the good ones would wait 30-45 s for
    their lease). Each bad one: one ERROR line, one entry in ``malformed``."""
    rsps.post(BASE + "/v1/jobs/poll", json=MIXED_POLL)
    with caplog.at_level(logging.ERROR, logger="workflow_sdk.client"):
        jobs = client.poll_jobs("w-1", ["score"], max_jobs=5)
    assert [job["id"] for job in jobs] == ["job-1", "job-2"]
    assert jobs[1]["retriesRemaining"] == 0
    malformed = jobs.malformed
    assert len(malformed) == 3
    assert [r.getMessage() for r in caplog.records] == malformed
    assert "without an id" in malformed[0]
    assert "job job-bad" in malformed[1] and "job.variables" in malformed[1]
    assert "without an id" in malformed[2] and "not a job" in malformed[2]


def test_a_malformed_poll_envelope_is_still_refused(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/jobs/poll", json={"jobs": {"id": "job-1"}})
    with pytest.raises(EngineResponseError, match="jobs should be a list"):
        client.poll_jobs("w-1", ["score"])


def test_poll_sends_lease_seconds_only_when_asked(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/jobs/poll", json={"jobs": None})
    client.poll_jobs("w-1", ["score"], 2, lease_seconds=120)
    client.poll_jobs("w-1", ["score"], 2, lease_seconds=0)
    assert sent_json(rsps.calls[0]) == {
        "workerId": "w-1",
        "jobTypes": ["score"],
        "maxJobs": 2,
        "leaseSeconds": 120,
    }
    assert "leaseSeconds" not in sent_json(rsps.calls[1])


@pytest.mark.parametrize("lease", [4, 3601, -5])
def test_poll_rejects_a_lease_out_of_range_before_sending(
    rsps: responses.RequestsMock, client: RestEngineClient, lease: int
) -> None:
    with pytest.raises(ValueError, match="lease_seconds"):
        client.poll_jobs("w-1", ["score"], lease_seconds=lease)
    with pytest.raises(TypeError, match="lease_seconds"):
        client.poll_jobs("w-1", ["score"], lease_seconds=30.0)  # type: ignore[arg-type]
    assert len(rsps.calls) == 0


def test_poll_accepts_a_tuple_of_job_types(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/jobs/poll", json={"jobs": None})
    client.poll_jobs("w-1", ("score",))  # type: ignore[arg-type]
    assert sent_json(rsps.calls[0])["jobTypes"] == ["score"]


def test_poll_default_max_jobs_is_one(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/jobs/poll", json={"jobs": None})
    client.poll_jobs("w-1", ["score"])
    assert sent_json(rsps.calls[0])["maxJobs"] == 1


def test_empty_poll_is_null_and_becomes_empty_list(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/jobs/poll", json={"jobs": None})
    assert client.poll_jobs("w-1", ["score"]) == []


def test_poll_fills_step_id_and_null_variables(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    job = dict(JOB, variables=None)
    assert "stepId" not in job
    rsps.post(BASE + "/v1/jobs/poll", json={"jobs": [job]})
    [got] = client.poll_jobs("w-1", ["score"])
    assert got["stepId"] == ""
    assert got["variables"] == {}
    assert got["lockExpiresAt"] == JOB["lockExpiresAt"]


def test_poll_keeps_a_step_id_when_an_engine_sends_one(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/jobs/poll", json={"jobs": [dict(JOB, stepId="s1")]})
    assert client.poll_jobs("w-1", ["score"])[0]["stepId"] == "s1"


@pytest.mark.parametrize("max_jobs", [0, -1])
def test_poll_rejects_max_jobs_below_one_before_sending(
    rsps: responses.RequestsMock, client: RestEngineClient, max_jobs: int
) -> None:
    with pytest.raises(ValueError):
        client.poll_jobs("w-1", ["score"], max_jobs=max_jobs)
    assert len(rsps.calls) == 0


def test_poll_rejects_empty_job_types_before_sending(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    with pytest.raises(ValueError):
        client.poll_jobs("w-1", [])
    assert len(rsps.calls) == 0


def test_poll_rejects_a_bare_string_of_job_types(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    # list("score") would silently poll for the job types "s", "c", "o", "r", "e".
    with pytest.raises(TypeError):
        client.poll_jobs("w-1", "score")  # type: ignore[arg-type]
    assert len(rsps.calls) == 0


def test_complete_job_body(rsps: responses.RequestsMock, client: RestEngineClient) -> None:
    rsps.post(BASE + "/v1/jobs/job-1/complete", status=204)
    client.complete_job("job-1", "w-1", {"score": 0.7})
    assert sent_json(rsps.calls[0]) == {"workerId": "w-1", "variables": {"score": 0.7}}


def test_complete_job_without_variables_sends_empty_map(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/jobs/job-1/complete", status=204)
    client.complete_job("job-1", "w-1")
    assert sent_json(rsps.calls[0]) == {"workerId": "w-1", "variables": {}}


@pytest.mark.parametrize("retryable", [True, False])
def test_fail_job_always_sends_retryable(
    rsps: responses.RequestsMock, client: RestEngineClient, retryable: bool
) -> None:
    rsps.post(BASE + "/v1/jobs/job-1/fail", status=204)
    client.fail_job("job-1", "w-1", "boom", retryable=retryable)
    body = sent_json(rsps.calls[0])
    assert body == {"workerId": "w-1", "errorMessage": "boom", "retryable": retryable}
    assert body["retryable"] is retryable


def test_fail_job_default_is_retryable(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/jobs/job-1/fail", status=204)
    client.fail_job("job-1", "w-1", "boom")
    assert sent_json(rsps.calls[0])["retryable"] is True


def test_extend_lease_returns_the_answer(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    answer = {"accepted": True, "lockExpiresAt": "2024-03-01T12:01:00Z"}
    rsps.post(BASE + "/v1/jobs/job-1/heartbeat", json=answer)
    assert client.extend_lease("job-1", "w-1", 60) == answer
    assert sent_json(rsps.calls[0]) == {"workerId": "w-1", "leaseSeconds": 60}


@pytest.mark.parametrize("status", [404, 405, 501])
def test_extend_lease_unsupported_is_none(
    rsps: responses.RequestsMock, client: RestEngineClient, status: int
) -> None:
    if status == 404:
        rsps.post(
            BASE + "/v1/jobs/job-1/heartbeat",
            status=404,
            body="404 page not found\n",
            content_type="text/plain",
        )
    else:
        rsps.post(BASE + "/v1/jobs/job-1/heartbeat", status=status)
    assert client.extend_lease("job-1", "w-1") is None


def test_extend_lease_conflict_is_lease_lost(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(
        BASE + "/v1/jobs/job-1/heartbeat",
        status=409,
        json={"error": "conflict", "reason": "lease lost"},
    )
    with pytest.raises(LeaseLostError) as info:
        client.extend_lease("job-1", "w-1")
    assert info.value.status_code == 409
    assert info.value.message == "lease lost"
    assert info.value.retryable is False


def test_extend_lease_other_errors_propagate(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(BASE + "/v1/jobs/job-1/heartbeat", status=503)
    with pytest.raises(EngineClientError) as info:
        client.extend_lease("job-1", "w-1")
    assert not isinstance(info.value, LeaseLostError)
    assert info.value.status_code == 503


# -- health ------------------------------------------------------------------


def test_health_true_on_200_with_empty_body(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.get(BASE + "/healthz", status=200, body="")
    assert client.health() is True


def test_health_false_on_500(rsps: responses.RequestsMock, client: RestEngineClient) -> None:
    rsps.get(BASE + "/healthz", status=500)
    assert client.health() is False


def test_health_false_when_refused(rsps: responses.RequestsMock, client: RestEngineClient) -> None:
    rsps.get(BASE + "/healthz", body=requests.ConnectionError("refused"))
    assert client.health() is False


# -- paths -------------------------------------------------------------------


def test_colon_in_an_id_is_not_encoded(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.get(ANY_URL, json={"id": "ns:order"})
    rsps.post(ANY_URL, status=204)
    client.get_definition("ns:order")
    client.complete_job("job:1", "w")
    assert rsps.calls[0].request.path_url == "/v1/definitions/ns:order"
    assert rsps.calls[1].request.path_url == "/v1/jobs/job:1/complete"


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("a b", "a%20b"),
        ("a/b", "a%2Fb"),
        ("a?b", "a%3Fb"),
        ("a#b", "a%23b"),
        ("50%", "50%25"),
        ("caf\u00e9", "caf%C3%A9"),
        ("a-b_c.d~e", "a-b_c.d~e"),
    ],
)
def test_odd_ids_are_percent_encoded(
    rsps: responses.RequestsMock, client: RestEngineClient, raw: str, encoded: str
) -> None:
    rsps.get(ANY_URL, json=INSTANCE)
    client.get_instance(raw)
    assert rsps.calls[0].request.path_url == f"/v1/instances/{encoded}"


def test_every_path_segment_is_encoded(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(ANY_URL, status=204)
    client.complete_user_task("i/1", "step 2")
    client.signal("i/1", "w?3")
    assert rsps.calls[0].request.path_url == "/v1/instances/i%2F1/user-tasks/step%202/complete"
    assert rsps.calls[1].request.path_url == "/v1/instances/i%2F1/signals/w%3F3"


@pytest.mark.parametrize("bad", ["", None, 7])
def test_empty_or_non_string_id_is_refused_before_sending(
    rsps: responses.RequestsMock, client: RestEngineClient, bad: Any
) -> None:
    with pytest.raises(ValueError):
        client.get_instance(bad)
    with pytest.raises(ValueError):
        client.complete_job(bad, "w")
    assert len(rsps.calls) == 0


def test_nan_in_a_body_is_refused_before_sending(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    # The engine's JSON decoder rejects NaN; this is the caller's bug, not a
    # (retryable) connection problem.
    with pytest.raises(ValueError) as info:
        client.start_instance("order", {"x": float("nan")})
    assert not isinstance(info.value, EngineClientError)
    assert len(rsps.calls) == 0


# -- headers, timeout, session ----------------------------------------------


def test_bearer_token_and_extra_headers(rsps: responses.RequestsMock) -> None:
    rsps.get(BASE + "/v1/instances/i", json=INSTANCE)
    with RestEngineClient(BASE, token="s3cret", headers={"X-Tenant": "acme"}) as c:
        c.get_instance("i")
    headers = rsps.calls[0].request.headers
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["X-Tenant"] == "acme"
    assert headers["Accept"] == "application/json"


def test_no_authorization_header_without_token(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.get(BASE + "/v1/instances/i", json=INSTANCE)
    client.get_instance("i")
    assert "Authorization" not in rsps.calls[0].request.headers


CallSpec = tuple[str, Callable[[RestEngineClient], object], str, str, dict[str, Any]]

EVERY_CALL: list[CallSpec] = [
    (
        "upload_definition",
        lambda c: c.upload_definition({"id": "d", "name": "D", "steps": []}),
        "POST",
        "/v1/definitions",
        {"status": 201, "json": {"id": "d", "version": 1}},
    ),
    ("get_definition", lambda c: c.get_definition("d"), "GET", "/v1/definitions/d", {"json": {}}),
    (
        "get_definition_version",
        lambda c: c.get_definition_version("d", 1),
        "GET",
        "/v1/definitions/d/versions/1",
        {"json": {}},
    ),
    (
        "list_definitions",
        lambda c: c.list_definitions(),
        "GET",
        "/v1/definitions",
        {"json": {"items": None, "total": 0}},
    ),
    (
        "start_instance",
        lambda c: c.start_instance("d"),
        "POST",
        "/v1/instances",
        {"status": 201, "json": INSTANCE},
    ),
    ("get_instance", lambda c: c.get_instance("i"), "GET", "/v1/instances/i", {"json": INSTANCE}),
    (
        "list_instances",
        lambda c: c.list_instances(),
        "GET",
        "/v1/instances",
        {"json": {"items": None, "total": 0}},
    ),
    (
        "get_instance_history",
        lambda c: c.get_instance_history("i"),
        "GET",
        "/v1/instances/i/history",
        {"json": {"items": None}},
    ),
    (
        "cancel_instance",
        lambda c: c.cancel_instance("i"),
        "POST",
        "/v1/instances/i/cancel",
        {"json": INSTANCE},
    ),
    (
        "complete_user_task",
        lambda c: c.complete_user_task("i", "s"),
        "POST",
        "/v1/instances/i/user-tasks/s/complete",
        {"status": 204},
    ),
    (
        "signal",
        lambda c: c.signal("i", "w"),
        "POST",
        "/v1/instances/i/signals/w",
        {"status": 204},
    ),
    (
        "poll_jobs",
        lambda c: c.poll_jobs("w", ["t"]),
        "POST",
        "/v1/jobs/poll",
        {"json": {"jobs": None}},
    ),
    (
        "complete_job",
        lambda c: c.complete_job("j", "w"),
        "POST",
        "/v1/jobs/j/complete",
        {"status": 204},
    ),
    (
        "fail_job",
        lambda c: c.fail_job("j", "w", "e"),
        "POST",
        "/v1/jobs/j/fail",
        {"status": 204},
    ),
    (
        "extend_lease",
        lambda c: c.extend_lease("j", "w"),
        "POST",
        "/v1/jobs/j/heartbeat",
        {"json": {"accepted": True}},
    ),
    ("health", lambda c: c.health(), "GET", "/healthz", {"status": 200}),
]


@pytest.mark.parametrize(
    ("call", "method", "path", "answer"),
    [spec[1:] for spec in EVERY_CALL],
    ids=[spec[0] for spec in EVERY_CALL],
)
def test_every_call_uses_its_method_path_and_the_timeout(
    rsps: responses.RequestsMock,
    call: Callable[[RestEngineClient], object],
    method: str,
    path: str,
    answer: dict[str, Any],
) -> None:
    rsps.add(method, BASE + path, **answer)
    with RestEngineClient(BASE, timeout=4.25) as c:
        call(c)
    [made] = rsps.calls
    assert made.request.method == method
    assert path_of(made) == path
    assert made.request.req_kwargs["timeout"] == 4.25  # type: ignore[attr-defined]


def test_every_public_call_is_covered_by_the_table() -> None:
    public = {
        name
        for name in vars(RestEngineClient)
        if not name.startswith("_") and callable(getattr(RestEngineClient, name))
    }
    assert public - {"close"} == {spec[0] for spec in EVERY_CALL}


def test_context_manager_closes_the_session() -> None:
    c = RestEngineClient(BASE)
    with mock.patch.object(c._session, "close", wraps=c._session.close) as spy:
        with c as entered:
            assert entered is c
            spy.assert_not_called()
        spy.assert_called_once_with()


def test_close_closes_the_session() -> None:
    c = RestEngineClient(BASE)
    with mock.patch.object(c._session, "close") as spy:
        c.close()
    spy.assert_called_once_with()


def test_context_manager_closes_on_error() -> None:
    c = RestEngineClient(BASE)
    with mock.patch.object(c._session, "close") as spy:
        with pytest.raises(RuntimeError), c:
            raise RuntimeError("in the block")
        spy.assert_called_once_with()


def test_extend_lease_json_404_names_the_job_and_is_lease_lost(
    rsps: responses.RequestsMock, client: RestEngineClient
) -> None:
    rsps.post(
        BASE + "/v1/jobs/job-1/heartbeat",
        status=404,
        json={"error": "not-found", "reason": 'job "job-1" not found'},
    )
    with pytest.raises(LeaseLostError) as info:
        client.extend_lease("job-1", "w-1")
    assert info.value.status_code == 404
