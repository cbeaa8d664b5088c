"""The supervisor's intake and memory-sample verdicts, without a fork or a thread."""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry

from unit.fakes import (
    StandInPs,
    StandInSource,
    idle_slot,
    intake_with,
    job,
    kafka_job,
    make_slot,
    sent_jobs,
)
from workflow_sdk.client import models
from workflow_sdk.errors import DispatchModeError, EngineResponseError
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.supervisor.config import SupervisorConfig
from workflow_sdk.supervisor.io.source import PollResult
from workflow_sdk.supervisor.loop.claim_plan import plan_poll
from workflow_sdk.supervisor.loop.intake import REPORT_HOLD, PollVerdict
from workflow_sdk.supervisor.loop.kafka_types import types_to_consume
from workflow_sdk.supervisor.loop.ledger import JobEntry, JobState
from workflow_sdk.supervisor.loop.memory_watch import MemoryRules, sample_memory
from workflow_sdk.supervisor.loop.phase import Phase
from workflow_sdk.supervisor.loop.pool import WorkerPool
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot


def serving(number: int, *job_types: str, state: SlotState = SlotState.IDLE) -> WorkerSlot:
    return make_slot(number, state, job_types=frozenset(job_types))


def test_a_poll_asks_for_one_job_per_idle_worker_and_is_not_asked_twice() -> None:
    intake, source = intake_with(idle_slot(1), idle_slot(2))
    assert intake.maybe_poll(10.0, Phase.RUNNING, 0) is None
    assert source.requests == [(2, ("a",), 0)]
    assert intake.requested_at == 10.0
    # The source is busy with it: no second request.
    assert intake.maybe_poll(10.1, Phase.RUNNING, 0) is None
    assert len(source.requests) == 1


def test_no_poll_while_draining_or_before_the_poll_time() -> None:
    intake, source = intake_with(idle_slot(1))
    assert not intake.may_poll(Phase.DRAINING)
    assert intake.maybe_poll(10.0, Phase.DRAINING, 0) is None
    intake.next_poll_at = 11.0
    assert intake.maybe_poll(10.0, Phase.RUNNING, 0) is None
    assert intake.poll_deadline(10.0, Phase.RUNNING) == 11.0
    assert source.requests == []


def test_a_claimed_answer_fills_the_ledger_and_polls_again_at_once() -> None:
    intake, _ = intake_with(idle_slot(1), idle_slot(2))
    result = PollResult(asked=2, sent_at=10.0, latency=0.01, jobs=[job("j1"), job("j2")])
    assert intake.on_result(result, 10.01) is PollVerdict.CLAIMED
    assert [e.job_id for e in intake.ledger.claimed()] == ["j1", "j2"]
    assert intake.ledger.get("j1").lease_end == 40.0  # type: ignore[union-attr]
    assert intake.next_poll_at == 10.01
    assert intake.stats.jobs_claimed == 2


def test_a_malformed_job_is_counted_and_the_good_ones_of_its_answer_claimed() -> None:
    """Pins: a poll answer with a job without an id and one with variables
    of the wrong type beside two good jobs: the two are claimed, the two
    others counted in ``workflow_sdk_malformed_jobs_total``."""
    intake, _ = intake_with(idle_slot(1), idle_slot(2))
    reg = CollectorRegistry()
    intake.metrics = Metrics(reg)
    bad_variables = {**job("bad"), "variables": "oops"}
    answer = models.parse_poll({"jobs": [job("j1"), {"jobType": "a"}, bad_variables, job("j2")]})
    result = PollResult(asked=4, sent_at=10.0, latency=0.01, jobs=answer)
    assert intake.on_result(result, 10.01) is PollVerdict.CLAIMED
    assert [e.job_id for e in intake.ledger.claimed()] == ["j1", "j2"]
    assert reg.get_sample_value("workflow_sdk_malformed_jobs_total") == 2.0


