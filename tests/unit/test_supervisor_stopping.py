"""The supervisor's drain, SIGHUP and worker-exit verdicts, without a fork.

Slots hold stand-in processes whose signals go nowhere (``pid = None``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
from pathlib import Path

import pytest

from unit.fakes import desk_for, idle_slot, intake_with, job, make_slot, running, stopper_for
from workflow_sdk.supervisor.config import SupervisorConfig, load_config
from workflow_sdk.supervisor.loop.drain import Drain, DrainStep
from workflow_sdk.supervisor.loop.intake import Intake
from workflow_sdk.supervisor.loop.ledger import JobState
from workflow_sdk.supervisor.loop.lifecycle import WorkerLifecycle
from workflow_sdk.supervisor.loop.reports import ReportDesk
from workflow_sdk.supervisor.loop.slots import EXIT_GRACE, Overdue, SlotState, WorkerSlot
from workflow_sdk.supervisor.loop.stops import ABANDON_GRACE, CANCEL_GRACE, KILL_GRACE, Stopper
from workflow_sdk.supervisor.loop.watch import StopJob
from workflow_sdk.supervisor.reload import reload_config
from workflow_sdk.supervisor.worker.main import CANCEL_SIGNAL
from workflow_sdk.supervisor.worker.protocol import Ready


def helpers(intake: Intake) -> tuple[ReportDesk, Stopper]:
    desk, _ = desk_for(intake)
    return desk, stopper_for(intake, desk)


def drain_of(intake: Intake) -> Drain:
    desk, stopper = helpers(intake)
    return Drain(intake.pool, intake.ledger, intake, stopper, desk=desk, stats=intake.stats)


def test_a_drain_keeps_idle_workers_while_a_poll_is_out() -> None:
    idle = idle_slot(1)
    intake, source = intake_with(idle)
    source.busy = True
    drain = drain_of(intake)
    drain.begin("SIGTERM", 100.0, 30.0)
    assert drain.step(100.0) is DrainStep.WAIT
    assert idle.state is SlotState.IDLE  # its poll's jobs would have no worker
    assert drain.step(130.0) is DrainStep.WAIT  # for the poll's answer, still
    assert idle.state is SlotState.STOPPING, "but its exit does not wait past the drain's time"


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
    assert drain.step(131.0) is DrainStep.DONE


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
    desk, stops = helpers(intake)
    life = WorkerLifecycle(intake.pool, stops, intake.stats)
    booting.process.exitcode = 3  # type: ignore[attr-defined]
    assert (
        life.on_exit(booting, draining=False) == "worker exited with status 3 before it was ready"
    )
    running(intake, busy, "j1", 100.0)
    busy.process.exitcode = -9  # type: ignore[attr-defined]
    assert life.on_exit(busy, draining=False) is None
    entry = intake.ledger.get("j1")
    assert entry is not None and entry.state is JobState.REPORTING
    assert desk.queued
    assert intake.stats.restart_counts() == {("crash", "a"): 1}
    assert len(intake.pool) == 0


def test_a_stale_job_is_dropped_and_its_worker_cancelled_first() -> None:
    busy = idle_slot(1)
    intake, source = intake_with(busy)
    _, stops = helpers(intake)
    running(intake, busy, "j1", 100.0)
    entry = intake.ledger.get("j1")
    assert entry is not None
    stop = StopJob("j1", "stale", "interrupted by boundary timer", "step_failed")
    stops.stop_running(busy, entry, stop, 5.0)
    assert "j1" not in intake.ledger
    assert source.settled == [("j1", True)]
    assert intake.stats.stale_jobs == 1
    assert (busy.state, busy.term_at, busy.exit_reason) == (SlotState.STOPPING, 6.0, "stale")


def test_a_stale_job_of_a_cancelled_instance_is_retired_with_an_empty_completion() -> None:
    """Pins (found by the chaos suite): instance cancelled while its job runs
    -> the job was stopped and dropped with nothing reported -> it stayed
    locked, and the engine handed it out again after every lease, for ever.
    Now an empty completion is queued; the job stays held until its answer."""
    busy = idle_slot(1)
    intake, source = intake_with(busy)
    desk, stops = helpers(intake)
    running(intake, busy, "j1", 100.0)
    entry = intake.ledger.get("j1")
    assert entry is not None
    stops.stop_running(busy, entry, StopJob("j1", "stale", "cancelled", "instance_cancelled"), 5.0)
    assert "j1" in intake.ledger
    assert source.settled == []
    assert desk.queued
    ((outcome, queued_entry),) = desk._outbox
    assert (outcome.job_id, outcome.succeeded, outcome.variables, outcome.retire) == (
        "j1",
        True,
        {},
        True,
    )
    assert queued_entry is entry
    assert intake.stats.stale_jobs == 1
    assert (busy.state, busy.term_at, busy.exit_reason) == (SlotState.STOPPING, 6.0, "stale")


def test_a_retired_job_is_reporting_not_running_so_nothing_acts_on_its_slot_again() -> None:
    """Pins (found by the full chaos run, Kafka mode): the retired job stayed
    RUNNING in the ledger while its retirement was reported, so its stale
    checks and time limit went on, and the next stale verdict stopped the
    worker now in its slot, which ran another job: that job was left RUNNING
    with no worker for good, the ledger filled up, and the supervisor stopped
    fetching (partitions stalled, instances never ran; a second retirement
    overlapped the first)."""
    busy = idle_slot(1)
    intake, _ = intake_with(busy)
    _, stops = helpers(intake)
    running(intake, busy, "j1", 100.0)
    entry = intake.ledger.get("j1")
    assert entry is not None
    stops.stop_running(busy, entry, StopJob("j1", "stale", "cancelled", "instance_cancelled"), 5.0)
    assert intake.ledger.running() == []
    assert entry.state is JobState.REPORTING and entry.slot is None
    assert intake.ledger.stale_checks_due(math.inf) == []
    assert intake.ledger.timed_out(math.inf) == []


# -- every worker told to go has a deadline (issue 16, bug 4) ----------------------


def escalation_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_closed_channel_sets_an_exit_deadline_and_the_escalation_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Pins: recycled (channel closed) -> the worker never exits -> nothing
    ever signalled it. Now: SIGTERM at its exit deadline with one WARNING
    naming the reason, SIGKILL KILL_GRACE later without a second one."""
    idle = idle_slot(1)
    intake, _ = intake_with(idle)
    _, stops = helpers(intake)
    idle.retire("recycle_jobs", 10.0)
    assert (idle.state, idle.conn.closed, idle.exit_by) == (
        SlotState.STOPPING,
        True,
        10.0 + EXIT_GRACE,
    )
    assert stops.next_deadline() == 10.0 + EXIT_GRACE
    caplog.set_level(logging.WARNING, "workflow_sdk.supervisor")
    stops.enforce_slots(10.0 + EXIT_GRACE - 0.1, 60.0)
    assert idle.signals_sent == set()
    stops.enforce_slots(10.0 + EXIT_GRACE, 60.0)
    assert idle.signals_sent == {signal.SIGTERM}
    assert (idle.exit_by, idle.kill_at) == (None, 10.0 + EXIT_GRACE + KILL_GRACE)
    (warning,) = escalation_warnings(caplog)
    assert "worker-1" in warning and "did not exit" in warning and "(recycle_jobs)" in warning
    stops.enforce_slots(10.0 + EXIT_GRACE + KILL_GRACE, 60.0)
    assert signal.SIGKILL in idle.signals_sent
    assert len(escalation_warnings(caplog)) == 1, "logged once"
    assert stops.next_deadline() == float("inf"), "nothing left to do"


