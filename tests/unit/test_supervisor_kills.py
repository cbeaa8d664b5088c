"""Every kill of a busy worker first reads what it already sent (issue 16, bug 6).

A worker can send its job's result and be judged a moment later, before
the parent read its channel: over the hard memory limit at the next RSS
sample, past its time limit, stale, its lease lost, still running at the
drain's deadline, or at a stop-now. The result already sent is then the
job's outcome: it is reported (a complete, never a retryable fail that
would run the job again), and the worker is not killed for that job.

The supervisor's own objects, with a real pipe holding the worker's
``JobDone``; the worker process is a stand-in whose signals go nowhere
(``pid = None``) and are recorded in ``signals_sent``.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from unit.test_supervisor_intake import StandInSource, job
from unit.test_worker_pool import StandInProcess
from workflow_sdk.handler.outcome import Outcome
from workflow_sdk.supervisor.config import load_config
from workflow_sdk.supervisor.loop.arbiter import Supervisor
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot
from workflow_sdk.supervisor.loop.watch import StopJob
from workflow_sdk.supervisor.worker.main import CANCEL_SIGNAL
from workflow_sdk.supervisor.worker.protocol import JobDone

NOW = 100.0
MIB = 2**20
STOP_SIGNALS = {CANCEL_SIGNAL, signal.SIGTERM, signal.SIGKILL}


@dataclass
class StandInMemory:
    rss: int


class StandInPs:
    """What ``sample_rss`` reads of a worker: its RSS."""

    def __init__(self, rss: int) -> None:
        self.rss = rss

    def memory_info(self) -> StandInMemory:
        return StandInMemory(self.rss)


class Recorder:
    """A reporter that keeps what it is handed."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.lease_ends: list[float] = []

    def submit(self, outcome: Outcome, lease_end: float, check: Any, fate: Any = None) -> None:
        self.outcomes.append(outcome)
        self.lease_ends.append(lease_end)


@dataclass
class Rig:
    sup: Supervisor
    slot: WorkerSlot
    #: the worker's end of the channel
    worker: Connection

    def sent_result(self, *, succeeded: bool = True) -> None:
        """The worker sent its job's outcome; the parent has not read it yet."""
        if succeeded:
            outcome = Outcome("j1", "a", True, {"total": 3}, duration=0.5)
        else:
            outcome = Outcome.failure("j1", "a", "card declined", retryable=True)
        self.worker.send(JobDone(outcome, 150 * MIB))

    def reported(self) -> list[tuple[str, bool]]:
        return [(o.job_id, o.succeeded) for o in self.handed_over().outcomes]

    def handed_over(self) -> Recorder:
        """What the reporter threads get from the desk (lease ends included)."""
        recorder = Recorder()
        self.sup.reports.flush(recorder)  # type: ignore[arg-type]
        return recorder


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    path = tmp_path / "supervisor.toml"
    path.write_text(
        '[supervisor]\nhandlers = ["h"]\nworkers = 1\n'
        "max_memory_hard_mb = 100\nstale_check_interval = 0\n"
        "[job_types.a]\ntimeout = 5\n"
    )
    sup = Supervisor(load_config(path))
    sup.intake.source = StandInSource()  # type: ignore[assignment]
    parent, worker = multiprocessing.Pipe()
    slot = WorkerSlot(
        slot=1,
        process=StandInProcess(),  # type: ignore[arg-type]
        conn=parent,
        boot_deadline=60.0,
        state=SlotState.IDLE,
        job_types=frozenset({"a"}),
    )
    slot.ps = StandInPs(200 * MIB)  # type: ignore[assignment]
    sup.pool.add(slot)
    sup.intake.claim(job("j1"), NOW, NOW, leased=True)
    slot.job = sup.ledger.start("j1", slot.slot, NOW, 5.0)
    slot.state = SlotState.BUSY
    try:
        yield Rig(sup, slot, worker)
    finally:
        parent.close()
        worker.close()
        sup._waitset.close()


def memory_kill(rig: Rig) -> None:
    rig.sup.life.sample_memory(NOW + 1, rig.sup.config.supervisor)


def time_limit(rig: Rig) -> None:
    entry = rig.slot.job
    assert entry is not None
    rig.sup.stops.time_out(rig.slot, entry, NOW + 6)


