"""The stale-job check: what the engine's answers mean for a running job."""

from __future__ import annotations

from typing import Any

import pytest

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import EngineClientError, EngineConnectionError
from workflow_sdk.staleness import JobLiveness, check_job
from workflow_sdk.testing import LocalEngine

JOB = {"id": "j1", "jobType": "t", "instanceId": "i1", "stepExecutionId": "s1"}


class FakeReader:
    def __init__(
        self,
        instance: dict[str, Any] | Exception,
        history: list[dict[str, Any]] | Exception | None = None,
    ) -> None:
        self.instance = instance
        self.history = history if history is not None else []
        self.history_reads = 0

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        assert instance_id == "i1"
        if isinstance(self.instance, Exception):
            raise self.instance
        return self.instance

    def get_instance_history(self, instance_id: str) -> list[dict[str, Any]]:
        self.history_reads += 1
        if isinstance(self.history, Exception):
            raise self.history
        return self.history


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("CANCELLED", "instance_cancelled"),
        ("COMPLETED", "instance_completed"),
        ("FAILED", "instance_failed"),
    ],
)
def test_a_finished_instance_makes_the_job_stale_without_reading_history(
    status: str, reason: str
) -> None:
    reader = FakeReader({"id": "i1", "status": status, "failureReason": "why"})
    verdict = check_job(reader, JOB)
    assert verdict.liveness is JobLiveness.STALE
    assert verdict.reason == reason
    assert status in verdict.detail and "why" in verdict.detail
    assert reader.history_reads == 0


def test_an_interrupted_step_makes_the_job_stale() -> None:
    history = [
        {"id": "s0", "status": "COMPLETED"},
        {"id": "s1", "status": "FAILED", "failureReason": "interrupted by boundary timer"},
    ]
    verdict = check_job(FakeReader({"status": "ACTIVE"}, history), JOB)
    assert verdict.stale
    assert verdict.reason == "step_failed"
    assert "interrupted by boundary timer" in verdict.detail


def test_a_running_step_of_an_active_instance_is_live() -> None:
    history = [{"id": "s1", "status": "RUNNING"}]
    verdict = check_job(FakeReader({"status": "ACTIVE"}, history), JOB)
    assert verdict.liveness is JobLiveness.LIVE


def test_an_unknown_instance_is_stale() -> None:
    error = EngineClientError(404, "instance 'i1' not found", error_code="not-found")
    verdict = check_job(FakeReader(error), JOB)
    assert verdict.stale and verdict.reason == "instance_gone"


@pytest.mark.parametrize(
    "error",
    [
        EngineClientError(404, "404 page not found"),
        EngineClientError(404, "Not Found", error_code="route-missing"),
    ],
    ids=["plain-text", "other-envelope"],
)
def test_a_404_that_is_not_the_engines_not_found_is_inconclusive(error: Exception) -> None:
    """Pins: a gateway's plain-text ``404 page not found`` on the instance read
    made every running job stale (cancelled, failure withheld, Kafka offset
    committed). Only the engine's JSON not-found proves the instance gone."""
    verdict = check_job(FakeReader(error), JOB)
    assert verdict.liveness is JobLiveness.UNKNOWN
    assert not verdict.stale


def test_over_http_only_the_engines_own_not_found_means_gone(local_engine: LocalEngine) -> None:
    """Pins the same over real HTTP: the local engine's JSON 404 for an unknown
    instance is STALE; its plain-text 404 for a route it does not have (a
    client pointed at a wrong base path, as behind a misrouting gateway) is
    UNKNOWN."""
    job = {**JOB, "instanceId": "no-such-instance"}
    with local_engine.client() as right:
        gone = check_job(right, job)
    with RestEngineClient(local_engine.url + "/gateway-prefix", timeout=10.0) as wrong:
        unknown = check_job(wrong, job)
    assert gone.stale and gone.reason == "instance_gone"
    assert unknown.liveness is JobLiveness.UNKNOWN
    assert "404 page not found" in unknown.detail


@pytest.mark.parametrize(
    "error",
    [EngineConnectionError("refused", request_sent=False), EngineClientError(500, "db down")],
)
def test_an_engine_that_cannot_answer_gives_unknown(error: Exception) -> None:
    verdict = check_job(FakeReader(error), JOB)
    assert verdict.liveness is JobLiveness.UNKNOWN
    assert not verdict.stale


def test_a_history_that_cannot_be_read_gives_unknown() -> None:
    reader = FakeReader({"status": "ACTIVE"}, EngineClientError(500, "db down"))
    assert check_job(reader, JOB).liveness is JobLiveness.UNKNOWN


def test_a_step_execution_missing_from_the_history_is_not_proof_of_staleness() -> None:
    verdict = check_job(FakeReader({"status": "ACTIVE"}, [{"id": "other"}]), JOB)
    assert verdict.liveness is JobLiveness.LIVE
