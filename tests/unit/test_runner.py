"""Unit tests of the threaded Runner against a scripted, in-memory engine client."""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
from collections import deque
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from unit.runner_fakes import (
    WAIT,
    FakeClient,
    ReadingClient,
    RenewingClient,
    make_job,
    make_runner,
    running,
    wait_until,
)
from workflow_sdk.errors import (
    EngineClientError,
    EngineConnectionError,
    EngineTimeoutError,
    LeaseLostError,
    NonRetryableError,
)
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.runner import Runner

# -- helpers ---------------------------------------------------------------------


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics._registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# -- outcomes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [({"score": 7, "nested": {"a": [1, 2]}}, {"score": 7, "nested": {"a": [1, 2]}}), (None, {})],
)
def test_dict_or_none_completes(metrics: Metrics, result: Any, expected: dict[str, Any]) -> None:
    client = FakeClient()
    client.add(make_job("j1"))
    runner = make_runner(client, {"work": lambda job: result}, metrics)
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 1)
    assert client.completes == [("j1", expected)]
    assert client.fails == []
    stats = runner.stats
    assert (stats.jobs_claimed, stats.jobs_started, stats.completed) == (1, 1, 1)
    assert sample(metrics, "workflow_sdk_jobs_completed_total", job_type="work", outcome="success")
    assert sample(metrics, "workflow_sdk_handler_latency_seconds_count", job_type="work") == 1


def test_handler_receives_the_job_context(metrics: Metrics) -> None:
    client = FakeClient()
    client.add(make_job("j1", retries=2, variables={"x": 1}))
    seen: list[dict[str, Any]] = []
    runner = make_runner(client, {"work": seen.append}, metrics)
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 1)
    (ctx,) = seen
    assert ctx["id"] == "j1"
    assert ctx["jobType"] == "work"
    assert ctx["instanceId"] == "inst-j1"
    assert ctx["stepExecutionId"] == "se-j1"
    assert ctx["stepId"] == ""
    assert ctx["retriesRemaining"] == 2
    assert ctx["variables"] == {"x": 1}
    assert ctx["lockExpiresAt"]


def test_non_retryable_error_fails_without_retry(metrics: Metrics) -> None:
    def handler(job: dict[str, Any]) -> None:
        raise NonRetryableError("card declined")

    client = FakeClient()
    client.add(make_job("j1"))
    runner = make_runner(client, {"work": handler}, metrics)
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 1)
    assert client.fails == [("j1", "card declined", False)]
    assert client.completes == []
    assert runner.stats.failed == 1
    assert sample(metrics, "workflow_sdk_retries_total", job_type="work") == 0
    assert sample(metrics, "workflow_sdk_jobs_completed_total", job_type="work", outcome="failure")


def test_other_exception_fails_retryable_and_counts_a_retry(metrics: Metrics) -> None:
    def handler(job: dict[str, Any]) -> None:
        raise ValueError("boom")

    client = FakeClient()
    client.add(make_job("j1", retries=2), make_job("j2", retries=0))
    runner = make_runner(client, {"work": handler}, metrics)
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 2)
    assert sorted(client.fails) == [
        ("j1", "ValueError: boom", True),
        ("j2", "ValueError: boom", True),
    ]
    # Only the job with retries left goes back to the queue.
    assert sample(metrics, "workflow_sdk_retries_total", job_type="work") == 1


@pytest.mark.parametrize(
    ("result", "words"),
    [
        ([1, 2], ["list", "[1, 2]", "must return a dict"]),
        ("ok", ["str", "'ok'"]),
        ({"when": object()}, ["not JSON-serialisable"]),
        ({"x": math.nan}, ["not JSON-serialisable"]),
        ({"x": math.inf}, ["not JSON-serialisable"]),
    ],
)
def test_bad_results_fail_for_good(metrics: Metrics, result: Any, words: list[str]) -> None:
    client = FakeClient()
    client.add(make_job("j1"))
    runner = make_runner(client, {"work": lambda job: result}, metrics)
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 1)
    ((job_id, message, retryable),) = client.fails
    assert job_id == "j1"
    assert retryable is False
    for word in words:
        assert word in message
    assert client.completes == []


