"""``LocalEngine(complete_delay=...)``: slow completions, as on a loaded
database, that hold up neither other requests nor a stop."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from workflow_sdk.testing import LocalEngine
from workflow_sdk.testing.__main__ import engine_from_args

DEF = {
    "id": "slow-db",
    "name": "Slow DB",
    "steps": [
        {"id": "work", "name": "Work", "type": "SERVICE_TASK", "jobType": "slow-db",
         "nextStep": "end"},
        {"id": "end", "name": "End", "type": "END"},
    ],
}  # fmt: skip


def _claimed(engine: LocalEngine) -> tuple[str, dict[str, Any]]:
    with engine.client() as client:
        client.upload_definition(DEF)
        instance_id = client.start_instance("slow-db")["id"]
        (job,) = client.poll_jobs("w", ["slow-db"], 1)
    return instance_id, job


def _raw_post(engine: LocalEngine, path: str, body: dict[str, Any], outcome: list[object]) -> None:
    # Plain http.client: one attempt, no retries, whatever happens.
    connection = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=30)
    try:
        connection.request("POST", path, body=json.dumps(body))
        outcome.append(connection.getresponse().status)
    except (OSError, http.client.HTTPException) as exc:
        outcome.append(exc)
    finally:
        connection.close()


def _raw_complete(engine: LocalEngine, job_id: str, outcome: list[object]) -> None:
    body = {"workerId": "w", "variables": {"done": True}}
    _raw_post(engine, f"/v1/jobs/{job_id}/complete", body, outcome)


def _raw_fail(engine: LocalEngine, job_id: str, outcome: list[object]) -> None:
    body = {"workerId": "w", "errorMessage": "flaky", "retryable": True}
    _raw_post(engine, f"/v1/jobs/{job_id}/fail", body, outcome)


def test_a_completion_is_applied_after_the_delay_and_then_answered(
    local_engine_factory: Callable[..., LocalEngine],
) -> None:
    engine = local_engine_factory(complete_delay=0.2)
    assert engine.complete_delay == 0.2
    instance_id, job = _claimed(engine)
    outcome: list[object] = []
    _raw_complete(engine, job["id"], outcome)
    assert outcome == [204]
    # Applied before the answer went out.
    assert engine.job(job["id"])["status"] == "COMPLETED"
    assert engine.instance(instance_id)["status"] == "COMPLETED"
    assert engine.counters["completes_delayed"] == 1


def test_other_requests_go_on_while_a_completion_waits_and_stop_ends_the_wait(
    local_engine_factory: Callable[..., LocalEngine],
) -> None:
    engine = local_engine_factory(complete_delay=600.0)
    instance_id, job = _claimed(engine)
    outcome: list[object] = []
    sender = threading.Thread(target=_raw_complete, args=(engine, job["id"], outcome))
    sender.start()
    try:
        engine.wait_until(lambda: engine.counters.get("completes_delayed"), timeout=10)
        # The state's lock is free: other calls are answered meanwhile.
        with engine.client() as client:
            assert client.get_instance(instance_id)["status"] == "ACTIVE"
            assert client.poll_jobs("w", ["slow-db"], 1) == []
        assert engine.job(job["id"])["status"] == "LOCKED"  # not applied yet
    finally:
        engine.stop()  # ends the wait: the request is dropped, not applied
        sender.join(30)
    assert not sender.is_alive()
    assert len(outcome) == 1 and not isinstance(outcome[0], int)
    assert engine.job(job["id"])["status"] == "LOCKED"
    assert engine.complete_calls(job["id"]) == 0


def test_the_delay_can_be_changed_while_running(
    local_engine_factory: Callable[..., LocalEngine],
) -> None:
    engine = local_engine_factory(complete_delay=600.0)
    engine.complete_delay = 0
    _, job = _claimed(engine)
    with engine.client() as client:
        client.complete_job(job["id"], "w", {})
    assert engine.job(job["id"])["status"] == "COMPLETED"
    assert "completes_delayed" not in engine.counters
    with pytest.raises(ValueError, match="complete_delay"):
        engine.complete_delay = -1
    with pytest.raises(ValueError, match="complete_delay"):
        LocalEngine(complete_delay=-0.1)


def test_the_command_line_passes_the_engine_options() -> None:
    engine = engine_from_args(
        ["--port", "0", "--lease-seconds", "2", "--timer-interval", "0.1",
         "--complete-delay", "0.25"]
    )  # fmt: skip
    assert not engine.running
    assert (engine.lease_seconds, engine.timer_interval, engine.complete_delay) == (2, 0.1, 0.25)
    defaults = engine_from_args([])
    assert (defaults.port, defaults.timer_interval, defaults.complete_delay) == (8080, 0.5, 0)


@pytest.mark.parametrize(
    "argv", [["--complete-delay", "-1"], ["--timer-interval", "0"], ["--lease-seconds", "0"]]
)
def test_the_command_line_refuses_bad_values(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        engine_from_args(argv)
    assert caught.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_a_fail_is_applied_at_once_and_its_answer_held(
    local_engine_factory: Callable[..., LocalEngine],
) -> None:
    engine = local_engine_factory()
    with engine.client() as client:
        client.upload_definition({**DEF, "steps": [{**DEF["steps"][0], "retryCount": 1},
                                                   DEF["steps"][1]]})  # fmt: skip
        client.start_instance("slow-db")
        (job,) = client.poll_jobs("w", ["slow-db"], 1)
        engine.fail_answer_delay = 600.0
        outcome: list[object] = []
        sender = threading.Thread(target=_raw_fail, args=(engine, job["id"], outcome))
        sender.start()
        try:
            engine.wait_until(lambda: engine.counters["fail_answers_delayed"] == 1, timeout=10)
            # The retry is back in the queue while the answer is held.
            (retry,) = client.poll_jobs("w", ["slow-db"], 1)
            assert (retry["id"], retry["retriesRemaining"]) == (job["id"], 0)
            assert outcome == []
        finally:
            engine.stop()  # ends the wait; the answer is never sent
            sender.join(10)
    assert not sender.is_alive()
    assert outcome and outcome[0] != 204


def test_a_negative_fail_answer_delay_is_refused(
    local_engine_factory: Callable[..., LocalEngine],
) -> None:
    engine = local_engine_factory()
    with pytest.raises(ValueError, match="fail_answer_delay"):
        engine.fail_answer_delay = -1
