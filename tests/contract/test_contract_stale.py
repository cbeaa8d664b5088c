"""Jobs that stop mattering while a worker holds them: a cancelled instance,
an interrupting boundary timer (ENGINE_CONTRACT.md, "When a job goes stale").

Timers use PT1S and waits long enough for the real engine's 5 s timer sweep;
the local suite's engine checks timers every 0.1 s."""

from __future__ import annotations

from typing import Any

from contract_support import (
    TIMER_TIMEOUT,
    definition,
    end,
    history_item,
    poll_one,
    service,
    step,
    timer,
    wait_for,
    wait_status,
)

from workflow_sdk.client.rest import RestEngineClient

INTERRUPTED = "interrupted by boundary timer"
WORKER = "contract-worker"


def _cancelled_with_a_claimed_job(
    client: RestEngineClient, uid: str, retries: int = 0
) -> tuple[str, dict[str, Any]]:
    def_id = f"c-stale-{uid}"
    client.upload_definition(
        definition(
            def_id,
            service("a", f"a-{uid}", "b", retryCount=retries),
            service("b", f"b-{uid}"),
            end(),
        )
    )
    instance_id = client.start_instance(def_id, {"n": 1})["id"]
    job = poll_one(client, f"a-{uid}")
    client.cancel_instance(instance_id, "stop")
    return instance_id, job


def test_cancel_leaves_a_claimed_job_running_and_completing_it_completes_only_job_and_step(
    client: RestEngineClient, uid: str
) -> None:
    instance_id, job = _cancelled_with_a_claimed_job(client, uid)
    assert history_item(client, instance_id, job["stepExecutionId"])["status"] == "RUNNING"
    client.complete_job(job["id"], WORKER, {"late": True})  # 204
    after = client.get_instance(instance_id)
    assert after["status"] == "CANCELLED" and after["failureReason"] == "stop"
    assert after["variables"] == {"n": 1}
    # The job and its step execution are COMPLETED; the instance does not
    # move on: no job for the next step.
    item = history_item(client, instance_id, job["stepExecutionId"])
    assert item["status"] == "COMPLETED" and item["endedAt"] is not None
    assert client.poll_jobs(WORKER, [f"b-{uid}"], 5) == []
    # The job is COMPLETED: completing it again is a no-op.
    client.complete_job(job["id"], WORKER, {"again": True})  # 204
    assert client.get_instance(instance_id)["variables"] == {"n": 1}
    assert history_item(client, instance_id, job["stepExecutionId"])["status"] == "COMPLETED"


def test_a_non_retryable_fail_after_cancel_fails_the_instance(
    client: RestEngineClient, uid: str
) -> None:
    instance_id, job = _cancelled_with_a_claimed_job(client, uid, retries=3)
    client.fail_job(job["id"], WORKER, "gave up", retryable=False)
    failed = wait_status(client, instance_id, "FAILED")
    assert failed["failureReason"] == "gave up"
    item = history_item(client, instance_id, job["stepExecutionId"])
    assert item["status"] == "FAILED" and item["failureReason"] == "gave up"


def test_a_retryable_fail_after_cancel_requeues_the_job(client: RestEngineClient, uid: str) -> None:
    instance_id, job = _cancelled_with_a_claimed_job(client, uid, retries=1)
    client.fail_job(job["id"], WORKER, "flaky", retryable=True)
    again = poll_one(client, f"a-{uid}")
    assert again["id"] == job["id"] and again["retriesRemaining"] == 0
    assert client.get_instance(instance_id)["status"] == "CANCELLED"


