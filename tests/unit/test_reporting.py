"""deliver(): completions are retried, fails are resent only when surely unsent."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from workflow_sdk import reporting
from workflow_sdk.errors import (
    EngineClientError,
    EngineConnectionError,
    EngineTimeoutError,
)
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.reporting import ReportStatus, deliver
from workflow_sdk.retry import backoff
from workflow_sdk.staleness import JobLiveness, StaleVerdict

SUCCESS = Outcome("job-1", "score", True, {"score": 7})
FAILURE = Outcome.failure("job-2", "score", "ValueError: x", retryable=True)
FAILURE_FOR_GOOD = Outcome.failure("job-3", "score", "card declined", retryable=False)


def refused() -> EngineConnectionError:
    return EngineConnectionError("refused", request_sent=False, method="POST", url="u")


def reset() -> EngineConnectionError:
    return EngineConnectionError("reset by peer", request_sent=True, method="POST", url="u")


def read_timeout() -> EngineTimeoutError:
    return EngineTimeoutError("no answer", request_sent=True, method="POST", url="u")


def unavailable() -> EngineClientError:
    return EngineClientError(503, "Service Unavailable", retryable=True)


def db_error() -> EngineClientError:
    """The engine's own answer to a transient failure: it is done with the request."""
    return EngineClientError(500, "database is locked", retryable=True)


def not_found() -> EngineClientError:
    return EngineClientError(500, 'job "job-1" not found', retryable=False)


class FakeClient:
    """Answers each report call with the next scripted exception (None = success)."""

    def __init__(self, *script: BaseException | None, then: BaseException | None = None) -> None:
        self.script = list(script)
        self.then = then
        self.completes: list[tuple[str, str, dict[str, Any] | None]] = []
        self.fails: list[tuple[str, str, str, bool]] = []
        self.called = threading.Event()

    def _answer(self) -> None:
        self.called.set()
        result = self.script.pop(0) if self.script else self.then
        if result is not None:
            raise result

    def poll_jobs(
        self, worker_id: str, job_types: list[str], max_jobs: int = 1
    ) -> list[dict[str, Any]]:
        raise AssertionError("deliver must not poll")

    def complete_job(
        self, job_id: str, worker_id: str, variables: dict[str, Any] | None = None
    ) -> None:
        self.completes.append((job_id, worker_id, variables))
        self._answer()

    def fail_job(
        self, job_id: str, worker_id: str, error_message: str, retryable: bool = True
    ) -> None:
        self.fails.append((job_id, worker_id, error_message, retryable))
        self._answer()

    @property
    def attempts(self) -> int:
        return len(self.completes) + len(self.fails)


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the real backoff logic, with delays of a millisecond or less."""
    monkeypatch.setattr(backoff, "BASE_DELAY", 0.0001)
    monkeypatch.setattr(backoff, "MAX_DELAY", 0.001)


class FakeTime:
    """Stands in for the ``time`` module inside reporting: sleeping advances a clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_completion_delivered_first_time() -> None:
    client = FakeClient(None)
    assert deliver(client, "w-1", SUCCESS) is ReportStatus.DELIVERED
    assert client.completes == [("job-1", "w-1", {"score": 7})]
    assert client.fails == []


def test_failure_delivered_first_time() -> None:
    client = FakeClient(None)
    assert deliver(client, "w-1", FAILURE_FOR_GOOD) is ReportStatus.DELIVERED
    assert client.fails == [("job-3", "w-1", "card declined", False)]
    assert client.completes == []


@pytest.mark.usefixtures("fast_backoff")
def test_completion_retried_on_every_transient_error_until_it_lands() -> None:
    errors = [unavailable(), read_timeout(), refused(), reset()]
    client = FakeClient(*errors, None)
    retried: list[tuple[Outcome, EngineClientError]] = []
    # A request that may still be in flight (503, timeout, reset) is sent
    # again only once the window passed; a short one here.
    status = deliver(
        client, "w-1", SUCCESS, on_retry=lambda o, e: retried.append((o, e)), window=0.001
    )
    assert status is ReportStatus.DELIVERED
    assert client.attempts == 5
    assert client.completes == [("job-1", "w-1", {"score": 7})] * 5
    assert client.fails == []  # a completion never turns into a fail
    assert [e for _, e in retried] == errors
    assert all(o is SUCCESS for o, _ in retried)


