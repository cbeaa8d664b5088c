"""LocalEngine's life cycle, inspection helpers, fixtures and ``python -m``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.errors import EngineConnectionError
from workflow_sdk.testing import LocalEngine, default_sweep_interval

DEF = {
    "id": "life",
    "name": "Life",
    "steps": [
        {
            "id": "work",
            "name": "Work",
            "type": "SERVICE_TASK",
            "jobType": "life",
            "nextStep": "end",
        },
        {"id": "end", "name": "End", "type": "END"},
    ],
}


def _engine_threads(engine: LocalEngine) -> list[threading.Thread]:
    prefix = f"local-engine-{engine.port}-"
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def test_start_stop_and_context_manager() -> None:
    engine = LocalEngine()
    try:
        assert engine.start() is engine
        assert engine.running and engine.port > 0
        assert engine.url == f"http://127.0.0.1:{engine.port}"
        assert engine.start() is engine  # already running: no-op
        with engine.client() as client:
            assert client.health()
    finally:
        engine.stop()
    engine.stop()  # idempotent
    assert not engine.running
    assert _engine_threads(engine) == []

    with LocalEngine(lease_seconds=5) as engine, engine.client() as client:
        assert client.health()
        assert engine.lease_seconds == 5
    assert not engine.running


def test_stop_closes_idle_keep_alive_connections_and_joins_threads() -> None:
    engine = LocalEngine().start()
    clients = [engine.client() for _ in range(3)]
    try:
        # The accept loop, the lease sweeper and the timer check.
        assert len(_engine_threads(engine)) == 3
        for client in clients:
            assert client.health()  # each leaves an idle keep-alive connection
        assert len(_engine_threads(engine)) == 6
        started = time.monotonic()
        engine.stop()  # must not wait for the idle connections to time out
        assert time.monotonic() - started < 2.0
        assert _engine_threads(engine) == []
    finally:
        engine.stop()
        for client in clients:
            client.close()


def test_restart_on_the_same_port_keeps_the_state() -> None:
    engine = LocalEngine(lease_seconds=30).start()
    url = engine.url
    client = RestEngineClient(url, timeout=5)
    try:
        client.upload_definition(DEF)
        instance = client.start_instance("life", {"a": 1})
        (job,) = client.poll_jobs("w", ["life"], 1)

        engine.stop()
        with pytest.raises(EngineConnectionError):
            client.get_instance(instance["id"])
        assert client.health() is False

        engine.start()
        assert engine.url == url
        assert client.get_instance(instance["id"])["status"] == "ACTIVE"
        client.complete_job(job["id"], "w", {"b": 2})
        done = client.get_instance(instance["id"])
        assert done["status"] == "COMPLETED" and done["variables"] == {"a": 1, "b": 2}
    finally:
        client.close()
        engine.stop()


def test_lease_expiry_happens_after_the_lease_not_before() -> None:
    with LocalEngine(lease_seconds=0.5) as engine, engine.client() as client:
        assert engine.sweep_interval == default_sweep_interval(0.5) == 0.05
        client.upload_definition(DEF)
        client.start_instance("life")
        claimed_at = time.monotonic()
        (job,) = client.poll_jobs("w", ["life"], 1)
        assert engine.expire_leases() == 0  # the lease has not passed
        redelivered = engine.wait_until(lambda: engine.jobs("PENDING"), timeout=5)
        assert time.monotonic() - claimed_at >= 0.5
        assert redelivered[0]["id"] == job["id"]
        assert engine.counters["leases_expired"] == 1


def test_sweep_interval_follows_the_lease() -> None:
    assert default_sweep_interval(30) == 3.0
    assert default_sweep_interval(1000) == 15.0
    assert default_sweep_interval(0.1) == 0.05
    assert LocalEngine(sweep_interval=0.2).sweep_interval == 0.2
    with pytest.raises(ValueError):
        LocalEngine(lease_seconds=0)
    with pytest.raises(ValueError):
        LocalEngine(sweep_interval=0)


def test_inspection_and_counters(local_engine: LocalEngine) -> None:
    # A total that has not happened yet reads 0, not KeyError.
    assert local_engine.counters["polls"] == 0 and local_engine.counters["fail_calls"] == 0
    with local_engine.client() as client:
        client.upload_definition({**DEF, "steps": [{**DEF["steps"][0], "retryCount": 1},
                                                   DEF["steps"][1]]})  # fmt: skip
        instance_id = client.start_instance("life")["id"]
        (job,) = client.poll_jobs("w", ["life"], 1)
        inspected = local_engine.job(job["id"])
        assert inspected["stepId"] == "work" and inspected["status"] == "LOCKED"
        client.fail_job(job["id"], "w", "flaky", retryable=True)
        assert local_engine.jobs("PENDING")[0]["id"] == job["id"]
        (job,) = client.poll_jobs("w", ["life"], 1)
        client.complete_job(job["id"], "w", {})
        client.complete_job(job["id"], "w", {})
        assert local_engine.complete_calls(job["id"]) == 2
        assert local_engine.fail_calls(job["id"]) == 1
        assert local_engine.job(job["id"])["deliveries"] == 2
        assert local_engine.jobs(instance_id=instance_id, job_type="life")[0]["status"] == (
            "COMPLETED"
        )
        assert local_engine.instance(instance_id)["status"] == "COMPLETED"
        assert [i["StepID"] for i in local_engine.history(instance_id)] == ["work", "end"]
        assert [i["id"] for i in local_engine.instances()] == [instance_id]
        counters = local_engine.counters
        assert counters["complete_calls"] == 2 and counters["jobs_completed"] == 1
        assert counters["fail_calls"] == 1 and counters["jobs_retried"] == 1
        local_engine.reset()
        assert local_engine.instances() == [] and local_engine.jobs() == []
        assert local_engine.counters["complete_calls"] == 0
        with pytest.raises(KeyError):
            local_engine.instance(instance_id)


def test_wait_for_instance(local_engine: LocalEngine) -> None:
    with local_engine.client() as client:
        client.upload_definition(DEF)
        instance_id = client.start_instance("life")["id"]

        def worker() -> None:
            (job,) = client.poll_jobs("w", ["life"], 1)
            client.complete_job(job["id"], "w", {"done": True})

        thread = threading.Thread(target=worker)
        thread.start()
        summary = local_engine.wait_for_instance(instance_id, "COMPLETED", timeout=5)
        thread.join()
        assert summary["variables"] == {"done": True}
        assert local_engine.wait_for_instances([instance_id], timeout=1)[0]["id"] == instance_id

        waiting = client.start_instance("life")["id"]
        with pytest.raises(TimeoutError, match="ACTIVE"):
            local_engine.wait_for_instance(waiting, "COMPLETED", timeout=0.1)
        with pytest.raises(TimeoutError, match="unknown instance"):
            local_engine.wait_for_instance("nope", timeout=0.1)
        client.cancel_instance(waiting, "stop")
        with pytest.raises(AssertionError, match="CANCELLED"):
            local_engine.wait_for_instance(waiting, "COMPLETED", timeout=5)
        assert local_engine.wait_for_instance(waiting, ("FAILED", "CANCELLED"))["id"] == waiting
        with pytest.raises(TimeoutError):
            local_engine.wait_until(lambda: None, timeout=0.05)


def test_fixtures(
    local_engine: LocalEngine, local_engine_factory: Callable[..., LocalEngine]
) -> None:
    assert local_engine.running and local_engine.lease_seconds == 30.0
    short = local_engine_factory(lease_seconds=1.5)
    assert short.running and short.lease_seconds == 1.5 and short.port != local_engine.port


def _run_main(sig: int) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "workflow_sdk.testing", "--port", "0", "--lease-seconds", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with RestEngineClient(url, timeout=5) as client:
            assert client.health()
        child.send_signal(sig)
        assert child.wait(10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stderr is not None
        stderr = child.stderr.read()
        child.stdout.close()
        child.stderr.close()
    assert stderr == ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_python_dash_m_serves_until_a_signal(sig: int) -> None:
    _run_main(sig)


def test_python_dash_m_refuses_a_busy_port(local_engine: LocalEngine) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "workflow_sdk.testing", "--port", str(local_engine.port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
