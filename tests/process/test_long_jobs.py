"""Jobs longer than the lease: coalesced re-deliveries, and renewal from the parent."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from runner_support import gil_bound_exponent
from workflow_sdk.client.models import parse_timestamp
from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.lease import DEFAULT_LEASE_SECONDS
from workflow_sdk.testing import LocalEngine

from .conftest import SupervisorProcess, read_pid, start_instances, upload_single_step, wait_for

pytestmark = pytest.mark.slow

Start = Callable[..., SupervisorProcess]


def runs(piddir: Path, instance_id: str) -> list[str]:
    path = piddir / f"{instance_id}.runs"
    return path.read_text().split() if path.exists() else []


def stop(sv: SupervisorProcess) -> str:
    sv.signal(signal.SIGTERM)
    assert sv.wait(30) == 0
    return sv.log()


@pytest.mark.local_engine(lease_seconds=3.0)
def test_a_job_longer_than_the_lease_runs_once_and_is_completed_once(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, piddir: Path
) -> None:
    upload_single_step(client, "long", "lifecycle", retries=0)
    (iid,) = start_instances(client, "long", 1, {"piddir": str(piddir), "seconds": 10})
    sv = start_supervisor(workers=2, extra="[metrics]\nport = 0\n")
    engine.wait_for_instance(iid, "COMPLETED", timeout=40)
    (job,) = engine.jobs(instance_id=iid)
    assert job["deliveries"] >= 2, "the engine handed it out again after its 3 s lease"
    assert (job["completeCalls"], job["failCalls"]) == (1, 0)
    assert len(runs(piddir, iid)) == 1, "it ran exactly once"
    log = stop(sv)
    assert "lease renewal off: the engine cannot extend leases" in log
    assert f"job {job['id']} (lifecycle) handed out again" in log
    # Once per job, however many re-deliveries.
    assert log.count("handed out again by the engine") == 1
    assert "redeliveries coalesced" in log


@pytest.mark.local_engine(lease_seconds=3.0, heartbeat=True)
def test_on_an_engine_that_renews_the_job_is_claimed_once(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, piddir: Path
) -> None:
    upload_single_step(client, "renewed", "lifecycle", retries=0)
    (iid,) = start_instances(client, "renewed", 1, {"piddir": str(piddir), "seconds": 8})
    sv = start_supervisor(workers=2)
    engine.wait_for_instance(iid, "COMPLETED", timeout=40)
    (job,) = engine.jobs(instance_id=iid)
    assert job["deliveries"] == 1
    # 8 s on a 3 s lease renewed every third of it: several renewals.
    assert job["heartbeats"] >= 2
    assert (job["completeCalls"], job["failCalls"]) == (1, 0)
    assert len(runs(piddir, iid)) == 1
    log = stop(sv)
    assert "lease renewal on" in log
    assert "past its lease" not in log


@pytest.mark.local_engine(lease_seconds=3.0, heartbeat=True)
def test_a_handler_holding_the_gil_still_gets_its_lease_renewed(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, piddir: Path
) -> None:
    exponent = gil_bound_exponent(6.0)
    upload_single_step(client, "gil-flow", "gil", retries=0)
    (iid,) = start_instances(client, "gil-flow", 1, {"piddir": str(piddir), "exponent": exponent})
    sv = start_supervisor(workers=1)
    engine.wait_for_instance(iid, "COMPLETED", timeout=90)
    (job,) = engine.jobs(instance_id=iid)
    # The worker held its GIL for longer than two leases; the parent renewed.
    assert job["deliveries"] == 1
    assert len(runs(piddir, iid)) == 1
    stop(sv)


@pytest.mark.local_engine(lease_seconds=3.0, heartbeat=True)
def test_a_lost_lease_stops_the_worker_and_sends_nothing(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, piddir: Path
) -> None:
    upload_single_step(client, "lost", "lifecycle", retries=0)
    (iid,) = start_instances(client, "lost", 1, {"piddir": str(piddir), "seconds": 60})
    sv = start_supervisor(workers=1, extra="job_timeout = 0\n")
    first = read_pid(piddir, iid)
    (job,) = engine.jobs(instance_id=iid)
    engine.revoke_lease(job["id"])
    sv.wait_for_log("is no longer ours (lease lost")
    # The engine handed the job out again; this supervisor ran it again on a
    # fresh worker. Nothing was reported for the first run.
    wait_for(lambda: len(runs(piddir, iid)) == 2, 20, "the job's second run")
    assert (piddir / f"{iid}.cancelled").read_text() == "set"
    job = engine.job(job["id"])
    assert (job["completeCalls"], job["failCalls"]) == (0, 0)
    assert runs(piddir, iid)[0] == str(first)
    assert runs(piddir, iid)[1] != str(first), "the second run is on a fresh worker"
    stop(sv)


def test_lease_renewal_required_refuses_a_released_engine(
    engine: LocalEngine, start_supervisor: Start
) -> None:
    sv = start_supervisor(workers=1, extra='lease_renewal = "required"\n')
    assert sv.wait(30) == 2
    log = sv.log()
    assert "supervisor.lease_renewal" in log
    assert "cannot extend leases" in log


def granted_lease(engine: LocalEngine, job_id: str) -> float:
    """The running job's lease as the engine granted it (its own clock)."""
    view = engine.job(job_id)
    expires, locked = parse_timestamp(view["lockExpiresAt"]), parse_timestamp(view["lockedAt"])
    return (expires - locked).total_seconds()


@pytest.mark.local_engine(heartbeat=True)
@pytest.mark.parametrize(
    "case", [("auto", 60.0), ("off", DEFAULT_LEASE_SECONDS)], ids=["renewal-on", "renewal-off"]
)
def test_the_poll_asks_for_the_configured_lease_only_while_renewal_is_on(
    engine: LocalEngine,
    client: RestEngineClient,
    start_supervisor: Start,
    piddir: Path,
    case: tuple[str, float],
) -> None:
    renewal, expected = case
    upload_single_step(client, "leased", "lifecycle", retries=0)
    (iid,) = start_instances(client, "leased", 1, {"piddir": str(piddir), "seconds": 60})
    sv = start_supervisor(workers=1, extra=f'lease_renewal = "{renewal}"\nlease_seconds = 60\n')
    read_pid(piddir, iid)
    (job,) = engine.jobs(instance_id=iid)
    # The first renewal is a third of the lease away: this is the claim's own lease.
    assert engine.job(job["id"])["heartbeats"] == 0
    assert granted_lease(engine, job["id"]) == pytest.approx(expected, abs=1)
    log = stop(sv)
    assert ("lease renewal on" in log) == (renewal == "auto")