def test_system_exit_in_handler_fails_retryable_and_runner_goes_on(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(job: dict[str, Any]) -> dict[str, Any]:
        if job["id"] == "bad":
            raise SystemExit(3)
        return {"ok": True}

    client = FakeClient()
    client.add(make_job("bad"))
    runner = make_runner(client, {"work": handler}, metrics, parallelism=1)
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 1)
        client.add(make_job("good"))
        assert client.wait_for(lambda: client.reported() == 2)
    assert client.fails == [("bad", "SystemExit: 3", True)]
    assert client.completes == [("good", {"ok": True})]
    assert runner.stats.handler_crashes == 1
    assert any("SystemExit" in r.getMessage() for r in caplog.records)


def test_unregistered_job_type_fails_retryable(metrics: Metrics) -> None:
    client = FakeClient()
    client.add(make_job("j1", "other"))
    registry = HandlerRegistry()
    registry.register("work", lambda job: None)
    runner = Runner(
        client, registry, "w1", metrics=metrics, job_types=["work", "other"], poll_interval=0.05
    )
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 1)
    ((job_id, message, retryable),) = client.fails
    assert (job_id, retryable) == ("j1", True)
    assert "no handler registered for job type 'other'" in message


# -- capacity-aware claiming -----------------------------------------------------


def test_claims_never_exceed_idle_slots(metrics: Metrics) -> None:
    parallelism = 2
    client = FakeClient()
    lock = threading.Lock()
    entered = 0
    active = 0
    max_active = 0
    release = threading.Semaphore(0)

    def handler(job: dict[str, Any]) -> None:
        nonlocal entered, active, max_active
        with lock:
            entered += 1
            active += 1
            max_active = max(max_active, active)
        with client.cond:
            client.cond.notify_all()
        assert release.acquire(timeout=WAIT)
        with lock:
            active -= 1

    def probe() -> dict[str, Any]:
        # ``active`` lags the runner's busy slots (a handler enters after its
        # slot is taken and leaves before it is freed), so it is a lower bound.
        with lock:
            facts = {"active": active}
        stats = runner.stats
        facts["started"] = stats.jobs_started + stats.skipped_expired
        with client.cond:
            facts["claimed"] = sum(p["returned"] for p in client.polls)
        return facts

    client.probe = probe
    client.add(*(make_job(f"j{i}") for i in range(10)))
    runner = make_runner(client, {"work": handler}, metrics, parallelism=parallelism)
    with running(runner):
        for done in range(10):
            # wait until every slot is taken (or the queue ran dry), then free one
            target = min(10, done + parallelism)
            assert client.wait_for(lambda target=target: entered >= target)
            release.release()
        assert client.wait_for(lambda: client.reported() == 10)
    assert len(client.completes) == 10
    assert max_active == parallelism
    for poll in client.polls:
        # never more than the idle slots; no claimed job waiting at poll time
        assert poll["max_jobs"] <= parallelism - poll["active"], poll
        assert poll["claimed"] - poll["started"] == 0, poll
    assert runner.stats.skipped_expired == 0


def test_no_poll_while_all_slots_are_busy(metrics: Metrics) -> None:
    client = FakeClient()
    started = threading.Event()
    release = threading.Event()

    def handler(job: dict[str, Any]) -> None:
        started.set()
        assert release.wait(WAIT)

    client.add(make_job("j1"))
    runner = make_runner(client, {"work": handler}, metrics, parallelism=1, poll_interval=0.01)
    with running(runner):
        assert started.wait(WAIT)
        polls_before = client.poll_attempts
        threading.Event().wait(0.3)  # observation window: no poll may happen in it
        assert client.poll_attempts == polls_before
        release.set()
        assert client.wait_for(lambda: client.poll_attempts > polls_before)
    assert all(p["max_jobs"] == 1 for p in client.polls)


