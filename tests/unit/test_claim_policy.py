"""ClaimPolicy: claim ahead only for measured short job types, within the room."""

from __future__ import annotations

import math

import pytest

from unit.fakes import make_slot
from workflow_sdk.supervisor.loop.claim_plan import ArmedPoll, ClaimPolicy, plan_poll
from workflow_sdk.supervisor.loop.ledger import ClaimVerdict, JobEntry, JobLedger, JobState
from workflow_sdk.supervisor.loop.pool import WorkerPool
from workflow_sdk.supervisor.loop.slots import SlotState


def measured(policy: ClaimPolicy, job_type: str, seconds: float, lease: float = 30.0) -> None:
    for _ in range(policy.min_samples):
        policy.observe(job_type, seconds, lease)


def test_unmeasured_types_get_one_job_per_idle_worker() -> None:
    policy = ClaimPolicy()
    assert policy.wanted(2, 0, 10, ["a"], workers=2) == 2
    assert not policy.short("a")


def test_too_few_samples_are_not_enough() -> None:
    policy = ClaimPolicy(min_samples=3)
    policy.observe("a", 0.01, 30.0)
    policy.observe("a", 0.01, 30.0)
    assert policy.wanted(0, 0, 10, ["a"], workers=2) == 0
    policy.observe("a", 0.01, 30.0)
    assert policy.wanted(0, 0, 10, ["a"], workers=2) == 2


def test_short_types_get_one_ahead_per_worker_less_those_waiting() -> None:
    policy = ClaimPolicy(ahead_batch=1)
    measured(policy, "a", 0.02)
    assert policy.wanted(1, 0, 10, ["a"], workers=2) == 3
    assert policy.wanted(0, 1, 10, ["a"], workers=2) == 1
    assert policy.wanted(0, 2, 10, ["a"], workers=2) == 0


def test_polls_only_for_jobs_ahead_wait_for_a_batch() -> None:
    policy = ClaimPolicy(ahead_batch=2)
    measured(policy, "a", 0.02)
    # No worker idle: one job ahead missing is not worth a poll yet...
    assert policy.wanted(0, 1, 10, ["a"], workers=2) == 0
    # ...two are.
    assert policy.wanted(0, 0, 10, ["a"], workers=2) == 2
    assert policy.wanted(0, 0, 1, ["a"], workers=2) == 0
    # An idle worker never waits for a batch.
    assert policy.wanted(1, 1, 10, ["a"], workers=2) == 2
    assert policy.wanted(1, 0, 1, ["a"], workers=2) == 1
    # One worker: a batch of one.
    assert policy.wanted(0, 0, 10, ["a"], workers=1) == 1


def test_never_beyond_the_room() -> None:
    policy = ClaimPolicy()
    measured(policy, "a", 0.02)
    assert policy.wanted(2, 0, 1, ["a"], workers=2) == 1
    assert policy.wanted(2, 0, 0, ["a"], workers=2) == 0


def test_long_types_are_not_claimed_ahead() -> None:
    policy = ClaimPolicy()
    # 2 % of a 30 s lease is 0.6 s.
    measured(policy, "long", 0.7)
    assert not policy.short("long")
    assert policy.wanted(0, 0, 10, ["long"], workers=2) == 0
    assert policy.wanted(1, 0, 10, ["long"], workers=2) == 1


def test_a_short_lease_makes_a_type_long() -> None:
    policy = ClaimPolicy()
    measured(policy, "a", 0.2, lease=5.0)
    assert not policy.short("a")


def test_one_long_type_in_the_poll_stops_claiming_ahead() -> None:
    policy = ClaimPolicy()
    measured(policy, "a", 0.01)
    measured(policy, "b", 5.0)
    assert policy.wanted(1, 0, 10, ["a", "b"], workers=2) == 1
    assert policy.short_types(["a", "b", "c"]) == ["a"]


def test_one_slow_run_stops_claiming_ahead_at_once_and_it_resumes_later() -> None:
    policy = ClaimPolicy(smoothing=0.5)
    measured(policy, "a", 0.01)
    policy.observe("a", 2.0, 30.0)
    assert not policy.short("a")
    for _ in range(20):
        policy.observe("a", 0.01, 30.0)
    assert policy.short("a")
    average = policy.average("a")
    assert average is not None and average < 0.6


def test_without_a_lease_any_measured_type_is_claimed_ahead() -> None:
    policy = ClaimPolicy()
    measured(policy, "k", 10.0, lease=math.inf)
    assert policy.short("k")
    assert policy.wanted(0, 0, 3, ["k"], workers=4) == 3
    assert policy.wanted(0, 0, 1, ["k"], workers=4) == 0


def test_no_workers_no_ahead_and_no_types_no_ahead() -> None:
    policy = ClaimPolicy()
    measured(policy, "a", 0.01)
    assert policy.wanted(0, 0, 10, ["a"], workers=0) == 0
    assert policy.wanted(0, 0, 10, [], workers=2) == 0


def test_bad_smoothing_is_refused() -> None:
    with pytest.raises(ValueError, match="smoothing"):
        ClaimPolicy(smoothing=0.0)


def _pool(*states: SlotState, job_type: str = "t") -> WorkerPool:
    pool = WorkerPool(len(states))
    for number, state in enumerate(states, 1):
        pool.add(make_slot(number, state, job_types=frozenset({job_type})))
    return pool


