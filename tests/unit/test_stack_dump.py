"""A worker stopped for its time limit or at the drain's deadline first dumps
its threads' stacks (issue 18): read its channel, send ``DUMP_SIGNAL``,
SIGTERM ``DUMP_GRACE`` later, SIGKILL after that.

Slots with stand-in processes (their signals are recorded, not sent); the
dump itself (``faulthandler`` in a real worker) is checked in
tests/process/test_worker_setup.py.
"""

from __future__ import annotations

import math
import signal

from unit.fakes import desk_for, intake_with, make_slot, running, stopper_for
from workflow_sdk.supervisor.loop.drain import Drain
from workflow_sdk.supervisor.loop.slots import Overdue, SlotState
from workflow_sdk.supervisor.loop.stops import ABANDON_GRACE, DUMP_GRACE, KILL_GRACE
from workflow_sdk.supervisor.worker.process_setup import DUMP_SIGNAL


def test_the_dump_comes_first_then_sigterm_then_sigkill() -> None:
    slot = make_slot(1, SlotState.BUSY)
    slot.dump_then_terminate(DUMP_SIGNAL, 100.0, DUMP_GRACE)
    assert slot.signals_sent == {DUMP_SIGNAL}
    assert slot.state is SlotState.STOPPING and slot.retiring
    assert slot.next_deadline() == 100.0 + DUMP_GRACE
    assert slot.escalate(100.0 + DUMP_GRACE / 2, KILL_GRACE) is None
    assert slot.escalate(100.0 + DUMP_GRACE, KILL_GRACE) is Overdue.TERM
    assert signal.SIGTERM in slot.signals_sent
    assert slot.kill_at == 100.0 + DUMP_GRACE + KILL_GRACE
    assert slot.escalate(slot.kill_at, KILL_GRACE) is Overdue.KILL
    assert signal.SIGKILL in slot.signals_sent


def test_a_timed_out_job_is_failed_at_once_and_its_worker_dumps_first() -> None:
    slot = make_slot(1, SlotState.IDLE, job_types=frozenset({"a"}))
    intake, _ = intake_with(slot)
    desk, reporter = desk_for(intake)
    stopper = stopper_for(intake, desk)
    entry = running(intake, slot, "j1", 10.0)
    stopper.time_out(slot, entry, 20.0)
    assert slot.signals_sent == {DUMP_SIGNAL}
    desk.hand_over()
    (handed,) = reporter.handed
    assert handed.outcome.error_message.endswith(
        "(worker pid 0 killed; the stacks of its threads are logged when it exits)"
    )
    assert slot.term_at == 20.0 + DUMP_GRACE


def test_the_drain_dumps_a_job_still_running_at_its_deadline() -> None:
    slot = make_slot(1, SlotState.IDLE, job_types=frozenset({"a"}))
    intake, _ = intake_with(slot)
    desk, _ = desk_for(intake)
    stopper = stopper_for(intake, desk)
    running(intake, slot, "j1", 10.0)
    drain = Drain(intake.pool, intake.ledger, intake, stopper, desk=desk, stats=intake.stats)
    drain.begin("SIGTERM", 10.0, 5.0)
    drain.step(15.0)
    assert slot.signals_sent == {DUMP_SIGNAL}
    assert slot.escalate(15.0 + DUMP_GRACE, KILL_GRACE) is Overdue.TERM
    # The drain's own grace between SIGTERM and SIGKILL, as before the dump.
    assert slot.kill_at == 15.0 + DUMP_GRACE + ABANDON_GRACE
    assert intake.stats.abandoned == 1
    assert not math.isinf(slot.kill_at)
