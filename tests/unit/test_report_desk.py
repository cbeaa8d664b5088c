"""The report desk: outcomes queued in a tick, handed to the reporter, answers taken back."""

from __future__ import annotations

import time
from typing import Any

from unit.fakes import desk_for, idle_slot, intake_with, job, running
from workflow_sdk.fate import Fate, FateCheck
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.reporting import ReportStatus
from workflow_sdk.supervisor.loop.intake import REPORT_HOLD
from workflow_sdk.supervisor.loop.ledger import JobEntry
from workflow_sdk.supervisor.loop.phase import Phase


class CancelledEngine:
    def get_instance(self, instance_id: str) -> dict[str, Any]:
        return {"id": instance_id, "status": "CANCELLED"}

    def get_instance_history(self, instance_id: str) -> list[dict[str, Any]]:
        return []


def reporting(intake: Any, job_id: str, **fields: Any) -> JobEntry:
    """``job_id`` claimed at 0 (lease to 30), run and finished: its report is due."""
    intake.claim(job(job_id, **fields), 0.0, 0.0, leased=True)
    intake.ledger.start(job_id, 1, 0.0, 0.0)
    entry = intake.ledger.finish(job_id, 1.0)
    assert entry is not None
    return entry


def test_only_failures_carry_a_stale_check_and_the_lease() -> None:
    intake, _ = intake_with(idle_slot(1))
    desk, reporter = desk_for(intake, reader=CancelledEngine())
    ok = Outcome("a", "a", True)
    bad = Outcome.failure("b", "a", "boom", retryable=False)
    desk.report(ok, reporting(intake, "a"), 1)
    desk.report(bad, reporting(intake, "b"), 1)
    assert desk.queued
    desk.hand_over()
    assert not desk.queued
    first, second = reporter.handed
    assert (first.lease_end, second.lease_end) == (30.0, 30.0)
    assert first.stale_check is None and second.stale_check is not None
    # Both carry the engine's view of the job, for a report whose answer is lost.
    assert all(isinstance(h.fate, FateCheck) for h in reporter.handed)
    assert (intake.stats.jobs_succeeded, intake.stats.jobs_failed) == (1, 1)


def test_a_fate_check_asks_the_source_whether_the_jobs_retry_came() -> None:
    intake, source = intake_with(idle_slot(1))
    desk, reporter = desk_for(intake, reader=CancelledEngine())
    source.retries.add("b")
    bad = Outcome.failure("b", "a", "boom", retryable=True)
    desk.report(bad, reporting(intake, "b", retriesRemaining=2), 1)
    desk.hand_over()
    (handed,) = reporter.handed
    assert handed.fate.look(bad).fate is Fate.APPLIED


def test_a_report_found_settled_keeps_the_fate_checks_reason() -> None:
    intake, _ = intake_with(idle_slot(1))
    desk, reporter = desk_for(intake, reader=CancelledEngine())
    ok = Outcome("a", "a", True)
    desk.report(ok, reporting(intake, "a"), 1)
    desk.hand_over()
    (handed,) = reporter.handed
    handed.fate.look(ok)  # no history item, instance CANCELLED: no trace of a complete
    reporter.end(0, ReportStatus.DELIVERED)
    (result,) = desk.take()
    assert result.stale_reason == "unknown"


def test_an_answer_wakes_the_loop_only_when_asked_and_keeps_the_stale_reason() -> None:
    woken: list[bool] = []
    intake, source = intake_with(idle_slot(1))
    desk, reporter = desk_for(intake, reader=CancelledEngine(), wake=lambda: woken.append(True))
    bad = Outcome.failure("b", "a", "boom", retryable=False)
    desk.report(bad, reporting(intake, "b"), 1)
    desk.hand_over()
    assert reporter.handed[0].stale_check().stale  # the reporter thread runs it before sending
    desk.wake_on_answer = False
    reporter.end(0, ReportStatus.STALE)
    assert woken == [] and desk.answered()
    assert source.answers_seen == 1, "the source hears of every answer (an armed poll waits)"
    (result,) = desk.take()
    assert (result.status, result.stale_reason, result.settled) == (
        ReportStatus.STALE,
        "instance_cancelled",
        True,
    )
    desk.wake_on_answer = True
    desk.on_status(Outcome("a", "a", True), ReportStatus.LOST)
    assert woken == [True]
    (lost,) = desk.take()
    assert not lost.settled and lost.stale_reason == "unknown"


def test_taking_an_answer_releases_the_job_and_settles_it_by_the_lease_rule() -> None:
    intake, source = intake_with(idle_slot(1), limit=2)
    desk, reporter = desk_for(intake)
    desk.report(Outcome("a", "a", True), reporting(intake, "a"), 1)
    desk.report(Outcome.failure("b", "a", "boom", retryable=True), reporting(intake, "b"), 1)
    desk.hand_over()
    assert intake.ledger.room() == 0
    reporter.end(0, ReportStatus.DELIVERED)
    reporter.end(1, ReportStatus.WITHHELD)
    assert [r.status for r in desk.take()] == [ReportStatus.DELIVERED, ReportStatus.WITHHELD]
    assert intake.ledger.room() == 2 and desk.taken == 2
    # Delivered: done for good; withheld: delivered again (``lease.is_settled``).
    assert source.settled == [("a", True), ("b", False)]


def test_reports_wait_for_the_poll_in_flight_only_while_a_worker_is_idle() -> None:
    idle, busy = idle_slot(1), idle_slot(2)
    intake, _ = intake_with(idle, busy)
    desk, reporter = desk_for(intake)
    running(intake, busy, "r", 0.0)
    desk.report(Outcome("a", "a", True), reporting(intake, "a"), 1)
    # A poll requested "now" (a minute ahead: no clock moves past REPORT_HOLD).
    intake.maybe_poll(time.monotonic() + 60.0, Phase.RUNNING, 0)
    desk.flush(Phase.RUNNING)
    assert reporter.handed == [] and desk.queued, "held for the poll (REPORT_HOLD)"
    desk.flush(Phase.DRAINING)
    assert len(reporter.handed) == 1, "never held while draining"


def test_reports_do_not_wait_once_the_hold_is_over() -> None:
    intake, _ = intake_with(idle_slot(1))
    desk, reporter = desk_for(intake)
    desk.report(Outcome("a", "a", True), reporting(intake, "a"), 1)
    intake.maybe_poll(time.monotonic() - 2 * REPORT_HOLD, Phase.RUNNING, 0)
    desk.flush(Phase.RUNNING)
    assert len(reporter.handed) == 1
