"""The Runner never runs a job twice at once, and its renewals never wait
behind its stale checks (issue 22, item 6)."""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from unit.runner_fakes import (
    WAIT,
    FakeClient,
    RenewingClient,
    make_job,
    make_runner,
    running,
    wait_until,
)
from workflow_sdk.errors import LeaseLostError
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.runner.holds import JobHolds
from workflow_sdk.runner.watch import CANCEL_LEASE_LOST, JobWatch, WatchedJob


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


# -- JobHolds: the verdicts ------------------------------------------------------------


def _job(job_id: str = "j1", retries: int = 3) -> dict[str, Any]:
    return {"id": job_id, "jobType": "work", "retriesRemaining": retries}


def _entry(job: dict[str, Any], cancel_reason: str | None = None) -> WatchedJob:
    return WatchedJob(
        job=job,
        cancel=threading.Event(),
        lease_end=10.0,
        lease_length=30.0,
        next_renewal=5.0,
        next_stale_check=5.0,
        cancel_reason=cancel_reason,
    )


def test_a_job_held_is_coalesced_and_its_lease_kept() -> None:
    holds = JobHolds()
    held, start = holds.claim(_job(), 1.0, 31.0)
    assert start
    again, start_again = holds.claim(_job(), 40.0, 70.0)
    assert again is held and not start_again
    assert held.redeliveries == 1 and held.lease_end == 70.0
    assert len(holds) == 1


def test_a_retry_after_the_handler_returned_is_a_new_attempt() -> None:
    holds = JobHolds()
    held, _ = holds.claim(_job(retries=3), 1.0, 31.0)
    # While the handler runs, even a claim with one retry less is not started.
    assert holds.claim(_job(retries=2), 2.0, 32.0) == (held, False)
    held.handler_done = True
    retry, start = holds.claim(_job(retries=2), 3.0, 33.0)
    assert start and retry is not held
    # The first attempt's release does not drop the retry's hold.
    assert holds.release(held, stopping=False) is None
    assert holds.claim(_job(retries=2), 4.0, 34.0) == (retry, False)


def test_release_drops_the_hold_and_the_redelivery_unless_the_lease_was_lost() -> None:
    holds = JobHolds()
    held, _ = holds.claim(_job(), 1.0, 31.0)
    held.entry = _entry(_job())
    holds.claim(_job(), 40.0, 70.0)
    assert holds.release(held, stopping=False) is None  # its run reports: one result
    assert len(holds) == 0
    assert holds.claim(_job(), 80.0, 110.0)[1]  # a later claim starts again


def test_a_redelivery_of_a_run_whose_lease_was_lost_runs_after_it() -> None:
    holds = JobHolds()
    held, _ = holds.claim(_job(), 1.0, 31.0)
    held.entry = _entry(_job(), CANCEL_LEASE_LOST)
    holds.claim(_job(), 40.0, 70.0)
    later = _job()
    holds.claim(later, 50.0, 80.0)
    following = holds.release(held, stopping=False)
    assert following is not None
    job, sent_at, fresh = following
    assert job is later and sent_at == 50.0  # the latest hand-out
    assert holds.claim(_job(), 60.0, 90.0) == (fresh, False)


def test_no_redelivery_runs_once_the_runner_stops() -> None:
    holds = JobHolds()
    held, _ = holds.claim(_job(), 1.0, 31.0)
    held.entry = _entry(_job(), CANCEL_LEASE_LOST)
    holds.claim(_job(), 40.0, 70.0)
    assert holds.release(held, stopping=True) is None
    assert len(holds) == 0


# -- the Runner ------------------------------------------------------------------------


def test_a_job_handed_out_again_while_it_runs_is_not_started_twice(
    metrics: Metrics,
) -> None:
    """Pins: the Runner started a re-delivery of a job it was still running
    (its lease passed) beside the first run: two runs, two completions."""
    client = FakeClient()
    client.add(make_job("j1"))
    release = threading.Event()
    calls: list[str] = []

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        calls.append(job["id"])
        assert release.wait(WAIT)
        return {"run": len(calls)}

    runner = make_runner(client, {"work": handler}, metrics, parallelism=2)
    with running(runner):
        assert wait_until(lambda: calls == ["j1"])
        client.add(make_job("j1"))  # the engine hands it out again
        assert client.wait_for(lambda: not client.available and len(client.polls) >= 2)
        assert wait_until(lambda: runner.busy == 1 and len(client.polls) >= 3)
        release.set()
        assert client.wait_for(lambda: client.reported() >= 1)
    assert calls == ["j1"]
    assert client.completes == [("j1", {"run": 1})]
    assert runner.stats.redeliveries_coalesced == 1


def test_a_redelivery_after_a_lost_lease_runs_once_the_first_run_ended(
    metrics: Metrics,
) -> None:
    """The exception: nothing is reported for a run whose lease was lost, so
    the engine's later hand-out runs, after that run, never beside it."""
    client = RenewingClient(LeaseLostError(409, "lease lost"))
    client.add(make_job("j1", lease=30.0))
    release = threading.Event()
    lock = threading.Lock()
    active: list[int] = [0, 0]  # now, most at once
    calls: list[bool] = []

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        with lock:
            active[0] += 1
            active[1] = max(active)
            first = not calls
            calls.append(job["cancelEvent"].is_set())
        try:
            if first:
                assert job["cancelEvent"].wait(WAIT)  # the lease is lost
                assert release.wait(WAIT)  # ...but the handler keeps going a while
            return {"first": first}
        finally:
            with lock:
                active[0] -= 1

    runner = make_runner(
        client,
        {"work": handler},
        metrics,
        parallelism=2,
        heartbeat=True,
        lease_seconds=60,
        heartbeat_interval=0.05,
    )
    with running(runner):
        assert wait_until(lambda: runner.stats.leases_lost == 1)
        client.add(make_job("j1", lease=30.0))
        assert wait_until(lambda: runner.stats.redeliveries_coalesced >= 1)
        assert len(calls) == 1
        release.set()
        assert client.wait_for(lambda: client.reported() == 1)
    assert calls == [False, False]
    assert active[1] == 1
    assert client.completes == [("j1", {"first": False})]