def test_an_empty_answer_waits_the_poll_interval_unless_the_source_waited() -> None:
    intake, _ = intake_with(idle_slot(1))
    assert intake.on_result(PollResult(1, 10.0, 0.01), 10.0) is PollVerdict.CLAIMED
    assert intake.next_poll_at == 11.0
    assert intake.on_result(PollResult(1, 12.0, 0.01, waited=True), 12.0) is PollVerdict.CLAIMED
    assert intake.next_poll_at == 12.0


def test_a_failed_poll_backs_off_and_a_refused_one_says_so() -> None:
    intake, _ = intake_with(idle_slot(1))
    failed = PollResult(1, 10.0, 0.01, error=EngineResponseError(503, "down", retryable=True))
    assert intake.on_result(failed, 10.0) is PollVerdict.FAILED
    assert intake.next_poll_at > 10.0
    assert intake.stats.poll_errors == 1
    refused = PollResult(
        1, 10.0, 0.01, error=DispatchModeError(410, "gone", dispatch_mode="kafka_outbox")
    )
    assert intake.on_result(refused, 10.0) is PollVerdict.WRONG_DISPATCH
    assert len(intake.ledger) == 0


def test_a_job_redelivered_while_held_is_settled_at_once_not_claimed_twice() -> None:
    intake, source = intake_with(idle_slot(1))
    intake.claim(job("j1"), 10.0, 10.0, leased=True)
    intake.claim(job("j1"), 20.0, 20.0, leased=True)
    assert len(intake.ledger) == 1
    assert intake.stats.redeliveries_coalesced == 1
    assert source.settled == [("j1", True)]


def test_a_held_retry_handed_out_again_takes_the_new_lease_and_settles_the_old_delivery() -> None:
    """Pins: j1's fail is being reported, its retry is held (lease to 40),
    the fail's answer is late and the engine hands the retry out again (lease
    to 75). The held retry takes the new delivery; the one it replaces is
    settled at once, like a duplicate's; the new one is settled by its run."""
    intake, source = intake_with(idle_slot(1))
    settled: list[tuple[dict[str, Any], bool]] = []
    source.settle = lambda raw, done: settled.append((raw, done))  # type: ignore[method-assign]
    intake.claim({**job("j1"), "retriesRemaining": 2}, 10.0, 10.0, leased=True)
    intake.ledger.start("j1", 1, 10.0, 0.0)
    intake.ledger.finish("j1", 11.0)
    first, again = ({**job("j1"), "retriesRemaining": 1} for _ in range(2))
    intake.claim(first, 10.0, 12.0, leased=True)
    intake.claim(again, 45.0, 46.0, leased=True)
    assert settled == [(first, True)] and settled[0][0] is first
    assert intake.stats.redeliveries_coalesced == 1
    intake.ledger.release("j1", 47.0)
    (retry,) = intake.ledger.claimed()
    assert retry.origin is again and retry.lease_end == 75.0


def test_a_job_without_lease_never_expires_and_an_expired_one_is_skipped() -> None:
    intake, _ = intake_with(idle_slot(1))
    intake.claim(job("kafka"), 10.0, 10.0, leased=False)
    assert intake.ledger.get("kafka").lease_end == math.inf  # type: ignore[union-attr]
    intake.claim(job("late", lease=5), 10.0, 16.0, leased=True)
    assert "late" not in intake.ledger
    assert intake.stats.skipped_expired == 1


def test_a_dropped_job_leaves_the_ledger_and_is_settled_with_its_source() -> None:
    intake, source = intake_with(idle_slot(1))
    intake.claim(job("j1"), 10.0, 10.0, leased=True)
    entry = intake.ledger.get("j1")
    assert entry is not None
    intake.drop(entry, done=False)
    assert "j1" not in intake.ledger
    assert source.settled == [("j1", False)]