def test_a_cancelled_worker_gets_sigterm_quietly_and_a_warning_only_at_sigkill(
    caplog: pytest.LogCaptureFixture,
) -> None:
    busy = idle_slot(1)
    intake, _ = intake_with(busy)
    _, stops = helpers(intake)
    running(intake, busy, "j1", 100.0)
    entry = intake.ledger.get("j1")
    assert entry is not None
    stops.stop_running(busy, entry, StopJob("j1", "lease_lost", "409"), 100.0)
    caplog.set_level(logging.WARNING, "workflow_sdk.supervisor")
    stops.enforce_slots(100.0 + CANCEL_GRACE, 60.0)
    assert signal.SIGTERM in busy.signals_sent and escalation_warnings(caplog) == []
    stops.enforce_slots(100.0 + CANCEL_GRACE + KILL_GRACE, 60.0)
    assert signal.SIGKILL in busy.signals_sent
    (warning,) = escalation_warnings(caplog)
    assert "still alive after SIGTERM" in warning


def test_overdue_names_the_latest_step_due() -> None:
    slot = idle_slot(1)
    assert slot.overdue(1e9) is None and slot.next_deadline() is None
    slot.close_channel(10.0)
    assert (slot.overdue(10.0), slot.overdue(10.0 + EXIT_GRACE)) == (None, Overdue.EXIT)
    slot.cancel("stale", CANCEL_SIGNAL, 10.0, 1.0)
    assert slot.overdue(11.0) is Overdue.TERM and slot.next_deadline() == 11.0
    slot.terminate(12.0, KILL_GRACE)
    assert (slot.term_at, slot.exit_by) == (None, None), "SIGTERM sent: those steps are done"
    assert slot.overdue(12.0 + KILL_GRACE) is Overdue.KILL
    slot.close_channel(13.0)
    assert slot.exit_by is None, "SIGTERM already sent: SIGKILL is next, not another SIGTERM"


