"""fate.judge and FateCheck: what the engine shows of a report whose answer was lost."""

from __future__ import annotations

from typing import Any

import pytest

from workflow_sdk.errors import EngineClientError, EngineConnectionError
from workflow_sdk.fate import Fate, FateCheck, judge, leaves_trace
from workflow_sdk.handler.outcome import Outcome

DONE = Outcome("j", "t", True, {"x": 1})
RETRYABLE = Outcome.failure("j", "t", "boom", retryable=True)
FOR_GOOD = Outcome.failure("j", "t", "card declined", retryable=False)


@pytest.mark.parametrize(
    ("outcome", "retries", "trace"),
    [
        (DONE, 3, True),
        (FOR_GOOD, 3, True),
        (RETRYABLE, 0, True),  # the last attempt fails the step
        (RETRYABLE, None, True),  # no count given: the engine's default is 0
        (RETRYABLE, 2, False),  # requeued: no trace in the history
        (RETRYABLE, True, True),  # a bool is not a count
    ],
)
def test_which_reports_leave_a_trace(outcome: Outcome, retries: object, trace: bool) -> None:
    assert leaves_trace(outcome, retries) is trace


@pytest.mark.parametrize(
    ("outcome", "retries", "instance", "item", "fate", "reason"),
    [
        # completes: only the step execution tells
        (DONE, 0, "ACTIVE", "COMPLETED", Fate.APPLIED, ""),
        (DONE, 0, "CANCELLED", "COMPLETED", Fate.APPLIED, ""),  # marked, instance unchanged
        (DONE, 0, "ACTIVE", "RUNNING", Fate.NOT_APPLIED, ""),
        (DONE, 0, "CANCELLED", "RUNNING", Fate.NOT_APPLIED, ""),  # a complete is harmless
        (DONE, 0, "ACTIVE", "FAILED", Fate.SETTLED, "step_failed"),  # a timer interrupted it
        (DONE, 0, "ACTIVE", None, Fate.NO_TRACE, ""),
        (DONE, 0, None, None, Fate.SETTLED, "instance_gone"),
        # fails that fail the step
        (FOR_GOOD, 3, "FAILED", "FAILED", Fate.APPLIED, ""),
        (RETRYABLE, 0, "FAILED", "FAILED", Fate.APPLIED, ""),
        (FOR_GOOD, 3, "ACTIVE", "RUNNING", Fate.NOT_APPLIED, ""),
        (FOR_GOOD, 3, "ACTIVE", "COMPLETED", Fate.SETTLED, "step_completed"),
        (FOR_GOOD, 3, "CANCELLED", "RUNNING", Fate.SETTLED, "instance_cancelled"),
        (FOR_GOOD, 3, "COMPLETED", "RUNNING", Fate.SETTLED, "instance_completed"),
        # a retryable fail with retries left leaves no trace
        (RETRYABLE, 2, "ACTIVE", "RUNNING", Fate.NO_TRACE, ""),
        (RETRYABLE, 2, "ACTIVE", "FAILED", Fate.SETTLED, "step_failed"),
        (RETRYABLE, 2, "CANCELLED", "RUNNING", Fate.SETTLED, "instance_cancelled"),
    ],
)
def test_judge(  # noqa: PLR0917 (one parameter per column of the table)
    outcome: Outcome,
    retries: object,
    instance: str | None,
    item: str | None,
    fate: Fate,
    reason: str,
) -> None:
    finding = judge(outcome, retries, instance, item)
    assert finding.fate is fate
    assert finding.reason == reason


class Reader:
    """The two reads, scripted: a value, or an exception to raise."""

    def __init__(self, instance: object, history: object) -> None:
        self.instance = instance
        self.history = history
        self.reads = 0

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        self.reads += 1
        if isinstance(self.instance, BaseException):
            raise self.instance
        assert isinstance(self.instance, dict)
        return self.instance

    def get_instance_history(self, instance_id: str) -> list[dict[str, Any]]:
        self.reads += 1
        if isinstance(self.history, BaseException):
            raise self.history
        assert isinstance(self.history, list)
        return self.history


JOB = {"id": "j", "instanceId": "i-1", "stepExecutionId": "se-2", "retriesRemaining": 2}
HISTORY = [{"id": "se-1", "status": "COMPLETED"}, {"id": "se-2", "status": "COMPLETED"}]


def test_a_check_finds_the_jobs_step_execution() -> None:
    check = FateCheck(Reader({"status": "ACTIVE"}, HISTORY), JOB)
    assert check.look(DONE).fate is Fate.APPLIED
    assert check.last is not None and check.last.fate is Fate.APPLIED


def test_only_the_engines_own_not_found_means_the_instance_is_gone() -> None:
    gone = EngineClientError(404, "instance not found", error_code="not-found")
    assert FateCheck(Reader(gone, []), JOB).look(DONE).fate is Fate.SETTLED
    # A gateway's plain-text 404 says nothing about the instance.
    gateway = EngineClientError(404, "404 page not found")
    assert FateCheck(Reader(gateway, []), JOB).look(DONE).fate is Fate.UNKNOWN


def test_an_engine_that_cannot_be_asked_gives_unknown() -> None:
    down = EngineConnectionError("refused", request_sent=False)
    assert FateCheck(Reader(down, []), JOB).look(DONE).fate is Fate.UNKNOWN
    assert FateCheck(Reader({"status": "ACTIVE"}, down), JOB).look(DONE).fate is Fate.UNKNOWN


def test_a_seen_retry_is_the_mark_of_an_applied_retryable_fail() -> None:
    reader = Reader({"status": "ACTIVE"}, [{"id": "se-2", "status": "RUNNING"}])
    assert FateCheck(reader, JOB).look(RETRYABLE).fate is Fate.NO_TRACE
    seen = FateCheck(reader, JOB, retry_seen=lambda: True)
    assert seen.look(RETRYABLE).fate is Fate.APPLIED
    # Only a fail that leaves no trace asks for it: a complete reads the history.
    assert seen.look(DONE).fate is Fate.NOT_APPLIED


def test_a_job_without_its_ids_cannot_be_traced() -> None:
    reader = Reader({"status": "ACTIVE"}, [])
    assert FateCheck(reader, {"id": "j"}).look(DONE).fate is Fate.NO_TRACE
    assert reader.reads == 0