class CheckingRenewingClient(RenewingClient):
    """Renews at once; reads instances, holding the reads of ``slow_instance``
    until ``release`` is set (a slow history read, say)."""

    def __init__(self, slow_instance: str) -> None:
        super().__init__()
        self.slow_instance = slow_instance
        self.release = threading.Event()
        self.slow_read_started = threading.Event()

    def get_instance(self, instance_id: str) -> dict[str, Any]:
        if instance_id == self.slow_instance:
            self.slow_read_started.set()
            assert self.release.wait(WAIT * 2)
        return {"id": instance_id, "status": "ACTIVE"}

    def get_instance_history(self, instance_id: str) -> list[dict[str, Any]]:
        return []


def test_renewals_go_on_while_a_stale_check_is_slow(metrics: Metrics) -> None:
    """Pins: stale checks and renewals ran one after the other on one thread;
    a slow instance read held back every renewal (the leases ran out)."""
    client = CheckingRenewingClient(slow_instance="inst-a")
    client.add(make_job("a", lease=30.0), make_job("b", lease=30.0))
    done = threading.Event()
    runner = make_runner(
        client,
        {"work": partial(_wait_for, done)},
        metrics,
        parallelism=2,
        heartbeat=True,
        heartbeat_interval=0.05,
        stale_check_interval=0.05,
    )
    with running(runner):
        assert client.slow_read_started.wait(WAIT)
        with client.cond:
            before = {job_id: n for job_id, n in _counts(client).items()}
        assert client.wait_for(
            lambda: all(_counts(client).get(j, 0) >= before.get(j, 0) + 3 for j in ("a", "b"))
        ), f"renewals stopped behind the slow check: {before} -> {_counts(client)}"
        client.release.set()
        done.set()
        assert client.wait_for(lambda: client.reported() == 2)
    assert runner.stats.leases_lost == 0


def _wait_for(event: threading.Event, job: dict[str, Any]) -> None:
    assert event.wait(WAIT * 2)


def _counts(client: RenewingClient) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job_id, _, _ in client.renewals:
        counts[job_id] = counts.get(job_id, 0) + 1
    return counts


class OneSlowRenewalClient(RenewingClient):
    """Holds the renewals of job ``slow`` until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.slow_started = threading.Event()

    def extend_lease(
        self, job_id: str, worker_id: str, lease_seconds: int = 0
    ) -> dict[str, Any] | None:
        if job_id == "slow":
            self.slow_started.set()
            assert self.release.wait(WAIT * 2)
        return super().extend_lease(job_id, worker_id, lease_seconds)


def test_one_slow_renewal_holds_back_no_other_jobs(metrics: Metrics) -> None:
    client = OneSlowRenewalClient()
    client.add(make_job("slow", lease=30.0), make_job("quick", lease=30.0))
    done = threading.Event()
    runner = make_runner(
        client,
        {"work": partial(_wait_for, done)},
        metrics,
        parallelism=2,
        heartbeat=True,
        heartbeat_interval=0.05,
    )
    with running(runner):
        assert client.slow_started.wait(WAIT)
        assert client.wait_for(lambda: _counts(client).get("quick", 0) >= 3)
        client.release.set()
        done.set()
        assert client.wait_for(lambda: client.reported() == 2)


# -- renewal answers go to the attempt that asked --------------------------------------


class HeldAnswerClient:
    """``extend_lease``: the first call waits for ``release``, then answers 409;
    later calls are accepted."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.first_asked = threading.Event()
        self.calls = 0
        self.lock = threading.Lock()

    def extend_lease(
        self, job_id: str, worker_id: str, lease_seconds: int = 0
    ) -> dict[str, Any] | None:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            self.first_asked.set()
            assert self.release.wait(WAIT)
            raise LeaseLostError(409, "lease lost")
        return {"accepted": True}


def test_a_409_for_one_attempt_does_not_stop_the_next_attempt_of_the_same_job(
    metrics: Metrics,
) -> None:
    """The supervisor matched renewal answers by job id (issue 16, bug 7): a
    late 409 for attempt 1 stopped attempt 2 of the same job. The Runner's
    watch answers the entry that asked: attempt 2 keeps running."""
    client = HeldAnswerClient()
    watch = JobWatch(
        client,
        "w",
        metrics,
        heartbeat=True,
        lease_seconds=None,
        heartbeat_interval=0.05,
        stale_check_interval=0,
        workers=2,
    )
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    try:
        now = time.monotonic()
        first = watch.add(make_job("j1", retries=3), now + 30.0, 30.0)
        assert client.first_asked.wait(WAIT)
        watch.finish(first)  # attempt 1 failed; the engine sends its retry
        watch.remove(first)
        second = watch.add(make_job("j1", retries=2), time.monotonic() + 30.0, 30.0)
        client.release.set()  # attempt 1's renewal answer: 409
        assert wait_until(lambda: watch.renewals_accepted >= 2)
        assert not second.cancel.is_set()
        assert second.cancel_reason is None
        assert watch.leases_lost == 0
    finally:
        watch.stop()
        thread.join(WAIT)
        watch.join_calls(WAIT)
    assert not thread.is_alive()
