"""A malformed job in a poll answer, end to end: the good jobs beside it run."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .conftest import SupervisorProcess, start_instances, upload_single_step, wait_for
from .process_support import metrics_url, sample

pytestmark = pytest.mark.slow

Start = Callable[..., SupervisorProcess]


@pytest.mark.lease(600)
def test_a_malformed_job_is_skipped_and_the_good_jobs_of_its_answer_run(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, tmp_path: Path
) -> None:
    """Pins: the supervisor's first poll answer carries a job without an id
    and one whose variables are a string beside the two good jobs. The two
    run at once (before, the client refused the whole answer and the two
    waited, locked, for their lease: 600 s here); each bad one gets one
    ERROR line and is counted in ``workflow_sdk_malformed_jobs_total``."""
    upload_single_step(client, "mixed", "noop", retries=0)
    ids = start_instances(client, "mixed", 2, {})
    engine.add_to_next_poll(
        {"jobType": "noop", "instanceId": "nowhere"},
        {"id": "bogus-1", "jobType": "noop", "instanceId": "nowhere", "variables": "oops"},
    )
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    sv = start_supervisor(workers=2, extra=f'[metrics]\nport = 0\ndir = "{metrics_dir}"\n')
    url = metrics_url(sv)
    engine.wait_for_instances(ids, "COMPLETED", timeout=20)
    assert engine.counters["poll_extras_sent"] == 2
    for instance_id in ids:
        (job,) = engine.jobs(instance_id=instance_id)
        assert (job["deliveries"], job["completeCalls"], job["failCalls"]) == (1, 1, 0)

    def counted() -> float:
        text = requests.get(url, timeout=5).text
        return sample(text, "workflow_sdk_malformed_jobs_total", 0.0) == 2

    wait_for(counted, 20, "workflow_sdk_malformed_jobs_total = 2")
    sv.signal(signal.SIGTERM)
    assert sv.wait(20) == 0
    errors = [line for line in sv.log().splitlines() if "left out of the poll answer" in line]
    assert len(errors) == 2, sv.log()
    assert all("ERROR" in line for line in errors), errors
    assert sum("without an id" in line for line in errors) == 1
    assert sum("job bogus-1 left out" in line for line in errors) == 1