@pytest.mark.usefixtures("fast_backoff")
def test_completion_retried_with_give_up_event_unset() -> None:
    client = FakeClient(unavailable(), unavailable(), None)
    give_up = threading.Event()
    assert deliver(client, "w", SUCCESS, give_up=give_up, window=0.001) is ReportStatus.DELIVERED
    assert client.attempts == 3


def test_completion_lost_after_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeTime()
    monkeypatch.setattr(reporting, "time", clock)
    client = FakeClient(then=db_error())
    retries: list[EngineClientError] = []
    status = deliver(client, "w", SUCCESS, deadline=10.0, on_retry=lambda o, e: retries.append(e))
    assert status is ReportStatus.LOST
    # Real backoff delays (0.1, 0.2, 0.4 ... s with jitter) until 10 s would pass.
    assert client.attempts >= 5
    assert len(retries) == client.attempts - 1 == len(clock.slept)
    assert sum(clock.slept) <= 10.0
    assert clock.now - 1000.0 <= 10.0
    assert client.fails == []


def test_zero_deadline_gives_up_after_one_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeTime()
    monkeypatch.setattr(reporting, "time", clock)
    client = FakeClient(then=read_timeout())
    assert deliver(client, "w", SUCCESS, deadline=0.0) is ReportStatus.LOST
    assert client.attempts == 1
    assert clock.slept == []


@pytest.mark.parametrize("outcome", [SUCCESS, FAILURE, FAILURE_FOR_GOOD])
def test_permanent_error_is_rejected_without_retry(outcome: Outcome) -> None:
    client = FakeClient(then=not_found())
    retried: list[Any] = []
    status = deliver(client, "w", outcome, on_retry=lambda o, e: retried.append(e))
    assert status is ReportStatus.REJECTED
    assert client.attempts == 1
    assert retried == []


@pytest.mark.parametrize("error", [read_timeout, reset, unavailable])
def test_fail_that_may_have_reached_the_engine_is_not_resent(error: Any) -> None:
    client = FakeClient(error(), None)
    retried: list[Any] = []
    status = deliver(client, "w", FAILURE, on_retry=lambda o, e: retried.append(e))
    assert status is ReportStatus.LOST
    assert client.fails == [("job-2", "w", "ValueError: x", True)]
    assert retried == []


@pytest.mark.usefixtures("fast_backoff")
def test_fail_that_surely_never_left_is_resent() -> None:
    first, second = refused(), refused()
    client = FakeClient(first, second, None)
    retried: list[EngineClientError] = []
    status = deliver(client, "w", FAILURE, on_retry=lambda o, e: retried.append(e))
    assert status is ReportStatus.DELIVERED
    assert client.fails == [("job-2", "w", "ValueError: x", True)] * 3
    assert client.completes == []
    assert retried == [first, second]


@pytest.mark.usefixtures("fast_backoff")
def test_refused_then_sent_but_unanswered_fail_stops() -> None:
    client = FakeClient(refused(), read_timeout(), None)
    assert deliver(client, "w", FAILURE_FOR_GOOD) is ReportStatus.LOST
    assert len(client.fails) == 2
    assert all(call == ("job-3", "w", "card declined", False) for call in client.fails)


def test_give_up_already_set_returns_lost_promptly(monkeypatch: pytest.MonkeyPatch) -> None:
    # Long real delays: only the event can end the wait quickly.
    monkeypatch.setattr(backoff, "BASE_DELAY", 60.0)
    monkeypatch.setattr(backoff, "MAX_DELAY", 60.0)
    give_up = threading.Event()
    give_up.set()
    client = FakeClient(then=unavailable())
    started = time.monotonic()
    assert deliver(client, "w", SUCCESS, give_up=give_up) is ReportStatus.LOST
    assert time.monotonic() - started < 5.0
    assert client.attempts == 1