def stale(rig: Rig) -> None:
    entry = rig.slot.job
    assert entry is not None
    stop = StopJob("j1", "stale", "instance cancelled", "instance_cancelled")
    rig.sup.stops.stop_running(rig.slot, entry, stop, NOW + 1)


def lease_lost(rig: Rig) -> None:
    entry = rig.slot.job
    assert entry is not None
    rig.sup.stops.stop_running(rig.slot, entry, StopJob("j1", "lease_lost", "409"), NOW + 1)


def drain_deadline(rig: Rig) -> None:
    rig.sup.drain.begin("SIGTERM", NOW, 2.0)
    rig.sup.drain.step(NOW + 3)


KILL_PATHS: dict[str, Callable[[Rig], None]] = {
    "memory": memory_kill,
    "time_limit": time_limit,
    "stale": stale,
    "lease_lost": lease_lost,
    "drain_deadline": drain_deadline,
}


@pytest.mark.parametrize("kill", KILL_PATHS.values(), ids=KILL_PATHS.keys())
def test_a_result_already_on_the_pipe_is_reported_and_the_worker_is_not_killed_for_it(
    rig: Rig, kill: Callable[[Rig], None]
) -> None:
    """Pins: JobDone sent -> the kill decides before the parent read the
    pipe -> the success was dropped and a retryable fail sent (memory: the
    job ran again; stale, lease lost, drain: nothing sent, run again)."""
    rig.sent_result()
    kill(rig)
    assert rig.reported() == [("j1", True)]
    assert rig.slot.job is None
    assert not (rig.slot.signals_sent & STOP_SIGNALS)
    assert rig.sup.stats.jobs_succeeded == 1 and rig.sup.stats.jobs_failed == 0


@pytest.mark.parametrize("kill", [memory_kill, time_limit], ids=["memory", "time_limit"])
def test_with_nothing_on_the_pipe_the_job_is_failed_and_its_worker_stopped(
    rig: Rig, kill: Callable[[Rig], None]
) -> None:
    kill(rig)
    assert rig.reported() == [("j1", False)]
    assert rig.slot.signals_sent & {signal.SIGTERM, signal.SIGKILL}


def test_a_worker_over_the_hard_limit_whose_job_had_finished_is_replaced_not_killed(
    rig: Rig,
) -> None:
    rig.sent_result()
    memory_kill(rig)
    assert rig.slot.retiring and rig.slot.exit_reason == "recycle_memory"
    assert rig.slot.state is SlotState.STOPPING and rig.slot.conn.closed
    assert rig.slot.exit_by is not None, "escalated if it does not exit"


def test_a_result_read_before_a_kill_dispatches_no_new_job_to_that_worker(rig: Rig) -> None:
    """The worker may be about to go (over the hard limit): a job claimed
    ahead waits for the tick's own dispatch, after the stops."""
    rig.sup.intake.claim(job("j2"), NOW, NOW, leased=True)
    rig.sent_result()
    time_limit(rig)
    assert rig.slot.job is None and rig.slot.state is SlotState.IDLE
    assert rig.sup.ledger.claimed()[0].job_id == "j2"


def test_a_worker_whose_result_was_read_at_the_drain_s_deadline_is_told_to_exit_at_once(
    rig: Rig,
) -> None:
    rig.sent_result()
    drain_deadline(rig)
    assert rig.slot.state is SlotState.STOPPING and rig.slot.conn.closed


def test_a_stop_now_still_stops_the_worker_but_reports_the_result_it_had_sent(
    rig: Rig,
) -> None:
    rig.sent_result()
    rig.sup.stops.abandon_all(NOW + 1)
    assert rig.reported() == [("j1", True)]
    assert signal.SIGTERM in rig.slot.signals_sent
    assert rig.sup.stats.abandoned == 0


def test_a_fail_already_sent_when_the_lease_is_lost_goes_to_the_lease_rule_as_past_its_lease(
    rig: Rig,
) -> None:
    """Pins: a fail read from the pipe as the lease-lost verdict is carried
    out must not go out (the job may run elsewhere): the reporter gets the
    lease as ended, so its lease rule withholds the fail."""
    rig.sent_result(succeeded=False)
    lease_lost(rig)
    recorder = rig.handed_over()
    assert [(o.job_id, o.succeeded) for o in recorder.outcomes] == [("j1", False)]
    assert recorder.lease_ends == [NOW + 1]
