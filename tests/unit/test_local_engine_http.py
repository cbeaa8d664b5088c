"""The local engine's wire format, byte by byte (ENGINE_CONTRACT.md, "General")."""

from __future__ import annotations

import http.client
import json
import re
import socketserver
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from workflow_sdk.testing import LocalEngine
from workflow_sdk.testing.server import RequestHandler

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?[+-]\d\d:\d\d$")
SERVICE_DEF = {
    "id": "raw-svc",
    "name": "Raw",
    "steps": [
        {"id": "work", "name": "Work", "type": "SERVICE_TASK", "jobType": "raw", "retryCount": 3,
         "nextStep": "end"},
        {"id": "end", "name": "End", "type": "END"},
    ],
}  # fmt: skip


class Raw:
    """One keep-alive connection; answers as (status, headers, body bytes)."""

    def __init__(self, engine: LocalEngine) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=10)

    def send(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        data = body.encode() if isinstance(body, str) else body
        self.conn.request(method, path, body=data, headers=headers or {})
        response = self.conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()

    def json(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload)
        status, headers, data = self.send(
            method, path, body, {"Content-Type": "application/json"} if body else None
        )
        assert headers.get("content-type") == "application/json", (status, headers, data)
        assert data.endswith(b"\n")
        return status, json.loads(data)


@pytest.fixture
def raw(local_engine: LocalEngine) -> Iterator[Raw]:
    connection = Raw(local_engine)
    yield connection
    connection.conn.close()


def _start(raw: Raw, definition: dict[str, Any] = SERVICE_DEF, **body: Any) -> dict[str, Any]:
    raw.json("POST", "/v1/definitions", definition)
    status, instance = raw.json("POST", "/v1/instances", {"definitionId": definition["id"], **body})
    assert status == 201
    return dict(instance)


def test_json_answers_carry_the_content_type_and_a_final_newline(raw: Raw) -> None:
    status, headers, data = raw.send("POST", "/v1/definitions", json.dumps(SERVICE_DEF))
    assert status == 201
    assert headers["content-type"] == "application/json"
    assert data.endswith(b"}\n")
    assert TIMESTAMP.match(json.loads(data)["uploadedAt"])


def test_healthz_and_204_have_no_body(raw: Raw) -> None:
    status, _, data = raw.send("GET", "/healthz")
    assert (status, data) == (200, b"")
    _start(raw)
    _, polled = raw.json("POST", "/v1/jobs/poll", {"workerId": "w", "jobTypes": ["raw"]})
    job_id = polled["jobs"][0]["id"]
    status, headers, data = raw.send("POST", f"/v1/jobs/{job_id}/complete", '{"workerId":"w"}')
    assert (status, data) == (204, b"")
    assert "content-length" not in headers or headers["content-length"] == "0"


def test_unknown_route_is_plain_text_404(raw: Raw) -> None:
    for path in ("/v2/nothing", "/v1/jobs/x/y/z", "/v1/definitions/", "/"):
        status, headers, data = raw.send("GET", path)
        assert (status, data) == (404, b"404 page not found\n"), path
        assert headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/jobs/poll"), ("DELETE", "/v1/instances/abc"), ("PUT", "/v1/definitions"),
     ("GET", "/v1/jobs/abc/complete"), ("POST", "/healthz")],
)  # fmt: skip
def test_wrong_method_is_an_empty_405(raw: Raw, method: str, path: str) -> None:
    status, _, data = raw.send(method, path)
    assert (status, data) == (405, b"")


