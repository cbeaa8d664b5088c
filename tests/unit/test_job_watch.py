"""The parent's watch over running jobs: verdicts from stale checks and renewals."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from workflow_sdk.errors import EngineConnectionError, LeaseLostError
from workflow_sdk.supervisor.jobs import JobLedger, JobState
from workflow_sdk.supervisor.watch import JobWatch, StopJob


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


def answers(watch: JobWatch, woken: threading.Event, now: float) -> list[StopJob]:
    """Wait for the errand thread's answer (it wakes us), then take the verdicts."""
    assert woken.wait(5.0), "the errand thread never answered"
    woken.clear()
    return watch.take(now)


def make_watch(ledger: JobLedger, engine: Engine, woken: threading.Event) -> JobWatch:
    return JobWatch(
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
