"""The supervisor's record of one worker process and the job it runs."""

from __future__ import annotations

import enum
import os
import signal
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import psutil

from workflow_sdk.supervisor.jobs import JobEntry


class SlotState(enum.Enum):
    BOOTING = "booting"  # started, handlers not yet imported
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"  # told to exit (channel closed or signal sent)


@dataclass
class WorkerSlot:
    slot: int
    process: BaseProcess
    conn: Connection
    boot_deadline: float
    state: SlotState = SlotState.BOOTING
    pid: int = 0
    job_types: frozenset[str] = frozenset()
    #: the ledger entry of the job it runs
    job: JobEntry | None = None
    jobs_done: int = 0
    rss_bytes: int = 0
    ps: psutil.Process | None = None
    boot_error: str = ""
    #: monotonic time at which SIGKILL follows the SIGTERM we sent
    kill_at: float | None = None
    #: monotonic time at which SIGTERM follows the cancel signal we sent
    term_at: float | None = None
    #: signals the supervisor itself sent (to tell an OOM kill from ours)
    signals_sent: set[int] = field(default_factory=set)
    #: why the slot is being replaced (timeout, crash...), for logs and metrics
    exit_reason: str = ""
    #: the job type it was running when that was decided ("" when idle)
    exit_job_type: str = ""
    #: leaving the pool: exits after its current job, not counted as capacity
    retiring: bool = False
    #: started as the extra worker of a rolling reload
    surge: bool = False
    #: jobs after which this worker is recycled (0 = never), jitter applied
    max_jobs: int = 0

    def sentinel(self) -> int:
        return self.process.sentinel

    def send_signal(self, signum: int) -> None:
        self.signals_sent.add(signum)
        try:
            if self.process.pid is not None:
                os.kill(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def terminate(self, now: float, grace: float) -> None:
        """SIGTERM now, SIGKILL after ``grace`` seconds if still alive."""
        self.state = SlotState.STOPPING
        self.send_signal(signal.SIGTERM)
        self.kill_at = now + grace

    def retire(self, reason: str, now: float) -> None:
        """Let the worker finish its job (if any), then exit."""
        self.retiring = True
        self.exit_reason = self.exit_reason or reason
        if self.state is SlotState.IDLE:
            self.close_channel()
        elif self.state is SlotState.BOOTING:
            self.terminate(now, 1.0)

    def close_channel(self) -> None:
        """Ask an idle worker to exit: it reads EOF and returns."""
        self.state = SlotState.STOPPING
        try:
            self.conn.close()
        except OSError:
            pass


def describe_exit(exitcode: int | None) -> tuple[str, int | None]:
    """("killed by SIGKILL", 9) or ("exited with status 3", None)."""
    if exitcode is None:
        return "vanished", None
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name}", -exitcode
    return f"exited with status {exitcode}", None


__all__ = ["SlotState", "WorkerSlot", "describe_exit"]