@pytest.mark.parametrize("content_type", ["application/xml", "text/xml; charset=utf-8"])
def test_xml_upload_is_415(raw: Raw, content_type: str) -> None:
    status, headers, data = raw.send(
        "POST", "/v1/definitions", "<definition/>", {"Content-Type": content_type}
    )
    assert status == 415
    assert headers["content-type"] == "application/json"
    assert json.loads(data)["error"] == "unsupported-format"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_any_other_content_type_is_parsed_as_json(raw: Raw, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    status, _, _ = raw.send("POST", "/v1/definitions", json.dumps(SERVICE_DEF), headers)
    assert status == 201


@pytest.mark.parametrize(
    "path", ["/v1/jobs/poll", "/v1/jobs/some-job/complete", "/v1/jobs/some-job/fail"]
)
def test_empty_body_is_400_eof(raw: Raw, path: str) -> None:
    status, headers, data = raw.send("POST", path, b"")
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert json.loads(data) == {"error": "bad-request", "reason": "invalid request body: EOF"}


def test_malformed_json_is_400(raw: Raw) -> None:
    status, _, data = raw.send("POST", "/v1/jobs/poll", b'{"workerId": ')
    assert status == 400
    assert json.loads(data)["reason"].startswith("invalid request body")


@pytest.mark.parametrize(
    "body",
    [{"jobTypes": ["raw"]}, {"workerId": "w"}, {"workerId": "w", "jobTypes": []},
     {"workerId": "", "jobTypes": ["raw"]}],
)  # fmt: skip
def test_poll_needs_a_worker_and_job_types(raw: Raw, body: dict[str, Any]) -> None:
    status, answer = raw.json("POST", "/v1/jobs/poll", body)
    assert status == 400
    assert answer["error"] == "bad-request" and answer["reason"]


@pytest.mark.parametrize("max_jobs", [None, 0, -3])
def test_missing_or_non_positive_max_jobs_means_10(raw: Raw, max_jobs: int | None) -> None:
    for _ in range(12):
        _start(raw)
    body: dict[str, Any] = {"workerId": "w", "jobTypes": ["raw"], "leaseSeconds": 1}
    if max_jobs is not None:
        body["maxJobs"] = max_jobs
    _, answer = raw.json("POST", "/v1/jobs/poll", body)
    assert len(answer["jobs"]) == 10


def test_job_has_exactly_the_contract_fields_and_no_step_id(raw: Raw) -> None:
    _start(raw, variables={"k": "v"})
    _, answer = raw.json("POST", "/v1/jobs/poll", {"workerId": "w", "jobTypes": ["raw"]})
    (job,) = answer["jobs"]
    assert set(job) == {
        "id", "instanceId", "stepExecutionId", "jobType", "status", "workerId", "lockedAt",
        "lockExpiresAt", "retriesRemaining", "variables", "createdAt",
    }  # fmt: skip
    assert job["status"] == "LOCKED" and job["retriesRemaining"] == 3
    for key in ("lockedAt", "lockExpiresAt", "createdAt"):
        assert TIMESTAMP.match(job[key]), job[key]


def test_empty_lists_are_null(raw: Raw) -> None:
    assert raw.json("POST", "/v1/jobs/poll", {"workerId": "w", "jobTypes": ["x"]}) == (
        200,
        {"jobs": None},
    )
    assert raw.json("GET", "/v1/definitions") == (200, {"items": None, "total": 0})
    assert raw.json("GET", "/v1/instances?status=FAILED") == (200, {"items": None, "total": 0})
    assert raw.json("GET", "/v1/instances/nope/history") == (200, {"items": None})


def test_history_items_use_pascal_case(raw: Raw) -> None:
    instance = _start(raw)
    _, answer = raw.json("GET", f"/v1/instances/{instance['id']}/history")
    (item,) = answer["items"]
    assert set(item) == {
        "ID", "InstanceID", "StepID", "StepType", "AttemptNumber", "Status", "StartedAt",
        "EndedAt", "InputSnapshot", "OutputSnapshot", "FailureReason",
    }  # fmt: skip
    assert item["Status"] == "RUNNING" and item["EndedAt"] is None
    assert len(item["ID"]) == 26


def test_missing_retryable_means_false(raw: Raw) -> None:
    instance = _start(raw)
    _, answer = raw.json("POST", "/v1/jobs/poll", {"workerId": "w", "jobTypes": ["raw"]})
    job_id = answer["jobs"][0]["id"]
    status, _, _ = raw.send("POST", f"/v1/jobs/{job_id}/fail", '{"errorMessage": "boom"}')
    assert status == 204
    _, after = raw.json("GET", f"/v1/instances/{instance['id']}")
    assert after["status"] == "FAILED" and after["failureReason"] == "boom"


USER_DEF = {
    "id": "raw-user",
    "name": "Raw user",
    "steps": [
        {"id": "review", "name": "Review", "type": "USER_TASK", "nextStep": "hold"},
        {"id": "hold", "name": "Hold", "type": "WAIT", "nextStep": "end"},
        {"id": "end", "name": "End", "type": "END"},
    ],
}


def test_user_task_reads_variables_and_drops_result(raw: Raw) -> None:
    instance = _start(raw, USER_DEF)
    body = {"completedBy": "ann", "result": {"dropped": True}, "variables": {"kept": True}}
    status, _, _ = raw.send(
        "POST", f"/v1/instances/{instance['id']}/user-tasks/review/complete", json.dumps(body)
    )
    assert status == 204
    _, after = raw.json("GET", f"/v1/instances/{instance['id']}")
    assert after["variables"] == {"kept": True}
    assert after["status"] == "WAITING" and after["currentStepIds"] == ["hold"]


def test_user_task_and_signal_accept_no_body_and_ignore_chunked_ones(raw: Raw) -> None:
    instance = _start(raw, USER_DEF)
    base = f"/v1/instances/{instance['id']}"
    status, _, _ = raw.send("POST", f"{base}/user-tasks/review/complete")
    assert status == 204
    chunks = iter([b'{"fromChunked": true}'])  # an iterable body is sent chunked
    raw.conn.request("POST", f"{base}/signals/hold", body=chunks, encode_chunked=True)
    response = raw.conn.getresponse()
    response.read()
    assert response.status == 204
    _, after = raw.json("GET", base)
    assert after["status"] == "COMPLETED"
    assert "variables" not in after  # the chunked signal body was ignored


def test_signal_body_is_the_variable_map(raw: Raw) -> None:
    instance = _start(raw, USER_DEF)
    base = f"/v1/instances/{instance['id']}"
    raw.send("POST", f"{base}/user-tasks/review/complete", b"")
    status, _, _ = raw.send("POST", f"{base}/signals/hold", '{"paid": true, "n": 2}')
    assert status == 204
    _, after = raw.json("GET", base)
    assert after["variables"] == {"paid": True, "n": 2}


def test_cancel_accepts_an_empty_body(raw: Raw) -> None:
    instance = _start(raw, USER_DEF)
    status, answer = raw.json("POST", f"/v1/instances/{instance['id']}/cancel")
    assert status == 200
    assert answer["status"] == "CANCELLED" and answer["failureReason"] == ""


def test_definition_ids_are_percent_decoded(raw: Raw) -> None:
    definition = {**SERVICE_DEF, "id": "LOS::raw"}
    raw.json("POST", "/v1/definitions", definition)
    for path in ("/v1/definitions/LOS::raw", "/v1/definitions/LOS%3A%3Araw"):
        status, answer = raw.json("GET", path)
        assert status == 200 and answer["id"] == "LOS::raw"
    status, answer = raw.json("GET", "/v1/definitions/LOS%3A%3Araw/versions/1")
    assert status == 200 and answer["version"] == 1
    status, answer = raw.json("GET", "/v1/definitions/LOS::raw/versions/one")
    assert status == 400


def test_start_of_unknown_definition_is_500(raw: Raw) -> None:
    status, answer = raw.json("POST", "/v1/instances", {"definitionId": "nope"})
    assert status == 500
    assert answer["error"] == "internal-error"
    assert answer["reason"].endswith("definition not found")


def test_cors_preflight(local_engine_factory: Callable[..., LocalEngine]) -> None:
    # The real engine allows any origin; the local one when told to (issue 21).
    raw = Raw(local_engine_factory(cors_origins=["*"]))
    status, headers, data = raw.send(
        "OPTIONS",
        "/v1/jobs/poll",
        headers={"Origin": "http://ui", "Access-Control-Request-Method": "POST"},
    )
    assert status == 204 and data == b""
    assert headers["access-control-allow-origin"] == "*"
    assert "Authorization" in headers["access-control-allow-headers"]
    raw.conn.close()


def test_each_answer_is_one_write_with_nagle_off(raw: Raw, monkeypatch: pytest.MonkeyPatch) -> None:
    # Status line and body written apart meet the Nagle / delayed-ACK stall
    # (~40 ms per keep-alive request on loopback) unless TCP_NODELAY is on;
    # the server guards against it both ways, and this checks both guards.
    assert RequestHandler.disable_nagle_algorithm is True
    writes: list[bytes] = []
    original = socketserver._SocketWriter.write

    def counting(self: socketserver._SocketWriter, data: bytes) -> int:
        writes.append(bytes(data))
        return original(self, data)

    monkeypatch.setattr(socketserver._SocketWriter, "write", counting)
    for _ in range(3):
        assert raw.json("POST", "/v1/jobs/poll", {"workerId": "w", "jobTypes": ["x"]})[0] == 200
    assert len(writes) == 3
    assert all(w.startswith(b"HTTP/1.1 200 OK") and w.endswith(b"\n") for w in writes)


def test_no_log_line_per_request(raw: Raw, capfd: pytest.CaptureFixture[str]) -> None:
    raw.send("GET", "/healthz")
    raw.send("GET", "/nothing")
    raw.json("POST", "/v1/jobs/poll", {"workerId": "w", "jobTypes": ["x"]})
    out, err = capfd.readouterr()
    assert out == "" and err == ""