def test_a_claimed_job_no_idle_worker_serves_does_not_block_the_jobs_behind_it() -> None:
    """Pins: dispatch stopped at the first claimed job it could not place (a
    type the workers no longer serve, after a reload): two idle workers, a
    job they serve claimed behind it, never dispatched (Kafka jobs have no
    lease to end the wait). Poll mode's loop is the same."""
    first, second = serving(1, "new"), serving(2, "new")
    intake, _ = intake_with(first, second)
    intake.claim(kafka_job("gone-1", "gone"), 10.0, 10.0, leased=False)
    intake.claim(kafka_job("new-1", "new"), 10.0, 10.0, leased=False)
    intake.claim(kafka_job("new-2", "new"), 10.0, 10.0, leased=False)
    intake.claim(kafka_job("new-3", "new"), 10.0, 10.0, leased=False)
    intake.dispatch_claimed(10_000.0, SupervisorConfig())
    running = {e.job_id: e.slot for e in intake.ledger.running()}
    assert running == {"new-1": 1, "new-2": 2}
    assert [e.job_id for e in intake.ledger.claimed()] == ["gone-1", "new-3"]
    assert sent_jobs(first) + sent_jobs(second) == ["new-1", "new-2"]


def test_kafka_types_follow_the_workers_and_a_type_gone_gives_its_claimed_jobs_back() -> None:
    """Pins: the consumers stayed those of the first ready worker's types.
    After a reload to handlers of {keep, new}: new is followed, old is not,
    and a claimed job of old (no worker can take it; no lease would ever
    end its wait) leaves the ledger, given back to the source unsettled (its
    record stays uncommitted for the group's next member)."""
    feeder = StandInSource(following=frozenset({"keep", "old"}))
    intake, source = intake_with(
        serving(1, "keep", "new"), serving(2, "keep", "new"), source=feeder
    )
    intake.claim(kafka_job("old-1", "old"), 10.0, 10.0, leased=False)
    intake.claim(kafka_job("keep-1", "keep"), 10.0, 10.0, leased=False)
    assert plan_poll(intake.pool, intake.ledger, intake.claims).wanted == 0
    intake.follow_types()
    # Its room is free again: the next poll asks for the idle worker left.
    assert plan_poll(intake.pool, intake.ledger, intake.claims).wanted == 1
    assert feeder.following == {"keep", "new"}
    assert feeder.given_back == ["old-1"]
    assert [e.job_id for e in intake.ledger.claimed()] == ["keep-1"]
    assert source.settled == [], "neither done nor unfinished"


def test_a_poll_source_follows_no_types() -> None:
    """Polls name their job types per request: nothing to follow, nothing given back."""
    intake, source = intake_with(serving(1, "new"))
    intake.claim(kafka_job("old-1", "old"), 10.0, 10.0, leased=False)
    intake.follow_types()
    assert source.following is None and source.given_back == []
    assert [e.job_id for e in intake.ledger.claimed()] == ["old-1"]


def test_the_types_to_consume_are_those_ready_workers_that_stay_serve() -> None:
    pool = WorkerPool(3)
    pool.add(make_slot(1, SlotState.IDLE, job_types=frozenset({"a", "b"})))
    pool.add(make_slot(2, SlotState.BUSY, job_types=frozenset({"c"})))
    pool.add(make_slot(3, SlotState.BUSY, job_types=frozenset({"old"}), retiring=True))
    assert types_to_consume(pool, frozenset({"old"})) == {"a", "b", "c"}


def test_no_type_goes_while_a_worker_boots_or_none_is_ready() -> None:
    # A booting worker's types are not known yet: a crash's replacement
    # must not make the groups be left and joined again.
    pool = WorkerPool(2)
    pool.add(make_slot(1, SlotState.IDLE, job_types=frozenset({"a"})))
    pool.add(make_slot(2, SlotState.BOOTING))
    assert types_to_consume(pool, frozenset({"a", "b"})) == {"a", "b"}
    assert types_to_consume(pool, frozenset({"x"})) == {"a", "x"}, "new types join at once"
    alone = WorkerPool(1)
    alone.add(make_slot(1, SlotState.STOPPING, job_types=frozenset({"a"})))
    assert types_to_consume(alone, frozenset({"a", "b"})) == {"a", "b"}


