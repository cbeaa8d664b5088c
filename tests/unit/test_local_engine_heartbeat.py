"""The local engine's lease extension (``LocalEngine(heartbeat=True)``), state and route."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from workflow_sdk.client.models import parse_timestamp
from workflow_sdk.errors import LeaseLostError
from workflow_sdk.testing import LocalEngine
from workflow_sdk.testing.server import route
from workflow_sdk.testing.store import EngineError, EngineState

DEFINITION = {
    "id": "hb",
    "name": "hb",
    "steps": [
        {"id": "work", "name": "work", "type": "SERVICE_TASK", "jobType": "hb", "nextStep": "end"},
        {"id": "end", "name": "end", "type": "END"},
    ],
}


def _state(lease: float = 30.0) -> EngineState:
    state = EngineState(lease)
    state.heartbeat = True
    state.upload_definition(DEFINITION)
    state.start_instance("hb", None, {}, None)
    return state


def _claim(state: EngineState, worker: str = "w", lease: float = 0) -> dict[str, Any]:
    [job] = state.poll(worker, ["hb"], 1, lease)["jobs"]
    return dict(job)


def _seconds(job: dict[str, Any]) -> float:
    start = parse_timestamp(job["lockedAt"])
    return (parse_timestamp(job["lockExpiresAt"]) - start).total_seconds()


# -- state ---------------------------------------------------------------------


def test_a_renewal_moves_the_lease_and_is_counted() -> None:
    state = _state()
    job = _claim(state)
    answer = state.heartbeat_job(job["id"], "w", 120)
    assert answer["accepted"] is True
    after = state.inspect_job(job["id"])
    assert after["lockExpiresAt"] == answer["lockExpiresAt"]
    assert _seconds(after) >= 119
    assert after["heartbeats"] == 1
    assert state.counters["heartbeats"] == 1


def test_zero_renews_for_the_engine_default() -> None:
    state = _state(lease=30.0)
    job = _claim(state)
    state.heartbeat_job(job["id"], "w", 0)
    assert 29 <= _seconds(state.inspect_job(job["id"])) <= 31


@pytest.mark.parametrize(
    ("prepare", "why"),
    [
        (lambda s, j: None, "another worker"),
        (lambda s, j: s.complete_job(j["id"], {}), "COMPLETED"),
        (lambda s, j: s.revoke_lease(j["id"]), "PENDING"),
    ],
)
def test_a_lost_lease_is_409(prepare: Any, why: str) -> None:
    state = _state()
    job = _claim(state)
    prepare(state, job)
    worker = "other" if why == "another worker" else "w"
    with pytest.raises(EngineError) as info:
        state.heartbeat_job(job["id"], worker, 0)
    assert info.value.status == 409
    assert why in info.value.reason
    assert state.counters["heartbeats_refused"] == 1


def test_an_unknown_job_is_409() -> None:
    with pytest.raises(EngineError) as info:
        _state().heartbeat_job("nope", "w", 0)
    assert info.value.status == 409


def test_a_lease_that_passed_is_lost_even_before_the_sweep() -> None:
    state = _state(lease=0.05)
    job = _claim(state)
    state.wait_until(lambda: None, 0.1)  # let the lease pass; nothing wakes this wait
    with pytest.raises(EngineError) as info:
        state.heartbeat_job(job["id"], "w", 0)
    assert "expired" in info.value.reason
    assert state.inspect_job(job["id"])["status"] == "LOCKED"  # not swept yet


def test_the_sweep_leaves_a_renewed_lease_alone() -> None:
    state = _state(lease=0.05)
    job = _claim(state)
    state.heartbeat_job(job["id"], "w", 60)
    state.wait_until(lambda: None, 0.1)  # the claim's lease has passed
    assert state.expire_leases() == 0
    assert state.inspect_job(job["id"])["status"] == "LOCKED"


def test_a_poll_honours_lease_seconds() -> None:
    assert 299 <= _seconds(_claim(_state(), lease=300)) <= 301


def test_revoke_lease_requeues_the_job_for_the_next_poll() -> None:
    state = _state()
    job = _claim(state)
    state.revoke_lease(job["id"])
    again = _claim(state, "w2")
    assert again["id"] == job["id"]
    assert state.inspect_job(job["id"])["deliveries"] == 2
    state.complete_job(job["id"], {})
    with pytest.raises(ValueError, match="not LOCKED"):
        state.revoke_lease(job["id"])


def test_the_route_exists_only_with_heartbeat() -> None:
    assert route("POST", "/v1/jobs/j/heartbeat") == 404
    assert route("GET", "/v1/jobs/j/heartbeat") == 404
    assert not isinstance(route("POST", "/v1/jobs/j/heartbeat", heartbeat=True), int)
    assert route("GET", "/v1/jobs/j/heartbeat", heartbeat=True) == 405


# -- over HTTP -------------------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[LocalEngine]:
    with LocalEngine(heartbeat=True) as eng:
        with eng.client() as client:
            client.upload_definition(DEFINITION)
        yield eng


def _post(engine: LocalEngine, path: str, body: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=10)
    try:
        conn.request("POST", path, body=body.encode(), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def _claimed(engine: LocalEngine, lease: int = 0) -> dict[str, Any]:
    with engine.client() as client:
        client.start_instance("hb")
    body = json.dumps({"workerId": "w", "jobTypes": ["hb"], "maxJobs": 1, "leaseSeconds": lease})
    status, _, data = _post(engine, "/v1/jobs/poll", body)
    assert status == 200
    [job] = json.loads(data)["jobs"]
    return dict(job)


def test_http_renewal_answers_200_json(engine: LocalEngine) -> None:
    job = _claimed(engine)
    status, content_type, data = _post(
        engine, f"/v1/jobs/{job['id']}/heartbeat", '{"workerId": "w", "leaseSeconds": 10}'
    )
    assert (status, content_type) == (200, "application/json")
    assert data.endswith(b"\n")
    answer = json.loads(data)
    assert set(answer) == {"accepted", "lockExpiresAt"}
    assert answer["accepted"] is True


@pytest.mark.parametrize(
    "body",
    [
        "",
        "[]",
        '{"leaseSeconds": 10}',
        '{"workerId": "w", "leaseSeconds": 4}',
        '{"workerId": "w", "leaseSeconds": 3601}',
        '{"workerId": "w", "leaseSeconds": "10"}',
        '{"workerId": "w", "leaseSeconds": true}',
    ],
)
def test_http_bad_requests_are_400(engine: LocalEngine, body: str) -> None:
    job = _claimed(engine)
    status, _, data = _post(engine, f"/v1/jobs/{job['id']}/heartbeat", body)
    assert status == 400
    assert json.loads(data)["error"] == "bad-request"
    assert engine.job(job["id"])["heartbeats"] == 0


def test_http_poll_with_a_bad_lease_is_400(engine: LocalEngine) -> None:
    body = json.dumps({"workerId": "w", "jobTypes": ["hb"], "maxJobs": 1, "leaseSeconds": 2})
    status, _, data = _post(engine, "/v1/jobs/poll", body)
    assert status == 400
    assert "leaseSeconds" in json.loads(data)["reason"]


def test_http_lost_lease_is_409_and_the_client_says_lease_lost(engine: LocalEngine) -> None:
    job = _claimed(engine)
    engine.revoke_lease(job["id"])
    status, _, data = _post(engine, f"/v1/jobs/{job['id']}/heartbeat", '{"workerId": "w"}')
    assert status == 409
    assert json.loads(data)["error"] == "conflict"
    with engine.client() as client, pytest.raises(LeaseLostError):
        client.extend_lease(job["id"], "w")


def test_a_released_engine_answers_the_plain_404() -> None:
    with LocalEngine() as released:
        status, content_type, data = _post(released, "/v1/jobs/x/heartbeat", '{"workerId": "w"}')
        assert (status, data) == (404, b"404 page not found\n")
        assert content_type.startswith("text/plain")
        assert "heartbeat" not in repr(released)
