"""Lease extension (ENGINE_CONTRACT.md, "Lease extension"; newer engines only).

Run against an engine that extends leases: a ``LocalEngine(heartbeat=True)``
by default, or ``ROCHALLOR_TEST_ENGINE_URL``. Every test probes first and is
skipped on a released engine (which has no heartbeat route). The last test
checks the released side: the default ``LocalEngine`` has no route.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from contract_support import definition, end, poll_one, service, ts, wait_status

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import LeaseLostError
from workflow_sdk.testing import LocalEngine

WORKER = "contract-worker"
ENGINE_URL = os.environ.get("ROCHALLOR_TEST_ENGINE_URL", "").strip()


@pytest.fixture
def renewing(local_engine_factory: Callable[..., LocalEngine]) -> Iterator[RestEngineClient]:
    """A client of an engine that extends leases (skipped when it does not)."""
    url = ENGINE_URL or local_engine_factory(heartbeat=True).url
    with RestEngineClient(url, timeout=10.0) as client:
        # An unknown job: a released engine answers the plain-text 404
        # (None), an engine with the route refuses (lease lost).
        try:
            answer = client.extend_lease("contract-probe-unknown-job", WORKER)
        except LeaseLostError:
            answer = {}
        if answer is None:
            pytest.skip("the engine cannot extend leases (a released engine)")
        yield client


def claim(client: RestEngineClient, uid: str) -> dict[str, Any]:
    job_type = f"hb-{uid}"
    client.upload_definition(
        definition(f"contract-hb-{uid}", service("work", job_type, retryCount=0), end())
    )
    client.start_instance(f"contract-hb-{uid}")
    return poll_one(client, job_type, WORKER)


def post(client: RestEngineClient, path: str, body: Any) -> requests.Response:
    return requests.post(client.base_url + path, json=body, timeout=10.0)


def test_a_renewal_is_accepted_and_moves_the_lease(renewing: RestEngineClient, uid: str) -> None:
    job = claim(renewing, uid)
    answer = renewing.extend_lease(job["id"], WORKER, 60)
    assert answer is not None
    assert answer["accepted"] is True
    # 60 s from the renewal, by the engine's clock: past the claim's lease.
    assert ts(answer["lockExpiresAt"]) - ts(job["lockedAt"]) >= 60
    assert ts(answer["lockExpiresAt"]) > ts(job["lockExpiresAt"])


def test_zero_means_the_engine_default(renewing: RestEngineClient, uid: str) -> None:
    job = claim(renewing, uid)
    answer = renewing.extend_lease(job["id"], WORKER, 0)
    assert answer is not None and answer["accepted"] is True
    granted = ts(job["lockExpiresAt"]) - ts(job["lockedAt"])
    assert ts(answer["lockExpiresAt"]) - ts(job["lockedAt"]) >= granted


def test_the_answer_is_json_with_a_zoned_time(renewing: RestEngineClient, uid: str) -> None:
    job = claim(renewing, uid)
    raw = post(renewing, f"/v1/jobs/{job['id']}/heartbeat", {"workerId": WORKER, "leaseSeconds": 0})
    assert raw.status_code == 200
    assert raw.headers["Content-Type"] == "application/json"
    assert raw.text.endswith("\n")
    assert ts(raw.json()["lockExpiresAt"]) > 0  # parses with its offset


@pytest.mark.parametrize("lease", [1, 4, 3601, -5])
def test_a_lease_out_of_range_is_400(renewing: RestEngineClient, uid: str, lease: int) -> None:
    job = claim(renewing, uid)
    raw = post(
        renewing, f"/v1/jobs/{job['id']}/heartbeat", {"workerId": WORKER, "leaseSeconds": lease}
    )
    assert raw.status_code == 400
    assert raw.json()["error"] == "bad-request"


def test_another_workers_job_is_lease_lost(renewing: RestEngineClient, uid: str) -> None:
    job = claim(renewing, uid)
    with pytest.raises(LeaseLostError) as info:
        renewing.extend_lease(job["id"], "someone-else")
    assert info.value.status_code == 409


def test_a_completed_job_is_lease_lost(renewing: RestEngineClient, uid: str) -> None:
    job = claim(renewing, uid)
    renewing.complete_job(job["id"], WORKER, {})
    wait_status(renewing, job["instanceId"], "COMPLETED")
    with pytest.raises(LeaseLostError):
        renewing.extend_lease(job["id"], WORKER)


def test_a_poll_honours_lease_seconds(renewing: RestEngineClient, uid: str) -> None:
    job_type = f"hbpoll-{uid}"
    renewing.upload_definition(
        definition(f"contract-hbpoll-{uid}", service("work", job_type), end())
    )
    renewing.start_instance(f"contract-hbpoll-{uid}")
    body = {"workerId": WORKER, "jobTypes": [job_type], "maxJobs": 1, "leaseSeconds": 120}
    jobs: list[dict[str, Any]] = []
    for _ in range(100):
        jobs = post(renewing, "/v1/jobs/poll", body).json()["jobs"] or []
        if jobs:
            break
    [job] = jobs
    assert ts(job["lockExpiresAt"]) - ts(job["lockedAt"]) == pytest.approx(120, abs=1)


def test_a_released_engine_has_no_route(local: LocalEngine, uid: str) -> None:
    assert not local.heartbeat
    with RestEngineClient(local.url) as client:
        job = claim(client, uid)
        raw = post(client, f"/v1/jobs/{job['id']}/heartbeat", {"workerId": WORKER})
        assert raw.status_code == 404
        assert raw.text == "404 page not found\n"
        assert client.extend_lease(job["id"], WORKER) is None
        # And a released engine ignores leaseSeconds in polls.
        client.start_instance(f"contract-hb-{uid}")
        body = {"workerId": WORKER, "jobTypes": [f"hb-{uid}"], "maxJobs": 1, "leaseSeconds": 99}
        [again] = post(client, "/v1/jobs/poll", body).json()["jobs"]
        granted = ts(again["lockExpiresAt"]) - ts(again["lockedAt"])
        assert granted == pytest.approx(local.lease_seconds, abs=1)
