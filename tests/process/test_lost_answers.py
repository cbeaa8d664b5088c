"""A report whose answer never comes back, with a real supervisor and a real
engine: the supervisor asks the engine what became of it and never sends a
second report of the job while the first may still be acted on."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .conftest import SupervisorProcess, start_instances, upload_single_step

Start = Callable[..., SupervisorProcess]


@pytest.mark.local_engine(complete_delay=1.5)
def test_a_completion_slower_than_the_client_timeout_is_sent_once(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    """Issue 16 bug 2: the engine applies each complete 1.5 s after it
    arrives; the supervisor's client gives up after 0.5 s. Before, the
    reporter sent the complete again 0.1 s later, while the first was still
    being applied (6 complete requests for one job, several overlapping:
    the next step could run twice), and counted it LOST although the engine
    applied it. Now it asks the engine (the step execution's history item)
    until it shows COMPLETED: one complete per job, none overlapping, none
    lost."""
    upload_single_step(client, "slowdone", "noop", retries=0)
    ids = start_instances(client, "slowdone", 3, {})
    sv = start_supervisor(workers=1, engine_extra="timeout = 0.5\nin_flight_window = 30")
    engine.wait_for_instances(ids, "COMPLETED", timeout=60)
    jobs = engine.jobs(job_type="noop")
    assert [job["completeCalls"] for job in jobs] == [1, 1, 1]
    assert engine.counters["overlapping_completes"] == 0
    sv.signal(signal.SIGTERM)
    assert sv.wait(30) == 0
    log = sv.log()
    assert "reached the engine after all" in log
    assert "LOST" not in log
