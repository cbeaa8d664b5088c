"""The supervisor's drain, SIGHUP and worker-exit verdicts, without a fork.

Slots hold stand-in processes whose signals go nowhere (``pid = None``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from unit.test_supervisor_intake import idle_slot, intake_with, job
from unit.test_worker_pool import make_slot
from workflow_sdk.supervisor.config import load_config
from workflow_sdk.supervisor.drain import Drain, DrainStep
from workflow_sdk.supervisor.intake import Intake
from workflow_sdk.supervisor.jobs import JobState
from workflow_sdk.supervisor.lifecycle import WorkerLife
from workflow_sdk.supervisor.reload import reload_config
from workflow_sdk.supervisor.reports import ReportDesk
from workflow_sdk.supervisor.results import Results
from workflow_sdk.supervisor.slots import SlotState, WorkerSlot
from workflow_sdk.supervisor.stops import Stops
from workflow_sdk.supervisor.watch import StopJob


def helpers(intake: Intake) -> tuple[Results, Stops]:
    desk = ReportDesk(None, lambda: None)
    results = Results(intake.pool, intake.ledger, intake, intake.stats, desk)
    return results, Stops(intake.pool, intake.ledger, intake, results, intake.stats)


def running(intake: Intake, slot: WorkerSlot, job_id: str, now: float) -> None:
    intake.claim(job(job_id), now, now, leased=True)
    entry = intake.ledger.start(job_id, slot.slot, now, 0.0)
    slot.state = SlotState.BUSY
    slot.job = entry


def drain_of(intake: Intake) -> Drain:
    _, stops = helpers(intake)
    return Drain(intake.pool, intake.ledger, intake, stops, intake.stats)


def test_a_drain_keeps_idle_workers_while_a_poll_is_out() -> None:
    idle = idle_slot(1)
    intake, source = intake_with(idle)
    source.busy = True
    drain = drain_of(intake)
    drain.begin("SIGTERM", 100.0, 30.0)
    assert drain.step(100.0) is DrainStep.WAIT
    assert idle.state is SlotState.IDLE  # its poll's jobs would have no worker


def test_a_drain_closes_idle_workers_and_drops_jobs_never_started() -> None:
    idle, booting = idle_slot(1), make_slot(2, SlotState.BOOTING)
    intake, source = intake_with(idle, booting)
    intake.claim(job("waiting"), 100.0, 100.0, leased=True)
    drain = drain_of(intake)
    drain.begin("SIGTERM", 100.0, 30.0)
    assert drain.step(100.0) is DrainStep.WAIT  # the workers have yet to exit
    assert (idle.state, booting.state) == (SlotState.STOPPING, SlotState.STOPPING)
    assert "waiting" not in intake.ledger
    assert source.settled == [("waiting", False)]  # delivered again
    assert intake.stats.abandoned == 1


def test_a_drain_abandons_a_job_at_its_deadline_and_says_when_workers_are_gone() -> None:
    busy = idle_slot(1)
    intake, source = intake_with(busy)
    running(intake, busy, "long", 100.0)
    drain = drain_of(intake)
    drain.begin("SIGTERM", 100.0, 30.0)
    assert drain.step(110.0) is DrainStep.WAIT
    assert busy.job is not None  # still within graceful_timeout
    assert drain.step(130.0) is DrainStep.WAIT
    assert (busy.job, busy.state) == (None, SlotState.STOPPING)
    assert source.settled == [("long", False)]
    assert drain.remaining(125.0) == 5.0
    intake.pool.remove(busy)
    assert drain.step(131.0) is DrainStep.WORKERS_GONE


def test_sighup_without_a_file_keeps_the_config_and_a_bad_file_stops_the_reload(
    tmp_path: Path,
) -> None:
    path = tmp_path / "supervisor.toml"
    path.write_text('[supervisor]\nhandlers = ["a"]\nworkers = 2\n')
    current = load_config(path)
    in_code = dataclasses.replace(current, source=str(tmp_path / "nowhere.toml"))
    assert reload_config(in_code, 2, require_handlers=True) is in_code
    path.write_text("[supervisor\n")
    assert reload_config(current, 2, require_handlers=True) is None


def test_sighup_takes_the_new_pool_but_keeps_engine_and_metrics(tmp_path: Path) -> None:
    path = tmp_path / "supervisor.toml"
    path.write_text('[supervisor]\nhandlers = ["a"]\nworkers = 2\n')
    current = load_config(path)
    path.write_text(
        '[engine]\nurl = "http://elsewhere:1"\n[supervisor]\nhandlers = ["a"]\nworkers = 5\n'
    )
    new = reload_config(current, 3, require_handlers=True)
    assert new is not None
    assert new.supervisor.workers == 5
    assert new.engine == current.engine


def test_a_worker_dead_while_booting_is_a_boot_failure_and_one_running_a_job_fails_it() -> None:
    booting, busy = make_slot(1, SlotState.BOOTING), idle_slot(2)
    intake, _ = intake_with(booting, busy)
    results, stops = helpers(intake)
    life = WorkerLife(intake.pool, stops, intake.stats)
    booting.process.exitcode = 3  # type: ignore[attr-defined]
    assert (
        life.on_exit(booting, draining=False) == "worker exited with status 3 before it was ready"
    )
    running(intake, busy, "j1", 100.0)
    busy.process.exitcode = -9  # type: ignore[attr-defined]
    assert life.on_exit(busy, draining=False) is None
    entry = intake.ledger.get("j1")
    assert entry is not None and entry.state is JobState.REPORTING
    assert results.desk.queued
    assert intake.stats.restart_counts() == {("crash", "a"): 1}
    assert len(intake.pool) == 0


def test_a_stale_job_is_dropped_and_its_worker_cancelled_first() -> None:
    busy = idle_slot(1)
    intake, source = intake_with(busy)
    _, stops = helpers(intake)
    running(intake, busy, "j1", 100.0)
    entry = intake.ledger.get("j1")
    assert entry is not None
    stops.stop_running(busy, entry, StopJob("j1", "stale", "cancelled", "instance_cancelled"), 5.0)
    assert "j1" not in intake.ledger
    assert source.settled == [("j1", True)]
    assert intake.stats.stale_jobs == 1
    assert (busy.state, busy.term_at, busy.exit_reason) == (SlotState.STOPPING, 6.0, "stale")