def test_polls_again_promptly_when_slots_remain(metrics: Metrics) -> None:
    """A poll that filled some slots is followed at once by another, not after poll_interval."""
    client = FakeClient()
    client.per_poll_limit = 1
    release = threading.Event()
    entered = threading.Semaphore(0)

    def handler(job: dict[str, Any]) -> None:
        entered.release()
        assert release.wait(WAIT)

    client.add(make_job("a"), make_job("b"), make_job("c"))
    runner = make_runner(client, {"work": handler}, metrics, parallelism=4, poll_interval=30.0)
    t0 = time.monotonic()
    with running(runner):
        for _ in range(3):
            assert entered.acquire(timeout=WAIT)
        assert time.monotonic() - t0 < 5.0  # far below the 30 s poll interval
        # the 4th poll found nothing: the runner now waits 30 s, but a stop cuts it
        assert client.wait_for(lambda: len(client.polls) == 4)
        assert [p["max_jobs"] for p in client.polls] == [4, 3, 2, 1]
        release.set()
        assert client.wait_for(lambda: client.reported() == 3)
    assert time.monotonic() - t0 < 5.0


def test_empty_polls_wait_poll_interval(metrics: Metrics) -> None:
    client = FakeClient()
    runner = make_runner(client, {"work": lambda job: None}, metrics, poll_interval=0.2)
    with running(runner):
        assert client.wait_for(lambda: client.poll_attempts >= 1)
        threading.Event().wait(0.5)  # observation window
        polls = client.poll_attempts
    assert 1 <= polls <= 5  # about one per 0.2 s, never a hot loop
    assert sample(metrics, "workflow_sdk_lock_conflicts_total") >= 1
    assert sample(metrics, "workflow_sdk_poll_latency_seconds_count") >= 1


def test_extra_jobs_from_the_engine_wait_for_a_slot(metrics: Metrics) -> None:
    client = FakeClient()
    client.extra_jobs_per_poll = 2

    def handler(job: dict[str, Any]) -> None:
        threading.Event().wait(0.01)

    def probe() -> dict[str, Any]:
        stats = runner.stats
        with client.cond:
            claimed = sum(p["returned"] for p in client.polls)
        return {"waiting": claimed - stats.jobs_started - stats.skipped_expired}

    client.probe = probe
    client.add(*(make_job(f"j{i}") for i in range(6)))
    runner = make_runner(client, {"work": handler}, metrics, parallelism=2)
    with running(runner):
        assert client.wait_for(lambda: len(client.completes) == 6)
    assert runner.stats.jobs_started == 6, "the extras were run, not dropped"
    assert any(p["returned"] > p["max_jobs"] for p in client.polls), "the engine over-delivered"
    # No new claim while an extra job was still waiting for a thread.
    assert all(p["waiting"] == 0 for p in client.polls), client.polls


# -- lease -----------------------------------------------------------------------


def test_job_whose_lease_passed_is_not_started(metrics: Metrics) -> None:
    client = FakeClient()
    client.poll_delay = 0.01  # the claim's answer takes longer than the lease
    ran: list[str] = []
    client.add(make_job("late", lease=0.001))
    runner = make_runner(client, {"work": lambda job: ran.append(job["id"])}, metrics)
    with running(runner):
        assert wait_until(lambda: runner.stats.skipped_expired == 1)
        client.add(make_job("fine"))
        assert client.wait_for(lambda: client.reported() == 1)
    assert ran == ["fine"]
    assert client.completes == [("fine", {})]
    assert client.fails == []  # no fail for an expired lease: the engine redelivers


def test_failure_after_the_lease_is_not_sent_but_completion_is(metrics: Metrics) -> None:
    def handler(job: dict[str, Any]) -> dict[str, Any]:
        # run past the 0.05 s lease
        end = time.monotonic() + 0.1
        while time.monotonic() < end:
            threading.Event().wait(0.01)
        if job["id"] == "slow-fail":
            raise RuntimeError("too late")
        return {"done": True}

    client = FakeClient()
    client.add(make_job("slow-fail", lease=0.05), make_job("slow-ok", lease=0.05))
    runner = make_runner(client, {"work": handler}, metrics, parallelism=2)
    with running(runner):
        assert wait_until(lambda: runner.stats.fails_withheld == 1 and runner.stats.completed == 1)
    assert client.fail_attempts == []
    assert client.completes == [("slow-ok", {"done": True})]


# -- reporting -------------------------------------------------------------------


