"""The arbiter's main loop, one tick at a time, the gunicorn way.

A real ``Supervisor`` with its process start, job source and engine client
injected (``unit.fakes.supervisor_rig``): the "workers" are stand-in
processes with real channels and real sentinels (the test sends their
messages and ends them), the source is answered by the test, and the real
reporter threads deliver to a client that records what it is sent. Signals
are real: sent to this process, recorded by the supervisor's handlers, acted
on by the next tick. No test sleeps: each ``tick`` waits on the loop's own
wait set until an event or its deadline.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from unit.fakes import SupervisorRig, job, supervisor_rig
from workflow_sdk.supervisor.loop.ledger import JobState
from workflow_sdk.supervisor.loop.phase import Phase
from workflow_sdk.supervisor.loop.slots import SlotState
from workflow_sdk.supervisor.worker.process_setup import DUMP_SIGNAL
from workflow_sdk.supervisor.worker.protocol import RunJob


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SupervisorRig]:
    with supervisor_rig(tmp_path, monkeypatch, workers=2) as started:
        yield started


def run_jobs(rig: SupervisorRig, number: int) -> list[str]:
    """The ids of the jobs the parent sent to worker ``number`` since the last look."""
    return [m.context["id"] for m in rig.worker(number).received() if isinstance(m, RunJob)]


def dispatched(rig: SupervisorRig, *job_ids: str) -> None:
    """Answer the poll out with ``job_ids``; tick until every one runs."""
    rig.tick_until(lambda: rig.source.busy, "a poll")
    rig.source.answer([job(j) for j in job_ids])

    def running() -> bool:
        entries = [rig.sup.ledger.get(j) for j in job_ids]
        return all(e is not None and e.state is JobState.RUNNING for e in entries)

    rig.tick_until(running, f"{job_ids} running")


# -- start and one tick ------------------------------------------------------------


def test_start_starts_the_pool_through_the_injected_starter_and_polls_nothing_yet(
    rig: SupervisorRig,
) -> None:
    assert [w.spec.number for w in rig.starter.started] == [1, 2]
    assert rig.starter.started[0].spec.handlers == ("fakes_handlers:registry",)
    assert all(s.state is SlotState.BOOTING for s in rig.sup.pool.slots.values())
    deadline = rig.sup.next_deadline(time.monotonic())
    rig.sup.tick()  # nothing happens: the tick returns at its deadline
    assert rig.opened_with == [] and rig.source.requests == []
    assert time.monotonic() >= deadline - 0.01


def test_one_tick_takes_a_ready_worker_opens_the_source_and_polls_for_it(
    rig: SupervisorRig,
) -> None:
    rig.worker(1).ready("a", "b")
    rig.sup.tick()
    assert rig.sup.pool.slots[1].state is SlotState.IDLE
    assert rig.sup.pool.slots[1].job_types == frozenset({"a", "b"})
    assert rig.opened_with == [("a", "b")], "the source opens with the first ready worker"
    assert rig.source.requests == [(1, ("a", "b"), 0)], "one job per idle worker"


def test_a_polled_job_runs_and_its_completion_is_reported_then_released(
    rig: SupervisorRig,
) -> None:
    rig.ready_all()
    dispatched(rig, "j1")
    assert run_jobs(rig, 1) + run_jobs(rig, 2) == ["j1"]
    slot = next(s for s in rig.sup.pool.slots.values() if s.job is not None)
    rig.worker(slot.number).done("j1")
    rig.tick_until(lambda: "j1" not in rig.sup.ledger, "j1 released")
    assert rig.client.completed == ["j1"] and rig.client.failed == []
    assert rig.source.settled == [("j1", True)], "done for good (a record would commit)"
    assert (slot.state, slot.job, slot.jobs_done) == (SlotState.IDLE, None, 1)
    assert rig.sup.stats.jobs_succeeded == 1
    assert rig.sup.claim_policy.average("a") is not None, "its handler time is measured"


def test_a_worker_that_dies_during_a_job_fails_it_retryable_and_is_replaced(
    rig: SupervisorRig,
) -> None:
    rig.ready_all()
    dispatched(rig, "j1")
    slot = next(s for s in rig.sup.pool.slots.values() if s.job is not None)
    rig.worker(slot.number).process.exit(-signal.SIGKILL)
    rig.tick_until(lambda: rig.client.failed, "the fail reported")
    assert rig.client.failed == [("j1", True)]
    assert rig.sup.pool.slots[slot.number] is not slot, "a new worker in its slot"
    assert len(rig.starter.started) == 3
    assert rig.sup.stats.restart_counts() == {("crash", "a"): 1}


def test_a_result_for_a_job_already_decided_is_ignored(rig: SupervisorRig) -> None:
    rig.ready_all()
    rig.worker(1).done("never-sent")
    rig.sup.tick()
    assert rig.sup.pool.slots[1].state is SlotState.IDLE
    assert rig.sup.stats.jobs_succeeded == 0 and not rig.sup.desk.queued


def test_a_worker_that_cannot_be_started_is_tried_again_next_tick(rig: SupervisorRig) -> None:
    rig.ready_all()
    rig.starter.fail_next = 1  # the fork server is gone: the next start fails
    rig.sup.handle_scale(+1)
    rig.sup.tick()
    assert len(rig.starter.started) == 2 and len(rig.sup.pool) == 2
    rig.tick_until(lambda: len(rig.sup.pool) == 3, "the worker started on a later tick")
    assert rig.sup.phase is Phase.RUNNING, "one failed start is no reason to stop"


# -- the next deadline ---------------------------------------------------------------


def test_after_an_empty_answer_the_next_deadline_is_the_poll_interval(rig: SupervisorRig) -> None:
    rig.ready_all()
    rig.tick_until(lambda: rig.source.busy, "a poll")
    rig.source.answer([])
    rig.tick_until(lambda: not rig.source.busy, "the answer taken")
    now = time.monotonic()
    poll_at = rig.sup.intake.next_poll_at
    assert poll_at == pytest.approx(now + 0.5, abs=0.2), "poll_interval = 0.5"
    # Due by then (earlier only for a skipped publish, at most 0.1 s ahead).
    assert now < rig.sup.next_deadline(now) <= poll_at
    rig.tick_until(lambda: rig.source.busy, "the next poll, at its time")
    assert rig.sup.intake.requested_at >= poll_at, "not before its time"


def test_a_running_jobs_time_limit_is_the_next_deadline_and_ends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = "[job_types.a]\ntimeout = 0.3\n"
    with supervisor_rig(tmp_path, monkeypatch, workers=1, extra=extra) as rig:
        rig.ready_all()
        dispatched(rig, "j1")
        entry = rig.sup.ledger.get("j1")
        assert entry is not None and entry.timeout_at is not None
        assert rig.sup.next_deadline(time.monotonic()) <= entry.timeout_at
        rig.tick_until(lambda: rig.client.failed, "the timed-out job's fail")
        assert rig.client.failed == [("j1", True)]
        slot = rig.sup.pool.slots[1]
        assert DUMP_SIGNAL in slot.signals_sent and slot.retiring, "stacks dumped, replaced"
        assert slot.term_at is not None and signal.SIGTERM not in slot.signals_sent
        # Read the channel, dump, kill: SIGTERM once the dump had its grace.
        rig.tick_until(lambda: signal.SIGTERM in slot.signals_sent, "SIGTERM after the dump")
        assert slot.kill_at is not None


def test_a_passed_poll_time_with_nothing_to_poll_for_does_not_spin_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker busy, the poll time passed: no deadline at the poll time
    (the loop would wake at once, again and again)."""
    with supervisor_rig(tmp_path, monkeypatch, workers=1) as rig:
        rig.ready_all()
        dispatched(rig, "j1")
        now = time.monotonic()
        assert rig.sup.intake.next_poll_at <= now
        assert rig.sup.next_deadline(now) > now


