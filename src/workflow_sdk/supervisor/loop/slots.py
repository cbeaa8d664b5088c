"""The supervisor's record of one worker process and the job it runs.

Every worker told to go has a deadline: ``exit_by`` once its channel is
closed, ``term_at`` after the cancel signal, ``kill_at`` after SIGTERM
(``overdue`` says which has passed; ``stops.Stops`` acts on it), so that
neither the pool nor the drain waits for a worker for ever.
"""

from __future__ import annotations

import enum
import os
import signal
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import psutil

from workflow_sdk.supervisor.loop.ledger import JobEntry

#: Seconds a worker told to exit (its channel closed, no job) has to be gone
#: before SIGTERM: it exits at once (``worker._exit_now``), unless something
#: on its way out blocks (a logging handler's final flush, say).
EXIT_GRACE = 3.0


class SlotState(enum.Enum):
    BOOTING = "booting"  # started, handlers not yet imported
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"  # told to exit (channel closed or signal sent)


class Overdue(enum.Enum):
    """The escalation step a worker told to go is due for."""

    #: its channel closed ``EXIT_GRACE`` ago and it is still alive: SIGTERM
    #: (and one warning: it should have exited by itself)
    EXIT = "exit"
    #: the cancel signal's grace is over: SIGTERM
    TERM = "term"
    #: still alive after SIGTERM's grace: SIGKILL
    KILL = "kill"


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
    #: monotonic time by which a worker whose channel we closed must be gone
    exit_by: float | None = None
    #: the warning that it did not exit when told to was logged (once per worker)
    exit_overdue_logged: bool = False
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
        # SIGTERM is sent: the earlier steps are done, the last one is due.
        self.term_at = self.exit_by = None
        self.kill_at = now + grace

    def retire(self, reason: str, now: float) -> None:
        """Let the worker finish its job (if any), then exit."""
        self.retiring = True
        self.exit_reason = self.exit_reason or reason
        if self.state is SlotState.IDLE:
            self.close_channel(now)
        elif self.state is SlotState.BOOTING:
            self.terminate(now, 1.0)

    def close_channel(self, now: float) -> None:
        """Ask an idle worker to exit: it reads EOF and ends; escalated if it
        is still alive ``EXIT_GRACE`` seconds later."""
        self.state = SlotState.STOPPING
        if self.exit_by is None and self.kill_at is None:
            self.exit_by = now + EXIT_GRACE
        try:
            self.conn.close()
        except OSError:
            pass

    def overdue(self, now: float) -> Overdue | None:
        """The escalation step due at ``now``, if one is (the latest step first)."""
        if self.kill_at is not None and now >= self.kill_at:
            return Overdue.KILL
        if self.term_at is not None and now >= self.term_at:
            return Overdue.TERM
        if self.exit_by is not None and now >= self.exit_by:
            return Overdue.EXIT
        return None

    def next_deadline(self) -> float | None:
        """When the next escalation step (or the boot deadline) falls due."""
        times = [t for t in (self.kill_at, self.term_at, self.exit_by) if t is not None]
        if self.state is SlotState.BOOTING:
            times.append(self.boot_deadline)
        return min(times) if times else None


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


__all__ = ["EXIT_GRACE", "Overdue", "SlotState", "WorkerSlot", "describe_exit"]
