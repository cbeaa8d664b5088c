"""The supervisor's record of one worker process and the job it runs.

A ``WorkerSlot`` is the only writer of its own state: every field is read
through a read-only property, and every change is one of the methods below,
named for what happened (``start`` a job, ``job_done``, ``cancel``,
``terminate``...). The other modules decide; the slot records
(``tests/unit/test_slot_writes.py`` checks that no other module writes it).

Every worker told to go has a deadline: ``exit_by`` once its channel is
closed, ``term_at`` after the cancel signal, ``kill_at`` after SIGTERM
(``overdue`` says which has passed; ``escalate`` takes that step), so that
neither the pool nor the drain waits for a worker for ever.

A slot signals its own process, but never starts one: that is the arbiter's.
"""

from __future__ import annotations

import enum
import math
import os
import signal
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import psutil

from workflow_sdk.supervisor.loop.ledger import JobEntry
from workflow_sdk.supervisor.worker.protocol import RunJob

#: Seconds a worker told to exit (its channel closed, no job) has to be gone
#: before SIGTERM: it exits at once (``worker.main._exit_now``), unless
#: something on its way out blocks (a logging handler's final flush, say).
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


class WorkerSlot:
    """One worker process, its channel, and the job it runs (see the module doc).

    :param number: the slot's number (``worker-N``; it names the worker's
        metric files, so numbers are reused).
    :param ps: the process as psutil sees it (memory samples), if it could
        be opened.
    :param state: and ``job_types``: the state it starts in (a worker just
        started is booting; tests may start from another one).
    """

    __slots__ = (
        "_boot_deadline",
        "_boot_error",
        "_conn",
        "_exit_by",
        "_exit_job_type",
        "_exit_overdue",
        "_exit_reason",
        "_job",
        "_job_types",
        "_jobs_done",
        "_kill_at",
        "_max_jobs",
        "_number",
        "_pid",
        "_process",
        "_ps",
        "_retiring",
        "_rss_bytes",
        "_signals_sent",
        "_state",
        "_surge",
        "_term_at",
    )

    def __init__(
        self,
        number: int,
        process: BaseProcess,
        conn: Connection,
        boot_deadline: float,
        *,
        ps: psutil.Process | None = None,
        surge: bool = False,
        max_jobs: int = 0,
        state: SlotState = SlotState.BOOTING,
        job_types: frozenset[str] = frozenset(),
    ) -> None:
        self._number = number
        self._process = process
        self._conn = conn
        self._boot_deadline = boot_deadline
        self._pid = process.pid or 0
        self._ps = ps
        self._surge = surge
        self._max_jobs = max_jobs
        self._state = state
        self._job_types = job_types
        self._job: JobEntry | None = None
        self._jobs_done = 0
        self._rss_bytes = 0
        self._boot_error = ""
        self._kill_at: float | None = None
        self._term_at: float | None = None
        self._exit_by: float | None = None
        self._exit_overdue = False
        self._signals_sent: set[int] = set()
        self._exit_reason = ""
        self._exit_job_type = ""
        self._retiring = False

    def __repr__(self) -> str:
        return f"WorkerSlot(worker-{self._number}, pid {self._pid}, {self._state.value})"

    # -- what it is (read-only) -----------------------------------------------------

    @property
    def number(self) -> int:
        return self._number

    @property
    def process(self) -> BaseProcess:
        return self._process

    @property
    def conn(self) -> Connection:
        return self._conn

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def ps(self) -> psutil.Process | None:
        return self._ps

    @property
    def state(self) -> SlotState:
        return self._state

    @property
    def job_types(self) -> frozenset[str]:
        """The job types it serves (known once it is ready)."""
        return self._job_types

    @property
    def job(self) -> JobEntry | None:
        """The ledger entry of the job it runs."""
        return self._job

    @property
    def jobs_done(self) -> int:
        return self._jobs_done

    @property
    def max_jobs(self) -> int:
        """Jobs after which this worker is recycled (0 = never), jitter applied."""
        return self._max_jobs

    @property
    def rss_bytes(self) -> int:
        """Its last memory sample (its own after each job, or the parent's)."""
        return self._rss_bytes

    @property
    def boot_deadline(self) -> float:
        return self._boot_deadline

    @property
    def boot_error(self) -> str:
        return self._boot_error

    @property
    def kill_at(self) -> float | None:
        """Monotonic time at which SIGKILL follows the SIGTERM we sent."""
        return self._kill_at

    @property
    def term_at(self) -> float | None:
        """Monotonic time at which SIGTERM follows the cancel signal we sent."""
        return self._term_at

    @property
    def exit_by(self) -> float | None:
        """Monotonic time by which a worker whose channel we closed must be gone."""
        return self._exit_by

    @property
    def exit_overdue(self) -> bool:
        """It did not exit when told to (escalated by ``Overdue.EXIT``; logged once)."""
        return self._exit_overdue

    @property
    def signals_sent(self) -> frozenset[int]:
        """Signals the supervisor itself sent (to tell an OOM kill from ours)."""
        return frozenset(self._signals_sent)

    @property
    def exit_reason(self) -> str:
        """Why the slot is being replaced (timeout, crash...), for logs and metrics."""
        return self._exit_reason

    @property
    def exit_job_type(self) -> str:
        """The job type it was running when that was decided ("" when idle)."""
        return self._exit_job_type

    @property
    def retiring(self) -> bool:
        """Leaving the pool: exits after its current job, not counted as capacity."""
        return self._retiring

    @property
    def surge(self) -> bool:
        """Started as the extra worker of a rolling reload (not yet one of the pool)."""
        return self._surge

    def sentinel(self) -> int:
        return self._process.sentinel

    # -- booting --------------------------------------------------------------------

    def booted(self, job_types: tuple[str, ...]) -> None:
        """It said it is ready and which job types it serves."""
        if self._state is SlotState.BOOTING:
            self._state = SlotState.IDLE
        self._job_types = frozenset(job_types)

    def boot_failed(self, error: str) -> None:
        """Why it cannot boot (its own report, or the boot deadline)."""
        self._boot_error = error

    def boot_overdue(self, now: float) -> bool:
        """Still booting past its boot deadline: True once (the deadline is then spent)."""
        if self._state is SlotState.BOOTING and now >= self._boot_deadline:
            self._boot_deadline = math.inf
            return True
        return False

    def join_pool(self) -> None:
        """The reload's extra worker is ready: it is one of the pool now."""
        self._surge = False

    # -- its job --------------------------------------------------------------------

    def start(self, entry: JobEntry) -> bool:
        """Send it ``entry``'s job; False when its channel is gone (it died:
        its sentinel will tell)."""
        try:
            self._conn.send(RunJob(entry.context))
        except OSError:
            return False
        self._state = SlotState.BUSY
        self._job = entry
        return True

    def job_done(self, job_id: str, rss_bytes: int) -> JobEntry | None:
        """It sent a job's result (and its RSS right after). The entry of that
        job when it is the one it runs (the slot is free again); None for a
        late result of a job already decided (timed out, stale, abandoned)."""
        self._rss_bytes = rss_bytes
        entry = self._job
        if entry is None or entry.job_id != job_id:
            return None
        self._job = None
        self._jobs_done += 1
        if self._state is SlotState.BUSY:
            self._state = SlotState.IDLE
        return entry

    def lose_job(self, reason: str) -> JobEntry | None:
        """Its job ends here without a result of its own (it crashed, timed
        out, was killed for its memory): the slot is replaced for ``reason``
        (unless a reason was already given). Returns the job's entry."""
        entry, self._job = self._job, None
        self._exit_reason = self._exit_reason or reason
        if entry is not None:
            self._exit_job_type = entry.job_type
        return entry

    def abandon_job(self) -> JobEntry | None:
        """Its job is given up without a report (shutdown); returns its entry."""
        entry, self._job = self._job, None
        return entry

    def cancel(self, reason: str, cancel_signal: int, now: float, grace: float) -> None:
        """Its job no longer matters, or is no longer ours (``reason``): the
        job is dropped, the handler gets ``cancel_signal`` (its cancel event)
        and SIGTERM ``grace`` seconds later; the slot leaves the pool."""
        if self._job is not None:
            self._exit_job_type = self._job.job_type
        self._job = None
        self._retiring = True
        self._exit_reason = reason
        self.send_signal(cancel_signal)
        self._state = SlotState.STOPPING
        self._term_at = now + grace

    def crashed_idle(self) -> None:
        """It died without a job and without being told to go."""
        self._exit_reason = self._exit_reason or "crash"

    def sampled(self, rss_bytes: int) -> None:
        """The parent's memory sample of it."""
        self._rss_bytes = rss_bytes

    # -- telling it to go -----------------------------------------------------------

    def send_signal(self, signum: int) -> None:
        self._signals_sent.add(signum)
        try:
            if self._process.pid is not None:
                os.kill(self._process.pid, signum)
        except ProcessLookupError:
            pass

    def terminate(self, now: float, grace: float) -> None:
        """SIGTERM now, SIGKILL after ``grace`` seconds if still alive."""
        self._state = SlotState.STOPPING
        self.send_signal(signal.SIGTERM)
        # SIGTERM is sent: the earlier steps are done, the last one is due.
        self._term_at = self._exit_by = None
        self._kill_at = now + grace

    def stop(self, now: float, grace: float) -> None:
        """Leave the pool now: SIGTERM, SIGKILL after ``grace`` (its job is over)."""
        self._retiring = True
        self.terminate(now, grace)

    def kill(self) -> None:
        """Leave the pool now: SIGKILL, no grace (its memory is over the hard limit)."""
        self._retiring = True
        self._state = SlotState.STOPPING
        self.send_signal(signal.SIGKILL)

    def retire(self, reason: str, now: float) -> None:
        """Let the worker finish its job (if any), then exit."""
        self._retiring = True
        self._exit_reason = self._exit_reason or reason
        if self._state is SlotState.IDLE:
            self.close_channel(now)
        elif self._state is SlotState.BOOTING:
            self.terminate(now, 1.0)

    def close_channel(self, now: float, reason: str = "") -> None:
        """Ask an idle worker to exit (for ``reason``, unless one was given
        before): it reads EOF and ends; escalated if it is still alive
        ``EXIT_GRACE`` seconds later."""
        self._exit_reason = self._exit_reason or reason
        self._state = SlotState.STOPPING
        if self._exit_by is None and self._kill_at is None:
            self._exit_by = now + EXIT_GRACE
        try:
            self._conn.close()
        except OSError:
            pass

    def overdue(self, now: float) -> Overdue | None:
        """The escalation step due at ``now``, if one is (the latest step first)."""
        if self._kill_at is not None and now >= self._kill_at:
            return Overdue.KILL
        if self._term_at is not None and now >= self._term_at:
            return Overdue.TERM
        if self._exit_by is not None and now >= self._exit_by:
            return Overdue.EXIT
        return None

    def escalate(self, now: float, kill_grace: float) -> Overdue | None:
        """Take the escalation step due at ``now`` (see ``overdue``); returns it."""
        step = self.overdue(now)
        if step is Overdue.EXIT:
            self._exit_overdue = True
            self.terminate(now, kill_grace)
        elif step is Overdue.TERM:
            self.terminate(now, kill_grace)
        elif step is Overdue.KILL:
            self.send_signal(signal.SIGKILL)
            self._kill_at = None
        return step

    def next_deadline(self) -> float | None:
        """When the next escalation step (or the boot deadline) falls due."""
        times = [t for t in (self._kill_at, self._term_at, self._exit_by) if t is not None]
        if self._state is SlotState.BOOTING:
            times.append(self._boot_deadline)
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
