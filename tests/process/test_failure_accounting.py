"""Crashes, timeouts and handler failures: one log line each, counted per job type."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.testing import LocalEngine

from .conftest import SupervisorProcess, read_pid, start_instances, upload_single_step, wait_for
from .process_support import metrics_url, sample

pytestmark = pytest.mark.slow

Start = Callable[..., SupervisorProcess]


def test_crashes_and_timeouts_count_as_failures_of_their_job_type(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, piddir: Path
) -> None:
    upload_single_step(client, "acct", "script", retries=1)
    crash, hang = start_instances(
        client, "acct", 2, {"retries": 1, "first": "block", "piddir": str(piddir)}
    )
    sv = start_supervisor(
        workers=2, extra='[job_types."script"]\ntimeout = 4\n[metrics]\nport = 0\n'
    )
    url = metrics_url(sv)
    os.kill(read_pid(piddir, crash), signal.SIGKILL)
    read_pid(piddir, hang)  # left to its 4 s time limit
    engine.wait_for_instances([crash, hang], "COMPLETED", timeout=40)

    restarts = "workflow_supervisor_worker_restarts_total"

    def counted() -> str | None:
        text = requests.get(url, timeout=5).text
        completed = "workflow_sdk_jobs_completed_total"
        failures = sample(text, completed, 0.0, job_type="script", outcome="failure")
        successes = sample(text, completed, 0.0, job_type="script", outcome="success")
        retries = sample(text, "workflow_sdk_retries_total", 0.0, job_type="script")
        # A restart counts once the worker has exited: the timed-out one
        # first writes its stacks, SIGTERM follows 0.5 s later, and its job's
        # retry may well be done by then.
        timeouts = sample(text, restarts, 0.0, reason="timeout", job_type="script")
        return text if (failures, successes, retries, timeouts) == (2, 2, 2, 1) else None

    text = wait_for(counted, 20, "the crash and the timeout in the shared metrics")
    assert sample(text, restarts, reason="crash", job_type="script") == 1
    assert sample(text, restarts, reason="timeout", job_type="script") == 1
    sv.signal(signal.SIGTERM)
    assert sv.wait(20) == 0


def test_a_handler_failure_is_one_json_line_with_its_own_fields(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    upload_single_step(client, "json-fail", "script", retries=0)
    (iid,) = start_instances(client, "json-fail", 1, {"first": "raise"})
    sv = start_supervisor(workers=1, extra='[logging]\nformat = "json"\n')
    engine.wait_for_instance(iid, "FAILED", timeout=20)
    sv.signal(signal.SIGTERM)
    assert sv.wait(20) == 0
    entries = [json.loads(line) for line in sv.log().splitlines() if line.startswith("{")]
    about = [e for e in entries if "boom" in e["message"]]
    assert len(about) == 1, about
    (entry,) = about
    (job,) = engine.jobs(instance_id=iid)
    assert entry["job_id"] == job["id"]
    assert entry["job_type"] == "script"
    assert entry["instance_id"] == iid
    assert entry["worker"] == "worker-1"
    assert entry["level"] == "WARNING"
    # The handler's traceback travels with the line, not as a second event.
    assert 'raise ValueError("boom")' in entry["message"]