def test_completion_retried_until_it_lands(metrics: Metrics) -> None:
    client = FakeClient()
    client.complete_errors["j1"] = deque(
        [
            EngineClientError(500, "database is locked", retryable=True),
            EngineClientError(500, "database is locked", retryable=True),
        ]
    )
    client.add(make_job("j1"))
    runner = make_runner(client, {"work": lambda job: {"v": 1}}, metrics)
    with running(runner):
        assert client.wait_for(lambda: len(client.completes) == 1)
    assert client.complete_attempts == ["j1", "j1", "j1"]
    assert client.completes == [("j1", {"v": 1})]
    assert client.fail_attempts == []
    stats = runner.stats
    assert (stats.completed, stats.report_retries, stats.reports_lost) == (1, 2, 0)


def test_fail_not_resent_when_it_may_have_reached_the_engine(metrics: Metrics) -> None:
    def handler(job: dict[str, Any]) -> None:
        raise RuntimeError("nope")

    client = FakeClient()
    client.fail_errors["j1"] = deque([EngineConnectionError("reset", request_sent=True)])
    client.add(make_job("j1"))
    runner = make_runner(client, {"work": handler}, metrics)
    with running(runner):
        assert wait_until(lambda: runner.stats.reports_lost == 1)
    assert client.fail_attempts == ["j1"]
    assert client.fails == []
    assert client.complete_attempts == []


def test_fail_resent_when_it_surely_never_left(metrics: Metrics) -> None:
    def handler(job: dict[str, Any]) -> None:
        raise RuntimeError("nope")

    client = FakeClient()
    client.fail_errors["j1"] = deque([EngineConnectionError("refused", request_sent=False)])
    client.add(make_job("j1"))
    runner = make_runner(client, {"work": handler}, metrics)
    with running(runner):
        assert client.wait_for(lambda: len(client.fails) == 1)
    assert client.fail_attempts == ["j1", "j1"]
    assert client.fails == [("j1", "RuntimeError: nope", True)]
    assert runner.stats.failed == 1


def test_never_a_fail_after_a_complete(metrics: Metrics) -> None:
    client = FakeClient()
    # j1: the engine refuses the completion for good; j2: it never answers.
    client.complete_errors["j1"] = deque([EngineClientError(500, 'job "j1" not found')])
    client.complete_errors["j2"] = deque(
        EngineTimeoutError("read timed out", request_sent=True) for _ in range(100)
    )
    client.add(make_job("j1"), make_job("j2"))
    runner = make_runner(client, {"work": lambda job: {"x": 1}}, metrics, report_deadline=0.5)
    with running(runner):
        assert wait_until(
            lambda: runner.stats.reports_rejected == 1 and runner.stats.reports_lost == 1
        )
    assert client.complete_attempts.count("j1") == 1
    # Never answered: it may still be in flight, so it is not sent again
    # before the in-flight window passes (longer than the deadline here).
    assert client.complete_attempts.count("j2") == 1
    assert client.fail_attempts == []


# -- poll errors -----------------------------------------------------------------


