"""The report desk: outcomes queued in a tick, flushed to the reporter, answers taken back."""

from __future__ import annotations

from typing import Any

from workflow_sdk.fate import Fate, FateCheck
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.reporting import ReportStatus
from workflow_sdk.supervisor.loop.ledger import JobLedger
from workflow_sdk.supervisor.loop.reports import ReportDesk


class RecordingReporter:
    def __init__(self) -> None:
        self.submitted: list[tuple[Outcome, float | None, Any]] = []
        self.fates: list[Any] = []

    def submit(
        self, outcome: Outcome, lease_end: float | None = None, check: Any = None, fate: Any = None
    ) -> None:
        self.submitted.append((outcome, lease_end, check))
        self.fates.append(fate)


class CancelledEngine:
    def get_instance(self, instance_id: str) -> dict[str, Any]:
        return {"id": instance_id, "status": "CANCELLED"}

    def get_instance_history(self, instance_id: str) -> list[dict[str, Any]]:
        return []


def entry_for(job_id: str) -> Any:
    ledger = JobLedger(limit=2)
    ledger.claim({"id": job_id, "jobType": "t", "instanceId": "i"}, lease_end=30.0, now=0.0)
    return ledger.get(job_id)


def test_only_failures_carry_a_stale_check_and_the_lease() -> None:
    desk, reporter = ReportDesk(CancelledEngine(), lambda: None), RecordingReporter()
    ok = Outcome("a", "t", True)
    bad = Outcome.failure("b", "t", "boom", retryable=False)
    desk.queue(ok, entry_for("a"))
    desk.queue(bad, entry_for("b"))
    assert desk.queued
    desk.flush(reporter)  # type: ignore[arg-type]
    assert not desk.queued
    (_, lease_a, check_a), (_, lease_b, check_b) = reporter.submitted
    assert (lease_a, lease_b) == (30.0, 30.0)
    assert check_a is None and check_b is not None
    # Both carry the engine's view of the job, for a report whose answer is lost.
    assert all(isinstance(fate, FateCheck) for fate in reporter.fates)


def test_a_fate_check_asks_the_source_whether_the_jobs_retry_came() -> None:
    asked: list[Any] = []

    def retry_seen(job: Any) -> bool:
        asked.append(job["id"])
        return True

    desk, reporter = ReportDesk(CancelledEngine(), lambda: None, retry_seen), RecordingReporter()
    bad = Outcome.failure("b", "t", "boom", retryable=True)
    entry = entry_for("b")
    entry.origin = {"id": "b", "retriesRemaining": 2}
    entry.context["retriesRemaining"] = 2
    desk.queue(bad, entry)
    desk.flush(reporter)  # type: ignore[arg-type]
    (fate,) = reporter.fates
    assert fate.look(bad).fate is Fate.APPLIED
    assert asked == ["b"]


def test_a_report_found_settled_keeps_the_fate_checks_reason() -> None:
    desk, reporter = ReportDesk(CancelledEngine(), lambda: None), RecordingReporter()
    ok = Outcome("a", "t", True)
    desk.queue(ok, entry_for("a"))
    desk.flush(reporter)  # type: ignore[arg-type]
    (fate,) = reporter.fates
    fate.look(ok)  # no history item, instance CANCELLED: no trace of a complete
    desk.on_status(ok, ReportStatus.DELIVERED)
    (answer,) = desk.take()
    assert answer.stale_reason == "unknown"


def test_an_answer_wakes_the_loop_only_when_asked_and_keeps_the_stale_reason() -> None:
    woken: list[bool] = []
    desk, reporter = ReportDesk(CancelledEngine(), lambda: woken.append(True)), RecordingReporter()
    bad = Outcome.failure("b", "t", "boom", retryable=False)
    desk.queue(bad, entry_for("b"))
    desk.flush(reporter)  # type: ignore[arg-type]
    check = reporter.submitted[0][2]
    assert check().stale  # the reporter thread runs it before sending
    desk.wake_on_answer = False
    desk.on_status(bad, ReportStatus.STALE)
    assert woken == [] and desk.answered()
    (answer,) = desk.take()
    assert (answer.status, answer.stale_reason, answer.settled) == (
        ReportStatus.STALE,
        "instance_cancelled",
        True,
    )
    desk.wake_on_answer = True
    desk.on_status(Outcome("a", "t", True), ReportStatus.LOST)
    assert woken == [True]
    (lost,) = desk.take()
    assert not lost.settled and lost.stale_reason == "unknown"
