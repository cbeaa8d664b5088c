"""The parent's watch over running jobs: verdicts from stale checks and renewals."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from workflow_sdk.errors import EngineConnectionError, LeaseLostError
from workflow_sdk.supervisor.loop.ledger import JobLedger, JobState
from workflow_sdk.supervisor.loop.watch import RunningJobWatch, StopJob


class Engine:
    """Answers instance reads and lease renewals as scripted."""

    def __init__(self, status: str = "ACTIVE", renewal: Any = None) -> None:
        self.status = status
        self.renewal = renewal
        self.renewals = 0

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        return {"id": instance_id, "status": self.status}

    def get_instance_history(self, instance_id: str) -> list[dict[str, Any]]:
        return [{"id": "se-1", "status": "RUNNING"}]

    def extend_lease(self, job_id: str, worker_id: str, lease_seconds: int = 0) -> Any:
        self.renewals += 1
        if isinstance(self.renewal, Exception):
            raise self.renewal
        return self.renewal


def running_ledger(
    now: float, stale_interval: float = 0.0, renew: float | None = None
) -> JobLedger:
    ledger = JobLedger(limit=4, stale_interval=stale_interval)
    ledger.renew_every = renew
    context = {"id": "j1", "jobType": "t", "instanceId": "i1", "stepExecutionId": "se-1"}
    ledger.claim(context, lease_end=now + 30, now=now, lease_length=30.0)
    ledger.start("j1", slot=1, now=now, timeout=0)
    return ledger


def answers(watch: RunningJobWatch, woken: threading.Event, now: float) -> list[StopJob]:
    """Wait for the errand thread's answer (it wakes us), then take the verdicts."""
    assert woken.wait(5.0), "the errand thread never answered"
    woken.clear()
    return watch.take(now)


def make_watch(ledger: JobLedger, engine: Engine, woken: threading.Event) -> RunningJobWatch:
    return RunningJobWatch(
        ledger, wake=woken.set, reader=engine, renewer=engine, worker_id="w", join_timeout=5
    )


def test_a_cancelled_instance_gives_a_stop_verdict() -> None:
    now = time.monotonic()
    ledger, woken, engine = running_ledger(now, stale_interval=5.0), threading.Event(), Engine()
    engine.status = "CANCELLED"
    watch = make_watch(ledger, engine, woken)
    try:
        watch.ask_due(now + 4.9)
        assert not woken.wait(0.2), "nothing is due before the interval"
        watch.ask_due(now + 5.0)
        (stop,) = answers(watch, woken, now + 5.1)
        assert (stop.job_id, stop.reason, stop.stale_reason) == (
            "j1",
            "stale",
            "instance_cancelled",
        )
    finally:
        watch.close()


def test_a_live_job_is_checked_again_one_interval_later() -> None:
    now = time.monotonic()
    ledger, woken = running_ledger(now, stale_interval=5.0), threading.Event()
    watch = make_watch(ledger, Engine(), woken)
    try:
        watch.ask_due(now + 5.0)
        assert answers(watch, woken, now + 6.0) == []
        entry = ledger.get("j1")
        assert entry is not None and not entry.stale_check_pending
        assert entry.next_stale_check == now + 11.0
    finally:
        watch.close()


def test_an_accepted_renewal_extends_the_lease_from_the_request() -> None:
    now = time.monotonic()
    ledger, woken = running_ledger(now, renew=0.0), threading.Event()
    engine = Engine(renewal={"accepted": True, "lockExpiresAt": "2026-01-01T00:00:00Z"})
    watch = make_watch(ledger, engine, woken)
    try:
        entry = ledger.get("j1")
        assert entry is not None and entry.next_renewal == now + 10.0  # a third of 30 s
        watch.ask_due(now + 10.0)
        assert answers(watch, woken, now + 10.1) == []
        assert engine.renewals == 1
        assert entry.lease_end > now + 30  # asked after now + 10: ends after now + 40
        assert not entry.renewal_pending
    finally:
        watch.close()


def test_a_refused_renewal_gives_a_lease_lost_verdict() -> None:
    now = time.monotonic()
    ledger, woken = running_ledger(now, renew=0.0), threading.Event()
    watch = make_watch(ledger, Engine(renewal=LeaseLostError(409, "lease lost")), woken)
    try:
        watch.ask_due(now + 10.0)
        (stop,) = answers(watch, woken, now + 10.1)
        assert (stop.job_id, stop.reason) == ("j1", "lease_lost")
    finally:
        watch.close()


def test_a_failed_renewal_is_retried_inside_the_lease() -> None:
    now = time.monotonic()
    ledger, woken = running_ledger(now, renew=0.0), threading.Event()
    error = EngineConnectionError("refused", request_sent=False)
    watch = make_watch(ledger, Engine(renewal=error), woken)
    try:
        watch.ask_due(now + 28.0)
        assert answers(watch, woken, now + 28.0) == []
        entry = ledger.get("j1")
        assert entry is not None and entry.state is JobState.RUNNING
        # Retried before the lease ends (halfway to it at the latest).
        assert now + 28.0 < entry.next_renewal <= now + 29.0
        assert entry.renewal_failures == 1
    finally:
        watch.close()


def test_an_engine_without_the_route_turns_renewal_off() -> None:
    now = time.monotonic()
    ledger, woken = running_ledger(now, renew=0.0), threading.Event()
    watch = make_watch(ledger, Engine(renewal=None), woken)
    try:
        watch.ask_due(now + 10.0)
        assert answers(watch, woken, now + 10.1) == []
        entry = ledger.get("j1")
        assert ledger.renew_every is None
        assert entry is not None and math.isinf(entry.next_renewal)
        assert ledger.renewals_due(now + 1000) == []
    finally:
        watch.close()