def test_poll_errors_back_off_and_recover(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="workflow_sdk.runner")
    client = FakeClient()
    client.outage = True
    runner = make_runner(client, {"work": lambda job: {"ok": 1}}, metrics, poll_interval=0.01)
    with running(runner):
        assert client.wait_for(lambda: client.poll_attempts >= 1)
        threading.Event().wait(0.6)  # observation window of the outage
        with client.cond:
            during = client.poll_attempts
            client.outage = False
            client.available.append(make_job("j1"))
        assert client.wait_for(lambda: len(client.completes) == 1)
    # backoff 0.1, 0.2, 0.4 s (+-20 %): at most 4 polls in the first 0.6 s (+ slack)
    assert 2 <= during <= 5, during
    assert runner.stats.poll_errors == during
    warnings = [
        r
        for r in caplog.records
        if r.name == "workflow_sdk.runner" and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_unexpected_poll_exception_does_not_stop_the_runner(metrics: Metrics) -> None:
    client = FakeClient()
    client.poll_errors.extend([RuntimeError("client bug"), EngineClientError(400, "bad")])
    client.add(make_job("j1"))
    runner = make_runner(client, {"work": lambda job: None}, metrics)
    with running(runner):
        assert client.wait_for(lambda: len(client.completes) == 1)
    assert runner.stats.poll_errors == 2


# -- stop --------------------------------------------------------------------------


def test_stop_drains_in_flight_handlers(metrics: Metrics) -> None:
    client = FakeClient()
    started = threading.Event()
    release = threading.Event()

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        started.set()
        assert release.wait(WAIT)
        return {"drained": True}

    client.add(make_job("j1"))
    runner = make_runner(client, {"work": handler}, metrics, drain_timeout=WAIT)
    with running(runner) as thread:
        assert started.wait(WAIT)
        polls = client.poll_attempts
        runner.stop()
        thread.join(0.2)
        assert thread.is_alive()  # waiting for the handler
        release.set()
        thread.join(WAIT)
        assert not thread.is_alive()
    assert client.completes == [("j1", {"drained": True})]
    assert client.poll_attempts == polls  # no claim after the stop


def test_stuck_handler_does_not_block_shutdown(metrics: Metrics) -> None:
    client = FakeClient()
    started = threading.Event()
    release = threading.Event()

    def handler(job: dict[str, Any]) -> None:
        started.set()
        release.wait(60)

    client.add(make_job("j1"))
    runner = make_runner(client, {"work": handler}, metrics, drain_timeout=0.3)
    try:
        with running(runner) as thread:
            assert started.wait(WAIT)
            t0 = time.monotonic()
            runner.stop()
            thread.join(WAIT)
            assert not thread.is_alive()
            assert time.monotonic() - t0 < 2.0
            assert runner.busy == 1
            release.set()  # let the abandoned thread end so that it can be joined
    finally:
        release.set()
    # the late handler still reports once (give_up only ends retries)
    assert client.wait_for(lambda: client.reported() == 1)


def test_report_retries_give_up_when_the_drain_ends(metrics: Metrics) -> None:
    client = FakeClient()
    client.complete_errors["j1"] = deque(
        EngineClientError(500, "database is locked", retryable=True) for _ in range(1000)
    )
    client.add(make_job("j1"))
    runner = make_runner(client, {"work": lambda job: None}, metrics, drain_timeout=0.3)
    with running(runner) as thread:
        assert client.wait_for(lambda: len(client.complete_attempts) >= 2)
        t0 = time.monotonic()
        runner.stop()
        thread.join(WAIT)
        assert not thread.is_alive()
        assert time.monotonic() - t0 < 2.0
    assert runner.stats.reports_lost == 1
    assert client.completes == []
    assert client.fail_attempts == []


def test_stop_before_run_returns_at_once(metrics: Metrics) -> None:
    client = FakeClient()
    runner = make_runner(client, {"work": lambda job: None}, metrics)
    runner.stop()
    runner.run()
    assert client.poll_attempts == 0
    assert runner.join_workers(WAIT)
    with pytest.raises(RuntimeError, match="runs once"):
        runner.run()


def test_external_stop_event(metrics: Metrics) -> None:
    client = FakeClient()
    runner = make_runner(client, {"work": lambda job: None}, metrics, poll_interval=30.0)
    stop = threading.Event()
    with running(runner, stop) as thread:
        assert client.wait_for(lambda: client.poll_attempts >= 1)
        stop.set()
        thread.join(WAIT)
        assert not thread.is_alive()


def test_signal_stops_run_in_main_thread_and_handlers_are_restored(metrics: Metrics) -> None:
    assert threading.current_thread() is threading.main_thread()
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    client = FakeClient()
    runner = make_runner(client, {"work": lambda job: None}, metrics, poll_interval=30.0)

    def send_sigterm() -> None:
        if client.wait_for(lambda: client.poll_attempts >= 1):
            os.kill(os.getpid(), signal.SIGTERM)
        else:  # pragma: no cover
            runner.stop()

    killer = threading.Thread(target=send_sigterm)
    killer.start()
    try:
        runner.run()
    finally:
        runner.stop()
        killer.join(WAIT)
    assert not killer.is_alive()
    assert runner.join_workers(WAIT)
    assert {s: signal.getsignal(s) for s in before} == before


def test_no_signal_handlers_outside_the_main_thread(metrics: Metrics) -> None:
    before = signal.getsignal(signal.SIGTERM)
    client = FakeClient()
    runner = make_runner(client, {"work": lambda job: None}, metrics)
    with running(runner):
        assert client.wait_for(lambda: client.poll_attempts >= 1)
        assert signal.getsignal(signal.SIGTERM) is before


# -- configuration -----------------------------------------------------------------


def test_configuration_checks(metrics: Metrics) -> None:
    client = FakeClient()
    with pytest.raises(ValueError, match="no job types"):
        Runner(client, HandlerRegistry(), metrics=metrics)
    registry = HandlerRegistry()
    registry.register("work", lambda job: None)
    with pytest.raises(ValueError, match="parallelism"):
        Runner(client, registry, metrics=metrics, parallelism=0)
    with pytest.raises(ValueError, match="poll_interval"):
        Runner(client, registry, metrics=metrics, poll_interval=0)
    with pytest.raises(ValueError, match="no job types"):
        Runner(client, registry, metrics=metrics, job_types=[])
    runner = Runner(client, registry, metrics=metrics)
    assert runner.worker_id == f"{socket.gethostname()}-{os.getpid()}"
    assert runner.job_types == ["work"]
    assert Runner(client, registry).metrics is Metrics()


# -- lease options, cancel event, stale guard, renewal, report metrics -----------------


def renewals(metrics: Metrics, result: str) -> float:
    return sample(metrics, "workflow_sdk_lease_renewals_total", result=result)


def test_lease_option_checks(metrics: Metrics) -> None:
    registry = HandlerRegistry()
    registry.register("work", lambda job: None)
    renewing = RenewingClient()
    with pytest.raises(ValueError, match="extend_lease"):
        Runner(FakeClient(), registry, metrics=metrics, heartbeat=True)
    with pytest.raises(ValueError, match="need heartbeat=True"):
        Runner(renewing, registry, metrics=metrics, lease_seconds=60)
    with pytest.raises(ValueError, match="need heartbeat=True"):
        Runner(renewing, registry, metrics=metrics, heartbeat_interval=5)
    for bad in (4, 3601, True, 10.5):
        with pytest.raises(ValueError, match="lease_seconds"):
            Runner(renewing, registry, metrics=metrics, heartbeat=True, lease_seconds=bad)
    with pytest.raises(ValueError, match="heartbeat_interval must be > 0"):
        Runner(renewing, registry, metrics=metrics, heartbeat=True, heartbeat_interval=0)
    with pytest.raises(ValueError, match="shorter than lease_seconds"):
        Runner(
            renewing,
            registry,
            metrics=metrics,
            heartbeat=True,
            lease_seconds=10,
            heartbeat_interval=10,
        )
    with pytest.raises(ValueError, match="stale_check_interval"):
        Runner(renewing, registry, metrics=metrics, stale_check_interval=-1)
    runner = Runner(renewing, registry, metrics=metrics, heartbeat=True, lease_seconds=60)
    with pytest.raises(ValueError, match="shutdown_timeout"):
        runner.run(shutdown_timeout=-1)


def test_the_context_carries_an_unset_cancel_event(metrics: Metrics) -> None:
    client = FakeClient()
    client.add(make_job("j1"))
    seen: list[bool] = []
    runner = make_runner(
        client, {"work": lambda job: seen.append(job["cancelEvent"].is_set())}, metrics
    )
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 1)
    assert seen == [False]


