"""``LocalEngine.fail_next``: bursts of 5xx answers, before or after the change."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from workflow_sdk.testing import LocalEngine

DEF = {
    "id": "burst",
    "name": "Burst",
    "steps": [
        {"id": "work", "name": "Work", "type": "SERVICE_TASK", "jobType": "burst",
         "nextStep": "end"},
        {"id": "end", "name": "End", "type": "END"},
    ],
}  # fmt: skip


def _post(engine: LocalEngine, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    # Plain http.client: one attempt, whatever the answer.
    connection = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=10)
    try:
        connection.request("POST", path, body=json.dumps(body))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _claimed(engine: LocalEngine) -> tuple[str, str]:
    with engine.client() as client:
        client.upload_definition(DEF)
        instance_id = client.start_instance("burst")["id"]
        (job,) = client.poll_jobs("w", ["burst"], 1)
    return instance_id, job["id"]


def test_a_burst_before_the_change_applies_nothing_then_ends() -> None:
    with LocalEngine() as engine:
        instance_id, job_id = _claimed(engine)
        engine.fail_next("complete", 2, 503)
        complete = f"/v1/jobs/{job_id}/complete"
        assert _post(engine, complete, {"workerId": "w"}) == (503, b"")
        assert _post(engine, complete, {"workerId": "w"}) == (503, b"")
        assert engine.instance(instance_id)["status"] == "ACTIVE"
        assert engine.complete_calls(job_id) == 0
        assert _post(engine, complete, {"workerId": "w"})[0] == 204
        assert engine.instance(instance_id)["status"] == "COMPLETED"
        assert engine.counters["errors_injected"] == 2


def test_a_500_after_the_change_applies_it_and_says_timeout() -> None:
    with LocalEngine() as engine:
        instance_id, job_id = _claimed(engine)
        engine.fail_next("complete", status=500, applied=True)
        status, body = _post(engine, f"/v1/jobs/{job_id}/complete", {"workerId": "w"})
        assert status == 500
        assert json.loads(body) == {
            "error": "internal-error",
            "reason": "injected fault: context deadline exceeded",
        }
        assert engine.instance(instance_id)["status"] == "COMPLETED"


def test_only_the_named_route_is_hit() -> None:
    with LocalEngine() as engine:
        instance_id, job_id = _claimed(engine)
        engine.fail_next("fail", 1, 502)
        # A poll and a complete are not the fail route: they go through.
        assert _post(engine, "/v1/jobs/poll", {"workerId": "w", "jobTypes": ["burst"]})[0] == 200
        assert _post(engine, f"/v1/jobs/{job_id}/complete", {"workerId": "w"})[0] == 204
        assert engine.counters["errors_injected"] == 0
        assert engine.instance(instance_id)["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nowhere",), "route must be one of"),
        (("poll", 1, 404), "status must be"),
        (("poll", 0), "count must be"),
    ],
)
def test_bad_arguments_are_refused(args: tuple[Any, ...], message: str) -> None:
    engine = LocalEngine()
    with pytest.raises(ValueError, match=message):
        engine.fail_next(*args)