# -- signals ---------------------------------------------------------------------------


def test_sigttin_and_sigttou_resize_the_pool(rig: SupervisorRig) -> None:
    rig.ready_all()
    os.kill(os.getpid(), signal.SIGTTIN)  # recorded by the handler; the tick acts
    rig.tick_until(lambda: len(rig.starter.started) == 3, "a third worker")
    assert rig.sup.pool.target == 3 and rig.sup.ledger.limit == 6
    os.kill(os.getpid(), signal.SIGTTOU)
    rig.tick_until(lambda: rig.sup.pool.target == 2, "the pool back to 2")
    rig.tick_until(lambda: any(s.retiring for s in rig.sup.pool.slots.values()), "one retired")


def test_sigusr1_is_logged_and_ignored(
    rig: SupervisorRig, caplog: pytest.LogCaptureFixture
) -> None:
    """Pins: SIGUSR1 (gunicorn's "reopen the logs", sent by logrotate recipes
    written for it) killed the supervisor, its default action. Now it is
    recorded, logged once per signal, and changes nothing: a running job
    keeps its worker, no worker starts or stops."""
    rig.ready_all()
    dispatched(rig, "j1")
    started = len(rig.starter.started)
    caplog.set_level(logging.WARNING, "workflow_sdk.supervisor")
    os.kill(os.getpid(), signal.SIGUSR1)
    rig.tick_until(lambda: "SIGUSR1 ignored" in caplog.text, "the warning")
    assert rig.sup.phase is Phase.RUNNING
    assert len(rig.starter.started) == started
    assert [s.job.job_id for s in rig.sup.pool.slots.values() if s.job is not None] == ["j1"]
    assert not any(s.retiring for s in rig.sup.pool.slots.values())