def test_shutdown_timeout_replaces_the_drain_timeout(metrics: Metrics) -> None:
    client = FakeClient()
    started = threading.Event()
    release = threading.Event()

    def handler(job: dict[str, Any]) -> None:
        started.set()
        release.wait(WAIT)  # ignores its cancel event

    client.add(make_job("j1"))
    runner = make_runner(client, {"work": handler}, metrics, drain_timeout=3600)
    thread = threading.Thread(target=runner.run, kwargs={"shutdown_timeout": 0.05})
    thread.start()
    try:
        assert started.wait(WAIT)
        runner.stop()
        thread.join(WAIT)  # a 3600 s drain would keep it alive
        assert not thread.is_alive()
        assert runner.drain_timeout == 0.05
    finally:
        release.set()
        thread.join(WAIT)
        assert runner.join_workers(WAIT)


@pytest.mark.parametrize("retryable", [True, False])
def test_no_fail_for_a_job_of_a_finished_instance(metrics: Metrics, retryable: bool) -> None:
    client = ReadingClient(status="COMPLETED")
    client.add(make_job("j1", retries=2))

    def handler(job: dict[str, Any]) -> None:
        if retryable:
            raise RuntimeError("boom")
        raise NonRetryableError("boom")

    runner = make_runner(client, {"work": handler}, metrics, stale_check_interval=0)
    with running(runner):
        assert wait_until(lambda: runner.stats.stale == 1)
    assert client.fail_attempts == []
    assert client.instance_reads == 1
    assert sample(metrics, "workflow_sdk_stale_jobs_total", job_type="work",
                  reason="instance_completed") == 1  # fmt: skip
    assert sample(metrics, "workflow_sdk_retries_total", job_type="work") == 0