class HeldEngine(Engine):
    """Holds each renewal and instance read until ``go`` is set (an engine
    that answers late), then answers as scripted."""

    def __init__(self, status: str = "ACTIVE", renewal: Any = None) -> None:
        super().__init__(status, renewal)
        self.asked = threading.Event()
        self.go = threading.Event()

    def _hold(self) -> None:
        self.asked.set()
        assert self.go.wait(5.0), "the test never let the answer go"

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        self._hold()
        return super().get_instance(instance_id)

    def extend_lease(self, job_id: str, worker_id: str, lease_seconds: int = 0) -> Any:
        self._hold()
        return super().extend_lease(job_id, worker_id, lease_seconds)


def _next_attempt_runs(ledger: JobLedger, now: float) -> None:
    """Attempt 1 of j1 (1 retry left) failed retryable; the engine applied the
    fail and handed out attempt 2 (0 left) before its answer came; then the
    answer came and attempt 2 started on the same slot."""
    ledger.finish("j1", now)
    retry = {"id": "j1", "jobType": "t", "instanceId": "i1", "stepExecutionId": "se-1",
             "retriesRemaining": 0}  # fmt: skip
    ledger.claim(retry, lease_end=now + 35, now=now + 1, lease_length=30.0)
    ledger.release("j1", now + 2)
    ledger.start("j1", slot=1, now=now + 2, timeout=0)


def _first_attempt(now: float, **kwargs: Any) -> JobLedger:
    ledger = JobLedger(limit=4, stale_interval=kwargs.get("stale_interval", 0.0))
    ledger.renew_every = kwargs.get("renew")
    context = {"id": "j1", "jobType": "t", "instanceId": "i1", "stepExecutionId": "se-1",
               "retriesRemaining": 1}  # fmt: skip
    ledger.claim(context, lease_end=now + 30, now=now, lease_length=30.0)
    ledger.start("j1", slot=1, now=now, timeout=0)
    return ledger


def test_a_lease_lost_answer_for_an_attempt_does_not_stop_the_next_attempt() -> None:
    """Pins: attempt 1's renewal is sent; attempt 1 fails retryable, the fail
    is applied and answered, attempt 2 of the same job starts here; only then
    does the engine answer attempt 1's renewal 409. That verdict is attempt
    1's: attempt 2 keeps running, its own renewal is planned as before."""
    now = time.monotonic()
    ledger, woken = _first_attempt(now, renew=0.0), threading.Event()
    engine = HeldEngine(renewal=LeaseLostError(409, "lease lost"))
    watch = make_watch(ledger, engine, woken)
    try:
        watch.ask_due(now + 10.0)
        assert engine.asked.wait(5.0)
        _next_attempt_runs(ledger, now + 11.0)
        second = ledger.get("j1")
        assert second is not None and second.retries_remaining == 0
        planned = second.next_renewal
        engine.go.set()
        assert answers(watch, woken, now + 14.0) == []
        assert ledger.get("j1") is second and second.state is JobState.RUNNING
        assert (second.next_renewal, second.renewal_pending) == (planned, False)
    finally:
        engine.go.set()
        watch.close()


def test_an_accepted_renewal_for_an_attempt_does_not_extend_the_next_attempts_lease() -> None:
    """Pins: attempt 1's renewal is accepted, but its answer comes after
    attempt 2 started here: attempt 2's lease and renewal plan are its own
    claim's, not those of the lease the engine extended for attempt 1."""
    now = time.monotonic()
    ledger, woken = _first_attempt(now, renew=0.0), threading.Event()
    engine = HeldEngine(renewal={"accepted": True, "lockExpiresAt": "2026-01-01T00:00:00Z"})
    watch = make_watch(ledger, engine, woken)
    try:
        watch.ask_due(now + 10.0)
        assert engine.asked.wait(5.0)
        _next_attempt_runs(ledger, now + 11.0)
        second = ledger.get("j1")
        assert second is not None
        claimed_lease, planned = second.lease_end, second.next_renewal
        engine.go.set()
        assert answers(watch, woken, now + 14.0) == []
        # Applied to attempt 2, the answer would plan its next renewal from
        # attempt 1's request (about now + 10), not from attempt 2's start.
        assert (second.lease_end, second.next_renewal) == (claimed_lease, planned)
    finally:
        engine.go.set()
        watch.close()


def test_a_stale_verdict_for_an_attempt_does_not_stop_the_next_attempt() -> None:
    """Pins: attempt 1's stale check is out; attempt 1 fails retryable and
    attempt 2 starts here before the check's answer (stale) comes. The
    verdict was asked for attempt 1: attempt 2 runs on, and its own check
    (planned at its start) still falls due."""
    now = time.monotonic()
    ledger, woken = _first_attempt(now, stale_interval=5.0), threading.Event()
    engine = HeldEngine(status="CANCELLED")
    watch = make_watch(ledger, engine, woken)
    try:
        watch.ask_due(now + 5.0)
        assert engine.asked.wait(5.0)
        _next_attempt_runs(ledger, now + 6.0)
        second = ledger.get("j1")
        assert second is not None
        engine.go.set()
        assert answers(watch, woken, now + 7.0) == []
        assert ledger.get("j1") is second and second.state is JobState.RUNNING
        assert not second.stale_check_pending
        assert second.next_stale_check == now + 13.0  # its start + 5 s
    finally:
        engine.go.set()
        watch.close()