def _ledger(limit: int, held: int) -> JobLedger:
    ledger = JobLedger(limit)
    for n in range(held):
        ledger.claim({"id": f"j{n}", "jobType": "t"}, lease_end=30.0, now=0.0)
        ledger.start(f"j{n}", slot=1, now=0.0, timeout=0)
    return ledger


def test_plan_claims_one_per_idle_worker_within_the_room() -> None:
    plan = plan_poll(_pool(SlotState.IDLE, SlotState.IDLE), _ledger(4, 0), ClaimPolicy())
    assert (plan.wanted, plan.job_types, plan.idle, plan.held_back) == (2, ["t"], 2, False)


def test_plan_is_held_back_when_reports_fill_the_ledger() -> None:
    plan = plan_poll(_pool(SlotState.IDLE, SlotState.BUSY), _ledger(2, 2), ClaimPolicy())
    assert (plan.wanted, plan.unbounded, plan.held_back) == (0, 1, True)


def test_plan_claims_ahead_only_for_short_types_when_no_worker_is_idle() -> None:
    policy = ClaimPolicy()
    pool = _pool(SlotState.BUSY, SlotState.BUSY)
    assert plan_poll(pool, _ledger(4, 0), policy).wanted == 0  # unmeasured: nothing ahead
    measured(policy, "t", 0.01)
    plan = plan_poll(pool, _ledger(4, 0), policy)
    assert (plan.wanted, plan.job_types) == (2, ["t"])


def _reporting(ledger: JobLedger, count: int) -> JobLedger:
    """Finish ``count`` of the ledger's running jobs: their reports are in flight."""
    for entry in ledger.running()[:count]:
        ledger.finish(entry.job_id, now=1.0)
    return ledger


def test_a_plan_held_back_by_reports_says_how_many_answers_free_enough_room() -> None:
    # An idle worker, the ledger full: one answer frees room for its job.
    plan = plan_poll(
        _pool(SlotState.IDLE, SlotState.BUSY), _reporting(_ledger(2, 2), 1), ClaimPolicy()
    )
    assert (plan.wanted, plan.held_back, plan.armed) == (0, True, ArmedPoll(1, 1))


def test_an_armed_plan_for_jobs_ahead_waits_for_a_whole_batch() -> None:
    # Both workers busy with short jobs, two reports in flight: a poll only
    # for jobs ahead asks for AHEAD_BATCH jobs, so it waits for two answers.
    policy = ClaimPolicy()
    measured(policy, "t", 0.01)
    ledger = _reporting(_ledger(4, 4), 2)
    plan = plan_poll(_pool(SlotState.BUSY, SlotState.BUSY), ledger, policy)
    assert (plan.wanted, plan.unbounded, plan.armed) == (0, 2, ArmedPoll(answers=2, jobs=2))
    single = ClaimPolicy(ahead_batch=1)
    measured(single, "t", 0.01)
    assert plan_poll(_pool(SlotState.BUSY, SlotState.BUSY), ledger, single).armed == ArmedPoll(1, 1)


def test_a_plan_is_not_armed_when_no_report_would_free_the_room() -> None:
    # Held back by running jobs only: no answer is coming to free room.
    plan = plan_poll(_pool(SlotState.IDLE, SlotState.BUSY), _ledger(2, 2), ClaimPolicy())
    assert plan.held_back and plan.armed is None
    # Not held back at all: nothing to arm.
    plan = plan_poll(_pool(SlotState.IDLE, SlotState.IDLE), _ledger(4, 0), ClaimPolicy())
    assert plan.wanted == 2 and plan.armed is None


def _with_held_retry(ledger: JobLedger) -> JobLedger:
    """One reporting job gets its retry held behind its fail's answer."""
    failed = next(e for e in _all(ledger) if e.state is JobState.REPORTING)
    failed.context = {**failed.context, "retriesRemaining": 1}
    retry = {**failed.context, "retriesRemaining": 0}
    assert ledger.claim(retry, lease_end=30.0, now=1.0) is ClaimVerdict.RETRY_HELD
    return ledger


def _all(ledger: JobLedger) -> list[JobEntry]:
    return [e for job_id in [f"j{n}" for n in range(ledger.limit)] if (e := ledger.get(job_id))]


def test_a_held_retry_waits_for_a_worker_like_a_claimed_job() -> None:
    # Two idle workers, room for both, but a retry will take one of them as
    # soon as its previous attempt's answer is in: one job to claim.
    ledger = _with_held_retry(_reporting(_ledger(4, 1), 1))
    assert ledger.room() == 2
    plan = plan_poll(_pool(SlotState.IDLE, SlotState.IDLE), ledger, ClaimPolicy())
    assert plan.wanted == 1


def test_an_armed_plan_does_not_count_on_the_answer_that_frees_a_held_retry() -> None:
    # Full ledger (2 reports in flight + 1 held retry + 1 running, limit 4),
    # two idle workers, one of them for the retry. The answer for the job
    # with the retry behind it frees nothing, and answers come in any order:
    # arm for both answers.
    ledger = _with_held_retry(_reporting(_ledger(4, 3), 2))
    assert ledger.room() == 0
    pool = _pool(SlotState.IDLE, SlotState.IDLE, SlotState.BUSY)
    plan = plan_poll(pool, ledger, ClaimPolicy())
    assert (plan.wanted, plan.armed) == (0, ArmedPoll(answers=2, jobs=1))
