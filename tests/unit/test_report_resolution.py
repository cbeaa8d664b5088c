"""deliver() after a lost answer: ask the engine, never two reports in flight,
never a fail after the lease, and in Kafka mode (no lease) never give up.

Every test runs on a fake clock: sleeping advances it, and each request is
stamped with the time it was sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from workflow_sdk import reporting
from workflow_sdk.errors import EngineClientError, EngineConnectionError, EngineTimeoutError
from workflow_sdk.fate import Fate, FateCheck, Finding
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.reporting import ReportStatus, Sent, deliver, where_is
from workflow_sdk.staleness import LIVE, StaleVerdict

DONE = Outcome("job-1", "score", True, {"score": 7})
RETRYABLE = Outcome.failure("job-2", "score", "ValueError: x", retryable=True)
FOR_GOOD = Outcome.failure("job-3", "score", "card declined", retryable=False)
WINDOW = 35.0


class Clock:
    """Stands in for ``time`` inside reporting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(reporting, "time", fake)
    return fake


def timed_out() -> EngineTimeoutError:
    return EngineTimeoutError("no answer within 0.5 s", request_sent=True)


def refused() -> EngineConnectionError:
    return EngineConnectionError("refused", request_sent=False)


class Engine:
    """A scripted engine: each report answers with the next script entry
    (None = success), and is stamped with the fake time it was sent."""

    def __init__(self, clock: Clock, *script: BaseException | None, then: Any = None) -> None:
        self.clock = clock
        self.script = list(script)
        self.then = then
        self.sent: list[tuple[str, float]] = []

    def _answer(self, verb: str) -> None:
        self.sent.append((verb, self.clock.now))
        result = self.script.pop(0) if self.script else self.then
        if result is not None:
            raise result

    def poll_jobs(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise AssertionError("deliver must not poll")

    def complete_job(self, job_id: str, worker_id: str, variables: Any = None) -> None:
        self._answer("complete")

    def fail_job(self, job_id: str, worker_id: str, message: str, retryable: bool = True) -> None:
        self._answer("fail")

    @property
    def times(self) -> list[float]:
        return [at for _, at in self.sent]


class Fates:
    """A FateCheck stand-in: the scripted findings in turn, the last one repeated."""

    def __init__(self, *fates: Fate, on_look: Callable[[], None] | None = None) -> None:
        self.fates = list(fates)
        self.looks = 0
        self.on_look = on_look
        self.last: Finding | None = None

    def look(self, outcome: Outcome) -> Finding:
        self.looks += 1
        if self.on_look is not None:
            self.on_look()
        fate = self.fates.pop(0) if len(self.fates) > 1 else self.fates[0]
        self.last = Finding(fate, "scripted", "step_failed" if fate is Fate.SETTLED else "")
        return self.last


def run(engine: Engine, outcome: Outcome, **kwargs: Any) -> ReportStatus:
    kwargs.setdefault("window", WINDOW)
    return deliver(engine, "w", outcome, **kwargs)  # type: ignore[arg-type]


# -- where a report stands after an error -------------------------------------------


@pytest.mark.parametrize(
    ("error", "sent"),
    [
        (EngineClientError(500, 'job "x" not found', retryable=False), Sent.REFUSED),
        (EngineClientError(400, "bad", retryable=False), Sent.REFUSED),
        (EngineConnectionError("refused", request_sent=False), Sent.NOT_SENT),
        (EngineConnectionError("reset", request_sent=True), Sent.IN_FLIGHT),
        (EngineTimeoutError("slow", request_sent=True), Sent.IN_FLIGHT),
        (EngineClientError(502, "bad gateway", retryable=True), Sent.IN_FLIGHT),
        (EngineClientError(503, "unavailable", retryable=True), Sent.IN_FLIGHT),
        (EngineClientError(504, "", retryable=True), Sent.IN_FLIGHT),
        (EngineClientError(408, "request timeout", retryable=True), Sent.NOT_SENT),
        (EngineClientError(429, "slow down", retryable=True), Sent.NOT_SENT),
        (EngineClientError(500, "context deadline exceeded", retryable=True), Sent.ANSWERED),
    ],
)
def test_where_a_report_stands(error: EngineClientError, sent: Sent) -> None:
    assert where_is(error) is sent


# -- completions ------------------------------------------------------------------


def test_a_completion_the_engine_is_still_applying_is_not_sent_again(clock: Clock) -> None:
    """Issue 16 bug 2: the engine answers a complete slower than the client's
    timeout. Before, the reporter resent it 0.1 s later while the first was
    still being applied (overlapping completes can both advance the
    instance), and counted it LOST although the engine applied it."""
    engine = Engine(clock, timed_out())
    fates = Fates(Fate.NOT_APPLIED, Fate.NOT_APPLIED, Fate.APPLIED)
    status = run(engine, DONE, fate=fates)
    assert status is ReportStatus.DELIVERED
    assert engine.sent == [("complete", 1000.0)]
    assert fates.looks == 3


def test_a_completion_is_sent_again_only_once_the_first_can_no_longer_be_applied(
    clock: Clock,
) -> None:
    engine = Engine(clock, timed_out(), None)
    status = run(engine, DONE, fate=Fates(Fate.NOT_APPLIED))
    assert status is ReportStatus.DELIVERED
    first, second = engine.times
    assert second >= first + WINDOW


def test_without_a_reader_a_completion_still_waits_out_the_window(clock: Clock) -> None:
    engine = Engine(clock, EngineClientError(504, "", retryable=True), None)
    assert run(engine, DONE) is ReportStatus.DELIVERED
    first, second = engine.times
    assert second >= first + WINDOW


def test_a_completion_the_engine_answered_with_its_own_error_is_retried_at_once(
    clock: Clock,
) -> None:
    # The engine answered: it is done with the request, and completes repeat.
    engine = Engine(clock, EngineClientError(500, "db error", retryable=True), None)
    fates = Fates(Fate.APPLIED)
    assert run(engine, DONE, fate=fates) is ReportStatus.DELIVERED
    first, second = engine.times
    assert second - first < 1.0
    assert fates.looks == 0


def test_a_completion_of_an_interrupted_step_is_settled(clock: Clock) -> None:
    engine = Engine(clock, timed_out())
    assert run(engine, DONE, fate=Fates(Fate.SETTLED)) is ReportStatus.STALE
    assert len(engine.sent) == 1


def test_a_completion_given_up_in_flight_holds_back_the_jobs_next_report(clock: Clock) -> None:
    """A complete given up at its deadline while it may still be applied:
    the job's next report (the re-run after its lease, from any thread)
    waits until the first can no longer be acted on."""
    engine = Engine(clock, timed_out())
    assert run(engine, DONE, deadline=1.0, fate=Fates(Fate.NOT_APPLIED)) is ReportStatus.LOST
    first = engine.times[0]
    assert run(engine, DONE) is ReportStatus.DELIVERED
    assert engine.times[1] >= first + WINDOW


def test_a_completion_applied_is_never_counted_lost_at_its_deadline(clock: Clock) -> None:
    engine = Engine(clock, timed_out())
    fates = Fates(Fate.NOT_APPLIED, Fate.APPLIED)
    # The deadline passes between the two looks: the second still counts.
    status = run(engine, DONE, deadline=0.15, fate=fates)
    assert status in (ReportStatus.DELIVERED, ReportStatus.LOST)
    assert (status is ReportStatus.DELIVERED) == (fates.looks == 2)


# -- fails, poll mode (the lease redelivers) ---------------------------------------


def test_a_fail_that_fails_the_step_is_sent_again_once_shown_not_applied(clock: Clock) -> None:
    engine = Engine(clock, timed_out(), None)
    status = run(engine, FOR_GOOD, lease_end=clock.now + 100, fate=Fates(Fate.NOT_APPLIED))
    assert status is ReportStatus.DELIVERED
    first, second = engine.times
    assert second >= first + WINDOW


def test_a_fail_that_cannot_be_confirmed_within_the_lease_is_not_sent_again(
    clock: Clock,
) -> None:
    engine = Engine(clock, timed_out())
    status = run(engine, FOR_GOOD, lease_end=clock.now + 10, fate=Fates(Fate.NOT_APPLIED))
    assert status is ReportStatus.LOST
    assert len(engine.sent) == 1


def test_a_retryable_fail_with_retries_left_is_never_sent_twice_in_poll_mode(
    clock: Clock,
) -> None:
    engine = Engine(clock, timed_out())
    fates = Fates(Fate.NO_TRACE)
    status = run(engine, RETRYABLE, lease_end=clock.now + 100, fate=fates)
    assert status is ReportStatus.LOST
    assert len(engine.sent) == 1
    assert fates.looks == 1


def test_a_fail_the_engine_applied_is_delivered(clock: Clock) -> None:
    engine = Engine(clock, EngineConnectionError("reset", request_sent=True))
    status = run(engine, FOR_GOOD, lease_end=clock.now + 100, fate=Fates(Fate.APPLIED))
    assert status is ReportStatus.DELIVERED
    assert len(engine.sent) == 1


def test_a_fail_is_withheld_when_the_stale_check_outlasts_the_lease(clock: Clock) -> None:
    """Issue 16 bug 3: the lease was checked, then the stale check took 1.6 s
    of a 1 s lease, then the fail went out; another worker had the job by
    then, and the fail failed its instance. The lease is now looked at right
    before the send."""
    engine = Engine(clock)

    def slow_check() -> StaleVerdict:
        clock.now += 1.6
        return LIVE

    status = run(engine, FOR_GOOD, lease_end=clock.now + 1.0, stale_check=slow_check)
    assert status is ReportStatus.WITHHELD
    assert engine.sent == []


def test_a_fail_is_withheld_when_its_retries_reach_the_lease(clock: Clock) -> None:
    engine = Engine(clock, then=refused())
    status = run(engine, FOR_GOOD, lease_end=clock.now + 1.0)
    assert status in (ReportStatus.WITHHELD, ReportStatus.LOST)
    assert all(at < 1001.0 for at in engine.times)


# -- Kafka mode: no lease, nothing else delivers the job again -----------------------


def test_no_lease_means_a_report_is_never_given_up_while_running(clock: Clock) -> None:
    """Issue 16 bug 1: a report that ended LOST in Kafka mode left its record
    at the head of its partition for good. Now it is retried past the
    deadline until it lands."""
    engine = Engine(clock, *[refused()] * 40, None)
    status = run(engine, DONE, deadline=1.0, until_settled=True)
    assert status is ReportStatus.DELIVERED
    assert len(engine.sent) == 41
    assert clock.now - 1000.0 > 60


def test_no_lease_a_fail_the_history_cannot_confirm_is_sent_again(clock: Clock) -> None:
    engine = Engine(clock, timed_out(), None)
    fates = Fates(Fate.NO_TRACE)
    status = run(engine, RETRYABLE, until_settled=True, fate=fates)
    assert status is ReportStatus.DELIVERED
    first, second = engine.times
    assert second >= first + WINDOW


def engine_500() -> EngineClientError:
    return EngineClientError(500, "context deadline exceeded", retryable=True)


def test_no_lease_a_fail_the_engine_answered_500_waits_for_its_retry_before_a_resend(
    clock: Clock,
) -> None:
    """Found by the chaos suite (Kafka mode): the engine applied a retryable
    fail and answered 500 (its timeout); a retryable fail leaves no trace in
    the history, and the answer meant "not in flight", so the fail was sent
    again at once, before the engine's dispatch of the retry could be seen:
    each resend burned a retry, and a burst of four failed the instance. Now
    a fail the engine answered with an error waits the in-flight window for
    its retry's dispatch, as one whose answer was lost does."""
    engine = Engine(clock, engine_500(), None)
    fates = Fates(Fate.NO_TRACE)
    status = run(engine, RETRYABLE, until_settled=True, fate=fates)
    assert status is ReportStatus.DELIVERED
    first, second = engine.times
    assert second >= first + WINDOW


def test_no_lease_a_fail_answered_500_whose_retry_shows_is_not_sent_again(clock: Clock) -> None:
    engine = Engine(clock, engine_500())
    seen = threading.Event()
    job = {"instanceId": "i", "stepExecutionId": "s", "retriesRemaining": 2}
    check = FateCheck(_ActiveReader(), job, retry_seen=seen.is_set)
    original_sleep = clock.sleep

    def sleep(seconds: float) -> None:
        original_sleep(seconds)
        if clock.now > 1000.3:  # the relay publishes within its 250 ms
            seen.set()

    clock.sleep = sleep  # type: ignore[method-assign]
    status = run(engine, RETRYABLE, until_settled=True, fate=check)
    assert status is ReportStatus.DELIVERED
    assert len(engine.sent) == 1


def test_a_completion_or_a_poll_mode_fail_answered_500_is_not_held_by_the_window(
    clock: Clock,
) -> None:
    engine = Engine(clock, engine_500(), None)
    assert run(engine, DONE, until_settled=True, fate=Fates(Fate.NO_TRACE)) is (
        ReportStatus.DELIVERED
    )
    first, second = engine.times
    assert second - first < WINDOW


def test_no_lease_a_seen_retry_ends_the_resolution(clock: Clock) -> None:
    engine = Engine(clock, timed_out())
    seen = threading.Event()
    reader = _ActiveReader()
    job = {"instanceId": "i", "stepExecutionId": "s", "retriesRemaining": 2}
    check = FateCheck(reader, job, retry_seen=seen.is_set)
    # The engine's new dispatch shows up while the window runs.
    original_sleep = clock.sleep

    def sleep(seconds: float) -> None:
        original_sleep(seconds)
        if clock.now > 1010:
            seen.set()

    clock.sleep = sleep  # type: ignore[method-assign]
    status = run(engine, RETRYABLE, until_settled=True, fate=check)
    assert status is ReportStatus.DELIVERED
    assert len(engine.sent) == 1


def test_no_lease_a_fail_waits_while_the_engine_cannot_be_asked(clock: Clock) -> None:
    engine = Engine(clock, timed_out(), None)
    fates = Fates(*[Fate.UNKNOWN] * 30, Fate.NOT_APPLIED)
    status = run(engine, FOR_GOOD, until_settled=True, fate=fates)
    assert status is ReportStatus.DELIVERED
    assert len(engine.sent) == 2
    assert fates.looks == 31  # sent again only once the engine could say


def test_no_lease_shutdown_ends_the_resolution() -> None:
    engine = Engine(Clock(), timed_out())
    give_up = threading.Event()
    give_up.set()
    status = deliver(
        engine,  # type: ignore[arg-type]
        "w",
        RETRYABLE,
        until_settled=True,
        give_up=give_up,
        fate=Fates(Fate.UNKNOWN),  # type: ignore[arg-type]
    )
    assert status is ReportStatus.LOST
    assert len(engine.sent) == 1


class _ActiveReader:
    def get_instance(self, instance_id: str) -> dict[str, Any]:
        return {"status": "ACTIVE"}

    def get_instance_history(self, instance_id: str) -> list[dict[str, Any]]:
        return [{"id": "s", "status": "RUNNING"}]
