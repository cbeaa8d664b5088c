"""The parts both threaded runners are built from (``workflow_sdk.runner.threads``)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from runner_support import wait_until
from workflow_sdk.errors import EngineClientError
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.reporting import ReportStatus
from workflow_sdk.runner import RunnerStats
from workflow_sdk.runner.threads import Lifecycle, Tally, WorkerThreads, report, run_job

WAIT = 5.0
log = logging.getLogger("test.runner.threads")


class ReportClient:
    """Records reports; ``refuse`` makes every report a permanent engine error."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.calls: list[tuple[str, str]] = []

    def poll_jobs(
        self, worker_id: str, job_types: list[str], max_jobs: int = 1
    ) -> list[dict[str, Any]]:
        return []

    def complete_job(
        self, job_id: str, worker_id: str, variables: dict[str, Any] | None = None
    ) -> None:
        self._record("complete", job_id)

    def fail_job(
        self, job_id: str, worker_id: str, error_message: str, retryable: bool = True
    ) -> None:
        self._record("fail", job_id)

    def _record(self, verb: str, job_id: str) -> None:
        self.calls.append((verb, job_id))
        if self.refuse:
            raise EngineClientError(404, "no such job", retryable=False)


def job(job_id: str = "j1") -> dict[str, Any]:
    return {"id": job_id, "jobType": "work", "variables": {}, "retriesRemaining": 1}


def test_tally_counts_into_a_fresh_snapshot() -> None:
    tally = Tally(threading.Condition(), RunnerStats())
    before = tally.snapshot()
    tally.count(completed=2, failed=1)
    tally.count(completed=1)
    assert tally.snapshot() == RunnerStats(completed=3, failed=1)
    assert before == RunnerStats()  # a snapshot does not move


def test_lifecycle_runs_once_and_sees_its_stop_event() -> None:
    life = Lifecycle(threading.Condition(), "Thing")
    stop = threading.Event()
    with life.running(stop) as by_signal:
        assert by_signal is (threading.current_thread() is threading.main_thread())
        assert not life.stopping()
        stop.set()
        assert life.stopping()
    with pytest.raises(RuntimeError, match="a Thing runs once"), life.running(None):
        pass


def test_request_stop_wakes_a_waiter_on_the_condition() -> None:
    cond = threading.Condition()
    life = Lifecycle(cond, "Thing")
    woke = threading.Event()

    def waiter() -> None:
        with cond:
            cond.wait_for(life.stopping, WAIT)
        woke.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    life.request_stop()
    assert woke.wait(WAIT)
    thread.join(WAIT)


def test_a_worker_keeps_its_slot_after_an_unexpected_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cond = threading.Condition()
    done: list[str] = []

    def handle(work: dict[str, Any]) -> None:
        if work["id"] == "bad":
            raise KeyError("a bug of ours")
        done.append(work["id"])

    workers = WorkerThreads(
        cond, 1, handle, name="t-worker", label="test runner", log=log, job_of=lambda w: w
    )
    workers.start()
    with cond:
        workers.hand(job("bad"))
    assert wait_until(lambda: workers.idle == 1, WAIT)
    with cond:
        workers.hand(job("good"))
    assert wait_until(lambda: done == ["good"], WAIT)
    assert workers.drain(WAIT) == 0
    workers.end(join=True)
    assert workers.join(WAIT)
    assert any(
        "test runner: unexpected error while processing job bad" in r.getMessage()
        for r in caplog.records
    )


def test_drain_returns_the_threads_still_busy() -> None:
    cond = threading.Condition()
    started, release = threading.Event(), threading.Event()

    def handle(work: dict[str, Any]) -> None:
        started.set()
        release.wait(WAIT)

    workers = WorkerThreads(cond, 2, handle, name="t-drain", label="t", log=log, job_of=lambda w: w)
    workers.start()
    with cond:
        workers.hand(job())
    assert started.wait(WAIT)
    assert workers.drain(0.05) == 1
    release.set()
    assert workers.drain(WAIT) == 0
    workers.end(join=True)
    assert workers.join(WAIT)


def test_run_job_turns_a_base_exception_into_a_counted_retryable_failure() -> None:
    tally = Tally(threading.Condition(), RunnerStats())

    def handler(job: dict[str, Any]) -> None:
        raise SystemExit(3)

    outcome = run_job(handler, job(), "w", log, tally=tally)
    assert (outcome.succeeded, outcome.retryable) == (False, True)
    assert "SystemExit" in outcome.error_message
    assert tally.snapshot().handler_crashes == 1
    missing = run_job(None, job(), "w", log, tally=tally)
    assert "no handler registered" in missing.error_message
    assert tally.snapshot().handler_crashes == 1


DONE = Outcome("j1", "work", True)
FAILED = Outcome.failure("j1", "work", "boom", retryable=True)


@pytest.mark.parametrize(
    ("outcome", "refuse", "lease_passed", "status", "counter"),
    [
        (DONE, False, False, ReportStatus.DELIVERED, "completed"),
        (FAILED, False, False, ReportStatus.DELIVERED, "failed"),
        (FAILED, True, False, ReportStatus.REJECTED, "reports_rejected"),
        (FAILED, False, True, ReportStatus.WITHHELD, "fails_withheld"),
    ],
)
def test_report_counts_each_fate_once(
    outcome: Outcome, refuse: bool, lease_passed: bool, status: ReportStatus, counter: str
) -> None:
    tally = Tally(threading.Condition(), RunnerStats())
    client = ReportClient(refuse=refuse)
    got = report(
        client,
        "w",
        outcome,
        job(),
        tally,
        deadline=WAIT,
        give_up=threading.Event(),
        lease_end=time.monotonic() - 1.0 if lease_passed else None,
    )
    # A client without instance reads is not asked about staleness.
    assert got == (status, "")
    assert tally.snapshot() == RunnerStats(**{counter: 1})
    assert len(client.calls) == (0 if lease_passed else 1)