def test_an_interrupting_timer_fails_the_step_and_takes_its_path(
    client: RestEngineClient, uid: str
) -> None:
    def_id = f"c-timer-int-{uid}"
    client.upload_definition(
        definition(
            def_id,
            service("slow", f"slow-{uid}", boundaryEvents=[timer("late", interrupting=True)]),
            service("late", f"late-{uid}"),
            end(),
        )
    )
    instance_id = client.start_instance(def_id)["id"]
    job = poll_one(client, f"slow-{uid}")

    def interrupted() -> dict[str, Any] | None:
        item = history_item(client, instance_id, job["stepExecutionId"])
        return item if item["status"] != "RUNNING" else None

    item = wait_for(interrupted, "the slow step's interruption", TIMER_TIMEOUT)
    assert item["status"] == "FAILED" and item["failureReason"] == INTERRUPTED
    late = poll_one(client, f"late-{uid}", timeout=TIMER_TIMEOUT)
    instance = client.get_instance(instance_id)
    # The contract says the instance goes on along the timer's path; it does
    # not say whether the interrupted step still shows among the current
    # ones, so only the timer's step is required there.
    assert instance["status"] == "ACTIVE" and "late" in instance["currentStepIds"]
    # The interrupted job is cancelled: never handed out again, and its
    # completion is a no-op.
    client.complete_job(job["id"], WORKER, {"slow": "done"})  # 204
    assert client.poll_jobs(WORKER, [f"slow-{uid}"], 5) == []
    after = client.get_instance(instance_id)
    assert after["status"] == "ACTIVE" and after["currentStepIds"] == instance["currentStepIds"]
    client.complete_job(late["id"], WORKER, {})
    done = wait_status(client, instance_id, "COMPLETED")
    assert "slow" not in done.get("variables", {})
    # A fail for the interrupted job checks nothing: it fails even the
    # completed instance (what a worker must never send).
    client.fail_job(job["id"], WORKER, "handler timed out", retryable=False)
    failed = wait_status(client, instance_id, "FAILED")
    assert failed["failureReason"] == "handler timed out"


def test_a_non_interrupting_timer_runs_both_paths(client: RestEngineClient, uid: str) -> None:
    def_id = f"c-timer-non-{uid}"
    client.upload_definition(
        definition(
            def_id,
            service("slow", f"slow-{uid}", boundaryEvents=[timer("notify", interrupting=False)]),
            service("notify", f"notify-{uid}"),
            end(),
        )
    )
    instance_id = client.start_instance(def_id)["id"]
    job = poll_one(client, f"slow-{uid}")
    notify = poll_one(client, f"notify-{uid}", timeout=TIMER_TIMEOUT)
    assert notify["instanceId"] == instance_id
    # Nothing was cancelled: the slow step runs on.
    assert history_item(client, instance_id, job["stepExecutionId"])["status"] == "RUNNING"
    assert sorted(client.get_instance(instance_id)["currentStepIds"]) == ["notify", "slow"]
    client.complete_job(job["id"], WORKER, {"slow": "done"})
    item = history_item(client, instance_id, job["stepExecutionId"])
    assert item["status"] == "COMPLETED"
    client.complete_job(notify["id"], WORKER, {})
    assert wait_status(client, instance_id, "COMPLETED")["variables"] == {"slow": "done"}


def test_a_non_interrupting_timer_on_a_wait_step(client: RestEngineClient, uid: str) -> None:
    # The shape of the engine's own timer scenario: the timer's path ends
    # the instance while the WAIT step is still parked.
    def_id = f"c-timer-wait-{uid}"
    client.upload_definition(
        definition(
            def_id,
            step("wait", "WAIT", nextStep="end",
                 boundaryEvents=[timer("fired", interrupting=False)]),
            service("fired", f"fired-{uid}"),
            end(),
        )
    )  # fmt: skip
    instance_id = client.start_instance(def_id)["id"]
    assert wait_status(client, instance_id, "WAITING")["currentStepIds"] == ["wait"]
    fired = poll_one(client, f"fired-{uid}", timeout=TIMER_TIMEOUT)
    client.complete_job(fired["id"], WORKER, {"fired": True})
    assert wait_status(client, instance_id, "COMPLETED")["variables"] == {"fired": True}
