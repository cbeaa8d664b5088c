"""Every kill of a busy worker first reads what it already sent (issue 16, bug 6).

A worker can send its job's result and be judged a moment later, before
the parent read its channel: over the hard memory limit at the next RSS
sample, past its time limit, stale, its lease lost, still running at the
drain's deadline, or at a stop-now. The result already sent is then the
job's outcome: it is reported (a complete, never a retryable fail that
would run the job again), and the worker is not killed for that job.

A real ``Supervisor`` (``unit.fakes.supervisor_rig``): its worker is a
stand-in process with a real channel, on which the test sends the worker's
``JobDone``; its signals go nowhere and are recorded in ``signals_sent``;
the real reporter threads deliver to an engine client that records them.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from unit.fakes import MIB, StandInPs, StartedWorker, SupervisorRig, job, supervisor_rig
from workflow_sdk.supervisor import Supervisor
from workflow_sdk.supervisor.loop import lifecycle
from workflow_sdk.supervisor.loop.slots import SlotState, WorkerSlot
from workflow_sdk.supervisor.loop.watch import StopJob
from workflow_sdk.supervisor.worker.main import CANCEL_SIGNAL
from workflow_sdk.supervisor.worker.process_setup import DUMP_SIGNAL
from workflow_sdk.supervisor.worker.protocol import RunJob

STOP_SIGNALS = {CANCEL_SIGNAL, DUMP_SIGNAL, signal.SIGTERM, signal.SIGKILL}


@dataclass
class Rig:
    harness: SupervisorRig
    slot: WorkerSlot
    worker: StartedWorker

    @property
    def sup(self) -> Supervisor:
        return self.harness.sup

    def sent_result(self, *, succeeded: bool = True) -> None:
        """The worker sent its job's outcome; the parent has not read it yet."""
        self.worker.done("j1", succeeded=succeeded, rss=150 * MIB)

    def reported(self) -> list[tuple[str, bool]]:
        """What reached the engine once the reporters are done."""
        self.sup.desk.hand_over()
        assert self.sup.desk.wait_idle(5.0)
        client = self.harness.client
        return [(j, True) for j in client.completed] + [(j, False) for j, _ in client.failed]


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setattr(lifecycle, "process_handle", lambda pid: StandInPs(200 * MIB))
    extra = "max_memory_hard_mb = 100\n[job_types.a]\ntimeout = 5\n"
    with supervisor_rig(tmp_path, monkeypatch, workers=1, extra=extra) as harness:
        harness.ready_all()
        harness.tick_until(lambda: harness.source.requests, "a poll")
        harness.source.answer([job("j1")])
        slot = harness.sup.pool.slots[1]
        harness.tick_until(lambda: slot.job is not None, "j1 dispatched")
        worker = harness.worker(1)
        assert [m.context["id"] for m in worker.received() if isinstance(m, RunJob)] == ["j1"]
        yield Rig(harness, slot, worker)


def memory_kill(rig: Rig) -> None:
    rig.sup.life.sample_memory(time.monotonic(), rig.sup.config.supervisor)


def time_limit(rig: Rig) -> None:
    entry = rig.slot.job
    assert entry is not None
    rig.sup.stopper.time_out(rig.slot, entry, time.monotonic() + 6)


def stale(rig: Rig) -> None:
    entry = rig.slot.job
    assert entry is not None
    stop = StopJob("j1", "stale", "instance cancelled", "instance_cancelled")
    rig.sup.stopper.stop_running(rig.slot, entry, stop, time.monotonic())


def lease_lost(rig: Rig) -> None:
    entry = rig.slot.job
    assert entry is not None
    stop = StopJob("j1", "lease_lost", "409")
    rig.sup.stopper.stop_running(rig.slot, entry, stop, time.monotonic())


def drain_deadline(rig: Rig) -> None:
    now = time.monotonic()
    rig.sup.drain.begin("SIGTERM", now, 2.0)
    rig.sup.drain.step(now + 3)


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
    # Memory: SIGKILL at once; time limit: the stacks first, SIGTERM after DUMP_GRACE.
    assert rig.slot.signals_sent & {DUMP_SIGNAL, signal.SIGKILL}


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
    now = time.monotonic()
    rig.sup.intake.claim(job("j2"), now, now, leased=True)
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
    rig.sup.stopper.abandon_all(time.monotonic())
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
    assert rig.reported() == [], "withheld, not sent"
    assert rig.sup.stats.reports["withheld"] == 1
