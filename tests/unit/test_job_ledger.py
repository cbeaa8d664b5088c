"""The job ledger's verdicts, without a process."""

from __future__ import annotations

import math

import pytest

from workflow_sdk.supervisor.loop.ledger import ClaimVerdict, JobLedger, JobState


def ctx(job_id: str, retries: int = 2) -> dict[str, object]:
    return {"id": job_id, "jobType": "t", "instanceId": "i-" + job_id, "retriesRemaining": retries}


def test_room_counts_every_job_held_until_released() -> None:
    ledger = JobLedger(limit=4)
    for n in range(3):
        assert ledger.claim(ctx(f"j{n}"), lease_end=30.0, now=0.0) is ClaimVerdict.NEW
    assert ledger.room() == 1
    ledger.start("j0", slot=1, now=1.0, timeout=0)
    ledger.finish("j0")
    # Reporting still counts: the engine has not answered yet.
    assert ledger.count(JobState.REPORTING) == 1
    assert ledger.room() == 1
    ledger.release("j0")
    assert ledger.room() == 2
    assert ledger.peak == 3


def test_room_never_goes_negative_when_the_limit_shrinks() -> None:
    ledger = JobLedger(limit=4)
    for n in range(4):
        ledger.claim(ctx(f"j{n}"), 30.0, 0.0)
    ledger.limit = 2
    assert ledger.room() == 0


def test_a_job_claimed_again_while_held_is_a_duplicate_with_the_new_lease() -> None:
    ledger = JobLedger(limit=4)
    ledger.claim(ctx("j"), lease_end=30.0, now=0.0)
    ledger.start("j", slot=1, now=0.0, timeout=0)
    assert ledger.overrun(31.0)  # logged once
    assert ledger.claim(ctx("j"), lease_end=61.0, now=31.0) is ClaimVerdict.DUPLICATE
    entry = ledger.get("j")
    assert entry is not None
    assert (entry.redeliveries, entry.lease_end, entry.state) == (1, 61.0, JobState.RUNNING)
    assert len(ledger) == 1
    # The new lease may be overrun again, and that is logged again.
    assert not entry.overrun_logged
    assert ledger.overrun(62.0) == [entry]


def test_a_job_whose_lease_already_passed_is_expired_and_not_held() -> None:
    ledger = JobLedger(limit=4)
    assert ledger.claim(ctx("j"), lease_end=5.0, now=5.0) is ClaimVerdict.EXPIRED
    assert "j" not in ledger


def test_claimed_jobs_come_oldest_first() -> None:
    ledger = JobLedger(limit=4)
    for n, at in ((1, 0.0), (2, 0.1), (3, 0.2)):
        ledger.claim(ctx(f"j{n}"), 30.0, at)
    ledger.start("j2", slot=1, now=0.3, timeout=0)
    assert [e.job_id for e in ledger.claimed()] == ["j1", "j3"]


def test_timeouts_overruns_and_stale_checks_fall_due() -> None:
    ledger = JobLedger(limit=4, stale_interval=5.0)
    ledger.claim(ctx("a"), lease_end=30.0, now=0.0)
    ledger.claim(ctx("b"), lease_end=30.0, now=0.0)
    ledger.start("a", slot=1, now=0.0, timeout=10.0)
    ledger.start("b", slot=2, now=0.0, timeout=0.0)
    assert ledger.next_deadline() == 5.0
    assert ledger.timed_out(9.9) == []
    assert [e.job_id for e in ledger.timed_out(10.0)] == ["a"]
    due = ledger.stale_checks_due(5.0)
    assert sorted(e.job_id for e in due) == ["a", "b"]
    # Pending checks are not asked for twice, and do not keep the loop awake.
    assert ledger.stale_checks_due(6.0) == []
    assert ledger.next_deadline() == 10.0
    ledger.stale_check_done(ledger.get("b").key, now=7.0)  # type: ignore[union-attr]
    assert ledger.get("b").next_stale_check == 12.0  # type: ignore[union-attr]
    assert [e.job_id for e in ledger.overrun(30.0)] == ["a", "b"]
    assert ledger.overrun(31.0) == []


def test_no_stale_checks_when_the_interval_is_zero() -> None:
    ledger = JobLedger(limit=2, stale_interval=0.0)
    ledger.claim(ctx("a"), 30.0, 0.0)
    ledger.start("a", slot=1, now=0.0, timeout=0)
    assert ledger.stale_checks_due(1e9) == []
    assert ledger.next_deadline() == 30.0
    ledger.overrun(30.0)
    assert ledger.next_deadline() == math.inf


