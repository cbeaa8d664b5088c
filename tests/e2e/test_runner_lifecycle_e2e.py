"""The threaded Runner when a job stops mattering or outlives its lease.

Against a real HTTP ``LocalEngine`` (released by default, or with lease
extension where a test says so): the stale-job guard before a fail, the
periodic stale check, lease renewal, lease loss, the GIL gap of renewal from
a thread, and the cancel event at shutdown.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from runner_support import gil_bound_exponent, run_in_thread
from runner_support import wait_until as poll_until
from workflow_sdk.client.models import parse_timestamp
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import NonRetryableError
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.runner import Runner
from workflow_sdk.testing import LocalEngine

TIMEOUT = 20.0
JOB_TYPE = "e2e-life"


def definition(retries: int) -> dict[str, Any]:
    return {
        "id": "e2e-life",
        "name": "life",
        "steps": [
            {
                "id": "work",
                "name": "work",
                "type": "SERVICE_TASK",
                "jobType": JOB_TYPE,
                "retryCount": retries,
                "nextStep": "end",
            },
            {"id": "end", "name": "end", "type": "END"},
        ],
    }


#: For the runner's counters and metrics, which have no condition to wait on.
wait_until = partial(poll_until, timeout=TIMEOUT)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics._registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


@contextmanager
def running(
    engine: LocalEngine,
    handler: Callable[[dict[str, Any]], Any],
    metrics: Metrics,
    **kwargs: Any,
) -> Iterator[Runner]:
    registry = HandlerRegistry()
    registry.register(JOB_TYPE, handler)
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("drain_timeout", 5.0)
    kwargs.setdefault("parallelism", 1)
    with RestEngineClient(engine.url, timeout=10.0) as client:
        runner = Runner(client, registry, "e2e-life-worker", metrics=metrics, **kwargs)
        with run_in_thread(runner, TIMEOUT, name="e2e-life-runner"):
            yield runner


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def engine() -> Iterator[LocalEngine]:
    with LocalEngine() as eng:
        yield eng


@pytest.fixture
def renewing() -> Iterator[LocalEngine]:
    """An engine with lease extension and a 3 s lease."""
    with LocalEngine(heartbeat=True, lease_seconds=3) as eng:
        yield eng


def start(engine: LocalEngine, retries: int = 0) -> str:
    with engine.client() as client:
        client.upload_definition(definition(retries))
        return str(client.start_instance("e2e-life")["id"])


def cancel(engine: LocalEngine, instance_id: str) -> None:
    with engine.client() as client:
        client.cancel_instance(instance_id, "called off")


# -- the stale guard before a fail ------------------------------------------------------


@pytest.mark.parametrize("retryable", [False, True])
def test_a_cancelled_instances_failing_job_sends_no_fail(
    engine: LocalEngine,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
    retryable: bool,
) -> None:
    started = threading.Event()
    proceed = threading.Event()

    def handler(job: dict[str, Any]) -> None:
        started.set()
        assert proceed.wait(TIMEOUT)
        if retryable:
            raise ConnectionError("upstream went away")
        raise NonRetryableError("refused for good")

    instance_id = start(engine, retries=2 if retryable else 0)
    caplog.set_level(logging.INFO, logger="workflow_sdk")
    # No periodic check: the guard before the fail alone is under test.
    with running(engine, handler, metrics, stale_check_interval=0) as runner:
        assert started.wait(TIMEOUT)
        cancel(engine, instance_id)
        proceed.set()
        assert wait_until(lambda: runner.stats.stale == 1)
        stats = runner.stats
    (job,) = engine.jobs(instance_id=instance_id)
    assert engine.instance(instance_id)["status"] == "CANCELLED"
    assert job["failCalls"] == 0
    # Not put back in the queue either: one delivery, and retired with an
    # empty completion (left locked, the engine would hand it out again
    # after every lease; found by the chaos suite).
    assert (job["status"], job["deliveries"], job["retriesRemaining"], job["completeCalls"]) == (
        "COMPLETED",
        1,
        2 if retryable else 0,
        1,
    )
    assert not engine.instance(instance_id).get("variables")
    assert (stats.failed, stats.completed) == (0, 0)
    assert sample(metrics, "workflow_sdk_stale_jobs_total", job_type=JOB_TYPE,
                  reason="instance_cancelled") == 1  # fmt: skip
    assert sample(metrics, "workflow_sdk_retries_total", job_type=JOB_TYPE) == 0
    said = [r for r in caplog.records if "no longer matters" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO


def test_a_live_jobs_fail_is_still_sent(engine: LocalEngine, metrics: Metrics) -> None:
    def handler(job: dict[str, Any]) -> None:
        raise NonRetryableError("refused for good")

    instance_id = start(engine)
    with running(engine, handler, metrics):
        summary = engine.wait_for_instance(instance_id, "FAILED", TIMEOUT)
    assert summary["failureReason"] == "refused for good"
    assert engine.jobs(instance_id=instance_id)[0]["failCalls"] == 1


# -- the periodic stale check ----------------------------------------------------------


def test_a_running_job_of_a_cancelled_instance_gets_its_cancel_event(
    engine: LocalEngine, metrics: Metrics
) -> None:
    started = threading.Event()
    seen: list[bool] = []

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        started.set()
        seen.append(job["cancelEvent"].wait(TIMEOUT))
        return {"done": True}  # not sent: an empty completion retires the job

    instance_id = start(engine)
    with running(engine, handler, metrics, stale_check_interval=0.1) as runner:
        assert started.wait(TIMEOUT)
        cancel(engine, instance_id)
        assert wait_until(lambda: runner.stats.stale == 1)
    assert seen == [True]
    (job,) = engine.jobs(instance_id=instance_id)
    assert (job["completeCalls"], job["failCalls"], job["status"]) == (1, 0, "COMPLETED")
    assert engine.instance(instance_id)["status"] == "CANCELLED"
    assert "done" not in (engine.instance(instance_id).get("variables") or {})
    assert sample(metrics, "workflow_sdk_stale_jobs_total", job_type=JOB_TYPE,
                  reason="instance_cancelled") == 1  # fmt: skip


# -- shutdown ------------------------------------------------------------------------------


def test_shutdown_sets_the_cancel_event_and_a_failure_then_is_not_sent(
    engine: LocalEngine, metrics: Metrics
) -> None:
    started = threading.Event()

    def handler(job: dict[str, Any]) -> None:
        started.set()
        assert job["cancelEvent"].wait(TIMEOUT)
        raise RuntimeError("asked to stop")

    instance_id = start(engine, retries=2)
    with running(engine, handler, metrics) as runner:
        assert started.wait(TIMEOUT)
    assert runner.stats.fails_withheld == 1
    (job,) = engine.jobs(instance_id=instance_id)
    assert (job["failCalls"], job["retriesRemaining"], job["status"]) == (0, 2, "LOCKED")
    assert sample(metrics, "workflow_sdk_reports_given_up_total", job_type=JOB_TYPE,
                  reason="withheld") == 1  # fmt: skip


# -- lease renewal ----------------------------------------------------------------------------


def test_an_8_s_job_on_a_3_s_lease_is_claimed_once_and_completed_once(
    renewing: LocalEngine, metrics: Metrics
) -> None:
    cancelled: list[bool] = []

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        # Eight seconds of work that lets other threads run (I/O, say).
        cancelled.append(job["cancelEvent"].wait(8.0))
        return {"long": True}

    instance_id = start(renewing)
    with running(renewing, handler, metrics, heartbeat=True) as runner:
        summary = renewing.wait_for_instance(instance_id, "COMPLETED", TIMEOUT)
    # Read once the runner has stopped: a renewal may be in flight when the
    # instance completes (counted by the engine, not yet by the runner).
    stats = runner.stats
    assert summary["variables"] == {"long": True}
    assert cancelled == [False]
    (job,) = renewing.jobs(instance_id=instance_id)
    assert (job["deliveries"], job["completeCalls"], job["failCalls"]) == (1, 1, 0)
    assert job["heartbeats"] >= 2  # 8 s on a 3 s lease needs at least two
    assert stats.lease_renewals == job["heartbeats"]
    assert stats.leases_lost == 0
    assert renewing.counters.get("leases_expired", 0) == 0
    accepted = sample(metrics, "workflow_sdk_lease_renewals_total", result="accepted")
    assert accepted == job["heartbeats"]
    assert sample(metrics, "workflow_sdk_lease_renewals_total", result="lease_lost") == 0


@pytest.mark.parametrize(("lease_seconds", "granted"), [(60, 60.0), (None, 3.0)])
def test_the_poll_asks_for_the_configured_lease(
    renewing: LocalEngine, metrics: Metrics, lease_seconds: int | None, granted: float
) -> None:
    seen: list[tuple[float, int]] = []

    def handler(job: dict[str, Any]) -> None:
        # The engine's own view while the job runs, before any renewal could
        # have landed (the first is a third of the lease away).
        view = renewing.job(job["id"])
        lease = parse_timestamp(view["lockExpiresAt"]) - parse_timestamp(view["lockedAt"])
        seen.append((lease.total_seconds(), view["heartbeats"]))

    instance_id = start(renewing)
    # Without a length the lease is the engine's 3 s: renew late, so that a
    # slow start of the handler cannot see a renewed lease.
    interval = None if lease_seconds else 2.5
    options = {"lease_seconds": lease_seconds, "heartbeat_interval": interval}
    with running(renewing, handler, metrics, heartbeat=True, **options):
        renewing.wait_for_instance(instance_id, "COMPLETED", TIMEOUT)
    [(lease, heartbeats)] = seen
    assert heartbeats == 0
    assert lease == pytest.approx(granted, abs=0.5)


def test_a_lost_lease_sets_the_cancel_event_and_sends_nothing(
    renewing: LocalEngine, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    started = threading.Event()
    runs: list[bool] = []

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        if runs:
            runs.append(job["cancelEvent"].is_set())
            return {"run": len(runs)}  # the second delivery: quick
        started.set()
        runs.append(job["cancelEvent"].wait(TIMEOUT))
        return {"run": 1}  # a success: still not sent, the job may run elsewhere

    instance_id = start(renewing)
    caplog.set_level(logging.WARNING, logger="workflow_sdk")
    with running(renewing, handler, metrics, heartbeat=True) as runner:
        assert started.wait(TIMEOUT)
        (job,) = renewing.jobs(instance_id=instance_id)
        renewing.revoke_lease(job["id"])  # as if another worker now held it
        summary = renewing.wait_for_instance(instance_id, "COMPLETED", TIMEOUT)
        stats = runner.stats
    assert runs == [True, False]
    # Only the second delivery's completion reached the engine.
    assert summary["variables"] == {"run": 2}
    (job,) = renewing.jobs(instance_id=instance_id)
    assert (job["deliveries"], job["completeCalls"], job["failCalls"]) == (2, 1, 0)
    assert stats.leases_lost == 1
    assert sample(metrics, "workflow_sdk_lease_renewals_total", result="lease_lost") == 1
    assert any("lease lost" in r.getMessage() for r in caplog.records)


def test_heartbeat_on_a_released_engine_turns_itself_off(metrics: Metrics) -> None:
    def handler(job: dict[str, Any]) -> dict[str, Any]:
        # Runs until the Runner has found out that renewal is unsupported.
        assert wait_until(
            lambda: sample(metrics, "workflow_sdk_lease_renewals_total", result="unsupported") >= 1
        )
        return {}

    with LocalEngine(lease_seconds=3) as released:
        instance_id = start(released)
        with running(released, handler, metrics, heartbeat=True, heartbeat_interval=0.2):
            released.wait_for_instance(instance_id, "COMPLETED", TIMEOUT)
        (job,) = released.jobs(instance_id=instance_id)
    assert (job["deliveries"], job["completeCalls"]) == (1, 1)
    assert sample(metrics, "workflow_sdk_lease_renewals_total", result="unsupported") == 1
    assert sample(metrics, "workflow_sdk_lease_renewals_total", result="lease_lost") == 0


# -- the GIL gap (what the README warns about) ---------------------------------------------------


def test_a_handler_holding_the_gil_past_the_lease_loses_it_under_the_threaded_runner(
    renewing: LocalEngine, metrics: Metrics
) -> None:
    # About 6 s inside one C call (5.2 to 7 s measured), on a 3 s lease
    # renewed every second: the watch thread cannot run until the call
    # returns, and by then the lease has passed. Nothing is sent for the
    # first run; the engine hands the job out again (here to the same
    # Runner), and it runs a second time.
    exponent = gil_bound_exponent(6.0)
    runs: list[bool] = []

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        if runs:
            runs.append(job["cancelEvent"].is_set())
            return {"runs": len(runs)}
        pow(3, exponent)  # one long C call that never lets go of the GIL
        runs.append(job["cancelEvent"].wait(TIMEOUT))
        return {"runs": 1}

    instance_id = start(renewing)
    with running(renewing, handler, metrics, heartbeat=True) as runner:
        summary = renewing.wait_for_instance(instance_id, "COMPLETED", 3 * TIMEOUT)
        stats = runner.stats
    assert runs == [True, False]
    assert summary["variables"] == {"runs": 2}
    (job,) = renewing.jobs(instance_id=instance_id)
    assert (job["deliveries"], job["completeCalls"], job["failCalls"]) == (2, 1, 0)
    assert stats.leases_lost == 1
    assert sample(metrics, "workflow_sdk_lease_renewals_total", result="lease_lost") == 1