def told_to_go(slot: WorkerSlot) -> bool:
    """The slot has a deadline for its next step, or was sent SIGKILL."""
    return slot.next_deadline() is not None or signal.SIGKILL in slot.signals_sent


def test_every_way_a_worker_is_told_to_go_leaves_it_a_deadline() -> None:
    recycled, trimmed_busy, drained, cancelled, slow, fat, late = (
        idle_slot(n) for n in range(1, 8)
    )
    booting, ready_late = (
        make_slot(n, SlotState.BOOTING, job_types=frozenset("a")) for n in (8, 9)
    )
    intake, _ = intake_with(
        recycled, ready_late, trimmed_busy, drained, booting, cancelled, slow, fat, late
    )
    _, stops = helpers(intake)
    life = WorkerLifecycle(intake.pool, stops, intake.stats)
    drain = drain_of(intake)
    for slot, job_id in ((trimmed_busy, "t"), (cancelled, "c"), (slow, "s"), (fat, "f")):
        running(intake, slot, job_id, 100.0)
    recycled.retire("recycle_jobs", 100.0)
    ready_late.retire("reload", 100.0)  # a reload's old worker, still booting
    life.on_ready(ready_late, Ready(1, ("a",)), SupervisorConfig())
    trimmed_busy.retire("scale", 100.0)
    assert not told_to_go(trimmed_busy), "runs its job first"
    cancelled_entry, slow_entry, fat_entry = (s.job for s in (cancelled, slow, fat))
    assert cancelled_entry is not None and slow_entry is not None and fat_entry is not None
    stops.stop_running(cancelled, cancelled_entry, StopJob("c", "stale", "gone", "x"), 101.0)
    stops.time_out(slow, slow_entry, 101.0)
    fat.sampled(900 * 2**20)
    stops.kill_for_memory(fat, fat_entry, 101.0, 500.0)
    drain.begin("SIGTERM", 102.0, 30.0)
    running(intake, late, "l", 102.0)
    drain.step(102.0)
    drain.step(200.0)  # past the drain's time: the late job is abandoned
    for slot in (recycled, ready_late, drained, booting, cancelled, slow, fat, late):
        assert slot.state is SlotState.STOPPING, slot.number
        assert told_to_go(slot), slot.number


def test_a_drain_ends_within_graceful_timeout_plus_the_escalation_whatever_workers_do() -> None:
    """Pins: SIGTERM -> idle workers' channels closed -> a worker that does
    not exit kept the drain waiting for ever. Here no worker exits by
    itself (only SIGKILL ends it), and the busy one's job ends just before
    the drain's time, the latest a worker can be told to exit."""
    idle, busy, stuck_busy = idle_slot(1), idle_slot(2), idle_slot(3)
    intake, _ = intake_with(idle, busy, stuck_busy)
    _, stops = helpers(intake)
    drain = drain_of(intake)
    running(intake, busy, "b", 100.0)
    running(intake, stuck_busy, "s", 100.0)
    graceful = 30.0
    drain.begin("SIGTERM", 100.0, graceful)
    bound = 100.0 + graceful + max(EXIT_GRACE + KILL_GRACE, ABANDON_GRACE)
    now = 100.0
    while drain.step(now) is DrainStep.WAIT:
        assert now <= bound, "the drain outlived its bound"
        now += 0.25
        if now >= 100.0 + graceful - 0.25 and busy.job is not None:
            intake.ledger.finish(busy.job.job_id, now)  # its result came in
            busy.job_done(busy.job.job_id, 0)
        stops.enforce_slots(now, 60.0)
        for slot in list(intake.pool.slots.values()):
            if signal.SIGKILL in slot.signals_sent:
                intake.pool.remove(slot)
    assert now > 100.0 + graceful, "the stuck ones were waited for"
