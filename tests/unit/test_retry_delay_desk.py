"""The report desk holds a retryable failure for its type's ``retry_delay`` (issue 18).

Without it the engine requeues the failed job at once, and all 3 attempts of
a job ran within 35 ms: a downstream outage of a few seconds used up every
retry. The desk keeps the outcome until its due time, without a thread
waiting, its ledger entry REPORTING (its worker free, the bound counting
it); the lease bounds the delay.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from unit.fakes import RecordingReporter, desk_for, idle_slot, intake_with, job, supervisor_rig
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.reporting import ReportStatus
from workflow_sdk.supervisor.config import parse_config
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.ledger import ClaimVerdict, JobEntry, JobState
from workflow_sdk.supervisor.loop.phase import Phase
from workflow_sdk.supervisor.loop.reports import AttemptCounter, ReportDesk
from workflow_sdk.supervisor.loop.type_limits import RETRY_LEASE_MARGIN, TypeLimits


def limits(retry_delay: float, job_type: str = "a") -> TypeLimits:
    return TypeLimits(
        parse_config(
            {
                "supervisor": {"handlers": ["x"]},
                "job_types": {job_type: {"retry_delay": retry_delay}},
            }
        )
    )


def finished(intake: Intake, job_id: str, retries: int = 2, leased: bool = True) -> JobEntry:
    """``job_id`` claimed now (a 30 s lease), run on worker 1, finished now."""
    now = time.monotonic()
    intake.claim(job(job_id, retriesRemaining=retries), now, now, leased=leased)
    intake.ledger.start(job_id, 1, now, 0.0)
    entry = intake.ledger.finish(job_id, now)
    assert entry is not None
    return entry


def failed(job_id: str, retryable: bool = True) -> Outcome:
    return Outcome.failure(job_id, "a", "downstream down", retryable=retryable)


def desk_with(retry_delay: float) -> tuple[Intake, ReportDesk, RecordingReporter]:
    intake, _ = intake_with(idle_slot(1))
    desk, reporter = desk_for(intake)
    desk.limits = limits(retry_delay)
    return intake, desk, reporter


def test_a_retryable_failure_is_held_until_its_due_time() -> None:
    intake, desk, reporter = desk_with(2.0)
    entry = finished(intake, "j1")
    before = time.monotonic()
    desk.report(failed("j1"), entry, 1)
    assert desk.held == 1 and not desk.queued
    # Due in 2 s +/- 20 % jitter: the main loop's next deadline.
    assert before + 1.6 <= desk.next_due() <= time.monotonic() + 2.4
    desk.flush(Phase.RUNNING)
    assert reporter.handed == [], "not before its time"
    # Meanwhile the job is still held by the ledger, reporting: its worker is
    # free, the bound counts it.
    assert entry.state is JobState.REPORTING and len(intake.ledger) == 1
    desk.release_due(desk.next_due())
    desk.hand_over()
    assert reporter.reported() == [("j1", False)]
    assert reporter.handed[0].lease_end == entry.lease_end, "the lease is checked at send time"
    assert desk.next_due() == math.inf


def test_successes_final_failures_and_types_without_a_delay_go_at_once() -> None:
    intake, desk, reporter = desk_with(2.0)
    desk.report(Outcome("ok", "a", True), finished(intake, "ok"), 1)
    desk.report(failed("last"), finished(intake, "last", retries=0), 1)
    desk.report(failed("nope", retryable=False), finished(intake, "nope"), 1)
    other = Outcome.failure("b1", "b", "down", retryable=True)
    intake.claim(job("b1", job_type="b", retriesRemaining=2), 0.0, 0.0, leased=True)
    intake.ledger.start("b1", 1, 0.0, 0.0)
    desk.report(other, intake.ledger.finish("b1", 0.0), 1)  # type: ignore[arg-type]
    assert desk.held == 0
    desk.hand_over()
    assert [h.outcome.job_id for h in reporter.handed] == ["ok", "last", "nope", "b1"]


def test_the_delay_grows_with_each_attempt() -> None:
    intake, desk, _ = desk_with(1.0)
    dues = []
    for retries in (3, 2, 1):
        entry = finished(intake, "j1", retries=retries)
        now = time.monotonic()
        desk.report(failed("j1"), entry, 1)
        dues.append(desk.next_due() - now)
        desk.release_due(math.inf)
        desk.hand_over()
        intake.ledger.release("j1")
    # 1, 2, 4 s, each +/- 20 %.
    assert 0.8 <= dues[0] <= 1.2 + 0.1
    assert 1.6 <= dues[1] <= 2.4 + 0.1
    assert 3.2 <= dues[2] <= 4.8 + 0.1


def test_the_lease_bounds_the_delay() -> None:
    """A job whose lease has 10 s left: the fail goes out 3 s before its end
    at the latest (the margin is for the report itself)."""
    intake, desk, _ = desk_with(60.0)
    entry = finished(intake, "j1")
    now = time.monotonic()
    entry.lease_end = now + 10.0
    desk.report(failed("j1"), entry, 1)
    assert desk.next_due() <= now + 10.0 - RETRY_LEASE_MARGIN + 0.1


def test_no_lease_left_means_no_delay() -> None:
    intake, desk, _ = desk_with(5.0)
    entry = finished(intake, "j1")
    entry.lease_end = time.monotonic() + 1.0
    desk.report(failed("j1"), entry, 1)
    assert desk.held == 0 and desk.queued


def test_without_a_lease_kafka_jobs_are_held_the_whole_delay() -> None:
    intake, desk, _ = desk_with(100.0)
    entry = finished(intake, "k1", leased=False)
    assert entry.lease_end == math.inf
    now = time.monotonic()
    desk.report(failed("k1"), entry, 1)
    assert desk.next_due() - now >= 80.0


def test_a_redelivery_while_held_is_coalesced_with_the_held_report() -> None:
    """Pins what happens when the engine hands the job out again while its
    fail is held (its lease passed by the engine's clock): the ledger does not
    start it twice, and the held fail goes out under the new lease."""
    intake, desk, reporter = desk_with(10.0)
    entry = finished(intake, "j1")
    desk.report(failed("j1"), entry, 1)
    now = time.monotonic()
    verdict = intake.ledger.claim(
        {"id": "j1", "jobType": "a", "retriesRemaining": 2}, now + 30.0, now, 30.0
    )
    assert verdict is ClaimVerdict.DUPLICATE
    assert intake.ledger.claimed() == []
    desk.release_due(math.inf)
    desk.hand_over()
    assert reporter.handed[0].lease_end == pytest.approx(now + 30.0)


def test_the_drain_sends_every_held_report_at_once_and_holds_no_new_one() -> None:
    intake, desk, reporter = desk_with(5.0)
    desk.report(failed("j1"), finished(intake, "j1"), 1)
    desk.stop_holding()
    desk.report(failed("j2"), finished(intake, "j2"), 1)
    assert desk.held == 0
    desk.flush(Phase.DRAINING)
    assert [h.outcome.job_id for h in reporter.handed] == ["j1", "j2"]


def test_the_answer_to_a_held_report_releases_the_job_as_usual() -> None:
    intake, desk, reporter = desk_with(0.5)
    entry = finished(intake, "j1")
    desk.report(failed("j1"), entry, 1)
    desk.release_due(math.inf)
    desk.hand_over()
    reporter.end(0, ReportStatus.DELIVERED)
    (result,) = desk.take()
    assert result.outcome.job_id == "j1" and "j1" not in intake.ledger


def test_attempts_count_from_the_most_retries_seen() -> None:
    counter = AttemptCounter(limit=2)
    assert counter.attempt("j1", 2) == 0
    assert counter.attempt("j1", 2) == 0, "a re-delivery after a lease: the same attempt"
    assert counter.attempt("j1", 1) == 1
    assert counter.attempt("j2", 5) == 0
    assert counter.attempt("j3", 1) == 0
    assert counter.attempt("j1", 0) == 0, "forgotten (limit 2): counted from here"


def test_held_reports_count_in_the_main_loops_next_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The arbiter wakes for a held report's due time (no thread waits), and
    meanwhile the job's worker is free and the ledger holds the job."""
    extra = "[job_types.a]\nretry_delay = 30\n"
    with supervisor_rig(tmp_path, monkeypatch, workers=1, extra=extra) as rig:
        rig.ready_all()
        rig.tick_until(lambda: rig.source.busy, "a poll")
        rig.source.answer([job("j1", retriesRemaining=2)])
        rig.tick_until(lambda: rig.sup.pool.slots[1].job is not None, "j1 sent")
        rig.worker(1).done("j1", succeeded=False)
        rig.tick_until(lambda: rig.sup.desk.held == 1, "the fail held")
        now = time.monotonic()
        assert now < rig.sup.desk.next_due() <= now + 30 * 1.2
        assert rig.sup.next_deadline(now) <= rig.sup.desk.next_due()
        entry = rig.sup.ledger.get("j1")
        assert entry is not None and entry.state is JobState.REPORTING
        assert rig.sup.pool.slots[1].job is None, "its worker is free for other jobs"
        assert rig.client.failed == []
        # A stop does not wait for the delay: the drain sends the fail.
        rig.sup.request_stop()
        rig.tick_until(lambda: rig.client.failed, "the fail sent by the drain")
        assert rig.client.failed == [("j1", True)]