def test_sigterm_drains_and_a_second_one_stops_at_once(rig: SupervisorRig) -> None:
    rig.ready_all()
    dispatched(rig, "j1")
    busy = next(s for s in rig.sup.pool.slots.values() if s.job is not None)
    idle = next(s for s in rig.sup.pool.slots.values() if s is not busy)
    os.kill(os.getpid(), signal.SIGTERM)
    rig.tick_until(lambda: rig.sup.phase is Phase.DRAINING, "the drain")
    assert idle.state is SlotState.IDLE, "kept for the poll in flight (its jobs need a worker)"
    rig.source.answer([])
    rig.tick_until(lambda: idle.state is SlotState.STOPPING, "the idle worker told to go")
    assert rig.worker(idle.number).closed_by_parent
    assert busy.job is not None, "the running job may finish"
    os.kill(os.getpid(), signal.SIGTERM)
    rig.tick_until(lambda: rig.sup.phase is Phase.DONE, "the stop")
    assert signal.SIGTERM in busy.signals_sent
    assert rig.source.settled == [("j1", False)], "left to be delivered again"
    assert rig.sup.stats.abandoned == 1


def test_sighup_replaces_the_workers_one_at_a_time(rig: SupervisorRig) -> None:
    rig.ready_all()
    os.kill(os.getpid(), signal.SIGHUP)
    rig.tick_until(lambda: len(rig.starter.started) == 3, "the reload's first new worker")
    assert rig.sup.phase is Phase.RELOADING
    new = rig.starter.started[2]
    new.ready()
    rig.tick_until(lambda: rig.sup.pool.slots[1].retiring, "an old worker retired")
    assert rig.sup.pool.slots[2].retiring is False, "one at a time"
    rig.worker(1).process.exit(0)
    rig.tick_until(lambda: len(rig.starter.started) == 4, "the second new worker")
    rig.starter.started[3].ready()
    rig.tick_until(lambda: rig.sup.pool.slots[2].retiring, "the other old worker retired")
    rig.worker(2).process.exit(0)
    rig.tick_until(lambda: rig.sup.phase is Phase.RUNNING, "the reload's end")
    assert len(rig.sup.pool) == 2


def test_signals_other_than_a_stop_are_ignored_while_draining(rig: SupervisorRig) -> None:
    rig.ready_all()
    rig.sup.request_stop()
    rig.tick_until(lambda: rig.sup.phase is Phase.DRAINING, "the drain")
    os.kill(os.getpid(), signal.SIGTTIN)
    rig.sup.tick()
    assert rig.sup.pool.target == 2 and len(rig.starter.started) == 2
