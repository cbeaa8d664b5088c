"""The threaded Runner end to end: a real HTTP ``LocalEngine``, the REST client."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from runner_support import run_in_thread
from runner_support import wait_until as poll_until
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import NonRetryableError
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.runner import Runner
from workflow_sdk.testing import LocalEngine

TIMEOUT = 20.0


@pytest.fixture
def engine() -> Iterator[LocalEngine]:
    with LocalEngine(host="127.0.0.1", port=0, lease_seconds=30.0) as eng:
        yield eng


@pytest.fixture
def client(engine: LocalEngine) -> Iterator[RestEngineClient]:
    with RestEngineClient(engine.url, timeout=5.0) as c:
        yield c


def service_task(step_id: str, job_type: str, next_step: str, retries: int = 0) -> dict[str, Any]:
    return {
        "id": step_id,
        "name": step_id,
        "type": "SERVICE_TASK",
        "jobType": job_type,
        "retryCount": retries,
        "nextStep": next_step,
    }


def end_step() -> dict[str, Any]:
    return {"id": "end", "name": "end", "type": "END"}


#: For the runner's counters, which have no condition to wait on.
wait_until = partial(poll_until, timeout=TIMEOUT)


@contextmanager
def running(
    client: RestEngineClient,
    handlers: dict[str, Callable[[dict[str, Any]], Any]],
    **kwargs: Any,
) -> Iterator[Runner]:
    registry = HandlerRegistry()
    for job_type, handler in handlers.items():
        registry.register(job_type, handler)
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("drain_timeout", 5.0)
    runner = Runner(client, registry, "e2e-worker", metrics=Metrics(CollectorRegistry()), **kwargs)
    with run_in_thread(runner, TIMEOUT, name="e2e-runner"):
        yield runner


def test_instances_complete_with_handler_variables_merged(
    engine: LocalEngine, client: RestEngineClient
) -> None:
    client.upload_definition(
        {
            "id": "e2e-orders",
            "name": "orders",
            "steps": [
                service_task("enrich", "e2e-enrich", "score"),
                service_task("score", "e2e-score", "end"),
                end_step(),
            ],
        }
    )

    def enrich(job: dict[str, Any]) -> dict[str, Any]:
        return {"enriched": True, "double": job["variables"]["n"] * 2}

    def score(job: dict[str, Any]) -> dict[str, Any]:
        variables = job["variables"]
        assert variables["enriched"] is True  # the first step's output is visible
        return {"score": variables["double"] + 1}

    ids = [client.start_instance("e2e-orders", {"n": n})["id"] for n in range(12)]
    with running(client, {"e2e-enrich": enrich, "e2e-score": score}, parallelism=4) as runner:
        summaries = engine.wait_for_instances(ids, "COMPLETED", TIMEOUT)
    for n, summary in enumerate(summaries):
        assert summary["variables"] == {
            "n": n,
            "enriched": True,
            "double": 2 * n,
            "score": 2 * n + 1,
        }
    for job in engine.jobs():
        assert job["status"] == "COMPLETED"
        assert (job["completeCalls"], job["failCalls"], job["deliveries"]) == (1, 0, 1)
    assert runner.stats.completed == 24
    assert runner.stats.failed == 0


def test_retryable_failure_is_retried_then_succeeds(
    engine: LocalEngine, client: RestEngineClient
) -> None:
    client.upload_definition(
        {
            "id": "e2e-flaky",
            "name": "flaky",
            "steps": [service_task("call", "e2e-flaky", "end", retries=3), end_step()],
        }
    )
    attempts: list[int] = []

    def flaky(job: dict[str, Any]) -> dict[str, Any]:
        attempts.append(job["retriesRemaining"])
        if job["retriesRemaining"] == 3:
            raise ConnectionError("upstream timed out")
        return {"answered": True}

    instance_id = client.start_instance("e2e-flaky")["id"]
    with running(client, {"e2e-flaky": flaky}) as runner:
        summary = engine.wait_for_instance(instance_id, "COMPLETED", TIMEOUT)
    assert summary["variables"] == {"answered": True}
    assert attempts == [3, 2]
    (job,) = engine.jobs(instance_id=instance_id)
    assert (job["failCalls"], job["completeCalls"], job["deliveries"]) == (1, 1, 2)
    assert (runner.stats.failed, runner.stats.completed) == (1, 1)


def test_non_retryable_failure_fails_the_instance(
    engine: LocalEngine, client: RestEngineClient
) -> None:
    client.upload_definition(
        {
            "id": "e2e-credit",
            "name": "credit",
            "steps": [service_task("check", "e2e-credit", "end", retries=5), end_step()],
        }
    )

    def credit(job: dict[str, Any]) -> None:
        raise NonRetryableError("credit refused: limit exceeded")

    instance_id = client.start_instance("e2e-credit")["id"]
    with running(client, {"e2e-credit": credit}):
        summary = engine.wait_for_instance(instance_id, "FAILED", TIMEOUT)
    assert summary["failureReason"] == "credit refused: limit exceeded"
    (job,) = engine.jobs(instance_id=instance_id)
    assert (job["failCalls"], job["completeCalls"], job["deliveries"]) == (1, 0, 1)


def test_engine_outage_mid_run_loses_no_completion(
    engine: LocalEngine, client: RestEngineClient
) -> None:
    client.upload_definition(
        {
            "id": "e2e-outage",
            "name": "outage",
            "steps": [
                service_task("first", "e2e-first", "second"),
                service_task("second", "e2e-second", "end"),
                end_step(),
            ],
        }
    )
    gate = threading.Event()
    held = threading.Semaphore(0)

    def first(job: dict[str, Any]) -> dict[str, Any]:
        if not gate.is_set():
            held.release()
            assert gate.wait(TIMEOUT)
        return {"first": job["variables"]["n"]}

    def second(job: dict[str, Any]) -> dict[str, Any]:
        return {"second": job["variables"]["first"] + 100}

    ids = [client.start_instance("e2e-outage", {"n": n})["id"] for n in range(16)]
    parallelism = 4
    with running(
        client, {"e2e-first": first, "e2e-second": second}, parallelism=parallelism
    ) as runner:
        # 1. Every thread holds a claimed job when the engine goes away; then
        # the handlers finish and their completions cannot land...
        for _ in range(parallelism):
            assert held.acquire(timeout=TIMEOUT)
        engine.stop()
        gate.set()
        assert wait_until(lambda: runner.stats.report_retries >= parallelism)
        assert runner.stats.completed == 0
        assert runner.stats.reports_lost == 0
        # ...until the engine comes back with its state.
        engine.start()
        summaries = engine.wait_for_instances(ids, "COMPLETED", TIMEOUT)

        # 2. The engine goes away while the runner is idle: polls fail and
        # back off, and resume when it is back.
        engine.stop()
        errors_before = runner.stats.poll_errors
        assert wait_until(lambda: runner.stats.poll_errors >= errors_before + 2)
        engine.start()
        more = [client.start_instance("e2e-outage", {"n": n})["id"] for n in range(16, 20)]
        summaries += engine.wait_for_instances(more, "COMPLETED", TIMEOUT)

    for n, summary in enumerate(summaries):
        assert summary["variables"] == {"n": n, "first": n, "second": n + 100}
    jobs = engine.jobs()
    assert len(jobs) == 40
    for job in jobs:
        # completed; a repeated completion (an answer lost in the outage) is a no-op
        assert job["status"] == "COMPLETED"
        assert job["completeCalls"] >= 1
        assert job["failCalls"] == 0
    stats = runner.stats
    assert stats.completed == 40
    assert stats.reports_lost == 0
    assert stats.poll_errors >= 2