def test_give_up_set_while_waiting_ends_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backoff, "BASE_DELAY", 60.0)
    monkeypatch.setattr(backoff, "MAX_DELAY", 60.0)
    give_up = threading.Event()
    retrying = threading.Event()
    client = FakeClient(then=db_error())
    result: list[ReportStatus] = []

    def run() -> None:
        result.append(
            deliver(client, "w", SUCCESS, give_up=give_up, on_retry=lambda o, e: retrying.set())
        )

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    assert retrying.wait(10), "deliver never reached its first retry wait"
    give_up.set()
    worker.join(10)
    assert not worker.is_alive()
    assert result == [ReportStatus.LOST]
    assert client.attempts == 1


def test_waits_use_the_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeTime()
    monkeypatch.setattr(reporting, "time", clock)
    monkeypatch.setattr(backoff, "delay", lambda attempt, rng=None: 0.5 * (attempt + 1))
    client = FakeClient(db_error(), db_error(), db_error(), None)
    assert deliver(client, "w", SUCCESS, deadline=100.0) is ReportStatus.DELIVERED
    assert clock.slept == [0.5, 1.0, 1.5]


def test_failure_after_the_lease_is_withheld_but_a_completion_is_sent() -> None:
    past = time.monotonic() - 1
    client = FakeClient(None)
    assert deliver(client, "w", FAILURE, lease_end=past) is ReportStatus.WITHHELD
    assert client.attempts == 0
    assert deliver(client, "w", SUCCESS, lease_end=past) is ReportStatus.DELIVERED
    assert len(client.completes) == 1


def test_failure_retries_stop_at_the_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeTime()
    monkeypatch.setattr(reporting, "time", clock)
    client = FakeClient(then=refused())
    lease_end = clock.now + 1.0
    status = deliver(client, "w", FAILURE, deadline=600, lease_end=lease_end)
    assert status is ReportStatus.LOST
    assert clock.now <= lease_end, "no wait runs past the lease"
    assert client.attempts >= 2


def test_a_failure_of_a_stale_job_is_not_sent() -> None:
    client = FakeClient()
    asked: list[bool] = []

    def stale() -> StaleVerdict:
        asked.append(True)
        return StaleVerdict(JobLiveness.STALE, "step_failed", "interrupted by boundary timer")

    assert deliver(client, "w", FAILURE_FOR_GOOD, stale_check=stale) is ReportStatus.STALE
    assert client.fails == [] and client.completes == [] and asked == [True]


@pytest.mark.usefixtures("fast_backoff")
@pytest.mark.parametrize("reason", ["instance_cancelled", "instance_completed", "instance_failed"])
def test_a_failure_of_a_job_whose_instance_is_over_retires_the_job(reason: str) -> None:
    """Pins (found by the chaos suite): a fail withheld because the instance
    is over left the job locked; the engine handed it out again after every
    lease. Now an empty completion retires it (harmless there, by the
    contract), retried like any completion; the status stays STALE."""
    client = FakeClient(refused())
    verdict = StaleVerdict(JobLiveness.STALE, reason, "instance over")
    status = deliver(client, "w", FAILURE_FOR_GOOD, stale_check=lambda: verdict)
    assert status is ReportStatus.STALE
    assert client.fails == []
    assert client.completes == [(FAILURE_FOR_GOOD.job_id, "w", {})] * 2


@pytest.mark.parametrize("liveness", ["live", "unknown"])
def test_a_failure_is_sent_when_the_job_is_live_or_the_check_cannot_tell(liveness: str) -> None:
    client = FakeClient()
    verdict = StaleVerdict(JobLiveness(liveness))
    assert deliver(client, "w", FAILURE, stale_check=lambda: verdict) is ReportStatus.DELIVERED
    assert len(client.fails) == 1


def test_a_completion_never_asks_the_stale_check() -> None:
    client = FakeClient()

    def boom() -> Any:
        raise AssertionError("asked")

    assert deliver(client, "w", SUCCESS, stale_check=boom) is ReportStatus.DELIVERED
    assert len(client.completes) == 1