def test_the_fail_is_sent_when_the_stale_check_cannot_reach_the_engine(metrics: Metrics) -> None:
    client = ReadingClient(error=EngineConnectionError("refused", request_sent=False))
    client.add(make_job("j1", retries=2))

    def handler(job: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    runner = make_runner(client, {"work": handler}, metrics, stale_check_interval=0)
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 1)
    assert client.fails == [("j1", "RuntimeError: boom", True)]
    assert client.instance_reads == 1
    assert runner.stats.stale == 0
    assert sample(metrics, "workflow_sdk_retries_total", job_type="work") == 1


def test_a_completion_is_sent_without_asking_about_staleness(metrics: Metrics) -> None:
    client = ReadingClient(status="CANCELLED")
    client.add(make_job("j1"))
    runner = make_runner(client, {"work": lambda job: {"ok": 1}}, metrics, stale_check_interval=0)
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 1)
    assert client.completes == [("j1", {"ok": 1})]
    assert client.instance_reads == 0


def test_a_failed_renewal_is_retried_inside_the_lease(metrics: Metrics) -> None:
    client = RenewingClient(EngineConnectionError("refused", request_sent=False))
    client.add(make_job("j1", lease=30.0))

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        assert wait_until(lambda: renewals(metrics, "accepted") >= 1)
        return {}

    runner = make_runner(
        client, {"work": handler}, metrics, heartbeat=True, heartbeat_interval=0.05
    )
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 1)
    assert renewals(metrics, "retry") == 1
    assert renewals(metrics, "accepted") >= 1
    assert client.renewals[0] == ("j1", "test-worker", 0)
    assert client.completes == [("j1", {})]
    assert runner.stats.lease_renewals >= 1