def test_reports_wait_only_for_a_poll_sent_less_than_the_hold_ago() -> None:
    intake, source = intake_with(idle_slot(1))
    intake.maybe_poll(10.0, Phase.RUNNING, 0)
    assert intake.holds_reports(10.0 + REPORT_HOLD / 2)
    assert not intake.holds_reports(10.0 + REPORT_HOLD * 2)
    source.armed = True  # an armed poll waits for those reports
    assert not intake.holds_reports(10.0)


def test_answers_wake_the_loop_when_no_job_runs() -> None:
    intake, source = intake_with(idle_slot(1))
    assert intake.answers_wake_loop(Phase.RUNNING, None)
    intake.claim(job("j1"), 10.0, 10.0, leased=True)
    intake.ledger.start("j1", 1, 10.0, 0.0)
    assert intake.ledger.count(JobState.RUNNING) == 1
    source.busy = True
    assert not intake.answers_wake_loop(Phase.RUNNING, None)


def test_answers_wake_the_loop_while_a_retry_waits_behind_its_fail() -> None:
    intake, source = intake_with(idle_slot(1))
    intake.claim(job("j1"), 10.0, 10.0, leased=True)
    intake.ledger.start("j1", 1, 10.0, 0.0)
    intake.claim({**job("j2"), "retriesRemaining": 1}, 10.0, 10.0, leased=True)
    intake.ledger.start("j2", 1, 10.0, 0.0)
    intake.ledger.finish("j2", 11.0)  # its fail is being reported
    source.busy = True
    assert not intake.answers_wake_loop(Phase.RUNNING, None)  # j1 runs: an answer may wait
    intake.claim({**job("j2"), "retriesRemaining": 0}, 12.0, 12.0, leased=True)
    assert intake.ledger.attempts_held == 1
    # The answer to j2's fail lets its retry start: it must not wait for j1.
    assert intake.answers_wake_loop(Phase.RUNNING, None)


def test_a_busy_source_past_twice_the_engine_timeout_is_unhealthy() -> None:
    intake, source = intake_with(idle_slot(1))
    assert intake.healthy(100.0, 5.0)
    intake.maybe_poll(10.0, Phase.RUNNING, 0)
    assert intake.healthy(10.0 + 14.0, 5.0)
    assert not intake.healthy(10.0 + 16.0, 5.0)
    source.armed = True  # waiting for reports is backpressure, not a wedge
    assert intake.healthy(10.0 + 16.0, 5.0)


def test_rss_samples_name_the_busy_workers_over_the_hard_limit_and_the_idle_ones() -> None:
    mib = 2**20
    over = make_slot(1, ps=StandInPs(300 * mib))
    under = make_slot(2, ps=StandInPs(100 * mib))
    for slot in (over, under):
        assert slot.start(JobEntry({"id": f"j{slot.number}", "jobType": "a"}, math.inf, 0.0))
    idle = make_slot(3, SlotState.IDLE, ps=StandInPs(50 * mib))
    gone = make_slot(4, SlotState.IDLE, ps=StandInPs(0), rss_bytes=7)
    stopping = make_slot(5, SlotState.STOPPING, ps=StandInPs(900 * mib))
    vanished = make_slot(6, SlotState.IDLE, ps=StandInPs(1, error=True))
    verdict = sample_memory(
        [over, under, idle, gone, stopping, vanished], MemoryRules(hard=200 * mib)
    )
    assert verdict.kill == [over]
    assert verdict.idle == [idle]
    assert (over.rss_bytes, idle.rss_bytes, gone.rss_bytes) == (300 * mib, 50 * mib, 7)
    # No hard limit: nobody is killed.
    assert sample_memory([over], MemoryRules()).kill == []
