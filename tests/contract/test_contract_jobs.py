"""Jobs: poll, complete, fail, retries, leases (ENGINE_CONTRACT.md, "Jobs")."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from contract_support import (
    definition,
    end,
    poll_n,
    poll_one,
    run_job,
    service,
    step,
    ts,
    wait_status,
)

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import EngineClientError
from workflow_sdk.testing import LocalEngine

JOB_FIELDS = {
    "id",
    "instanceId",
    "stepExecutionId",
    "jobType",
    "status",
    "workerId",
    "lockedAt",
    "lockExpiresAt",
    "retriesRemaining",
    "variables",
    "createdAt",
}


def _upload(client: RestEngineClient, uid: str, retries: int = 0) -> str:
    def_id = f"c-jobs-{uid}"
    client.upload_definition(
        definition(
            def_id,
            service("first", f"first-{uid}", "second", retryCount=retries),
            service("second", f"second-{uid}", retryCount=retries),
            end(),
        )
    )
    return def_id


def test_empty_poll_is_an_empty_list(client: RestEngineClient, uid: str) -> None:
    assert client.poll_jobs("contract-worker", [f"nothing-{uid}"], 5) == []


def test_a_claimed_job_has_the_contract_fields(client: RestEngineClient, uid: str) -> None:
    def_id = _upload(client, uid, retries=3)
    instance = client.start_instance(def_id, {"n": 1, "nested": {"a": [1, 2]}})
    before = time.time()
    job = poll_one(client, f"first-{uid}", worker="worker-7")
    # The client fills in "stepId" as "" because the engine sends none.
    assert set(job) == JOB_FIELDS | {"stepId"}
    assert job["stepId"] == ""
    assert job["instanceId"] == instance["id"]
    assert job["jobType"] == f"first-{uid}"
    assert job["status"] == "LOCKED"
    assert job["workerId"] == "worker-7"
    assert job["retriesRemaining"] == 3  # first attempt of retryCount 3
    assert job["variables"] == {"n": 1, "nested": {"a": [1, 2]}}
    assert job["stepExecutionId"]
    lease = ts(job["lockExpiresAt"]) - ts(job["lockedAt"])
    assert 29.0 <= lease <= 31.0
    assert ts(job["createdAt"]) <= ts(job["lockedAt"])
    # The engine's clock may differ from ours, but not by an hour here.
    assert abs(ts(job["lockedAt"]) - before) < 3600


def test_poll_hands_out_the_oldest_first_up_to_max_jobs(client: RestEngineClient, uid: str) -> None:
    # Which jobs are claimed (the oldest N) is promised; their order within
    # one answer is not.
    def_id = _upload(client, uid)
    started = [client.start_instance(def_id)["id"] for _ in range(3)]
    first = poll_n(client, f"first-{uid}", 2)
    rest = poll_n(client, f"first-{uid}", 1)
    assert sorted(job["instanceId"] for job in first) == sorted(started[:2])
    assert [job["instanceId"] for job in rest] == started[2:]
    assert client.poll_jobs("contract-worker", [f"first-{uid}"], 5) == []


def test_poll_over_several_job_types(client: RestEngineClient, uid: str) -> None:
    def_id = f"c-types-{uid}"
    client.upload_definition(
        definition(
            def_id,
            step("fork", "PARALLEL_GATEWAY", parallelNextSteps=["x", "y"], joinStep="join"),
            service("x", f"x-{uid}", "join"),
            service("y", f"y-{uid}", "join"),
            step("join", "JOIN_GATEWAY", nextStep="end"),
            end(),
        )
    )
    client.start_instance(def_id)
    jobs = client.poll_jobs("contract-worker", [f"x-{uid}", f"y-{uid}"], 10)
    assert sorted(job["jobType"] for job in jobs) == [f"x-{uid}", f"y-{uid}"]


def test_poll_without_a_worker_id_is_400(client: RestEngineClient, uid: str) -> None:
    with pytest.raises(EngineClientError) as caught:
        client.poll_jobs("", [f"t-{uid}"], 1)
    assert caught.value.status_code == 400
    assert caught.value.error_code == "bad-request"


def test_complete_merges_variables_shallowly_and_advances(
    client: RestEngineClient, uid: str
) -> None:
    def_id = _upload(client, uid)
    instance_id = client.start_instance(def_id, {"keep": 1, "deep": {"a": 1, "b": 2}})["id"]
    run_job(client, f"first-{uid}", {"deep": {"c": 3}, "added": True})
    second = poll_one(client, f"second-{uid}")
    # The job's variables are the instance's when the job was created.
    assert second["variables"] == {"keep": 1, "deep": {"c": 3}, "added": True}
    assert client.get_instance(instance_id)["currentStepIds"] == ["second"]
    client.complete_job(second["id"], "contract-worker", {})
    done = wait_status(client, instance_id, "COMPLETED")
    assert done["variables"] == {"keep": 1, "deep": {"c": 3}, "added": True}
    assert "completedAt" in done


def test_completing_twice_is_an_idempotent_no_op(client: RestEngineClient, uid: str) -> None:
    def_id = _upload(client, uid)
    instance_id = client.start_instance(def_id)["id"]
    job = poll_one(client, f"first-{uid}")
    client.complete_job(job["id"], "contract-worker", {"v": 1})
    client.complete_job(job["id"], "another-worker", {"v": 2})  # 204, nothing happens
    poll_n(client, f"second-{uid}", 1)
    assert client.poll_jobs("contract-worker", [f"second-{uid}"], 5) == []  # one, not two
    assert client.get_instance(instance_id)["variables"] == {"v": 1}


@pytest.mark.parametrize("operation", ["complete", "fail"])
def test_unknown_job_is_a_permanent_500(client: RestEngineClient, operation: str) -> None:
    job_id = str(uuid.uuid4())
    with pytest.raises(EngineClientError) as caught:
        if operation == "complete":
            client.complete_job(job_id, "contract-worker", {})
        else:
            client.fail_job(job_id, "contract-worker", "boom", retryable=True)
    assert caught.value.status_code == 500
    assert caught.value.error_code == "internal-error"
    assert f'job "{job_id}" not found' in caught.value.message
    assert caught.value.retryable is False


def test_retryable_failure_requeues_with_one_retry_less(client: RestEngineClient, uid: str) -> None:
    def_id = _upload(client, uid, retries=2)
    instance_id = client.start_instance(def_id, {"x": 1})["id"]
    job = poll_one(client, f"first-{uid}")
    assert job["retriesRemaining"] == 2
    client.fail_job(job["id"], "contract-worker", "flaky", retryable=True)
    again = poll_one(client, f"first-{uid}")
    assert again["id"] == job["id"]
    assert again["retriesRemaining"] == 1
    assert again["variables"] == job["variables"]
    assert again["createdAt"] == job["createdAt"]
    assert client.get_instance(instance_id)["status"] == "ACTIVE"
    client.complete_job(again["id"], "contract-worker", {"ok": True})
    run_job(client, f"second-{uid}")
    wait_status(client, instance_id, "COMPLETED")
    # A retryable failure leaves no trace in the history.
    history = client.get_instance_history(instance_id)
    assert [(item["stepId"], item["status"]) for item in history] == [
        ("first", "COMPLETED"),
        ("second", "COMPLETED"),
        ("end", "COMPLETED"),
    ]


def test_retries_exhausted_fail_the_instance(client: RestEngineClient, uid: str) -> None:
    def_id = _upload(client, uid, retries=1)
    instance_id = client.start_instance(def_id)["id"]
    job = poll_one(client, f"first-{uid}")
    client.fail_job(job["id"], "contract-worker", "attempt 1", retryable=True)
    job = poll_one(client, f"first-{uid}")
    assert job["retriesRemaining"] == 0
    client.fail_job(job["id"], "contract-worker", "attempt 2 failed for good", retryable=True)
    failed = wait_status(client, instance_id, "FAILED")
    assert failed["failureReason"] == "attempt 2 failed for good"
    assert client.poll_jobs("contract-worker", [f"first-{uid}"], 5) == []
    history = client.get_instance_history(instance_id)
    assert [(i["stepId"], i["status"]) for i in history] == [("first", "FAILED")]
    assert history[0]["failureReason"] == "attempt 2 failed for good"


def test_non_retryable_failure_fails_at_once(client: RestEngineClient, uid: str) -> None:
    def_id = _upload(client, uid, retries=5)
    instance_id = client.start_instance(def_id)["id"]
    job = poll_one(client, f"first-{uid}")
    client.fail_job(job["id"], "contract-worker", "bad input", retryable=False)
    failed = wait_status(client, instance_id, "FAILED")
    assert failed["failureReason"] == "bad input"
    assert client.poll_jobs("contract-worker", [f"first-{uid}"], 5) == []


def test_completing_a_failed_job_completes_it_but_not_the_instance(
    client: RestEngineClient, uid: str
) -> None:
    def_id = _upload(client, uid)
    instance_id = client.start_instance(def_id)["id"]
    job = poll_one(client, f"first-{uid}")
    client.fail_job(job["id"], "contract-worker", "gave up", retryable=False)
    wait_status(client, instance_id, "FAILED")
    client.complete_job(job["id"], "contract-worker", {})  # 204
    assert client.get_instance(instance_id)["status"] == "FAILED"
    history = client.get_instance_history(instance_id)
    assert [(i["stepId"], i["status"]) for i in history] == [("first", "COMPLETED")]


def test_competing_pollers_never_get_the_same_job(client: RestEngineClient, uid: str) -> None:
    def_id = _upload(client, uid)
    total = 40
    for _ in range(total):
        client.start_instance(def_id)
    claimed: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 10.0

    def worker(index: int) -> None:
        while time.monotonic() < deadline:
            with lock:
                if len(claimed) >= total:
                    return
            jobs = client.poll_jobs(f"racer-{index}", [f"first-{uid}"], 3)
            with lock:
                claimed.extend(job["id"] for job in jobs)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(claimed) == total
    assert len(set(claimed)) == total


def test_expired_lease_requeues_the_same_job_after_the_lease(
    short_lease: LocalEngine, uid: str
) -> None:
    with short_lease.client() as client:
        def_id = _upload(client, uid, retries=2)
        instance_id = client.start_instance(def_id, {"v": 1})["id"]
        claimed_at = time.monotonic()
        job = poll_one(client, f"first-{uid}", worker="slow")
        assert client.poll_jobs("fast", [f"first-{uid}"], 1) == []
        again = poll_one(client, f"first-{uid}", worker="fast", timeout=5.0)
        assert time.monotonic() - claimed_at >= short_lease.lease_seconds
        assert again["id"] == job["id"]
        assert again["workerId"] == "fast"
        assert again["retriesRemaining"] == 2  # unchanged by an expiry
        assert again["createdAt"] == job["createdAt"]
        assert again["variables"] == job["variables"]
        # No lease check on completion: the slow worker's late answer counts.
        client.complete_job(job["id"], "slow", {"by": "slow"})
        client.complete_job(again["id"], "fast", {"by": "fast"})  # no-op
        assert client.get_instance(instance_id)["variables"] == {"v": 1, "by": "slow"}
        assert short_lease.complete_calls(job["id"]) == 2
        assert short_lease.fail_calls(job["id"]) == 0
