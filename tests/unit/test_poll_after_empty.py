"""After a poll that found no job: wait ``poll_interval``, but not when the engine may have jobs.

Issue 18, measured with a three-step pipeline on 2 workers: each worker sat
idle about 1 s at every change of job type. The poll that claims ahead asks
only for the job types measured short (the first step's), its empty answer
pushed the next poll back by ``poll_interval``, and a worker that went idle
meanwhile, serving every type, waited for it while the next step's jobs
were there. And a completion makes the instance's next job: a poll that was
empty before the completion's answer says nothing about that job.
"""

from __future__ import annotations

import pytest

from unit.fakes import intake_with, job, make_slot
from workflow_sdk.errors import EngineResponseError
from workflow_sdk.supervisor.io.source import PollResult
from workflow_sdk.supervisor.loop.claim_plan import EmptyAnswer, plan_poll
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.phase import Phase
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot

TYPES = frozenset({"s1", "s2", "s3"})


def pipeline_worker(number: int, state: SlotState = SlotState.IDLE) -> WorkerSlot:
    return make_slot(number, state, job_types=TYPES)


def short(intake: Intake, job_type: str) -> None:
    for _ in range(intake.claims.min_samples):
        intake.claims.observe(job_type, 0.01, 30.0)


# -- the rule ------------------------------------------------------------------------


def test_an_empty_answer_holds_for_its_types_until_its_time() -> None:
    empty = EmptyAnswer(frozenset({"s1", "s2"}), answers_taken=4, until=11.0)
    assert empty.holds(10.0, ["s1"], 4)
    assert empty.holds(10.0, ["s1", "s2"], 4)
    assert not empty.holds(11.0, ["s1"], 4), "its time is over"
    assert not empty.holds(10.0, ["s1", "s3"], 4), "s3 was not asked for"
    assert not empty.holds(10.0, ["s1"], 5), "a report was answered since"


# -- the intake ------------------------------------------------------------------------


def test_a_worker_gone_idle_polls_at_once_after_an_ahead_poll_found_nothing() -> None:
    """Pins: both workers busy, s1 measured short: the poll ahead asks for s1
    only and comes back empty. A worker then goes idle: its poll names s2 and
    s3 too, which no empty answer covers, so it goes out at once (it waited
    ``poll_interval`` before)."""
    busy_1 = pipeline_worker(1, SlotState.BUSY)
    busy_2 = pipeline_worker(2, SlotState.BUSY)
    intake, source = intake_with(busy_1, busy_2)
    short(intake, "s1")
    assert intake.maybe_poll(10.0, Phase.RUNNING, 0) is None
    assert source.requests == [(2, ("s1",), 0)]
    source.busy = False
    intake.on_result(PollResult(2, 10.0, 0.01), 10.01)
    assert intake.next_poll_at == pytest.approx(11.01)
    # The same poll ahead waits its interval...
    intake.maybe_poll(10.1, Phase.RUNNING, 0)
    assert len(source.requests) == 1
    # ...a worker that goes idle does not.
    intake.pool.remove(busy_2)
    intake.pool.add(pipeline_worker(2))
    assert intake.maybe_poll(10.2, Phase.RUNNING, 0) is None
    assert source.requests[-1] == (1, ("s1", "s2", "s3"), 0)


def test_a_report_answered_after_an_empty_poll_lets_the_idle_worker_poll_at_once() -> None:
    """Pins: one instance, two workers. Worker 1 runs its first step, worker 2
    is idle and its poll finds nothing. Worker 1's completion is answered:
    the engine has made the second step's job, and the idle worker polls at
    once instead of after ``poll_interval``."""
    intake, source = intake_with(pipeline_worker(1, SlotState.BUSY), pipeline_worker(2))
    assert intake.maybe_poll(10.0, Phase.RUNNING, 3) is None
    source.busy = False
    intake.on_result(PollResult(1, 10.0, 0.01), 10.01)
    intake.maybe_poll(10.1, Phase.RUNNING, 3)
    assert len(source.requests) == 1, "waits: nothing new"
    assert intake.answers_wake_loop(Phase.RUNNING, None), "a report's answer must wake the loop"
    intake.maybe_poll(10.2, Phase.RUNNING, 4)
    assert len(source.requests) == 2


def test_a_report_answered_while_the_empty_poll_was_out_counts_too() -> None:
    """The completion may have been applied after the engine looked: only
    answers taken before the request say nothing new."""
    intake, source = intake_with(pipeline_worker(1))
    intake.maybe_poll(10.0, Phase.RUNNING, 3)
    source.busy = False
    intake.on_result(PollResult(1, 10.0, 0.01), 10.01)  # the loop took one answer meanwhile
    intake.maybe_poll(10.1, Phase.RUNNING, 4)
    assert len(source.requests) == 2


def test_an_empty_answer_with_nothing_new_waits_its_interval() -> None:
    intake, source = intake_with(pipeline_worker(1))
    intake.maybe_poll(10.0, Phase.RUNNING, 0)
    source.busy = False
    intake.on_result(PollResult(1, 10.0, 0.01), 10.01)
    plan = intake.maybe_poll(10.5, Phase.RUNNING, 0)
    assert len(source.requests) == 1
    assert plan is not None and plan.wanted == 1, "the plan, for the loop's wake-up rule"
    assert intake.poll_deadline(10.5, Phase.RUNNING) == pytest.approx(11.01)
    assert intake.maybe_poll(11.01, Phase.RUNNING, 0) is None
    assert len(source.requests) == 2


def test_a_poll_that_brought_jobs_is_followed_at_once_and_forgets_the_empty_one() -> None:
    intake, source = intake_with(pipeline_worker(1), pipeline_worker(2))
    intake.maybe_poll(10.0, Phase.RUNNING, 0)
    source.busy = False
    intake.on_result(PollResult(2, 10.0, 0.01), 10.01)
    intake.maybe_poll(10.2, Phase.RUNNING, 1)
    source.busy = False
    intake.on_result(PollResult(2, 10.2, 0.01, [job("j1", job_type="s2")]), 10.21)
    assert intake.next_poll_at == 10.21
    intake.maybe_poll(10.22, Phase.RUNNING, 1)
    assert len(source.requests) == 3


def test_a_failed_poll_backs_off_whatever_the_types() -> None:
    intake, source = intake_with(pipeline_worker(1))
    intake.maybe_poll(10.0, Phase.RUNNING, 0)
    source.busy = False
    error = EngineResponseError(503, "down", retryable=True)
    intake.on_result(PollResult(1, 10.0, 0.01, error=error), 10.01)
    intake.maybe_poll(10.02, Phase.RUNNING, 5)
    assert len(source.requests) == 1, "the backoff holds even with new answers"


def test_the_plan_names_the_types_the_empty_answer_is_judged_by() -> None:
    """An ahead poll names the short types of the busy workers; an idle
    worker's poll names all of its types."""
    intake, _ = intake_with(pipeline_worker(1, SlotState.BUSY), pipeline_worker(2))
    short(intake, "s1")
    assert plan_poll(intake.pool, intake.ledger, intake.claims).job_types == ["s1", "s2", "s3"]