class SlowRenewingClient(RenewingClient):
    """Holds each renewal's answer (accepted) until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def extend_lease(
        self, job_id: str, worker_id: str, lease_seconds: int = 0
    ) -> dict[str, Any] | None:
        answer = super().extend_lease(job_id, worker_id, lease_seconds)
        assert self.release.wait(5)
        return answer


def test_a_renewal_accepted_after_its_job_ended_is_still_counted(metrics: Metrics) -> None:
    # The engine extended the lease: the Runner's figures must match the
    # engine's count of renewals, even though the job no longer needs it.
    client = SlowRenewingClient()
    client.add(make_job("j1", lease=30.0))

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        assert client.wait_for(lambda: len(client.renewals) == 1)
        return {}

    runner = make_runner(
        client, {"work": handler}, metrics, heartbeat=True, heartbeat_interval=0.05
    )
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 1)
        client.release.set()
    assert len(client.renewals) == 1
    assert runner.stats.lease_renewals == 1
    assert renewals(metrics, "accepted") == 1


@pytest.mark.parametrize(
    "refusal",
    [{"accepted": False}, LeaseLostError(409, "lease lost")],
    ids=["not-accepted", "409"],
)
def test_a_refused_renewal_cancels_the_job_and_nothing_is_sent(
    metrics: Metrics, refusal: dict[str, Any] | Exception
) -> None:
    client = RenewingClient(refusal)
    client.add(make_job("j1", lease=30.0))
    seen: list[bool] = []

    def handler(job: dict[str, Any]) -> None:
        seen.append(job["cancelEvent"].wait(WAIT))
        raise RuntimeError("stopped")  # a fail now could undo the other worker's run

    runner = make_runner(
        client,
        {"work": handler},
        metrics,
        heartbeat=True,
        lease_seconds=60,
        heartbeat_interval=0.05,
    )
    with running(runner):
        assert wait_until(lambda: seen == [True])
        assert wait_until(lambda: runner.busy == 0)
    assert client.renewals == [("j1", "test-worker", 60)]
    assert client.complete_attempts == [] and client.fail_attempts == []
    assert renewals(metrics, "lease_lost") == 1
    assert runner.stats.leases_lost == 1


def test_polls_ask_for_the_lease_until_the_engine_shows_it_cannot_renew(
    metrics: Metrics,
) -> None:
    client = RenewingClient(None)  # the first renewal: no heartbeat route (a released engine)
    client.add(make_job("j1", lease=30.0))

    def handler(job: dict[str, Any]) -> None:
        assert wait_until(lambda: renewals(metrics, "unsupported") == 1)

    runner = make_runner(
        client,
        {"work": handler},
        metrics,
        heartbeat=True,
        lease_seconds=60,
        heartbeat_interval=0.05,
    )
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 1)
        seen = len(client.poll_leases)
        assert client.wait_for(lambda: len(client.poll_leases) > seen)
    assert client.poll_leases[0] == 60
    assert client.poll_leases[-1] == 0


def test_without_a_lease_length_polls_ask_for_nothing(metrics: Metrics) -> None:
    client = RenewingClient()
    client.add(make_job("j1", lease=30.0))
    runner = make_runner(client, {"work": lambda job: None}, metrics, heartbeat=True)
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 1)
    assert client.poll_leases and set(client.poll_leases) == {0}


def test_report_gauges_and_retries(metrics: Metrics) -> None:
    client = FakeClient()
    client.complete_errors["j1"] = deque([EngineConnectionError("refused", request_sent=False)])
    gate = threading.Event()
    original = client.complete_job

    def slow_complete(job_id: str, worker_id: str, variables: dict[str, Any] | None = None) -> None:
        assert gate.wait(WAIT)
        original(job_id, worker_id, variables)

    client.complete_job = slow_complete  # type: ignore[method-assign]
    client.add(make_job("j1"))
    runner = make_runner(client, {"work": lambda job: {}}, metrics)
    pending = "workflow_sdk_reports_pending"
    age = "workflow_sdk_report_oldest_pending_seconds"
    with running(runner):
        assert wait_until(lambda: sample(metrics, pending) == 1)
        assert wait_until(lambda: sample(metrics, age) > 0)
        gate.set()
        assert client.wait_for(lambda: client.reported() == 1)
        assert wait_until(lambda: sample(metrics, pending) == 0)
    assert sample(metrics, age) == 0
    assert sample(metrics, "workflow_sdk_report_retries_total", job_type="work") == 1
    assert runner.stats.report_retries == 1


def test_leases_are_still_renewed_during_the_drain(metrics: Metrics) -> None:
    client = RenewingClient()
    client.add(make_job("j1", lease=30.0))
    cancelled = threading.Event()
    release = threading.Event()

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        assert job["cancelEvent"].wait(WAIT)  # set by the stop
        cancelled.set()
        assert release.wait(WAIT)  # finishing its work regardless
        return {"finished": True}

    runner = make_runner(
        client,
        {"work": handler},
        metrics,
        heartbeat=True,
        heartbeat_interval=0.05,
        drain_timeout=WAIT,
    )
    with running(runner):
        assert client.wait_for(lambda: len(client.renewals) >= 1)
        runner.stop()
        assert cancelled.wait(WAIT)
        during_drain = len(client.renewals)
        assert client.wait_for(lambda: len(client.renewals) >= during_drain + 2)
        release.set()
        assert client.wait_for(lambda: client.reported() == 1)
    # A success after the stop is still a success: it is sent.
    assert client.completes == [("j1", {"finished": True})]
    assert runner.stats.leases_lost == 0


def test_a_failure_after_the_first_lease_is_sent_when_the_lease_was_renewed(
    metrics: Metrics,
) -> None:
    client = RenewingClient()
    client.add(make_job("j1", lease=1.0))
    pause = threading.Event()

    def handler(job: dict[str, Any]) -> None:
        pause.wait(1.5)  # work that outlasts the claim's 1 s lease
        raise RuntimeError("boom")

    runner = make_runner(
        client, {"work": handler}, metrics, heartbeat=True, heartbeat_interval=0.05
    )
    with running(runner):
        assert client.wait_for(lambda: client.reported() == 1)
    assert client.fails == [("j1", "RuntimeError: boom", True)]
    assert runner.stats.fails_withheld == 0
    assert runner.stats.leases_lost == 0
