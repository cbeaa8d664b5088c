"""The threaded Runner and a malformed job in a poll answer, with both clients."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from runner_support import run_in_thread
from workflow_sdk.client.lean import LeanJobClient
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.handler.registry import HandlerRegistry
from workflow_sdk.metrics.metrics import Metrics
from workflow_sdk.runner import Runner
from workflow_sdk.testing import LocalEngine

TIMEOUT = 20.0


@pytest.fixture
def engine() -> Iterator[LocalEngine]:
    # A lease no test waits out: a good job left locked would not come back.
    with LocalEngine(lease_seconds=600.0) as eng:
        yield eng


@pytest.mark.parametrize("client_class", [RestEngineClient, LeanJobClient])
def test_the_good_jobs_beside_a_malformed_one_run(
    engine: LocalEngine, client_class: type[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Pins: the Runner's first poll answer carries a job without an id and
    one whose retriesRemaining is a string beside two good jobs. The two run
    at once (before, the client refused the whole answer and they waited
    for their lease); each bad one is logged once at ERROR."""
    with engine.client() as setup:
        setup.upload_definition(
            {
                "id": "mixed",
                "name": "mixed",
                "steps": [
                    {"id": "s", "name": "s", "type": "SERVICE_TASK", "jobType": "mixed",
                     "nextStep": "end"},
                    {"id": "end", "name": "end", "type": "END"},
                ],
            }
        )  # fmt: skip
        ids = [setup.start_instance("mixed")["id"] for _ in range(2)]
    engine.add_to_next_poll(
        {"jobType": "mixed", "instanceId": "nowhere"},
        {"id": "bogus-1", "jobType": "mixed", "instanceId": "nowhere", "retriesRemaining": "2"},
    )
    registry = HandlerRegistry()
    registry.register("mixed", lambda job: {"done": True})
    with client_class(engine.url, timeout=5.0) as client:
        runner = Runner(
            client,
            registry,
            "malformed-worker",
            parallelism=2,
            poll_interval=0.05,
            drain_timeout=5.0,
            metrics=Metrics(CollectorRegistry()),
        )
        with (
            caplog.at_level(logging.ERROR, logger="workflow_sdk"),
            run_in_thread(runner, TIMEOUT, name="malformed-runner"),
        ):
            engine.wait_for_instances(ids, "COMPLETED", timeout=TIMEOUT)
    assert engine.counters["poll_extras_sent"] == 2
    for instance_id in ids:
        (job,) = engine.jobs(instance_id=instance_id)
        assert (job["deliveries"], job["completeCalls"]) == (1, 1)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors
    assert sum("without an id" in e for e in errors) == 1
    assert sum("job bogus-1 left out" in e for e in errors) == 1
