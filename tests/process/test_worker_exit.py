"""Workers that would not exit on their own once told to (issue 16, bug 4).

A worker is told to exit by closing its channel (recycled after its jobs,
replaced by a reload, trimmed by SIGTTOU, or at shutdown). Two things must
hold whatever its handler module does: the worker ends at once (it does not
wait for the module's non-daemon threads), and a worker that still does not
go is escalated (SIGTERM, then SIGKILL) on a deadline, so that neither the
pool nor the drain waits for it for ever.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from workflow_sdk.client.rest import RestEngineClient
from workflow_sdk.supervisor.loop.stops import EXIT_GRACE, KILL_GRACE
from workflow_sdk.testing import LocalEngine

from .conftest import SupervisorProcess, start_instances, upload_single_step, wait_for

pytestmark = pytest.mark.slow

Start = Callable[..., SupervisorProcess]

#: The drain's bound (graceful_timeout, then the escalation of a worker
#: that does not exit), and a margin for a loaded machine: a deadline to
#: wait for, not a speed to assert.
GRACEFUL = 3.0
DRAIN_BOUND = GRACEFUL + EXIT_GRACE + KILL_GRACE + 15.0
#: The warning a worker escalated after it was told to exit gets (once).
ESCALATED = "did not exit"


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def run_recycled_jobs(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start, handlers: str, n: int
) -> tuple[SupervisorProcess, list[int]]:
    """``n`` jobs on one worker replaced after every job; the pids that ran them."""
    upload_single_step(client, "exit-flow", "noop", retries=0)
    ids = start_instances(client, "exit-flow", n, {})
    sv = start_supervisor(
        workers=1,
        handlers=handlers,
        graceful_timeout=GRACEFUL,
        extra="max_jobs_per_child = 1\nmax_jobs_jitter = 0\n",
    )
    done = engine.wait_for_instances(ids, "COMPLETED", timeout=60)
    pids = [summary["variables"]["pid"] for summary in done]
    assert len(set(pids)) == n, "one worker per job"
    return sv, pids


def stop_within_bound(sv: SupervisorProcess) -> None:
    sv.signal(signal.SIGTERM)
    assert sv.wait(DRAIN_BOUND) == 0
    assert sv.workers() == []


def test_a_recycled_worker_exits_although_its_module_runs_a_non_daemon_thread(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    """Pins: job done -> worker recycled (max_jobs_per_child = 1) -> channel
    closed -> the worker returns from its loop and Python waits for the
    module's non-daemon thread for ever. Before the fix, 5 live workers after
    4 jobs, and a SIGTERM drain that never ended."""
    sv, pids = run_recycled_jobs(engine, client, start_supervisor, "sv_lingering:registry", 4)
    wait_for(lambda: all(gone(pid) for pid in pids), 30, "every recycled worker to exit")
    assert len(sv.wait_for_workers(1)) == 1
    assert ESCALATED not in sv.log(), "they exit by themselves, without a signal"
    stop_within_bound(sv)
    assert ESCALATED not in sv.log()


def test_a_worker_stuck_on_its_way_out_is_escalated_once_and_the_drain_ends(
    engine: LocalEngine, client: RestEngineClient, start_supervisor: Start
) -> None:
    """Pins: channel closed -> the worker blocks on its way out (a logging
    handler's final flush never returns) -> no deadline, nobody kills it.
    Now: past its exit deadline, SIGTERM (then SIGKILL), one WARNING naming
    the reason; the drain ends within graceful_timeout plus the escalation."""
    sv, pids = run_recycled_jobs(engine, client, start_supervisor, "sv_stuck_exit:registry", 3)
    wait_for(lambda: all(gone(pid) for pid in pids), 30, "every recycled worker to be killed")
    wait_for(lambda: sv.log().count(ESCALATED) >= 3, 10, "the escalation warnings")
    log = sv.log()
    assert log.count(ESCALATED) == 3, "once per worker"
    assert log.count("(recycle_jobs)") >= 3, log
    stop_within_bound(sv)
    log = sv.log()
    assert log.count(ESCALATED) == 4, "the last worker too, once, at shutdown"


def test_a_worker_whose_handlers_fail_to_import_exits_despite_a_non_daemon_thread(
    start_supervisor: Start, tmp_path: Path
) -> None:
    """Pins: the handler module starts a non-daemon thread, then raises ->
    the worker reports the error and waits for the thread -> the supervisor
    learns of the failure only at boot_timeout (here 300 s)."""
    (tmp_path / "thread_then_fail.py").write_text(
        "import threading\n"
        "threading.Thread(target=threading.Event().wait, daemon=False).start()\n"
        "raise RuntimeError('model file missing')\n"
    )
    sv = start_supervisor(
        workers=1,
        handlers="thread_then_fail",
        extra="boot_timeout = 300\n",
        PYTHONPATH=str(tmp_path),
    )
    assert sv.wait(60) == 3
    assert "RuntimeError: model file missing" in sv.log()