def test_finish_only_moves_a_running_job() -> None:
    ledger = JobLedger(limit=2)
    ledger.claim(ctx("a"), 30.0, 0.0)
    assert ledger.finish("a") is None  # not started
    assert ledger.finish("nope") is None
    ledger.start("a", slot=3, now=0.0, timeout=0)
    entry = ledger.finish("a")
    assert entry is not None and entry.state is JobState.REPORTING and entry.slot is None
    assert ledger.finish("a") is None  # decided once


@pytest.mark.parametrize(("retries", "expected"), [(3, 3), (None, 0), ("2", 0)])
def test_retries_remaining_reads_the_context(retries: object, expected: int) -> None:
    ledger = JobLedger(limit=1)
    ledger.claim({"id": "a", "jobType": "t", "retriesRemaining": retries}, 30.0, 0.0)
    assert ledger.get("a").retries_remaining == expected  # type: ignore[union-attr]


def _reporting_fail(ledger: JobLedger, job_id: str, retries: int) -> None:
    """``job_id`` ran and failed; the fail is being reported."""
    ledger.claim(ctx(job_id, retries), lease_end=30.0, now=0.0)
    ledger.start(job_id, slot=1, now=0.0, timeout=0)
    ledger.finish(job_id, now=1.0)


def test_a_retry_delivered_while_its_fail_is_reported_is_held_then_claimed() -> None:
    ledger = JobLedger(limit=4)
    _reporting_fail(ledger, "j", retries=1)
    # The engine applied the fail and handed out the retry (one retry less)
    # before its answer to the fail came back.
    assert ledger.claim(ctx("j", 0), lease_end=40.0, now=2.0) is ClaimVerdict.RETRY_HELD
    assert (len(ledger), ledger.attempts_held, ledger.room()) == (2, 1, 2)
    assert ledger.claimed() == []  # not before the fail's answer
    released = ledger.release("j", now=3.0)
    assert released is not None and released.retries_remaining == 1
    (retry,) = ledger.claimed()
    assert (retry.job_id, retry.retries_remaining, retry.lease_end) == ("j", 0, 40.0)
    assert (retry.claimed_at, retry.redeliveries) == (3.0, 0)
    assert (len(ledger), ledger.attempts_held, ledger.room()) == (1, 0, 3)
    assert ledger.peak == 2


def test_a_redelivery_with_the_same_retries_is_still_a_duplicate() -> None:
    # A lease that passed puts the job back with its retries unchanged: the
    # attempt in hand, not a retry, whatever state it is in.
    ledger = JobLedger(limit=4)
    _reporting_fail(ledger, "j", retries=1)
    assert ledger.claim(ctx("j", 1), lease_end=40.0, now=2.0) is ClaimVerdict.DUPLICATE
    assert ledger.attempts_held == 0
    ledger.release("j")
    assert "j" not in ledger


def test_a_retry_is_not_held_behind_a_job_still_running() -> None:
    # Running here: the attempt's one result is still to come, so a delivery
    # with fewer retries (another worker failed it meanwhile) is not started
    # beside it.
    ledger = JobLedger(limit=4)
    ledger.claim(ctx("j", 1), lease_end=30.0, now=0.0)
    ledger.start("j", slot=1, now=0.0, timeout=0)
    assert ledger.claim(ctx("j", 0), lease_end=60.0, now=31.0) is ClaimVerdict.DUPLICATE
    assert ledger.attempts_held == 0


def test_a_retry_whose_lease_passed_is_expired_and_a_second_copy_replaces_the_held_one() -> None:
    ledger = JobLedger(limit=4)
    _reporting_fail(ledger, "j", retries=2)
    assert ledger.claim(ctx("j", 1), lease_end=5.0, now=5.0) is ClaimVerdict.EXPIRED
    assert ledger.attempts_held == 0
    assert ledger.claim(ctx("j", 1), lease_end=40.0, now=6.0) is ClaimVerdict.RETRY_HELD
    # Held once, whatever the number of copies: the newest lease is kept.
    assert ledger.claim(ctx("j", 1), lease_end=45.0, now=7.0) is ClaimVerdict.RETRY_REDELIVERED
    assert (len(ledger), ledger.attempts_held) == (2, 1)
    ledger.release("j", now=8.0)
    assert [e.lease_end for e in ledger.claimed()] == [45.0]


