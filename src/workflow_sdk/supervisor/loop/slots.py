"""The supervisor's record of one worker process and the job it runs.

A ``WorkerSlot`` is the only writer of its own state: its fields are
read-only from outside (for mypy, and at run time), and every change is one
of the methods below, named for what happened (``start`` a job,
``job_done``, ``cancel``, ``terminate``...). The other modules decide; the
slot records (``tests/unit/test_slot_writes.py`` checks that no other
module writes it).

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
from typing import TYPE_CHECKING, Any, NoReturn

import psutil

from workflow_sdk.supervisor.loop.ledger import JobEntry
from workflow_sdk.supervisor.worker.protocol import RunJob

#: How this module writes a slot's fields (``WorkerSlot.__setattr__`` refuses).
_set = object.__setattr__

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

    Its fields are read as plain attributes (the loop reads them several
    times per tick; a property would be a function call each time), and are
    read-only from outside: mypy sees them as the read-only properties
    declared under ``TYPE_CHECKING`` below, and at run time ``__setattr__``
    refuses every assignment. This module's methods write them with
    ``object.__setattr__`` (``_set``).
    """

    __slots__ = (
        "boot_deadline",
        "boot_error",
        "conn",
        "exit_by",
        "exit_job_type",
        "exit_overdue",
        "exit_reason",
        "full_read_failed",
        "job",
        "job_types",
        "jobs_done",
        "kill_at",
        "kill_grace",
        "last_job_type",
        "max_jobs",
        "memory_warned",
        "next_full_sample",
        "number",
        "pid",
        "process",
        "ps",
        "pss_bytes",
        "retiring",
        "rss_at_full_sample",
        "rss_bytes",
        "sentinel",
        "signals_sent",
        "state",
        "surge",
        "term_at",
        "uss_bytes",
    )

    if TYPE_CHECKING:

        @property
        def number(self) -> int: ...
        @property
        def process(self) -> BaseProcess: ...
        @property
        def conn(self) -> Connection: ...
        @property
        def sentinel(self) -> int:
            """The process's sentinel (readable once it has ended)."""

        @property
        def pid(self) -> int: ...
        @property
        def ps(self) -> psutil.Process | None: ...
        @property
        def state(self) -> SlotState: ...
        @property
        def job_types(self) -> frozenset[str]:
            """The job types it serves (known once it is ready)."""

        @property
        def job(self) -> JobEntry | None:
            """The ledger entry of the job it runs."""

        @property
        def jobs_done(self) -> int: ...
        @property
        def last_job_type(self) -> str | None:
            """The type of the last job it finished (its memory limits apply
            while it is idle after it); None before its first."""

        @property
        def max_jobs(self) -> int:
            """Jobs after which this worker is recycled (0 = never), jitter applied."""

        @property
        def rss_bytes(self) -> int:
            """Its last RSS sample (its own after each job, or the parent's)."""

        @property
        def uss_bytes(self) -> int | None:
            """Its memory alone (USS) at its last full sample (smaps_rollup), if any."""

        @property
        def pss_bytes(self) -> int | None:
            """Its share of the memory it maps (PSS) at its last full sample, if any."""

        @property
        def rss_at_full_sample(self) -> int:
            """Its RSS at that full sample (what it grew since counts as its own)."""

        @property
        def next_full_sample(self) -> float:
            """Monotonic time from which its next full sample may be asked for."""

        @property
        def memory_warned(self) -> bool:
            """Its memory passed ``memory_warning_mb`` (logged once)."""

        @property
        def full_read_failed(self) -> bool:
            """Its last full read failed (or it has no pid): its RSS is judged."""

        @property
        def boot_deadline(self) -> float: ...
        @property
        def boot_error(self) -> str: ...
        @property
        def kill_at(self) -> float | None:
            """Monotonic time at which SIGKILL follows the SIGTERM we sent."""

        @property
        def term_at(self) -> float | None:
            """Monotonic time at which SIGTERM follows the cancel (or dump) signal we sent."""

        @property
        def kill_grace(self) -> float | None:
            """Seconds from that SIGTERM to SIGKILL (None: the escalation's own)."""

        @property
        def exit_by(self) -> float | None:
            """Monotonic time by which a worker whose channel we closed must be gone."""

        @property
        def exit_overdue(self) -> bool:
            """It did not exit when told to (escalated by ``Overdue.EXIT``; logged once)."""

        @property
        def signals_sent(self) -> frozenset[int]:
            """Signals the supervisor itself sent (to tell an OOM kill from ours)."""

        @property
        def exit_reason(self) -> str:
            """Why the slot is being replaced (timeout, crash...), for logs and metrics."""

        @property
        def exit_job_type(self) -> str:
            """The job type it was running when that was decided ("" when idle)."""

        @property
        def retiring(self) -> bool:
            """Leaving the pool: exits after its current job, not counted as capacity."""

        @property
        def surge(self) -> bool:
            """Started as the extra worker of a rolling reload (not yet one of the pool)."""

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
        _set(self, "number", number)
        _set(self, "process", process)
        _set(self, "conn", conn)
        _set(self, "sentinel", process.sentinel)
        _set(self, "boot_deadline", boot_deadline)
        _set(self, "pid", process.pid or 0)
        _set(self, "ps", ps)
        _set(self, "surge", surge)
        _set(self, "max_jobs", max_jobs)
        _set(self, "state", state)
        _set(self, "job_types", job_types)
        _set(self, "job", None)
        _set(self, "jobs_done", 0)
        _set(self, "last_job_type", None)
        _set(self, "rss_bytes", 0)
        _set(self, "uss_bytes", None)
        _set(self, "pss_bytes", None)
        _set(self, "rss_at_full_sample", 0)
        _set(self, "next_full_sample", 0.0)
        _set(self, "memory_warned", False)
        _set(self, "full_read_failed", False)
        _set(self, "boot_error", "")
        _set(self, "kill_at", None)
        _set(self, "term_at", None)
        _set(self, "kill_grace", None)
        _set(self, "exit_by", None)
        _set(self, "exit_overdue", False)
        _set(self, "signals_sent", frozenset())
        _set(self, "exit_reason", "")
        _set(self, "exit_job_type", "")
        _set(self, "retiring", False)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"WorkerSlot.{name} changes only through the slot's own methods")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"WorkerSlot.{name} changes only through the slot's own methods")

    def __repr__(self) -> str:
        return f"WorkerSlot(worker-{self.number}, pid {self.pid}, {self.state.value})"

    # -- booting --------------------------------------------------------------------

    def booted(self, job_types: tuple[str, ...]) -> None:
        """It said it is ready and which job types it serves."""
        if self.state is SlotState.BOOTING:
            _set(self, "state", SlotState.IDLE)
        _set(self, "job_types", frozenset(job_types))

    def boot_failed(self, error: str) -> None:
        """Why it cannot boot (its own report, or the boot deadline)."""
        _set(self, "boot_error", error)

    def boot_overdue(self, now: float) -> bool:
        """Still booting past its boot deadline: True once (the deadline is then spent)."""
        if self.state is SlotState.BOOTING and now >= self.boot_deadline:
            _set(self, "boot_deadline", math.inf)
            return True
        return False

    def join_pool(self) -> None:
        """The reload's extra worker is ready: it is one of the pool now."""
        _set(self, "surge", False)

    # -- its job --------------------------------------------------------------------

    def start(self, entry: JobEntry) -> bool:
        """Send it ``entry``'s job; False when its channel is gone (it died:
        its sentinel will tell)."""
        try:
            self.conn.send(RunJob(entry.context))
        except OSError:
            return False
        _set(self, "state", SlotState.BUSY)
        _set(self, "job", entry)
        return True

    def job_done(self, job_id: str, rss_bytes: int) -> JobEntry | None:
        """It sent a job's result (and its RSS right after). The entry of that
        job when it is the one it runs (the slot is free again); None for a
        late result of a job already decided (timed out, stale, abandoned)."""
        _set(self, "rss_bytes", rss_bytes)
        entry = self.job
        if entry is None or entry.job_id != job_id:
            return None
        _set(self, "job", None)
        _set(self, "jobs_done", self.jobs_done + 1)
        _set(self, "last_job_type", entry.job_type)
        if self.state is SlotState.BUSY:
            _set(self, "state", SlotState.IDLE)
        return entry

    def lose_job(self, reason: str) -> JobEntry | None:
        """Its job ends here without a result of its own (it crashed, timed
        out, was killed for its memory): the slot is replaced for ``reason``
        (unless a reason was already given). Returns the job's entry."""
        entry = self.job
        _set(self, "job", None)
        _set(self, "exit_reason", self.exit_reason or reason)
        if entry is not None:
            _set(self, "exit_job_type", entry.job_type)
        return entry

    def abandon_job(self) -> JobEntry | None:
        """Its job is given up without a report (shutdown); returns its entry."""
        entry = self.job
        _set(self, "job", None)
        return entry

    def cancel(self, reason: str, cancel_signal: int, now: float, grace: float) -> None:
        """Its job no longer matters, or is no longer ours (``reason``): the
        job is dropped, the handler gets ``cancel_signal`` (its cancel event)
        and SIGTERM ``grace`` seconds later; the slot leaves the pool."""
        if self.job is not None:
            _set(self, "exit_job_type", self.job.job_type)
        _set(self, "job", None)
        _set(self, "retiring", True)
        _set(self, "exit_reason", reason)
        self.send_signal(cancel_signal)
        _set(self, "state", SlotState.STOPPING)
        _set(self, "term_at", now + grace)

    def crashed_idle(self) -> None:
        """It died without a job and without being told to go."""
        _set(self, "exit_reason", self.exit_reason or "crash")

    def sampled(self, rss_bytes: int) -> None:
        """The parent's RSS sample of it."""
        _set(self, "rss_bytes", rss_bytes)

    def full_sample_asked(self, next_due: float) -> None:
        """A full sample of it (smaps_rollup) was asked for; the next is due at ``next_due``."""
        _set(self, "next_full_sample", next_due)

    def sampled_full(self, rss: int, pss: int | None, uss: int | None) -> None:
        """The parent's full sample of it (smaps_rollup)."""
        _set(self, "rss_bytes", rss)
        _set(self, "rss_at_full_sample", rss)
        _set(self, "pss_bytes", pss)
        _set(self, "uss_bytes", uss)
        _set(self, "full_read_failed", uss is None)

    def full_read_missed(self) -> None:
        """Its full read failed: its RSS is judged until one succeeds."""
        _set(self, "full_read_failed", True)

    def awaiting_full_read(self) -> bool:
        """No full read of it yet, and none failed: its RSS (the shared pages
        included) says nothing about what it owns until the first arrives."""
        return self.uss_bytes is None and not self.full_read_failed

    def warned_memory(self) -> None:
        """Its memory warning was logged (once per worker)."""
        _set(self, "memory_warned", True)

    @property
    def owned_bytes(self) -> int:
        """The memory it owns, for its limits: its USS at the last full sample
        plus what its RSS grew since (new memory is its own); its RSS where no
        USS was read (no smaps_rollup, or no full sample yet)."""
        if self.uss_bytes is None:
            return self.rss_bytes
        return self.uss_bytes + max(0, self.rss_bytes - self.rss_at_full_sample)

    def memory_text(self) -> str:
        """``"uses 812 MiB of its own (USS; RSS 1020 MiB)"``, or ``"uses 812 MiB (RSS)"``."""
        if self.uss_bytes is None:
            return f"uses {self.rss_bytes / 2**20:.0f} MiB (RSS)"
        return (
            f"uses {self.owned_bytes / 2**20:.0f} MiB of its own "
            f"(USS; RSS {self.rss_bytes / 2**20:.0f} MiB)"
        )

    # -- telling it to go -----------------------------------------------------------

    def send_signal(self, signum: int) -> None:
        _set(self, "signals_sent", self.signals_sent | {signum})
        try:
            if self.process.pid is not None:
                os.kill(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def terminate(self, now: float, grace: float) -> None:
        """SIGTERM now, SIGKILL after ``grace`` seconds if still alive."""
        _set(self, "state", SlotState.STOPPING)
        self.send_signal(signal.SIGTERM)
        # SIGTERM is sent: the earlier steps are done, the last one is due.
        _set(self, "term_at", None)
        _set(self, "exit_by", None)
        _set(self, "kill_at", now + grace)

    def stop(self, now: float, grace: float) -> None:
        """Leave the pool now: SIGTERM, SIGKILL after ``grace`` (its job is over)."""
        _set(self, "retiring", True)
        self.terminate(now, grace)

    def dump_then_terminate(
        self, dump_signal: int, now: float, dump_grace: float, kill_grace: float | None = None
    ) -> None:
        """Its job is over (past its time limit, or the drain's): ``dump_signal``
        now (the worker writes its threads' stacks to its dump file), SIGTERM
        ``dump_grace`` seconds later, SIGKILL ``kill_grace`` after that (None:
        the escalation's own grace). It leaves the pool."""
        _set(self, "retiring", True)
        _set(self, "state", SlotState.STOPPING)
        self.send_signal(dump_signal)
        _set(self, "exit_by", None)
        _set(self, "term_at", now + dump_grace)
        _set(self, "kill_grace", kill_grace)

    def kill(self) -> None:
        """Leave the pool now: SIGKILL, no grace (its memory is over the hard limit)."""
        _set(self, "retiring", True)
        _set(self, "state", SlotState.STOPPING)
        self.send_signal(signal.SIGKILL)

    def retire(self, reason: str, now: float) -> None:
        """Let the worker finish its job (if any), then exit."""
        _set(self, "retiring", True)
        _set(self, "exit_reason", self.exit_reason or reason)
        if self.state is SlotState.IDLE:
            self.close_channel(now)
        elif self.state is SlotState.BOOTING:
            self.terminate(now, 1.0)

    def close_channel(self, now: float, reason: str = "") -> None:
        """Ask an idle worker to exit (for ``reason``, unless one was given
        before): it reads EOF and ends; escalated if it is still alive
        ``EXIT_GRACE`` seconds later."""
        _set(self, "exit_reason", self.exit_reason or reason)
        _set(self, "state", SlotState.STOPPING)
        if self.exit_by is None and self.kill_at is None:
            _set(self, "exit_by", now + EXIT_GRACE)
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

    def escalate(self, now: float, kill_grace: float) -> Overdue | None:
        """Take the escalation step due at ``now`` (see ``overdue``); returns it."""
        step = self.overdue(now)
        if step is Overdue.EXIT:
            _set(self, "exit_overdue", True)
            self.terminate(now, kill_grace)
        elif step is Overdue.TERM:
            self.terminate(now, self.kill_grace if self.kill_grace is not None else kill_grace)
        elif step is Overdue.KILL:
            self.send_signal(signal.SIGKILL)
            _set(self, "kill_at", None)
        return step

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