def test_each_attempt_of_a_job_is_a_claim_of_its_own() -> None:
    """Pins: attempt 1 of j fails retryable, its retry is held and then takes
    its place under the same job id. Answers asked for attempt 1's claim
    (renewal, stale check) find nothing to act on; attempt 2's do."""
    ledger = JobLedger(limit=4, stale_interval=5.0)
    ledger.renew_every = 0.0
    _reporting_fail(ledger, "j", retries=1)
    first = ledger.get("j")
    assert first is not None and ledger.holds(first.key) is first
    ledger.claim(ctx("j", 0), lease_end=40.0, now=2.0)
    ledger.release("j", now=3.0)
    ledger.start("j", slot=1, now=3.0, timeout=0)
    second = ledger.get("j")
    assert second is not None and second.key != first.key
    assert second.key.job_id == first.key.job_id == "j"
    assert ledger.holds(first.key) is None and ledger.holds(second.key) is second
    before = (second.lease_end, second.next_renewal, second.next_stale_check)
    assert ledger.renewed(first.key, sent_at=3.5, lease_length=30.0) is None
    assert ledger.renewal_failed(first.key, now=4.0, wait=1.0) is None
    assert ledger.stale_check_done(first.key, now=4.0) is None
    assert (second.lease_end, second.next_renewal, second.next_stale_check) == before
    assert ledger.renewed(second.key, sent_at=4.0, lease_length=30.0) is second
    assert second.lease_end == 40.0 and second.next_renewal == 14.0


def test_a_new_claim_of_a_released_job_is_a_new_claim() -> None:
    ledger = JobLedger(limit=4)
    ledger.claim(ctx("j"), lease_end=30.0, now=0.0)
    first = ledger.get("j")
    ledger.release("j")
    ledger.claim(ctx("j"), lease_end=60.0, now=31.0)
    second = ledger.get("j")
    assert first is not None and second is not None and first.key != second.key


def test_a_redelivery_of_a_held_retry_refreshes_its_lease_and_origin() -> None:
    """Pins: attempt 1 (2 retries left) fails retryable; the engine applies
    the fail and hands out attempt 2 (1 left), held here (lease to 40). The
    fail's answer takes longer than that lease: the engine's sweeper puts
    attempt 2 back with its retries unchanged and hands it out again (lease
    to 75). That delivery is the held attempt's new lease, not a duplicate
    of attempt 1: once the fail's answer comes, attempt 2 starts under it
    instead of being dropped as expired (and waiting 30-45 s more)."""
    ledger = JobLedger(limit=4)
    _reporting_fail(ledger, "j", retries=2)
    first_copy, second_copy = ctx("j", 1), ctx("j", 1)
    assert ledger.claim(first_copy, 40.0, 2.0, origin=first_copy) is ClaimVerdict.RETRY_HELD
    verdict = ledger.claim(second_copy, 75.0, 45.0, 30.0, origin=second_copy)
    assert verdict is ClaimVerdict.RETRY_REDELIVERED
    attempt = ledger.get("j")
    assert attempt is not None and attempt.retries_remaining == 2  # still attempt 1's entry
    assert attempt.redeliveries == 0  # attempt 1 was not handed out again
    assert (len(ledger), ledger.attempts_held) == (2, 1)
    ledger.release("j", now=46.0)
    (retry,) = ledger.claimed()
    assert (retry.retries_remaining, retry.lease_end, retry.claimed_at) == (1, 75.0, 46.0)
    assert retry.origin is second_copy
    assert (len(ledger), ledger.attempts_held) == (1, 0)


def test_a_later_attempt_replaces_a_held_retry() -> None:
    """Pins: attempt 2 is held behind attempt 1's fail for so long that its
    lease passed, another worker ran it and failed it too, and attempt 3 (one
    retry less again) comes here: it replaces attempt 2, which the engine
    has moved past."""
    ledger = JobLedger(limit=4)
    _reporting_fail(ledger, "j", retries=2)
    assert ledger.claim(ctx("j", 1), 40.0, 2.0) is ClaimVerdict.RETRY_HELD
    assert ledger.claim(ctx("j", 0), 90.0, 60.0) is ClaimVerdict.RETRY_REDELIVERED
    ledger.release("j", now=61.0)
    (retry,) = ledger.claimed()
    assert (retry.retries_remaining, retry.lease_end) == (0, 90.0)


def test_an_expired_redelivery_of_a_held_retry_changes_nothing() -> None:
    ledger = JobLedger(limit=4)
    _reporting_fail(ledger, "j", retries=2)
    assert ledger.claim(ctx("j", 1), 40.0, 2.0) is ClaimVerdict.RETRY_HELD
    assert ledger.claim(ctx("j", 1), 50.0, 50.0) is ClaimVerdict.EXPIRED
    ledger.release("j", now=51.0)
    (retry,) = ledger.claimed()
    assert retry.lease_end == 40.0  # dropped at dispatch, as before
